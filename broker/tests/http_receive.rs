//! Receive and ack (shared/API.md "Receive and ack") through the router of a real
//! single-node broker: leases hide a message from other receivers until
//! `invisible_until`, an unacked message comes back with `delivery_attempt` + 1,
//! acks answer `OK`/`EXPIRED`/`INVALID` by the lease they name, a change
//! replaces a lease (0 gives the message back), the last attempt goes to
//! `%DLQ%{group}`, `fifo` delivers a queue's messages in order one leased run at
//! a time, a receive waits for messages, and bad requests get a 400.

use crate::common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use axum::http::{Method, StatusCode};
use common::http::{as_array, as_u64, assert_error, assert_fields, encode, now_ms, TestNode};
use serde_json::{json, Value};

const GROUP: &str = "workers";

/// The fields a received message carries beyond a pulled one's.
const LEASE_FIELDS: [&str; 4] = [
    "receipt_handle",
    "delivery_attempt",
    "invisible_until",
    "broker_group",
];

async fn receive(node: &TestNode, topic: &str, body: Value) -> Vec<Value> {
    let uri = format!("/v1/groups/{GROUP}/topics/{topic}/receive");
    let (status, answer) = node.request(Method::POST, &uri, Some(body)).await;
    assert_eq!(status, StatusCode::OK, "receive: {answer}");
    as_array(&answer["messages"], "messages").clone()
}

async fn ack(node: &TestNode, handles: &[&str]) -> Vec<String> {
    let uri = format!("/v1/groups/{GROUP}/ack");
    let (status, answer) = node
        .request(
            Method::POST,
            &uri,
            Some(json!({ "receipt_handles": handles })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "ack: {answer}");
    let results = as_array(&answer["results"], "results");
    assert_eq!(results.len(), handles.len(), "one result per handle");
    results
        .iter()
        .zip(handles)
        .map(|(result, handle)| {
            assert_eq!(
                result["receipt_handle"], *handle,
                "results in request order"
            );
            result["status"].as_str().expect("a status").to_string()
        })
        .collect()
}

async fn change(node: &TestNode, handle: &str, invisible_ms: u64) -> (StatusCode, Value) {
    let uri = format!("/v1/groups/{GROUP}/change-invisible");
    node.request(
        Method::POST,
        &uri,
        Some(json!({ "receipt_handle": handle, "invisible_ms": invisible_ms })),
    )
    .await
}

fn handle(message: &Value) -> &str {
    message["receipt_handle"]
        .as_str()
        .expect("a receipt handle")
}

fn bodies(messages: &[Value]) -> BTreeSet<String> {
    messages
        .iter()
        .map(|m| m["body"].as_str().expect("a text body").to_string())
        .collect()
}

fn attempts(messages: &[Value]) -> BTreeSet<u64> {
    messages
        .iter()
        .map(|m| as_u64(&m["delivery_attempt"], "delivery_attempt"))
        .collect()
}

async fn send(node: &TestNode, topic: &str, n: usize) {
    let messages = (0..n).map(|i| json!({ "body": format!("m{i}") })).collect();
    node.send_ok(topic, messages).await;
}

/// Sleeps until `until_ms` (Unix ms) has passed.
async fn sleep_past(until_ms: u64) {
    let now = now_ms();
    if until_ms >= now {
        tokio::time::sleep(Duration::from_millis(until_ms - now + 20)).await;
    }
}

/// Messages from every queue, leased: nobody else gets them before
/// `invisible_until`; the unacked ones come back after it with attempt 2, and
/// acked ones never do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_hides_a_message_until_it_ends_and_an_ack_ends_it_for_good() {
    let node = TestNode::start().await;
    node.create_topic("jobs", json!({"read_queue_nums": 4, "write_queue_nums": 4}))
        .await;
    send(&node, "jobs", 10).await;

    let before = now_ms();
    let first = receive(
        &node,
        "jobs",
        json!({"max_messages": 16, "invisible_ms": 2000}),
    )
    .await;
    assert_eq!(first.len(), 10, "every queue's messages: {first:?}");
    let queues: BTreeSet<u64> = first
        .iter()
        .map(|m| as_u64(&m["queue_id"], "queue"))
        .collect();
    assert_eq!(queues.len(), 4, "from every queue");
    for message in &first {
        assert_fields(message, &common::http::MESSAGE_FIELDS, "a received message");
        assert_fields(message, &LEASE_FIELDS, "a received message");
        assert_eq!(message["delivery_attempt"], 1);
        let until = as_u64(&message["invisible_until"], "invisible_until");
        assert!(
            (before + 2000..=now_ms() + 2000).contains(&until),
            "invisible_until is the receive's time + invisible_ms: {until}"
        );
    }
    assert!(
        receive(&node, "jobs", json!({})).await.is_empty(),
        "nothing more to deliver while the leases run"
    );

    let (status, groups) = node.get("/v1/groups").await;
    assert_eq!(status, StatusCode::OK, "{groups}");
    let listed = as_array(&groups["groups"], "groups")
        .iter()
        .find(|g| g["group"] == GROUP)
        .unwrap_or_else(|| panic!("the receiving group is listed: {groups}"));
    assert_eq!(listed["leased"], 10, "{listed}");
    assert_eq!(listed["lag"], 10, "delivered and not acked: {listed}");
    assert_eq!(listed["queues"], 4, "{listed}");

    let (acked, kept): (Vec<&Value>, Vec<&Value>) =
        first.iter().partition(|m| m["body"].as_str() < Some("m5"));
    let handles: Vec<&str> = acked.iter().map(|m| handle(m)).collect();
    assert_eq!(ack(&node, &handles).await, vec!["OK"; 5]);
    assert_eq!(
        ack(&node, &handles).await,
        vec!["OK"; 5],
        "an ack repeated while its lease runs"
    );

    let until = first
        .iter()
        .map(|m| as_u64(&m["invisible_until"], "until"))
        .max()
        .expect("messages");
    sleep_past(until).await;
    let again = receive(
        &node,
        "jobs",
        json!({"max_messages": 16, "invisible_ms": 2000}),
    )
    .await;
    assert_eq!(
        bodies(&again),
        bodies(&kept.into_iter().cloned().collect::<Vec<_>>()),
        "the unacked ones, and only those"
    );
    assert_eq!(attempts(&again), BTreeSet::from([2]));
    let (_, groups) = node.get("/v1/groups").await;
    let listed = &as_array(&groups["groups"], "groups")[0];
    assert_eq!(
        (
            listed["leased"].clone(),
            listed["redelivered"].clone(),
            listed["lag"].clone()
        ),
        (json!(5), json!(5), json!(5)),
        "{listed}"
    );
    let handles: Vec<&str> = again.iter().map(handle).collect();
    assert_eq!(ack(&node, &handles).await, vec!["OK"; 5]);
    let until = as_u64(&again[0]["invisible_until"], "until");
    sleep_past(until).await;
    assert!(
        receive(&node, "jobs", json!({})).await.is_empty(),
        "acked messages are never delivered again"
    );
    node.stop().await;
}

/// EXPIRED after the lease ends (and after a later delivery replaced it);
/// INVALID for what is not one of the group's handles.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acks_answer_expired_and_invalid() {
    let node = TestNode::start().await;
    node.create_topic("acks", json!({"read_queue_nums": 1, "write_queue_nums": 1}))
        .await;
    send(&node, "acks", 1).await;
    let first = receive(&node, "acks", json!({"invisible_ms": 1000})).await;
    assert_eq!(first.len(), 1);
    let old = handle(&first[0]).to_string();
    sleep_past(as_u64(&first[0]["invisible_until"], "until")).await;
    assert_eq!(ack(&node, &[&old]).await, ["EXPIRED"], "the lease ran out");

    let second = receive(&node, "acks", json!({"invisible_ms": 30000})).await;
    assert_eq!(second.len(), 1);
    assert_eq!(second[0]["delivery_attempt"], 2);
    assert_eq!(
        ack(&node, &[&old]).await,
        ["EXPIRED"],
        "replaced by a later delivery"
    );
    let other_group = handle(&second[0]).replace(&format!(":{GROUP}"), ":others");
    let past_the_end = handle(&second[0]).replacen(":0:2:", ":7:2:", 1);
    assert_eq!(
        ack(&node, &["garbage", &other_group, &past_the_end]).await,
        ["INVALID", "INVALID", "INVALID"]
    );
    assert_eq!(ack(&node, &[handle(&second[0])]).await, ["OK"]);
    assert_eq!(node.metric("broker_lease_acked_total").await, 1.0);
    assert_eq!(node.metric("broker_lease_ack_expired_total").await, 2.0);
    assert_eq!(node.metric("broker_lease_redelivered_total").await, 1.0);
    node.stop().await;
}

/// A change answers a new handle (the old one is spent); 0 gives the message
/// back at once; an ended lease cannot change (409 EXPIRED).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_replaces_the_lease_and_zero_gives_the_message_back() {
    let node = TestNode::start().await;
    node.create_topic("slow", json!({"read_queue_nums": 1, "write_queue_nums": 1}))
        .await;
    send(&node, "slow", 1).await;
    let first = receive(&node, "slow", json!({"invisible_ms": 1000})).await;
    let old = handle(&first[0]).to_string();

    let (status, renewed) = change(&node, &old, 60_000).await;
    assert_eq!(status, StatusCode::OK, "{renewed}");
    let new = renewed["receipt_handle"]
        .as_str()
        .expect("a new handle")
        .to_string();
    assert_ne!(new, old);
    assert!(as_u64(&renewed["invisible_until"], "until") >= now_ms() + 55_000);
    sleep_past(as_u64(&first[0]["invisible_until"], "until")).await;
    assert!(
        receive(&node, "slow", json!({})).await.is_empty(),
        "the extended lease still runs"
    );
    assert_eq!(
        ack(&node, &[&old]).await,
        ["EXPIRED"],
        "the old handle is spent"
    );

    let (status, nacked) = change(&node, &new, 0).await;
    assert_eq!(status, StatusCode::OK, "{nacked}");
    let back = receive(&node, "slow", json!({})).await;
    assert_eq!(back.len(), 1, "given back: delivered at once");
    assert_eq!(back[0]["delivery_attempt"], 2);
    let nacked_handle = nacked["receipt_handle"].as_str().expect("handle");
    assert_error(
        change(&node, nacked_handle, 5000).await,
        StatusCode::CONFLICT,
        "EXPIRED",
    );
    assert_error(
        change(&node, handle(&back[0]), 500).await,
        StatusCode::BAD_REQUEST,
        "BAD_REQUEST",
    );
    assert_error(
        change(&node, "not-a-handle", 5000).await,
        StatusCode::NOT_FOUND,
        "MESSAGE_NOT_FOUND",
    );
    let other_group = handle(&back[0]).replace(&format!(":{GROUP}"), ":others");
    assert_error(
        change(&node, &other_group, 5000).await,
        StatusCode::NOT_FOUND,
        "MESSAGE_NOT_FOUND",
    );
    assert_eq!(node.metric("broker_lease_nacked_total").await, 1.0);
    node.stop().await;
}

/// After `consumer.max_delivery_attempts` deliveries without an ack the message
/// goes to `%DLQ%{group}`, with where it came from and its deliveries, and is
/// not delivered again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_last_attempt_goes_to_the_dead_letter_topic() {
    let node = TestNode::start_with(|config| config.consumer.max_delivery_attempts = 3).await;
    node.create_topic(
        "poison",
        json!({"read_queue_nums": 1, "write_queue_nums": 1}),
    )
    .await;
    send(&node, "poison", 1).await;
    for attempt in 1..=3 {
        let got = receive(&node, "poison", json!({})).await;
        assert_eq!(got.len(), 1, "delivery {attempt}");
        assert_eq!(got[0]["delivery_attempt"], attempt);
        let (status, body) = change(&node, handle(&got[0]), 0).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    assert!(
        receive(&node, "poison", json!({})).await.is_empty(),
        "dead-lettered, not delivered a fourth time"
    );
    let dlq = encode(&format!("%DLQ%{GROUP}"));
    let pulled = node
        .pull_ok(&format!("/v1/topics/{dlq}/queues/0/messages?offset=0"))
        .await;
    let messages = as_array(&pulled["messages"], "messages");
    assert_eq!(messages.len(), 1, "{pulled}");
    let properties = &messages[0]["properties"];
    assert_eq!(messages[0]["body"], "m0");
    assert_eq!(properties["DELIVERY_ATTEMPTS"], "3");
    assert_eq!(properties["ORIGIN_TOPIC"], "poison");
    assert_eq!(properties["ORIGIN_QUEUE_ID"], "0");
    assert_eq!(properties["ORIGIN_QUEUE_OFFSET"], "0");
    assert_eq!(properties["CONSUMER_GROUP"], GROUP);
    assert_eq!(node.metric("broker_lease_dead_lettered_total").await, 1.0);
    node.stop().await;
}

/// With topics created only by admins, a dead letter waits for its topic: not
/// delivered again, not lost, and moved once an admin creates the topic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_waits_for_its_topic_when_topics_are_not_created_by_use() {
    let node = TestNode::start_with(|config| {
        config.auto_create_topics = false;
        config.consumer.max_delivery_attempts = 1;
    })
    .await;
    node.create_topic(
        "strict",
        json!({"read_queue_nums": 1, "write_queue_nums": 1}),
    )
    .await;
    send(&node, "strict", 1).await;
    let got = receive(&node, "strict", json!({})).await;
    let (status, body) = change(&node, handle(&got[0]), 0).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(
        receive(&node, "strict", json!({})).await.is_empty(),
        "its attempts are used up: not delivered again"
    );
    let dlq = format!("%DLQ%{GROUP}");
    node.create_topic(
        &encode(&dlq),
        json!({"read_queue_nums": 1, "write_queue_nums": 1}),
    )
    .await;
    assert!(receive(&node, "strict", json!({})).await.is_empty());
    let pulled = node
        .pull_ok(&format!(
            "/v1/topics/{}/queues/0/messages?offset=0",
            encode(&dlq)
        ))
        .await;
    let messages = as_array(&pulled["messages"], "messages");
    assert_eq!(messages.len(), 1, "moved once the topic exists: {pulled}");
    assert_eq!(messages[0]["properties"]["DELIVERY_ATTEMPTS"], "1");
    node.stop().await;
}

/// `fifo`: a run of consecutive messages from the first un-acked one, and
/// nothing more of the queue while any of the run is leased.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifo_delivers_a_queue_in_order_one_leased_run_at_a_time() {
    let node = TestNode::start().await;
    node.create_topic(
        "ordered",
        json!({"read_queue_nums": 1, "write_queue_nums": 1}),
    )
    .await;
    send(&node, "ordered", 5).await;
    let fifo = |n| json!({"max_messages": n, "fifo": true, "invisible_ms": 30000});
    let offsets = |messages: &[Value]| -> Vec<u64> {
        messages
            .iter()
            .map(|m| as_u64(&m["queue_offset"], "offset"))
            .collect()
    };
    let run = receive(&node, "ordered", fifo(2)).await;
    assert_eq!(offsets(&run), [0, 1]);
    assert!(
        receive(&node, "ordered", fifo(2)).await.is_empty(),
        "leased"
    );
    assert_eq!(ack(&node, &[handle(&run[0])]).await, ["OK"]);
    assert!(
        receive(&node, "ordered", fifo(2)).await.is_empty(),
        "offset 1 is still leased"
    );
    let (status, body) = change(&node, handle(&run[1]), 0).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let next = receive(&node, "ordered", fifo(3)).await;
    assert_eq!(
        offsets(&next),
        [1, 2, 3],
        "from the first un-acked one, in order"
    );
    assert_eq!(
        next.iter()
            .map(|m| as_u64(&m["delivery_attempt"], "attempt"))
            .collect::<Vec<_>>(),
        [2, 1, 1]
    );
    node.stop().await;
}

/// Messages a tag filter leaves out are consumed for the group: never
/// delivered to it, even by a receive without the filter.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tag_filter_consumes_what_it_leaves_out() {
    let node = TestNode::start().await;
    node.create_topic(
        "tagged",
        json!({"read_queue_nums": 1, "write_queue_nums": 1}),
    )
    .await;
    node.send_ok(
        "tagged",
        vec![
            json!({"body": "a1", "tags": "A"}),
            json!({"body": "b1", "tags": "B"}),
            json!({"body": "a2", "tags": "A"}),
        ],
    )
    .await;
    let got = receive(&node, "tagged", json!({"tags": "A", "max_messages": 10})).await;
    assert_eq!(bodies(&got), BTreeSet::from(["a1".into(), "a2".into()]));
    assert!(receive(&node, "tagged", json!({"max_messages": 10}))
        .await
        .is_empty());
    node.stop().await;
}

/// A receive with nothing to deliver waits, and answers as soon as a message
/// arrives; empty only once its wait is over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receive_waits_for_messages() {
    let node = TestNode::start().await;
    node.create_topic("idle", json!({"read_queue_nums": 2, "write_queue_nums": 2}))
        .await;
    let started = Instant::now();
    assert!(receive(&node, "idle", json!({"max_wait_ms": 600}))
        .await
        .is_empty());
    assert!(
        started.elapsed() >= Duration::from_millis(600),
        "empty only once the wait is over"
    );

    let sender = {
        let router = node.router.clone();
        tokio::spawn(async move {
            use tower::ServiceExt;
            tokio::time::sleep(Duration::from_millis(300)).await;
            let request = axum::http::Request::builder()
                .method(Method::POST)
                .uri("/v1/topics/idle/messages")
                .header("content-type", "application/json")
                .header(
                    "authorization",
                    format!("Bearer {}", broker::config::TEST_ADMIN_TOKEN),
                )
                .body(axum::body::Body::from(
                    json!({"messages": [{"body": "late"}]}).to_string(),
                ))
                .expect("a request");
            let response = router.oneshot(request).await.expect("infallible");
            assert_eq!(response.status(), StatusCode::OK);
        })
    };
    let started = Instant::now();
    let got = receive(&node, "idle", json!({"max_wait_ms": 20000})).await;
    let waited = started.elapsed();
    assert_eq!(bodies(&got), BTreeSet::from(["late".into()]));
    assert!(
        waited < Duration::from_secs(10),
        "answered when the message arrived, not at the deadline ({waited:?})"
    );
    sender.await.expect("the sender");
    node.stop().await;
}

/// A held receive delivers a message whose lease ends while it waits, soon
/// after the end (nothing else wakes it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_receive_delivers_a_message_whose_lease_ends() {
    let node = TestNode::start().await;
    node.create_topic(
        "ending",
        json!({"read_queue_nums": 1, "write_queue_nums": 1}),
    )
    .await;
    send(&node, "ending", 1).await;
    let first = receive(&node, "ending", json!({"invisible_ms": 1500})).await;
    let until = as_u64(&first[0]["invisible_until"], "until");
    let again = receive(&node, "ending", json!({"max_wait_ms": 10000})).await;
    let answered = now_ms();
    assert_eq!(again.len(), 1, "delivered again within the wait");
    assert_eq!(again[0]["delivery_attempt"], 2);
    assert!(answered + 20 >= until, "not before the lease ended");
    assert!(
        answered < until + 5000,
        "soon after it ended, not at the wait's end ({} ms after)",
        answered - until
    );
    node.stop().await;
}

/// Concurrent receives share the queues without delivering a message twice
/// (each round plans a queue alone) and without blocking one another.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_receives_split_the_messages() {
    let node = std::sync::Arc::new(TestNode::start().await);
    node.create_topic(
        "shared",
        json!({"read_queue_nums": 2, "write_queue_nums": 2}),
    )
    .await;
    send(&node, "shared", 200).await;
    let receivers = (0..8).map(|_| {
        let node = std::sync::Arc::clone(&node);
        tokio::spawn(async move {
            let mut got = Vec::new();
            loop {
                let batch = receive(&node, "shared", json!({"max_messages": 7})).await;
                if batch.is_empty() {
                    return got;
                }
                got.extend(batch);
            }
        })
    });
    let all = tokio::time::timeout(
        Duration::from_secs(60),
        futures::future::join_all(receivers),
    )
    .await
    .expect("the receives finish (none blocks another)");
    let mut seen = BTreeSet::new();
    for got in all {
        for message in got.expect("a receiver") {
            let text = message["body"].as_str().expect("a body").to_string();
            assert!(seen.insert(text.clone()), "{text} delivered twice");
        }
    }
    // A receiver stops at its first empty answer, which may come while the
    // others' rounds hold the queues: whatever is left is still there.
    let rest = receive(&node, "shared", json!({"max_messages": 256})).await;
    for message in &rest {
        let text = message["body"].as_str().expect("a body").to_string();
        assert!(seen.insert(text.clone()), "{text} delivered twice");
    }
    assert_eq!(seen.len(), 200, "every message once");
    if let Ok(node) = std::sync::Arc::try_unwrap(node) {
        node.stop().await;
    }
}

/// Unknown topics are 404 (receives never create topics); bounds are 400.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_receives_are_refused() {
    let node = TestNode::start().await;
    let uri = |topic: &str| format!("/v1/groups/{GROUP}/topics/{topic}/receive");
    assert_error(
        node.request(Method::POST, &uri("nowhere"), Some(json!({})))
            .await,
        StatusCode::NOT_FOUND,
        "TOPIC_NOT_FOUND",
    );
    let (status, topics) = node.get("/v1/topics").await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        !topics.to_string().contains("nowhere"),
        "a receive created no topic: {topics}"
    );
    node.create_topic("bounded", json!({})).await;
    for body in [
        json!({"max_messages": 0}),
        json!({"max_messages": 257}),
        json!({"invisible_ms": 999}),
        json!({"invisible_ms": 43_200_001u64}),
        json!({"max_wait_ms": 30_001}),
        json!({"fifo": "yes"}),
        json!({"unknown": 1}),
        json!([]),
    ] {
        assert_error(
            node.request(Method::POST, &uri("bounded"), Some(body.clone()))
                .await,
            StatusCode::BAD_REQUEST,
            "BAD_REQUEST",
        );
    }
    let long_group = "g".repeat(123);
    assert_error(
        node.request(
            Method::POST,
            &format!("/v1/groups/{long_group}/topics/bounded/receive"),
            Some(json!({})),
        )
        .await,
        StatusCode::BAD_REQUEST,
        "BAD_REQUEST",
    );
    let ack_uri = format!("/v1/groups/{GROUP}/ack");
    let too_many: Vec<String> = (0..1025).map(|i| i.to_string()).collect();
    for body in [
        json!({"receipt_handles": []}),
        json!({"receipt_handles": too_many}),
        json!({"receipt_handles": [""]}),
        json!({"receipt_handles": ["x".repeat(513)]}),
    ] {
        assert_error(
            node.request(Method::POST, &ack_uri, Some(body)).await,
            StatusCode::BAD_REQUEST,
            "BAD_REQUEST",
        );
    }
    node.stop().await;
}
