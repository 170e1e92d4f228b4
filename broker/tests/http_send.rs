//! `POST /v1/topics/{topic}/messages` through the router of a real single-node broker:
//! the answer's shape and values, queue choice, idempotent retries, auto-creation,
//! and every way a send is refused (with the API's error shape).

use crate::common;

use std::collections::BTreeSet;

use axum::http::{Method, StatusCode};
use base64::Engine;
use broker::units::ByteSize;
use common::http::{
    as_array, as_u64, assert_error, assert_fields, encode, now_ms, TestNode, SEND_RESULT_FIELDS,
};
use serde_json::{json, Value};
use tracing::info;

/// The results of a send answer.
fn results(answer: &Value) -> &Vec<Value> {
    as_array(&answer["results"], "results")
}

/// The queue's (min, max) offsets from `GET /v1/topics/{topic}/queues`.
async fn queue_offsets(node: &TestNode, topic: &str, queue_id: u64) -> (u64, u64) {
    let (status, body) = node.get(&format!("/v1/topics/{topic}/queues")).await;
    assert_eq!(status, StatusCode::OK, "queues of {topic}: {body}");
    let queue = as_array(&body["queues"], "queues")
        .iter()
        .find(|q| q["queue_id"] == queue_id)
        .unwrap_or_else(|| panic!("queue {queue_id} of {topic} is listed: {body}"));
    (
        as_u64(&queue["min_offset"], "min_offset"),
        as_u64(&queue["max_offset"], "max_offset"),
    )
}

/// A send answers one result per message, in request order, with every field of
/// shared/API.md: offsets in one queue increase by one, CommitLog offsets increase,
/// message ids are distinct 32-hex-digit strings, the store time is now, and `group`
/// names the node's group. The messages read back with what was sent. A send to an
/// unknown topic (auto-creation on, the default) creates it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_answers_one_result_per_message_in_order() {
    let node = TestNode::start().await;

    info!("--- send three messages pinned to queue 2 of a topic that does not exist yet");
    let before = now_ms();
    let answer = node
        .send_ok(
            "orders",
            vec![
                json!({"body": "first", "tags": "TagA", "keys": ["k-1"], "properties": {"n": "1"}, "queue_id": 2}),
                json!({"body": "second", "tags": "TagB", "keys": ["k-2", "k-x"], "queue_id": 2}),
                json!({"body": "third", "queue_id": 2}),
            ],
        )
        .await;
    let after = now_ms();
    assert_eq!(answer["group"], "broker-a", "{answer}");
    let sent = results(&answer);
    assert_eq!(sent.len(), 3, "one result per message: {answer}");
    let mut ids = BTreeSet::new();
    let mut last_commit_log_offset = None;
    for (i, result) in sent.iter().enumerate() {
        assert_fields(result, &SEND_RESULT_FIELDS, "a send result");
        assert_eq!(result["topic"], "orders", "{result}");
        assert_eq!(result["queue_id"], 2, "{result}");
        assert_eq!(
            as_u64(&result["queue_offset"], "queue_offset"),
            i as u64,
            "queue offsets follow request order: {answer}"
        );
        let commit_log_offset = as_u64(&result["commit_log_offset"], "commit_log_offset");
        if let Some(last) = last_commit_log_offset {
            assert!(
                commit_log_offset > last,
                "CommitLog offsets increase: {answer}"
            );
        }
        last_commit_log_offset = Some(commit_log_offset);
        let stored_at = as_u64(&result["store_timestamp"], "store_timestamp");
        assert!(
            (before..=after).contains(&stored_at),
            "store time {stored_at} within the request [{before}, {after}]"
        );
        let id = result["msg_id"].as_str().expect("msg_id is a string");
        assert!(
            id.len() == 32 && id.chars().all(|c| c.is_ascii_hexdigit()),
            "msg_id is 32 hex digits: {id}"
        );
        ids.insert(id.to_string());
    }
    assert_eq!(ids.len(), 3, "message ids are distinct: {answer}");

    info!("--- the topic was created with the default settings");
    let (status, topic) = node.get("/v1/topics/orders").await;
    assert_eq!(status, StatusCode::OK, "{topic}");
    assert_eq!(topic["read_queue_nums"], 4, "{topic}");
    assert_eq!(topic["write_queue_nums"], 4, "{topic}");
    assert_eq!(topic["perm"], 6, "{topic}");
    assert_eq!(queue_offsets(&node, "orders", 2).await, (0, 3));

    info!("--- the messages read back in order with what was sent");
    let pulled = node
        .pull_ok("/v1/topics/orders/queues/2/messages?offset=0")
        .await;
    let messages = as_array(&pulled["messages"], "messages");
    let bodies: Vec<&str> = messages
        .iter()
        .map(|m| m["body"].as_str().expect("a text body"))
        .collect();
    assert_eq!(bodies, ["first", "second", "third"]);
    for (message, result) in messages.iter().zip(sent) {
        assert_eq!(message["msg_id"], result["msg_id"]);
        assert_eq!(message["queue_offset"], result["queue_offset"]);
        assert_eq!(message["commit_log_offset"], result["commit_log_offset"]);
        assert_eq!(message["store_timestamp"], result["store_timestamp"]);
    }
    assert_eq!(messages[0]["tags"], "TagA");
    assert_eq!(messages[0]["keys"], json!(["k-1"]));
    assert_eq!(messages[0]["properties"], json!({"n": "1"}));
    assert_eq!(messages[1]["keys"], json!(["k-2", "k-x"]));

    info!("--- a second send continues the queue's offsets");
    let answer = node
        .send_ok("orders", vec![json!({"body": "fourth", "queue_id": 2})])
        .await;
    assert_eq!(results(&answer)[0]["queue_offset"], 3, "{answer}");
    node.stop().await;
}

/// Without `queue_id` or `sharding_key` the broker round-robins over the writable
/// queues; the same `sharding_key` always picks the same queue; `queue_id` pins it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_choice_round_robin_sharding_key_and_pinning() {
    let node = TestNode::start().await;
    node.create_topic(
        "spread",
        json!({"read_queue_nums": 4, "write_queue_nums": 4}),
    )
    .await;

    info!("--- eight unpinned messages spread over all four queues, two each");
    let answer = node
        .send_ok(
            "spread",
            (0..8).map(|i| json!({"body": format!("m{i}")})).collect(),
        )
        .await;
    let mut per_queue = [0u32; 4];
    for result in results(&answer) {
        let queue = usize::try_from(as_u64(&result["queue_id"], "queue_id")).expect("small");
        per_queue[queue] += 1;
    }
    assert_eq!(per_queue, [2, 2, 2, 2], "round robin: {answer}");

    info!("--- one sharding key keeps its queue across requests");
    let keyed = |body: &str| json!({"body": body, "sharding_key": "user-7"});
    let first = node.send_ok("spread", vec![keyed("a"), keyed("b")]).await;
    let second = node.send_ok("spread", vec![keyed("c")]).await;
    let queue = results(&first)[0]["queue_id"].clone();
    assert_eq!(results(&first)[1]["queue_id"], queue, "{first}");
    assert_eq!(results(&second)[0]["queue_id"], queue, "{second}");
    let offsets: Vec<u64> = results(&first)
        .iter()
        .chain(results(&second))
        .map(|r| as_u64(&r["queue_offset"], "queue_offset"))
        .collect();
    assert!(
        offsets.windows(2).all(|w| w[1] == w[0] + 1),
        "ordered messages take consecutive offsets of their queue: {offsets:?}"
    );

    info!("--- queue_id pins the queue, and wins over a sharding key");
    let answer = node
        .send_ok(
            "spread",
            vec![
                json!({"body": "x", "queue_id": 3}),
                json!({"body": "y", "queue_id": 0, "sharding_key": "user-7"}),
            ],
        )
        .await;
    assert_eq!(results(&answer)[0]["queue_id"], 3, "{answer}");
    assert_eq!(results(&answer)[1]["queue_id"], 0, "{answer}");
    node.stop().await;
}

/// `producer_id` + `sequence` make a send idempotent: a retry answers the first
/// result (same id, same offsets) and stores nothing; a duplicate inside one batch
/// points at its first occurrence; a batch mixing a retry and a new message stores
/// only the new one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn producer_retry_returns_the_first_result_and_stores_once() {
    let node = TestNode::start().await;
    let stamped = |body: &str, sequence: u64| json!({"body": body, "queue_id": 0, "producer_id": "p-1", "sequence": sequence});

    info!("--- the first send of (p-1, 17)");
    let first = node.send_ok("idem", vec![stamped("once", 17)]).await;
    let original = results(&first)[0].clone();

    info!("--- the retry answers the same result and stores nothing");
    let retry = node.send_ok("idem", vec![stamped("once", 17)]).await;
    assert_eq!(results(&retry)[0], original, "retry answer: {retry}");
    assert_eq!(queue_offsets(&node, "idem", 0).await, (0, 1));

    info!("--- a batch holding (p-1, 18) twice stores it once");
    let batch = node
        .send_ok("idem", vec![stamped("twice", 18), stamped("twice", 18)])
        .await;
    assert_eq!(results(&batch)[0], results(&batch)[1], "{batch}");
    assert_eq!(results(&batch)[0]["queue_offset"], 1, "{batch}");
    assert_eq!(queue_offsets(&node, "idem", 0).await, (0, 2));

    info!("--- a retry with another body still answers the first result");
    let changed = node.send_ok("idem", vec![stamped("changed", 17)]).await;
    assert_eq!(results(&changed)[0], original, "retry answer: {changed}");
    assert_eq!(queue_offsets(&node, "idem", 0).await, (0, 2));

    info!("--- another producer with the same sequence is a different message");
    let other = node
        .send_ok(
            "idem",
            vec![json!({"body": "other", "queue_id": 0, "producer_id": "p-2", "sequence": 17})],
        )
        .await;
    assert_eq!(results(&other)[0]["queue_offset"], 2, "{other}");

    info!("--- a batch of a retry and a new sequence stores only the new one");
    let mixed = node
        .send_ok("idem", vec![stamped("once", 17), stamped("new", 19)])
        .await;
    assert_eq!(results(&mixed)[0], original, "{mixed}");
    assert_eq!(results(&mixed)[1]["queue_offset"], 3, "{mixed}");
    assert_eq!(queue_offsets(&node, "idem", 0).await, (0, 4));

    info!("--- the stored bodies: once, twice, other, new");
    let pulled = node
        .pull_ok("/v1/topics/idem/queues/0/messages?offset=0")
        .await;
    let bodies: Vec<&Value> = as_array(&pulled["messages"], "messages")
        .iter()
        .map(|m| &m["body"])
        .collect();
    assert_eq!(
        bodies,
        [
            &json!("once"),
            &json!("twice"),
            &json!("other"),
            &json!("new")
        ]
    );
    node.stop().await;
}

/// With auto-creation off, a send to an unknown topic is TOPIC_NOT_FOUND (404) and
/// creates nothing; once the topic is created the same send succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_topic_is_not_found_when_auto_create_is_off() {
    let node = TestNode::start_with(|config| config.auto_create_topics = false).await;
    let send = json!({"messages": [{"body": "hello"}]});

    info!("--- send to a topic nobody created");
    let answer = node
        .request(
            Method::POST,
            "/v1/topics/ghost/messages",
            Some(send.clone()),
        )
        .await;
    assert_error(answer, StatusCode::NOT_FOUND, "TOPIC_NOT_FOUND");
    assert_error(
        node.get("/v1/topics/ghost").await,
        StatusCode::NOT_FOUND,
        "TOPIC_NOT_FOUND",
    );

    info!("--- create it; the same send succeeds");
    node.create_topic("ghost", json!({})).await;
    let (status, body) = node
        .request(Method::POST, "/v1/topics/ghost/messages", Some(send))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    node.stop().await;
}

/// Malformed sends are BAD_REQUEST (400) with the error shape, and store nothing (the
/// topic is not even auto-created): bad JSON, an empty or missing body, a missing
/// `messages`, an empty batch, unknown fields, a message without a body or with both
/// bodies, bad base64, `producer_id` without `sequence`, `||` in tags; a `queue_id`
/// beyond the topic's write queues is QUEUE_NOT_FOUND (404), and stores nothing
/// either.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_sends_are_bad_requests() {
    let node = TestNode::start().await;
    let uri = "/v1/topics/fresh/messages";
    let raw_cases: [(&str, &str); 6] = [
        ("malformed JSON", r#"{"messages": [{"body": "x"}"#),
        ("not JSON at all", "hello"),
        ("empty body", ""),
        ("blank body", "  \n"),
        ("JSON of the wrong type", r#"["x"]"#),
        ("messages of the wrong type", r#"{"messages": "x"}"#),
    ];
    for (case, body) in raw_cases {
        info!("--- {case}");
        let answer = node.request_raw(Method::POST, uri, body).await;
        assert_error(answer, StatusCode::BAD_REQUEST, "BAD_REQUEST");
    }
    info!("--- a JSON string that is not UTF-8");
    let answer = node
        .request_raw(
            Method::POST,
            uri,
            b"{\"messages\": [{\"body\": \"\xff\xfe\"}]}".to_vec(),
        )
        .await;
    assert_error(answer, StatusCode::BAD_REQUEST, "BAD_REQUEST");
    info!("--- no body and no content type at all");
    assert_error(
        node.request(Method::POST, uri, None).await,
        StatusCode::BAD_REQUEST,
        "BAD_REQUEST",
    );
    let json_cases = [
        ("missing `messages`", json!({})),
        ("empty batch", json!({"messages": []})),
        (
            "unknown top-level field",
            json!({"messages": [{"body": "x"}], "extra": 1}),
        ),
        (
            "unknown message field",
            json!({"messages": [{"body": "x", "colour": "red"}]}),
        ),
        (
            "message without a body",
            json!({"messages": [{"tags": "TagA"}]}),
        ),
        (
            "both bodies",
            json!({"messages": [{"body": "x", "body_base64": "eA=="}]}),
        ),
        (
            "bad base64",
            json!({"messages": [{"body_base64": "!!not base64!!"}]}),
        ),
        (
            "body of the wrong type",
            json!({"messages": [{"body": 42}]}),
        ),
        (
            "producer_id without sequence",
            json!({"messages": [{"body": "x", "producer_id": "p"}]}),
        ),
        (
            "sequence without producer_id",
            json!({"messages": [{"body": "x", "sequence": 1}]}),
        ),
        (
            "`||` inside tags",
            json!({"messages": [{"body": "x", "tags": "TagA||TagB"}]}),
        ),
        (
            "an empty key",
            json!({"messages": [{"body": "x", "keys": [""]}]}),
        ),
        (
            "33 keys",
            json!({"messages": [{"body": "x", "keys": (0..33).map(|i| format!("k{i}")).collect::<Vec<_>>()}]}),
        ),
        (
            "a property value that is not a string",
            json!({"messages": [{"body": "x", "properties": {"n": 1}}]}),
        ),
        (
            "negative queue_id",
            json!({"messages": [{"body": "x", "queue_id": -1}]}),
        ),
        (
            "one good and one bad message",
            json!({"messages": [{"body": "good"}, {"body": "x", "body_base64": "eA=="}]}),
        ),
    ];
    for (case, body) in json_cases {
        info!("--- {case}");
        let answer = node.request(Method::POST, uri, Some(body)).await;
        assert_error(answer, StatusCode::BAD_REQUEST, "BAD_REQUEST");
    }
    info!("--- queue_id beyond the write queues: no such queue");
    let answer = node
        .request(
            Method::POST,
            uri,
            Some(json!({"messages": [{"body": "x"}, {"body": "x", "queue_id": 4}]})),
        )
        .await;
    assert_error(answer, StatusCode::NOT_FOUND, "QUEUE_NOT_FOUND");

    info!("--- nothing was stored: the topic does not exist");
    assert_error(
        node.get("/v1/topics/fresh").await,
        StatusCode::NOT_FOUND,
        "TOPIC_NOT_FOUND",
    );
    node.stop().await;
}

/// Topic names in a send follow shared/API.md: 1..=127 of `[A-Za-z0-9_%|-]`, and the
/// `%RETRY%`/`%DLQ%` prefixes are the broker's. `a.b`, 128 characters, an encoded
/// `/`, `%RETRY%x` and `%DLQ%x` are BAD_REQUEST; 127 characters and every allowed
/// character are fine. A raw `/` cannot be in a path segment: that is no route (404).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topic_names_are_checked() {
    let node = TestNode::start().await;
    let send = json!({"messages": [{"body": "x"}]});
    let long_ok = "t".repeat(127);
    let too_long = "t".repeat(128);
    for bad in [
        "a.b",
        too_long.as_str(),
        "a/b",
        "%RETRY%x",
        "%DLQ%x",
        "a b",
        "ü",
    ] {
        info!("--- refused topic name {bad:?}");
        let uri = format!("/v1/topics/{}/messages", encode(bad));
        let answer = node.request(Method::POST, &uri, Some(send.clone())).await;
        assert_error(answer, StatusCode::BAD_REQUEST, "BAD_REQUEST");
    }

    info!("--- a raw slash splits the path: no such endpoint");
    let answer = node
        .request(Method::POST, "/v1/topics/a/b/messages", Some(send.clone()))
        .await;
    assert_error(answer, StatusCode::NOT_FOUND, "NOT_FOUND");

    for good in [long_ok.as_str(), "Orders_v2|eu-1%x", "A"] {
        info!("--- accepted topic name {good:?}");
        let uri = format!("/v1/topics/{}/messages", encode(good));
        let (status, body) = node.request(Method::POST, &uri, Some(send.clone())).await;
        assert_eq!(status, StatusCode::OK, "{good}: {body}");
        assert_eq!(results(&body)[0]["topic"], good, "{body}");
    }
    node.stop().await;
}

/// Request limits: more than `http.max_batch_messages` messages and a request body
/// over `http.max_body_size` (with messages well within `storage.max_message_size`)
/// are each BAD_REQUEST with the error shape and store nothing; at the limits the
/// send succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversize_batches_and_bodies_are_bad_requests() {
    let node = TestNode::start_with(|config| {
        config.http.max_batch_messages = 4;
        config.http.max_body_size = ByteSize(16 << 10);
    })
    .await;
    let uri = "/v1/topics/sized/messages";
    node.create_topic(
        "sized",
        json!({"read_queue_nums": 1, "write_queue_nums": 1}),
    )
    .await;
    let batch =
        |n: usize| -> Vec<Value> { (0..n).map(|i| json!({"body": format!("m{i}")})).collect() };

    info!("--- five messages where four is the limit");
    let answer = node
        .request(Method::POST, uri, Some(json!({"messages": batch(5)})))
        .await;
    assert_error(answer, StatusCode::BAD_REQUEST, "BAD_REQUEST");
    assert_eq!(queue_offsets(&node, "sized", 0).await, (0, 0));

    info!("--- four messages pass");
    let answer = node.send_ok("sized", batch(4)).await;
    assert_eq!(results(&answer).len(), 4);

    info!("--- a 20 KiB request body where 16 KiB is the limit");
    let big = json!({"messages": [{"body": "b".repeat(20 << 10)}]});
    let answer = node.request(Method::POST, uri, Some(big)).await;
    assert_error(answer, StatusCode::BAD_REQUEST, "BAD_REQUEST");
    assert_eq!(queue_offsets(&node, "sized", 0).await, (0, 4));

    info!("--- a 12 KiB request body passes");
    node.send_ok("sized", vec![json!({"body": "b".repeat(12 << 10)})])
        .await;
    node.stop().await;
}

/// A message over `storage.max_message_size` (in a request body well within
/// `http.max_body_size`) is BAD_REQUEST, alone or in a batch with a good message, and
/// the batch stores nothing; a message under the limit passes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversize_message_is_a_bad_request() {
    let node = TestNode::start_with(|config| {
        config.storage.max_message_size = ByteSize(4 << 10);
    })
    .await;
    let uri = "/v1/topics/sized/messages";
    node.create_topic(
        "sized",
        json!({"read_queue_nums": 1, "write_queue_nums": 1}),
    )
    .await;

    info!("--- a 5 KiB message where 4 KiB is the largest, alone and in a batch");
    let large = json!({"body": "m".repeat(5 << 10)});
    for messages in [vec![large.clone()], vec![json!({"body": "small"}), large]] {
        let answer = node
            .request(Method::POST, uri, Some(json!({ "messages": messages })))
            .await;
        assert_error(answer, StatusCode::BAD_REQUEST, "BAD_REQUEST");
    }
    assert_eq!(
        queue_offsets(&node, "sized", 0).await,
        (0, 0),
        "refused batches store nothing"
    );

    info!("--- a 3 KiB message passes");
    node.send_ok("sized", vec![json!({"body": "m".repeat(3 << 10)})])
        .await;
    assert_eq!(queue_offsets(&node, "sized", 0).await, (0, 1));
    node.stop().await;
}

/// A topic with `perm` 4 (read only) refuses sends with NO_PERMISSION (403); after an
/// update to `perm` 6 the send succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_only_topic_refuses_sends() {
    let node = TestNode::start().await;
    node.create_topic("frozen", json!({"perm": 4})).await;
    let send = json!({"messages": [{"body": "x"}]});

    info!("--- send to a read-only topic");
    let answer = node
        .request(
            Method::POST,
            "/v1/topics/frozen/messages",
            Some(send.clone()),
        )
        .await;
    assert_error(answer, StatusCode::FORBIDDEN, "NO_PERMISSION");

    info!("--- make it writable; the send passes");
    node.create_topic("frozen", json!({"perm": 6})).await;
    let (status, body) = node
        .request(Method::POST, "/v1/topics/frozen/messages", Some(send))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    node.stop().await;
}

/// A binary body sent as `body_base64` is stored as bytes: the send answer is the
/// usual one and the bytes come back through `body_base64` (see http_pull.rs for
/// the pull side of it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_body_is_accepted() {
    let node = TestNode::start().await;
    let bytes: Vec<u8> = (0..=255u8).collect();
    let encoded = base64::engine::general_purpose::STANDARD.encode(&bytes);
    let answer = node
        .send_ok("bin", vec![json!({"body_base64": encoded, "queue_id": 1})])
        .await;
    let result = &results(&answer)[0];
    assert_fields(result, &SEND_RESULT_FIELDS, "a send result");
    let id = result["msg_id"].as_str().expect("msg_id is a string");
    let (status, message) = node.get(&format!("/v1/messages/{id}")).await;
    assert_eq!(status, StatusCode::OK, "{message}");
    assert_eq!(message["body_base64"], encoded.as_str(), "{message}");
    assert!(message.get("body").is_none(), "{message}");
    node.stop().await;
}

/// Concurrent sends to one queue each get their own consecutive run of offsets (a
/// batch is atomic and never interleaved), and together they fill the queue's offsets
/// without a gap or a repeat; concurrent retries of one (producer, sequence) store it
/// once and all answer the same result.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_sends_get_disjoint_consecutive_offsets() {
    let node = std::sync::Arc::new(TestNode::start().await);
    node.create_topic("busy", json!({"read_queue_nums": 1, "write_queue_nums": 1}))
        .await;

    info!("--- eight tasks send five messages each, at once");
    let tasks: Vec<_> = (0..8)
        .map(|task| {
            let node = std::sync::Arc::clone(&node);
            tokio::spawn(async move {
                let batch = (0..5)
                    .map(|i| json!({"body": format!("t{task}-m{i}")}))
                    .collect();
                node.send_ok("busy", batch).await
            })
        })
        .collect();
    let mut all_offsets = Vec::new();
    for task in tasks {
        let answer = task.await.expect("a send task did not panic");
        let offsets: Vec<u64> = results(&answer)
            .iter()
            .map(|r| as_u64(&r["queue_offset"], "queue_offset"))
            .collect();
        assert!(
            offsets.windows(2).all(|w| w[1] == w[0] + 1),
            "one batch takes consecutive offsets: {offsets:?}"
        );
        all_offsets.extend(offsets);
    }
    all_offsets.sort_unstable();
    assert_eq!(all_offsets, (0..40).collect::<Vec<u64>>());

    info!("--- six tasks send the same (p-9, 1) at once");
    let tasks: Vec<_> = (0..6)
        .map(|_| {
            let node = std::sync::Arc::clone(&node);
            tokio::spawn(async move {
                let message = json!({"body": "once", "producer_id": "p-9", "sequence": 1});
                node.send_ok("busy", vec![message]).await
            })
        })
        .collect();
    let mut answers = Vec::new();
    for task in tasks {
        let answer = task.await.expect("a send task did not panic");
        answers.push(results(&answer)[0].clone());
    }
    assert!(
        answers.windows(2).all(|w| w[0] == w[1]),
        "every retry answers the first result: {answers:?}"
    );
    assert_eq!(queue_offsets(&node, "busy", 0).await, (0, 41));
    let node = std::sync::Arc::into_inner(node).expect("every task finished");
    node.stop().await;
}
