//! Adding a node as an asynchronous operation, through the router of a real
//! single-node broker (issue 18, finding 9b): `POST /v1/cluster/groups/{g}/nodes`
//! used to hold the request up to `control.join_timeout` (300 s) and leave the
//! learner behind when it timed out. Now it answers 202 with the operation's
//! status at once, `GET /v1/cluster/groups/{g}/nodes/{id}` reports its progress,
//! and a join that does not catch up in time removes its learner.

use crate::common;

use std::time::{Duration, Instant};

use axum::http::{Method, StatusCode};
use broker::units::HumanDuration;
use common::http::{as_array, assert_error, TestNode};
use serde_json::{json, Value};
use tracing::info;

/// How long the test waits for the operation to end (the join timeout is 1 s).
const PATIENCE: Duration = Duration::from_secs(30);

/// A base URL where nothing listens: a port bound and released.
async fn dead_url() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("binding a local port");
    let addr = listener
        .local_addr()
        .expect("a bound listener has an address");
    drop(listener);
    format!("http://{addr}")
}

async fn member_ids(node: &TestNode) -> Vec<u64> {
    let (status, body) = node.get("/v1/cluster").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let group = as_array(&body["groups"], "groups")
        .iter()
        .find(|g| g["group"] == "broker-a")
        .unwrap_or_else(|| panic!("broker-a is listed: {body}"))
        .clone();
    as_array(&group["nodes"], "nodes")
        .iter()
        .map(|n| n["id"].as_u64().expect("a node id"))
        .collect()
}

/// The add answers 202 with the operation (node, address, a running state) without
/// waiting for the node; a repeated add of the same node answers the same
/// operation; polling shows it fail once the join timeout passed, with a message
/// saying the learner was removed, and the group no longer lists the learner.
/// The same id at another address is refused while the operation runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn add_node_answers_202_and_removes_a_learner_that_never_catches_up() {
    let node = TestNode::start_with(|config| {
        config.control.join_timeout = HumanDuration(Duration::from_secs(1));
    })
    .await;
    let address = dead_url().await;
    let add = json!({"node_id": 7, "address": address});
    let path = "/v1/cluster/groups/broker-a/nodes";

    info!("--- add node 7 at an address where nothing listens");
    let (status, started) = node.request(Method::POST, path, Some(add.clone())).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{started}");
    assert_eq!(started["node_id"], 7, "{started}");
    assert_eq!(started["address"], address.as_str(), "{started}");
    assert_eq!(started["group"], "broker-a", "{started}");
    let running = started["state"].as_str().unwrap_or_default().to_string();
    assert!(
        !["DONE", "FAILED"].contains(&running.as_str()),
        "the operation is still running: {started}"
    );

    info!("--- the same add again is the same operation");
    let (status, again) = node.request(Method::POST, path, Some(add.clone())).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{again}");
    assert_eq!(again["started_ms"], started["started_ms"], "{again}");
    let (status, body) = node
        .request(
            Method::POST,
            path,
            Some(json!({"node_id": 7, "address": "http://127.0.0.1:1"})),
        )
        .await;
    assert_error((status, body), StatusCode::BAD_REQUEST, "BAD_REQUEST");

    info!("--- poll until the join timeout ends it");
    let deadline = Instant::now() + PATIENCE;
    let finished: Value = loop {
        let (status, body) = node.get("/v1/cluster/groups/broker-a/nodes/7").await;
        assert_eq!(status, StatusCode::OK, "{body}");
        if body["state"] == "FAILED" || body["state"] == "DONE" {
            break body;
        }
        assert!(
            Instant::now() < deadline,
            "still running after {PATIENCE:?}: {body}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(finished["state"], "FAILED", "{finished}");
    info!(%finished, "the join ended");
    let message = finished["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("did not catch up") && message.contains("removed"),
        "the failure says what happened: {finished}"
    );
    assert_eq!(member_ids(&node).await, vec![1], "the learner is gone");

    info!("--- a node nobody is adding is 404");
    let (status, body) = node.get("/v1/cluster/groups/broker-a/nodes/8").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    node.stop().await;
}
