//! A consumer group's retry and dead-letter topics under `auto_create_topics =
//! false`, through the router of a real single-node broker (issue 18, finding 9d):
//! the broker creates no topic by itself, its own internal ones included. A give-back
//! whose `%RETRY%{group}` (or `%DLQ%{group}`) topic does not exist answers 404
//! TOPIC_NOT_FOUND naming it and how to create it; an admin creates them with
//! `PUT /v1/topics/%RETRY%{group}` and `PUT /v1/topics/%DLQ%{group}`.

use crate::common;

use axum::http::{Method, StatusCode};
use common::http::{as_array, assert_error, encode, TestNode};
use serde_json::{json, Value};
use tracing::info;

async fn give_back(node: &TestNode, body: Value) -> (StatusCode, Value) {
    node.request(Method::POST, "/v1/groups/billing/retry", Some(body))
        .await
}

async fn topic_names(node: &TestNode) -> Vec<String> {
    let (status, body) = node.get("/v1/topics").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    as_array(&body["topics"], "topics")
        .iter()
        .map(|t| t["topic"].as_str().expect("a topic name").to_string())
        .collect()
}

/// With auto-creation off, a give-back to a group without a retry topic is 404
/// TOPIC_NOT_FOUND naming `%RETRY%billing` and creates nothing; a dead letter
/// likewise for `%DLQ%billing`. Once an admin created both, the same give-backs
/// are stored there. `%SCHEDULE%` stays the broker's alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn internal_topics_are_not_created_when_auto_create_is_off() {
    let node = TestNode::start_with(|config| config.auto_create_topics = false).await;
    node.create_topic(
        "orders",
        json!({"read_queue_nums": 1, "write_queue_nums": 1}),
    )
    .await;
    node.send_ok("orders", vec![json!({"body": "pay me", "queue_id": 0})])
        .await;
    let retry = json!({"topic": "orders", "queue_id": 0, "queue_offset": 0});
    let dead = json!({"topic": "orders", "queue_id": 0, "queue_offset": 0, "delay_level": -1});

    info!("--- a give-back with no retry topic: 404 naming it, nothing created");
    let (status, body) = give_back(&node, retry.clone()).await;
    assert_error(
        (status, body.clone()),
        StatusCode::NOT_FOUND,
        "TOPIC_NOT_FOUND",
    );
    let message = body["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("%RETRY%billing") && message.contains("PUT /v1/topics/"),
        "the message names the topic and how to create it: {body}"
    );
    info!("--- a dead letter with no dead-letter topic: the same");
    let (status, body) = give_back(&node, dead.clone()).await;
    assert_error(
        (status, body.clone()),
        StatusCode::NOT_FOUND,
        "TOPIC_NOT_FOUND",
    );
    assert!(
        body["message"]
            .as_str()
            .is_some_and(|m| m.contains("%DLQ%billing")),
        "{body}"
    );
    assert_eq!(
        topic_names(&node).await,
        vec!["orders"],
        "nothing was created"
    );

    info!("--- an admin creates the group's retry and dead-letter topics");
    for topic in ["%RETRY%billing", "%DLQ%billing"] {
        node.create_topic(
            &encode(topic),
            json!({"read_queue_nums": 1, "write_queue_nums": 1}),
        )
        .await;
    }
    let (status, body) = give_back(&node, retry).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["topic"], "%RETRY%billing", "{body}");
    let (status, body) = give_back(&node, dead).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["topic"], "%DLQ%billing", "{body}");
    let dead_letters = node
        .pull_ok(&format!(
            "/v1/topics/{}/queues/0/messages?offset=0",
            encode("%DLQ%billing")
        ))
        .await;
    assert_eq!(
        as_array(&dead_letters["messages"], "messages").len(),
        1,
        "{dead_letters}"
    );

    info!("--- the schedule topic is still not for anyone to create");
    let answer = node
        .request(
            Method::PUT,
            &format!("/v1/topics/{}", encode("%SCHEDULE%")),
            Some(json!({})),
        )
        .await;
    assert_error(answer, StatusCode::BAD_REQUEST, "BAD_REQUEST");
    node.stop().await;
}
