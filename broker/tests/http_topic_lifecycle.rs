//! A topic's end and its quotas (issue "Hostile clients and full disks", findings 3
//! and 4), through the router of a real single-node broker:
//!
//! * `DELETE /v1/topics/{t}` takes the topic's data with it: a topic created again
//!   under the name (here by a send) starts empty at offset 0, no query answers an
//!   old message, and the consumer offsets are gone. On `main` before this, queue 0
//!   answered the message sent before the delete, then the new one.
//! * `[limits] max_topics` and `max_queues_per_topic` refuse creations — by `PUT`
//!   and by a first send — with 400, storing nothing.

use crate::common;

use axum::http::{Method, StatusCode};
use common::http::{as_array, as_u64, assert_error, TestNode};
use serde_json::json;
use tracing::info;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_topic_comes_back_empty_at_offset_zero() {
    let node = TestNode::start().await;
    node.create_topic(
        "orders",
        json!({"read_queue_nums": 2, "write_queue_nums": 2}),
    )
    .await;
    let sent = node
        .send_ok(
            "orders",
            (0..3)
                .map(|i| json!({"body": format!("old-{i}"), "queue_id": 0, "keys": ["k-old"]}))
                .collect(),
        )
        .await;
    let old_id = sent["results"][0]["msg_id"]
        .as_str()
        .expect("a msg_id")
        .to_string();
    let (status, body) = node
        .request(
            Method::PUT,
            "/v1/groups/billing/offsets/orders/0",
            Some(json!({"offset": 3})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");

    info!("--- delete, then a send creates the topic again (auto-creation)");
    let (status, body) = node
        .request(Method::DELETE, "/v1/topics/orders", None)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    node.send_ok(
        "orders",
        vec![json!({"body": "new", "queue_id": 0, "keys": ["k-new"]})],
    )
    .await;

    let pulled = node
        .pull_ok("/v1/topics/orders/queues/0/messages?offset=0")
        .await;
    let messages = as_array(&pulled["messages"], "messages");
    let bodies: Vec<&str> = messages
        .iter()
        .map(|m| m["body"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(bodies, ["new"], "queue 0 of the new topic: {pulled}");
    assert_eq!(as_u64(&messages[0]["queue_offset"], "queue_offset"), 0);
    assert_eq!(as_u64(&pulled["min_offset"], "min_offset"), 0);
    assert_eq!(as_u64(&pulled["max_offset"], "max_offset"), 1);

    info!("--- a consumer of the old topic, still at offset 3, is told it overflows");
    let stale = node
        .pull_ok("/v1/topics/orders/queues/0/messages?offset=3")
        .await;
    assert_eq!(stale["status"], "OFFSET_OVERFLOW", "{stale}");
    assert_eq!(as_u64(&stale["max_offset"], "max_offset"), 1, "{stale}");

    info!("--- no query answers an old message");
    assert_error(
        node.get(&format!("/v1/messages/{old_id}")).await,
        StatusCode::NOT_FOUND,
        "MESSAGE_NOT_FOUND",
    );
    assert_error(
        node.get("/v1/topics/orders/messages?key=k-old").await,
        StatusCode::NOT_FOUND,
        "MESSAGE_NOT_FOUND",
    );
    let (status, by_key) = node.get("/v1/topics/orders/messages?key=k-new").await;
    assert_eq!(status, StatusCode::OK, "{by_key}");
    assert_eq!(
        as_array(&by_key["messages"], "messages").len(),
        1,
        "{by_key}"
    );

    info!("--- the group's offsets went with the topic");
    let (status, offsets) = node.get("/v1/groups/billing/offsets?topic=orders").await;
    assert_eq!(status, StatusCode::OK, "{offsets}");
    assert!(
        as_array(&offsets["offsets"], "offsets")
            .iter()
            .all(|o| o["offset"] == 0),
        "a committed offset outlived its topic: {offsets}"
    );
    node.stop().await;
}

/// A poll held on an empty queue of a topic that is then deleted answers
/// TOPIC_NOT_FOUND at once, not at its deadline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deletion_answers_the_polls_held_on_its_topic() {
    let node = std::sync::Arc::new(TestNode::start().await);
    node.create_topic("idle", json!({"read_queue_nums": 1, "write_queue_nums": 1}))
        .await;
    let poller = std::sync::Arc::clone(&node);
    let started = std::time::Instant::now();
    let poll = tokio::spawn(async move {
        poller
            .get("/v1/topics/idle/queues/0/messages?offset=0&max_wait_ms=20000")
            .await
    });
    // Let the poll be held.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let (status, body) = node.request(Method::DELETE, "/v1/topics/idle", None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let answer = tokio::time::timeout(std::time::Duration::from_secs(10), poll)
        .await
        .expect("the held poll answered well before its 20 s deadline")
        .expect("the poll task");
    info!(took = ?started.elapsed(), "the held poll answered");
    assert_error(answer, StatusCode::NOT_FOUND, "TOPIC_NOT_FOUND");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topic_quotas_refuse_creations_and_store_nothing() {
    let node = TestNode::start_with(|config| {
        config.limits.max_topics = 3;
        config.limits.max_queues_per_topic = 8;
    })
    .await;
    for topic in ["a", "b", "c"] {
        node.create_topic(topic, json!({})).await;
    }

    info!("--- a fourth topic, by PUT or by a first send, is refused");
    let (status, body) = node
        .request(Method::PUT, "/v1/topics/d", Some(json!({})))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["code"], "BAD_REQUEST", "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap_or_default()
            .contains("max_topics"),
        "the error names the limit: {body}"
    );
    let (status, body) = node
        .request(
            Method::POST,
            "/v1/topics/e/messages",
            Some(json!({"messages": [{"body": "x"}]})),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    for topic in ["d", "e"] {
        assert_error(
            node.get(&format!("/v1/topics/{topic}")).await,
            StatusCode::NOT_FOUND,
            "TOPIC_NOT_FOUND",
        );
    }
    let (_, listing) = node.get("/v1/topics").await;
    assert_eq!(as_array(&listing["topics"], "topics").len(), 3, "{listing}");

    info!("--- existing topics still take updates and sends");
    node.create_topic("a", json!({"write_queue_nums": 2})).await;
    node.send_ok("b", vec![json!({"body": "fine"})]).await;

    info!("--- queues above max_queues_per_topic are refused");
    let (status, body) = node
        .request(
            Method::PUT,
            "/v1/topics/a",
            Some(json!({"read_queue_nums": 9, "write_queue_nums": 9})),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap_or_default()
            .contains("max_queues_per_topic"),
        "{body}"
    );

    info!("--- a deletion makes room");
    let (status, body) = node.request(Method::DELETE, "/v1/topics/c", None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    node.create_topic("d", json!({})).await;
    node.stop().await;
}
