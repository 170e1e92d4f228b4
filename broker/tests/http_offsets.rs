//! Consumer group offsets through the router of a real single-node broker:
//! `PUT /v1/groups/{group}/offsets/{topic}/{queue_id}` (commit, reset with `force`)
//! and `GET /v1/groups/{group}/offsets?topic=T` (offsets with max offset and lag).

use crate::common;

use axum::http::{Method, StatusCode};
use common::http::{as_array, assert_error, assert_fields, TestNode};
use serde_json::{json, Value};
use tracing::info;

/// Commits `offset` (with `force` when given); expects 200 and returns the answer.
async fn commit(node: &TestNode, group: &str, topic: &str, queue: u32, body: Value) -> Value {
    let uri = format!("/v1/groups/{group}/offsets/{topic}/{queue}");
    let (status, answer) = node.request(Method::PUT, &uri, Some(body)).await;
    assert_eq!(status, StatusCode::OK, "commit to {uri}: {answer}");
    answer
}

/// `GET /v1/groups/{group}/offsets{query}` as (topic, queue_id, offset, max_offset,
/// lag) rows, sorted.
async fn offsets(node: &TestNode, group: &str, query: &str) -> Vec<(String, u64, u64, u64, u64)> {
    let (status, body) = node
        .get(&format!("/v1/groups/{group}/offsets{query}"))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let mut rows: Vec<_> = as_array(&body["offsets"], "offsets")
        .iter()
        .map(|o| {
            assert_fields(
                o,
                &["topic", "queue_id", "offset", "max_offset", "lag"],
                "a group offset",
            );
            let n = |field: &str| o[field].as_u64().expect("an unsigned integer");
            (
                o["topic"].as_str().expect("a topic").to_string(),
                n("queue_id"),
                n("offset"),
                n("max_offset"),
                n("lag"),
            )
        })
        .collect();
    rows.sort();
    rows
}

fn row(topic: &str, queue: u64, offset: u64, max: u64, lag: u64) -> (String, u64, u64, u64, u64) {
    (topic.to_string(), queue, offset, max, lag)
}

/// A commit stores the offset and answers it; a lower commit is ignored (the answer
/// says the offset kept) unless `force` resets it; the group's offsets show each
/// committed queue with its max offset and lag (max - offset), filtered by `topic`,
/// and the lag grows as messages arrive. Other groups see none of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commit_ignores_lower_offsets_unless_forced_and_reports_lag() {
    let node = TestNode::start().await;
    info!("--- five messages in t/0, two in t/1, one in u/0");
    let to = |queue: u32, n: usize| -> Vec<Value> {
        (0..n)
            .map(|i| json!({"body": format!("m{i}"), "queue_id": queue}))
            .collect()
    };
    node.send_ok("t", to(0, 5)).await;
    node.send_ok("t", to(1, 2)).await;
    node.send_ok("u", to(0, 1)).await;
    assert!(
        offsets(&node, "g1", "").await.is_empty(),
        "nothing committed yet"
    );

    info!("--- commit 3 on t/0");
    let answer = commit(&node, "g1", "t", 0, json!({"offset": 3})).await;
    assert_eq!(answer["offset"], 3, "{answer}");
    assert_eq!(
        offsets(&node, "g1", "?topic=t").await,
        [row("t", 0, 3, 5, 2)]
    );

    info!("--- commit 1: lower, ignored");
    let answer = commit(&node, "g1", "t", 0, json!({"offset": 1})).await;
    assert_eq!(answer["offset"], 3, "the kept offset: {answer}");
    assert_eq!(
        offsets(&node, "g1", "?topic=t").await,
        [row("t", 0, 3, 5, 2)]
    );

    info!("--- commit 1 with force: a reset");
    let answer = commit(&node, "g1", "t", 0, json!({"offset": 1, "force": true})).await;
    assert_eq!(answer["offset"], 1, "{answer}");
    assert_eq!(
        offsets(&node, "g1", "?topic=t").await,
        [row("t", 0, 1, 5, 4)]
    );

    info!("--- commit up to the max offset, other queues and topics");
    commit(&node, "g1", "t", 0, json!({"offset": 5, "force": false})).await;
    commit(&node, "g1", "t", 1, json!({"offset": 0})).await;
    commit(&node, "g1", "u", 0, json!({"offset": 1})).await;
    assert_eq!(
        offsets(&node, "g1", "").await,
        [
            row("t", 0, 5, 5, 0),
            row("t", 1, 0, 2, 2),
            row("u", 0, 1, 1, 0)
        ]
    );
    assert_eq!(
        offsets(&node, "g1", "?topic=u").await,
        [row("u", 0, 1, 1, 0)]
    );
    assert!(offsets(&node, "g1", "?topic=nobody").await.is_empty());

    info!("--- three more messages in t/0: the lag follows");
    node.send_ok("t", to(0, 3)).await;
    assert_eq!(
        offsets(&node, "g1", "?topic=t").await,
        [row("t", 0, 5, 8, 3), row("t", 1, 0, 2, 2)]
    );

    info!("--- another group has its own (no) offsets");
    assert!(offsets(&node, "g2", "").await.is_empty());
    node.stop().await;
}

/// Refused commits and queries, each with the error shape: a queue id that is not a
/// number, malformed JSON, an empty body, a missing or negative offset, unknown
/// fields and a bad group name are BAD_REQUEST; an offset beyond the queue's max is
/// CONFLICT (well formed, refused by the queue's state); a queue beyond the topic's
/// is QUEUE_NOT_FOUND and an unknown topic TOPIC_NOT_FOUND. Nothing was committed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_commits_are_refused() {
    let node = TestNode::start().await;
    node.send_ok(
        "t",
        (0..2)
            .map(|i| json!({"body": format!("m{i}"), "queue_id": 0}))
            .collect(),
    )
    .await;
    let uri = "/v1/groups/g/offsets/t/0";

    info!("--- beyond the queue's max offset");
    let answer = node
        .request(Method::PUT, uri, Some(json!({"offset": 3})))
        .await;
    assert_error(answer, StatusCode::CONFLICT, "CONFLICT");
    for (case, body) in [
        ("missing offset", json!({})),
        ("negative offset", json!({"offset": -1})),
        ("offset of the wrong type", json!({"offset": "2"})),
        ("unknown field", json!({"offset": 1, "reset": true})),
    ] {
        info!("--- {case}");
        let answer = node.request(Method::PUT, uri, Some(body)).await;
        assert_error(answer, StatusCode::BAD_REQUEST, "BAD_REQUEST");
    }
    for (case, body) in [
        ("malformed JSON", r#"{"offset": 1"#),
        ("empty body", ""),
        ("not JSON", "offset=1"),
    ] {
        info!("--- {case}");
        let answer = node.request_raw(Method::PUT, uri, body).await;
        assert_error(answer, StatusCode::BAD_REQUEST, "BAD_REQUEST");
    }
    info!("--- queue beyond the topic's");
    let answer = node
        .request(
            Method::PUT,
            "/v1/groups/g/offsets/t/4",
            Some(json!({"offset": 0})),
        )
        .await;
    assert_error(answer, StatusCode::NOT_FOUND, "QUEUE_NOT_FOUND");
    for (case, uri) in [
        ("queue id not a number", "/v1/groups/g/offsets/t/zero"),
        ("bad group name", "/v1/groups/g.1/offsets/t/0"),
    ] {
        info!("--- {case}");
        let answer = node
            .request(Method::PUT, uri, Some(json!({"offset": 0})))
            .await;
        assert_error(answer, StatusCode::BAD_REQUEST, "BAD_REQUEST");
    }
    info!("--- an empty queue of the topic takes offset 0 but not 1");
    let answer = node
        .request(
            Method::PUT,
            "/v1/groups/g/offsets/t/3",
            Some(json!({"offset": 1})),
        )
        .await;
    assert_error(answer, StatusCode::CONFLICT, "CONFLICT");

    info!("--- unknown topic");
    let answer = node
        .request(
            Method::PUT,
            "/v1/groups/g/offsets/nobody/0",
            Some(json!({"offset": 0})),
        )
        .await;
    assert_error(answer, StatusCode::NOT_FOUND, "TOPIC_NOT_FOUND");

    info!("--- a bad group name in the offsets query");
    assert_error(
        node.get("/v1/groups/g.1/offsets").await,
        StatusCode::BAD_REQUEST,
        "BAD_REQUEST",
    );
    assert!(
        offsets(&node, "g", "").await.is_empty(),
        "nothing was committed"
    );
    node.stop().await;
}
