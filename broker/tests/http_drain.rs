//! `POST /v1/node/drain` on a real single-node broker: readiness goes off, a
//! long poll held before the drain answers at once instead of at its deadline,
//! a new one is not held, the node keeps taking writes; a repeat reports the
//! same, a body with fields is a 400, and only a cluster admin may drain (401
//! without a token, 403 for a user without admin on the cluster).

use crate::common;

use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Method, StatusCode};
use common::http::{assert_error, TestNode};
use serde_json::json;

/// A long poll's hold in this test: far longer than any answer may take.
const HOLD_MS: u64 = 20_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drained_node_answers_held_polls_and_leaves_readiness() {
    let node = TestNode::start().await;
    node.create_topic("jobs", json!({"read_queue_nums": 1, "write_queue_nums": 1}))
        .await;
    let (status, _) = node.get("/ready").await;
    assert_eq!(status, StatusCode::OK);

    // Held before the drain: nothing to read, a 20 s hold.
    let pull = format!("/v1/topics/jobs/queues/0/messages?offset=0&max_wait_ms={HOLD_MS}");
    let started = Instant::now();
    let (held, drained) = tokio::join!(node.get(&pull), async {
        // Drain only once the pull is held (the gauge counts it).
        let deadline = Instant::now() + Duration::from_secs(10);
        while node.metric("broker_held_polls").await < 1.0 {
            assert!(Instant::now() < deadline, "the pull was never held");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        node.request(Method::POST, "/v1/node/drain", None).await
    });
    let held_for = started.elapsed();
    assert_eq!(held.0, StatusCode::OK, "{}", held.1);
    assert_eq!(held.1["messages"], json!([]));
    assert!(
        held_for < Duration::from_millis(HOLD_MS / 2),
        "the held pull answered after {held_for:?}, not when the node drained"
    );
    assert_eq!(drained.0, StatusCode::OK, "{}", drained.1);
    // Alone in its group it keeps leading: there is nobody to hand it to.
    assert_eq!(
        drained.1,
        json!({"node_id": 1, "group": "broker-a", "was_leader": true, "leader_id": 1, "started": true})
    );

    assert_error(
        node.get("/ready").await,
        StatusCode::SERVICE_UNAVAILABLE,
        "UNAVAILABLE",
    );
    let (_, ready) = node.get("/ready").await;
    assert!(
        ready["message"]
            .as_str()
            .unwrap_or_default()
            .contains("draining"),
        "{ready}"
    );
    // A new long poll is not held.
    let started = Instant::now();
    let (status, _) = node.get(&pull).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        started.elapsed() < Duration::from_millis(HOLD_MS / 2),
        "a pull was held by a draining node"
    );
    // Everything else still works until the node stops.
    node.send_ok("jobs", vec![json!({"body": "after the drain"})])
        .await;

    // A repeat reports the drain already under way.
    let (status, again) = node.request(Method::POST, "/v1/node/drain", None).await;
    assert_eq!(status, StatusCode::OK, "{again}");
    assert_eq!(again["started"], false, "{again}");
    let (status, empty_object) = node
        .request(Method::POST, "/v1/node/drain", Some(json!({})))
        .await;
    assert_eq!(status, StatusCode::OK, "{empty_object}");
    assert_error(
        node.request(Method::POST, "/v1/node/drain", Some(json!({"force": true})))
            .await,
        StatusCode::BAD_REQUEST,
        "BAD_REQUEST",
    );
    let anonymous = node
        .call_anonymous(Method::POST, "/v1/node/drain", Body::empty(), &[])
        .await;
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
    // A user with every right on topics and groups, but not on the cluster.
    let (status, user) = node
        .request(
            Method::POST,
            "/v1/users",
            Some(json!({"name": "ops", "permissions": [
                {"resource": "topic:*", "actions": ["pub", "sub", "admin"]},
                {"resource": "group:*", "actions": ["sub", "admin"]},
            ]})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{user}");
    let token = user["token"].as_str().expect("a token");
    let refused = node
        .call_with_token(
            Method::POST,
            "/v1/node/drain",
            Body::empty(),
            &[],
            Some(token),
        )
        .await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    node.stop().await;
}
