//! Caps on what one request can carry or make the broker keep, through the router of
//! a real single-node broker (issue 18, finding 2): a list over its cap is 400
//! BAD_REQUEST naming the cap, and the coordinator's tables (members of a consumer
//! group, consumer groups) refuse growth beyond theirs with 503 UNAVAILABLE naming
//! the cap, instead of growing with every hostile heartbeat.

use crate::common;

use axum::http::{Method, StatusCode};
use common::http::{as_array, assert_error, TestNode};
use serde_json::{json, Value};
use tracing::info;

/// A heartbeat body for `client` subscribed to `topics`, holding `owned`.
fn heartbeat(client: &str, topics: &[&str], owned: Vec<Value>) -> Value {
    json!({"client_id": client, "topics": topics, "owned": owned})
}

/// `owned` entries for queues 0..n of `topic` in broker group `group`.
fn owned(topic: &str, group: &str, n: u32) -> Vec<Value> {
    (0..n)
        .map(|queue_id| json!({"topic": topic, "group": group, "queue_id": queue_id, "offset": 1}))
        .collect()
}

async fn beat(node: &TestNode, group: &str, body: Value) -> (StatusCode, Value) {
    node.request(
        Method::POST,
        &format!("/v1/groups/{group}/heartbeat"),
        Some(body),
    )
    .await
}

/// Asserts an error answer of `status`/`code` whose message names `needle`.
#[track_caller]
fn assert_refused(answer: (StatusCode, Value), status: StatusCode, code: &str, needle: &str) {
    let body = answer.1.clone();
    assert_error(answer, status, code);
    let message = body["message"].as_str().unwrap_or_default();
    assert!(message.contains(needle), "message names `{needle}`: {body}");
}

/// The lists of a request are capped: a heartbeat's `owned` (the finding: 50k
/// entries per heartbeat grew the leader by hundreds of MB), its broker group names,
/// a topic's `groups`, a pull's tag filter and a message's sharding key. Each answer
/// is 400 BAD_REQUEST naming the cap, and nothing is kept: the member is not
/// registered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_lists_over_their_caps_are_bad_requests() {
    let node = TestNode::start().await;
    node.create_topic(
        "capped",
        json!({"read_queue_nums": 4, "write_queue_nums": 4}),
    )
    .await;

    info!("--- a heartbeat holding 5000 queues");
    let answer = beat(
        &node,
        "cg",
        heartbeat("c-1", &["capped"], owned("capped", "broker-a", 5000)),
    )
    .await;
    assert_refused(answer, StatusCode::BAD_REQUEST, "BAD_REQUEST", "4096");

    info!("--- a held queue whose broker group is not a valid name");
    let answer = beat(
        &node,
        "cg",
        heartbeat("c-1", &["capped"], owned("capped", "no such group!", 1)),
    )
    .await;
    assert_refused(answer, StatusCode::BAD_REQUEST, "BAD_REQUEST", "group");

    info!("--- nothing of the refused heartbeats was kept");
    let (status, body) = beat(&node, "cg", heartbeat("c-2", &["capped"], vec![])).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["members"], json!(["c-2"]), "{body}");

    info!("--- a topic for 300 broker groups");
    let groups: Vec<String> = (0..300).map(|i| format!("g-{i}")).collect();
    let answer = node
        .request(
            Method::PUT,
            "/v1/topics/wide",
            Some(json!({"read_queue_nums": 1, "write_queue_nums": 1, "groups": groups})),
        )
        .await;
    assert_refused(answer, StatusCode::BAD_REQUEST, "BAD_REQUEST", "64");

    info!("--- a pull filtering on 100 tags");
    let tags: Vec<String> = (0..100).map(|i| format!("T{i}")).collect();
    let uri = format!(
        "/v1/topics/capped/queues/0/messages?offset=0&tags={}",
        tags.join("%7C%7C")
    );
    assert_refused(
        node.get(&uri).await,
        StatusCode::BAD_REQUEST,
        "BAD_REQUEST",
        "64",
    );

    info!("--- a sharding key of 300 bytes");
    let answer = node
        .request(
            Method::POST,
            "/v1/topics/capped/messages",
            Some(json!({"messages": [{"body": "x", "sharding_key": "k".repeat(300)}]})),
        )
        .await;
    assert_refused(answer, StatusCode::BAD_REQUEST, "BAD_REQUEST", "255");
    node.stop().await;
}

/// A consumer group keeps at most 1024 members: the next new member is refused with
/// 503 UNAVAILABLE naming the cap (a member already in keeps beating), and a
/// coordinator keeps at most 1024 consumer groups: the next new group is refused
/// the same way while the others have live members.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_and_groups_beyond_their_caps_are_refused() {
    let node = TestNode::start().await;
    node.create_topic("m", json!({"read_queue_nums": 2, "write_queue_nums": 2}))
        .await;

    info!("--- 1024 members join one group");
    for i in 0..1024 {
        let (status, body) = beat(&node, "big", heartbeat(&format!("c-{i}"), &["m"], vec![])).await;
        assert_eq!(status, StatusCode::OK, "member {i}: {body}");
    }
    info!("--- the 1025th is refused; a member already in still beats");
    let answer = beat(&node, "big", heartbeat("c-extra", &["m"], vec![])).await;
    assert_refused(
        answer,
        StatusCode::SERVICE_UNAVAILABLE,
        "UNAVAILABLE",
        "1024",
    );
    let (status, body) = beat(&node, "big", heartbeat("c-7", &["m"], vec![])).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        as_array(&body["members"], "members").len(),
        1024,
        "no extra member"
    );

    info!("--- 1023 more groups, then one too many");
    for i in 1..1024 {
        let (status, body) = beat(&node, &format!("cg-{i}"), heartbeat("c", &["m"], vec![])).await;
        assert_eq!(status, StatusCode::OK, "group {i}: {body}");
    }
    let answer = beat(&node, "cg-extra", heartbeat("c", &["m"], vec![])).await;
    assert_refused(
        answer,
        StatusCode::SERVICE_UNAVAILABLE,
        "UNAVAILABLE",
        "1024",
    );
    node.stop().await;
}
