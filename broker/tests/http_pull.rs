//! `GET /v1/topics/{topic}/queues/{queue_id}/messages` (without long polling, which
//! http_long_poll.rs covers) through the router of a real single-node broker: the
//! statuses of shared/API.md with their offsets, message fields, binary bodies, tag
//! filtering, and the refused requests.

use crate::common;

use std::time::{Duration, Instant};

use axum::http::StatusCode;
use base64::Engine;
use broker::units::{ByteSize, HumanDuration};
use common::http::{
    as_array, as_u64, assert_error, assert_fields, TestNode, MESSAGE_FIELDS, PULL_FIELDS,
};
use serde_json::{json, Value};
use tracing::info;

fn messages(pull: &Value) -> &Vec<Value> {
    as_array(&pull["messages"], "messages")
}

/// Checks a pull answer's status and offsets.
#[track_caller]
fn assert_pull(pull: &Value, status: &str, next: u64, min: u64, max: u64) {
    assert_fields(pull, &PULL_FIELDS, "a pull answer");
    assert_eq!(pull["status"], status, "{pull}");
    assert_eq!(
        (
            as_u64(&pull["next_offset"], "next_offset"),
            as_u64(&pull["min_offset"], "min_offset"),
            as_u64(&pull["max_offset"], "max_offset"),
        ),
        (next, min, max),
        "(next, min, max) offsets of {pull}"
    );
}

/// A pull of stored messages is FOUND with `next_offset` after the last returned,
/// `min_offset`/`max_offset` of the queue (`max_offset` one past the last message),
/// and each message with every field of shared/API.md and what was sent: body, tags,
/// keys, properties, timestamps, `reconsume_times` 0. `max_messages` caps the batch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_returns_the_stored_messages_with_their_fields() {
    let node = TestNode::start().await;
    info!("--- send three messages to queue 1");
    let sent = node
        .send_ok(
            "feed",
            vec![
                json!({"body": "hello", "tags": "TagA", "keys": ["order-42"], "properties": {"k": "v", "z": "1"}, "queue_id": 1}),
                json!({"body": "", "queue_id": 1}),
                json!({"body": "ünïcødé ✓", "tags": "TagB", "queue_id": 1}),
            ],
        )
        .await;
    let results = as_array(&sent["results"], "results");

    info!("--- pull them all from offset 0");
    let pull = node
        .pull_ok("/v1/topics/feed/queues/1/messages?offset=0")
        .await;
    assert_pull(&pull, "FOUND", 3, 0, 3);
    let got = messages(&pull);
    assert_eq!(got.len(), 3, "{pull}");
    for (message, result) in got.iter().zip(results) {
        assert_fields(message, &MESSAGE_FIELDS, "a pulled message");
        for field in [
            "msg_id",
            "topic",
            "queue_id",
            "queue_offset",
            "commit_log_offset",
            "store_timestamp",
        ] {
            assert_eq!(message[field], result[field], "{field} of {message}");
        }
        assert_eq!(message["reconsume_times"], 0, "{message}");
        assert!(
            as_u64(&message["born_timestamp"], "born_timestamp")
                <= as_u64(&message["store_timestamp"], "store_timestamp"),
            "born before stored: {message}"
        );
        assert!(message.get("body_base64").is_none(), "{message}");
    }
    assert_eq!(got[0]["body"], "hello");
    assert_eq!(got[0]["tags"], "TagA");
    assert_eq!(got[0]["keys"], json!(["order-42"]));
    assert_eq!(got[0]["properties"], json!({"k": "v", "z": "1"}));
    assert_eq!(got[1]["body"], "");
    assert_eq!(got[1]["keys"], json!([]));
    assert_eq!(got[1]["properties"], json!({}));
    assert_eq!(got[2]["body"], "ünïcødé ✓");
    assert_eq!(got[2]["tags"], "TagB");

    info!("--- max_messages=2 returns two, and the next pull the rest");
    let pull = node
        .pull_ok("/v1/topics/feed/queues/1/messages?offset=0&max_messages=2")
        .await;
    assert_pull(&pull, "FOUND", 2, 0, 3);
    assert_eq!(messages(&pull).len(), 2);
    let pull = node
        .pull_ok("/v1/topics/feed/queues/1/messages?offset=2&max_messages=1024")
        .await;
    assert_pull(&pull, "FOUND", 3, 0, 3);
    assert_eq!(messages(&pull)[0]["queue_offset"], 2);

    info!("--- the longest wait allowed, with messages there: answers at once");
    let pull = node
        .pull_ok("/v1/topics/feed/queues/1/messages?offset=1&max_wait_ms=30000")
        .await;
    assert_pull(&pull, "FOUND", 3, 0, 3);
    node.stop().await;
}

/// Without `max_messages` a pull returns at most 32 messages.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_returns_32_messages_by_default() {
    let node = TestNode::start().await;
    node.send_ok(
        "many",
        (0..40)
            .map(|i| json!({"body": format!("m{i}"), "queue_id": 0}))
            .collect(),
    )
    .await;
    let pull = node
        .pull_ok("/v1/topics/many/queues/0/messages?offset=0")
        .await;
    assert_pull(&pull, "FOUND", 32, 0, 40);
    assert_eq!(messages(&pull).len(), 32);
    let pull = node
        .pull_ok("/v1/topics/many/queues/0/messages?offset=32")
        .await;
    assert_pull(&pull, "FOUND", 40, 0, 40);
    assert_eq!(messages(&pull).len(), 8);
    node.stop().await;
}

/// Bytes sent as `body_base64` come back as `body_base64` (not `body`), whether or not
/// they are valid UTF-8.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_bodies_round_trip_through_base64() {
    let node = TestNode::start().await;
    let engine = base64::engine::general_purpose::STANDARD;
    let not_utf8: Vec<u8> = vec![0, 0xFF, 0xFE, 0x80, 1, 2, 3, 0];
    let utf8 = b"plain text, sent as bytes".to_vec();
    node.send_ok(
        "bin",
        vec![
            json!({"body_base64": engine.encode(&not_utf8), "queue_id": 0}),
            json!({"body_base64": engine.encode(&utf8), "queue_id": 0}),
            json!({"body_base64": "", "queue_id": 0}),
        ],
    )
    .await;
    let pull = node
        .pull_ok("/v1/topics/bin/queues/0/messages?offset=0")
        .await;
    assert_pull(&pull, "FOUND", 3, 0, 3);
    let decoded: Vec<Vec<u8>> = messages(&pull)
        .iter()
        .map(|m| {
            assert!(m.get("body").is_none(), "a binary body is not text: {m}");
            engine
                .decode(m["body_base64"].as_str().expect("body_base64 is a string"))
                .expect("body_base64 is base64")
        })
        .collect();
    assert_eq!(decoded, [not_utf8, utf8, Vec::new()]);
    node.stop().await;
}

/// `tags=TagA||TagB` returns only those tags and moves `next_offset` past the skipped
/// messages; a filter nothing matches is NO_MATCHED_MSG with `next_offset` past every
/// scanned message (so the consumer moves on), and from there NO_NEW_MSG; `*` and
/// spaces around `||` work as RocketMQ's subscription expressions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tag_filter_skips_and_moves_past_unmatched_messages() {
    let node = TestNode::start().await;
    let tags = ["TagA", "TagC", "TagB", "", "TagA", "TagC"];
    node.send_ok(
        "tagged",
        tags.iter()
            .enumerate()
            .map(|(i, tag)| {
                let mut message = json!({"body": format!("m{i}"), "queue_id": 0});
                if !tag.is_empty() {
                    message["tags"] = json!(tag);
                }
                message
            })
            .collect(),
    )
    .await;
    let bodies = |pull: &Value| -> Vec<String> {
        messages(pull)
            .iter()
            .map(|m| m["body"].as_str().expect("text body").to_string())
            .collect()
    };

    info!("--- TagA||TagB from 0");
    let pull = node
        .pull_ok("/v1/topics/tagged/queues/0/messages?offset=0&tags=TagA%7C%7CTagB")
        .await;
    assert_pull(&pull, "FOUND", 6, 0, 6);
    assert_eq!(bodies(&pull), ["m0", "m2", "m4"]);

    info!("--- TagA||TagB from 0, at most two: stops after the second match");
    let pull = node
        .pull_ok(
            "/v1/topics/tagged/queues/0/messages?offset=0&tags=TagA%20%7C%7C%20TagB&max_messages=2",
        )
        .await;
    assert_pull(&pull, "FOUND", 3, 0, 6);
    assert_eq!(bodies(&pull), ["m0", "m2"]);

    info!("--- * and no filter return everything");
    for uri in [
        "/v1/topics/tagged/queues/0/messages?offset=0&tags=*",
        "/v1/topics/tagged/queues/0/messages?offset=0",
    ] {
        let pull = node.pull_ok(uri).await;
        assert_pull(&pull, "FOUND", 6, 0, 6);
        assert_eq!(messages(&pull).len(), 6);
    }

    info!("--- TagZ matches nothing: NO_MATCHED_MSG, next_offset past the skipped ones");
    let pull = node
        .pull_ok("/v1/topics/tagged/queues/0/messages?offset=1&tags=TagZ")
        .await;
    assert_pull(&pull, "NO_MATCHED_MSG", 6, 0, 6);
    assert!(messages(&pull).is_empty(), "{pull}");

    info!("--- from that next_offset: NO_NEW_MSG");
    let pull = node
        .pull_ok("/v1/topics/tagged/queues/0/messages?offset=6&tags=TagZ")
        .await;
    assert_pull(&pull, "NO_NEW_MSG", 6, 0, 6);
    node.stop().await;
}

/// At the end of a queue a pull is NO_NEW_MSG with `next_offset` = the offset; above
/// it OFFSET_OVERFLOW with `next_offset` = `max_offset`. A queue that never had a
/// message answers NO_NEW_MSG at 0 and OFFSET_OVERFLOW above (max 0).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn end_of_queue_and_overflow() {
    let node = TestNode::start().await;
    node.send_ok(
        "ends",
        (0..3)
            .map(|i| json!({"body": format!("m{i}"), "queue_id": 0}))
            .collect(),
    )
    .await;

    info!("--- offset == max_offset");
    let pull = node
        .pull_ok("/v1/topics/ends/queues/0/messages?offset=3")
        .await;
    assert_pull(&pull, "NO_NEW_MSG", 3, 0, 3);
    assert!(messages(&pull).is_empty());

    info!("--- offset above max_offset");
    for offset in [4u64, 1000, u64::MAX] {
        let pull = node
            .pull_ok(&format!(
                "/v1/topics/ends/queues/0/messages?offset={offset}"
            ))
            .await;
        assert_pull(&pull, "OFFSET_OVERFLOW", 3, 0, 3);
        assert!(messages(&pull).is_empty());
    }

    info!("--- an empty queue of the same topic");
    let pull = node
        .pull_ok("/v1/topics/ends/queues/3/messages?offset=0")
        .await;
    assert_pull(&pull, "NO_NEW_MSG", 0, 0, 0);
    let pull = node
        .pull_ok("/v1/topics/ends/queues/3/messages?offset=5")
        .await;
    assert_pull(&pull, "OFFSET_OVERFLOW", 0, 0, 0);
    node.stop().await;
}

/// Refused pulls, each with the error shape: a missing or non-numeric offset, a
/// `max_messages` of 0 or above 1024, a `max_wait_ms` above 30000, an empty tag in
/// the filter, a queue id that is not a number (400); a queue id beyond the topic's read queues (404
/// QUEUE_NOT_FOUND); an unknown topic (404 TOPIC_NOT_FOUND); a write-only topic
/// (403 NO_PERMISSION).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_pulls_are_refused() {
    let node = TestNode::start().await;
    node.create_topic("q", json!({"read_queue_nums": 2, "write_queue_nums": 2}))
        .await;
    let base = "/v1/topics/q/queues/0/messages";
    let bad_queries = [
        ("offset is not a number", "?offset=abc"),
        ("offset is negative", "?offset=-1"),
        ("offset overflows u64", "?offset=18446744073709551616"),
        ("offset is missing", ""),
        (
            "offset is missing, other parameters present",
            "?max_messages=5",
        ),
        ("offset is empty", "?offset="),
        ("max_messages is 0", "?offset=0&max_messages=0"),
        ("max_messages is 1025", "?offset=0&max_messages=1025"),
        (
            "max_messages is not a number",
            "?offset=0&max_messages=many",
        ),
        ("max_wait_ms is above 30000", "?offset=0&max_wait_ms=30001"),
        ("max_wait_ms is not a number", "?offset=0&max_wait_ms=soon"),
        (
            "the filter has an empty tag",
            "?offset=0&tags=A%7C%7C%7C%7CB",
        ),
    ];
    for (case, query) in bad_queries {
        info!("--- {case}");
        let answer = node.get(&format!("{base}{query}")).await;
        assert_error(answer, StatusCode::BAD_REQUEST, "BAD_REQUEST");
    }
    info!("--- queue beyond the read queues");
    assert_error(
        node.get("/v1/topics/q/queues/2/messages?offset=0").await,
        StatusCode::NOT_FOUND,
        "QUEUE_NOT_FOUND",
    );
    for (case, uri) in [
        (
            "queue id not a number",
            "/v1/topics/q/queues/x/messages?offset=0",
        ),
        (
            "queue id negative",
            "/v1/topics/q/queues/-1/messages?offset=0",
        ),
    ] {
        info!("--- {case}");
        assert_error(node.get(uri).await, StatusCode::BAD_REQUEST, "BAD_REQUEST");
    }

    info!("--- unknown topic");
    assert_error(
        node.get("/v1/topics/nobody/queues/0/messages?offset=0")
            .await,
        StatusCode::NOT_FOUND,
        "TOPIC_NOT_FOUND",
    );

    info!("--- write-only topic (perm 2) refuses pulls; perm 6 allows them");
    node.create_topic("sink", json!({"perm": 2})).await;
    node.send_ok("sink", vec![json!({"body": "x", "queue_id": 0})])
        .await;
    assert_error(
        node.get("/v1/topics/sink/queues/0/messages?offset=0").await,
        StatusCode::FORBIDDEN,
        "NO_PERMISSION",
    );
    node.create_topic("sink", json!({"perm": 6})).await;
    let pull = node
        .pull_ok("/v1/topics/sink/queues/0/messages?offset=0")
        .await;
    assert_pull(&pull, "FOUND", 1, 0, 1);
    node.stop().await;
}

/// After retention deleted the oldest CommitLog file, a pull below the queue's new
/// `min_offset` is OFFSET_TOO_SMALL with `next_offset` = `min_offset` (where the
/// consumer should go on), and a pull from there is FOUND.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offset_below_retention_is_too_small() {
    let node = TestNode::start_with(|config| {
        // 64 KiB CommitLog files, expired as soon as a later file exists, checked often.
        config.storage.commit_log_file_size = ByteSize(64 << 10);
        config.storage.max_message_size = ByteSize(16 << 10);
        config.storage.file_reserved_time = HumanDuration(Duration::ZERO);
        config.storage.retention_interval = HumanDuration(Duration::from_millis(20));
    })
    .await;
    info!("--- about 150 KiB of messages: three CommitLog files");
    for i in 0..12 {
        node.send_ok(
            "old",
            vec![json!({"body": format!("{i:>12288}"), "queue_id": 0})],
        )
        .await;
    }

    info!("--- wait until retention moved the queue's minimum");
    let deadline = Instant::now() + Duration::from_secs(10);
    let min = loop {
        let pull = node
            .pull_ok("/v1/topics/old/queues/0/messages?offset=12")
            .await;
        let min = as_u64(&pull["min_offset"], "min_offset");
        if min > 0 {
            break min;
        }
        assert!(
            Instant::now() < deadline,
            "retention did not delete a file: {pull}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };

    info!("--- below min_offset {min}: OFFSET_TOO_SMALL");
    let pull = node
        .pull_ok("/v1/topics/old/queues/0/messages?offset=0")
        .await;
    assert_pull(&pull, "OFFSET_TOO_SMALL", min, min, 12);
    assert!(messages(&pull).is_empty(), "{pull}");

    info!("--- from min_offset: FOUND");
    let pull = node
        .pull_ok(&format!("/v1/topics/old/queues/0/messages?offset={min}"))
        .await;
    assert_eq!(pull["status"], "FOUND", "{pull}");
    assert_eq!(messages(&pull)[0]["queue_offset"], min, "{pull}");
    node.stop().await;
}

/// `Accept: application/vnd.broker.pull-v1` gets the binary form, which says what
/// the JSON answer says (every status, every message field, binary bodies); an
/// error is JSON whatever the request accepts; `*/*` and no `Accept` get JSON.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_pulls_say_what_json_says() {
    use axum::http::Method;
    use broker_proto::pull_binary;

    let node = TestNode::start().await;
    let raw = base64::engine::general_purpose::STANDARD.encode([0u8, 1, 2, 255]);
    node.send_ok(
        "feed",
        vec![
            json!({"body": "hello \"you\"", "tags": "TagA", "keys": ["k1"], "properties": {"k": "v"}, "queue_id": 0}),
            json!({"body_base64": raw, "queue_id": 0}),
            json!({"body": "ü", "queue_id": 0, "producer_id": "p-1", "sequence": 1}),
        ],
    )
    .await;
    let binary = [("accept", pull_binary::MEDIA_TYPE)];
    for uri in [
        "/v1/topics/feed/queues/0/messages?offset=0",
        "/v1/topics/feed/queues/0/messages?offset=1&max_messages=1",
        "/v1/topics/feed/queues/0/messages?offset=3",
        "/v1/topics/feed/queues/0/messages?offset=9",
        "/v1/topics/feed/queues/0/messages?offset=0&tags=TagZ",
    ] {
        info!("--- {uri}");
        let json = node.pull_ok(uri).await;
        let answer = node
            .call(Method::GET, uri, axum::body::Body::empty(), &binary)
            .await;
        assert_eq!(answer.status, StatusCode::OK);
        assert_eq!(
            answer.headers["content-type"],
            pull_binary::MEDIA_TYPE,
            "{uri}"
        );
        let decoded = pull_binary::decode(&answer.body).expect("a well-formed binary answer");
        assert_eq!(serde_json::to_value(decoded).expect("JSON"), json, "{uri}");
    }
    assert_eq!(
        messages(
            &node
                .pull_ok("/v1/topics/feed/queues/0/messages?offset=0")
                .await
        )
        .len(),
        3
    );

    info!("--- errors stay JSON");
    for uri in [
        "/v1/topics/nope/queues/0/messages?offset=0",
        "/v1/topics/feed/queues/0/messages?offset=0&max_messages=0",
    ] {
        let answer = node
            .call(Method::GET, uri, axum::body::Body::empty(), &binary)
            .await;
        assert!(answer.status.is_client_error(), "{uri}: {}", answer.status);
        assert!(answer.json()["code"].is_string(), "{uri}");
    }

    info!("--- */* and no Accept get JSON");
    for headers in [&[("accept", "*/*")][..], &[]] {
        let answer = node
            .call(
                Method::GET,
                "/v1/topics/feed/queues/0/messages?offset=0",
                axum::body::Body::empty(),
                headers,
            )
            .await;
        assert_eq!(messages(&answer.json()).len(), 3);
    }
    node.stop().await;
}
