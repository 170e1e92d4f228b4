//! A node whose group has no leader, through its router: node 2 of a configured group
//! {1, 2} where node 1 (the one to bootstrap it) never starts, so node 2 stays
//! uninitialized. It is not ready, and writes are NOT_LEADER with `leader: null`
//! (no leader to name or forward to) — also when they carry the forwarding header.
//! Reads answer from its (empty) state.

use crate::common;

use axum::http::{Method, StatusCode};
use broker::http::extract::FORWARDED_HEADER;
use common::http::{assert_error, TestNode};
use serde_json::json;
use tracing::info;

/// Health is up, readiness is UNAVAILABLE (503), sends and topic writes are NOT_LEADER
/// (421) with a null leader whether or not they were forwarded, nothing is forwarded,
/// and reads of topics answer TOPIC_NOT_FOUND from the empty state.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_without_a_leader_are_not_leader() {
    let node = TestNode::start_unready(|config| {
        config.node_id = 2;
        config.peers = vec![
            // Nothing listens there; node 1 never runs, so nobody bootstraps the group.
            "1=http://127.0.0.1:9".into(),
            format!("2={}", config.advertise_url),
        ];
    })
    .await;

    info!("--- health is up, readiness is not");
    let (status, health) = node.get("/health").await;
    assert_eq!(status, StatusCode::OK, "{health}");
    assert_error(
        node.get("/ready").await,
        StatusCode::SERVICE_UNAVAILABLE,
        "UNAVAILABLE",
    );

    info!("--- writes: NOT_LEADER, no leader named");
    let send = json!({"messages": [{"body": "x"}]});
    assert_error(
        node.request(Method::POST, "/v1/topics/t/messages", Some(send.clone()))
            .await,
        StatusCode::MISDIRECTED_REQUEST,
        "NOT_LEADER",
    );
    assert_error(
        node.request(Method::PUT, "/v1/topics/t", Some(json!({"perm": 6})))
            .await,
        StatusCode::MISDIRECTED_REQUEST,
        "NOT_LEADER",
    );

    info!("--- a write another node already forwarded here: NOT_LEADER, not forwarded on");
    let answer = node
        .call(
            Method::POST,
            "/v1/topics/t/messages",
            send.to_string(),
            &[
                ("content-type", "application/json"),
                (FORWARDED_HEADER, "10.0.0.7:5555"),
            ],
        )
        .await;
    assert_error(
        (answer.status, answer.json()),
        StatusCode::MISDIRECTED_REQUEST,
        "NOT_LEADER",
    );
    assert_eq!(node.metric("broker_forwarded_requests_total").await, 0.0);

    info!("--- reads answer from the empty state");
    for (method, uri) in [
        (Method::GET, "/v1/topics/t"),
        (Method::GET, "/v1/topics/t/queues/0/messages?offset=0"),
        (Method::DELETE, "/v1/topics/t"),
    ] {
        assert_error(
            node.request(method, uri, None).await,
            StatusCode::NOT_FOUND,
            "TOPIC_NOT_FOUND",
        );
    }
    let (status, cluster) = node.get("/v1/cluster").await;
    assert_eq!(status, StatusCode::OK, "{cluster}");
    assert!(cluster["groups"][0]["leader"].is_null(), "{cluster}");
    node.stop().await;
}
