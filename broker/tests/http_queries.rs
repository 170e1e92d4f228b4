//! Message queries through the router of a real single-node broker:
//! `GET /v1/messages/{msg_id}` and `GET /v1/topics/{topic}/messages?key=K&begin&end&max`.

use crate::common;

use std::collections::BTreeSet;

use axum::http::StatusCode;
use common::http::{as_array, as_u64, assert_error, assert_fields, TestNode, MESSAGE_FIELDS};
use serde_json::{json, Value};
use tracing::info;

/// The bodies of a `{"messages": […]}` answer, as a set (the order is not promised).
fn bodies(answer: &Value) -> BTreeSet<String> {
    as_array(&answer["messages"], "messages")
        .iter()
        .map(|m| {
            assert_fields(m, &MESSAGE_FIELDS, "a queried message");
            m["body"].as_str().expect("a text body").to_string()
        })
        .collect()
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(ToString::to_string).collect()
}

/// Every sent message is found by its id, as the same message object a pull returns;
/// an unknown id is MESSAGE_NOT_FOUND (404) and a malformed one BAD_REQUEST (400).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_by_id() {
    let node = TestNode::start().await;
    let sent = node
        .send_ok(
            "qid",
            vec![
                json!({"body": "one", "tags": "TagA", "keys": ["k1"], "properties": {"p": "1"}, "queue_id": 0}),
                json!({"body": "two", "queue_id": 0}),
            ],
        )
        .await;
    let pulled = node
        .pull_ok("/v1/topics/qid/queues/0/messages?offset=0")
        .await;

    for (result, pulled) in as_array(&sent["results"], "results")
        .iter()
        .zip(as_array(&pulled["messages"], "messages"))
    {
        let id = result["msg_id"].as_str().expect("msg_id is a string");
        info!("--- message {id}");
        let (status, message) = node.get(&format!("/v1/messages/{id}")).await;
        assert_eq!(status, StatusCode::OK, "{message}");
        assert_fields(&message, &MESSAGE_FIELDS, "a queried message");
        assert_eq!(&message, pulled, "the query answers what the pull returned");
    }

    info!("--- an id nobody stored");
    assert_error(
        node.get(&format!("/v1/messages/{}", "0".repeat(32))).await,
        StatusCode::NOT_FOUND,
        "MESSAGE_NOT_FOUND",
    );
    for bad in [
        "xyz".to_string(),
        "0".repeat(31),
        "0".repeat(33),
        "g".repeat(32),
        format!("{}%20", "0".repeat(29)),
    ] {
        info!("--- malformed id {bad:?}");
        assert_error(
            node.get(&format!("/v1/messages/{bad}")).await,
            StatusCode::BAD_REQUEST,
            "BAD_REQUEST",
        );
    }
    node.stop().await;
}

/// A key query returns the topic's messages carrying that key (not another topic's),
/// at most `max`, within `[begin, end]` of store time; none found is
/// MESSAGE_NOT_FOUND, also in an empty range (`begin` after `end`); a missing key,
/// a `max` of 0 or above 1024 are BAD_REQUEST; an unknown topic is TOPIC_NOT_FOUND.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_by_key() {
    let node = TestNode::start().await;
    let sent = node
        .send_ok(
            "qk",
            vec![
                json!({"body": "m0", "keys": ["order-1"]}),
                json!({"body": "m1", "keys": ["order-2", "shared"]}),
                json!({"body": "m2", "keys": ["shared"]}),
            ],
        )
        .await;
    node.send_ok(
        "other",
        vec![json!({"body": "elsewhere", "keys": ["shared"]})],
    )
    .await;
    let stored_at = as_u64(&sent["results"][0]["store_timestamp"], "store_timestamp");

    let found = |query: String| {
        let node = &node;
        async move {
            let (status, body) = node.get(&format!("/v1/topics/qk/messages?{query}")).await;
            assert_eq!(status, StatusCode::OK, "{query}: {body}");
            body
        }
    };
    info!("--- by key");
    assert_eq!(bodies(&found("key=order-1".into()).await), set(&["m0"]));
    assert_eq!(
        bodies(&found("key=shared".into()).await),
        set(&["m1", "m2"])
    );
    let one = found("key=shared&max=1".into()).await;
    assert_eq!(bodies(&one).len(), 1, "max=1: {one}");
    let message = &as_array(&one["messages"], "messages")[0];
    assert_eq!(message["topic"], "qk");
    assert!(
        as_array(&message["keys"], "keys").contains(&json!("shared")),
        "{message}"
    );

    info!("--- within a time range that holds them, and one that does not");
    let holding = format!("key=shared&begin={stored_at}&end={stored_at}");
    assert_eq!(bodies(&found(holding).await), set(&["m1", "m2"]));
    for query in [
        format!("key=shared&begin={}", stored_at + 1),
        format!("key=shared&end={}", stored_at - 1),
    ] {
        assert_error(
            node.get(&format!("/v1/topics/qk/messages?{query}")).await,
            StatusCode::NOT_FOUND,
            "MESSAGE_NOT_FOUND",
        );
    }

    for (case, query) in [
        ("a key nobody used", "key=none"),
        (
            "begin after end: an empty range",
            "key=shared&begin=10&end=5",
        ),
    ] {
        info!("--- {case}");
        assert_error(
            node.get(&format!("/v1/topics/qk/messages?{query}")).await,
            StatusCode::NOT_FOUND,
            "MESSAGE_NOT_FOUND",
        );
    }
    for (case, query) in [
        ("missing key", "begin=0".to_string()),
        ("max 0", "key=shared&max=0".to_string()),
        ("max 1025", "key=shared&max=1025".to_string()),
        ("begin not a number", "key=shared&begin=today".to_string()),
    ] {
        info!("--- {case}");
        assert_error(
            node.get(&format!("/v1/topics/qk/messages?{query}")).await,
            StatusCode::BAD_REQUEST,
            "BAD_REQUEST",
        );
    }
    info!("--- unknown topic");
    assert_error(
        node.get("/v1/topics/nobody/messages?key=shared").await,
        StatusCode::NOT_FOUND,
        "TOPIC_NOT_FOUND",
    );
    node.stop().await;
}
