//! The router's answers to requests no handler takes, through the router of a real
//! single-node broker: an unknown path is 404 and a known path with the wrong method
//! is 405, both with the API's error shape rather than axum's plain text.

use crate::common;

use axum::http::{Method, StatusCode};
use common::http::{assert_error, TestNode};
use tracing::info;

/// Paths no route matches answer 404 `NOT_FOUND` with the error shape — including
/// near misses of real routes (a trailing slash, a missing segment, an unknown
/// version) and unknown paths under `/internal/`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_routes_are_not_found_with_the_error_shape() {
    let node = TestNode::start().await;
    for (method, uri) in [
        // `/` is the dashboard; its asset path answers NOT_FOUND for other files.
        (Method::GET, "/dashboard/nope.js"),
        (Method::GET, "/nope"),
        (Method::GET, "/v2/topics"),
        (Method::GET, "/v1/topics/t/queues/0"),
        (Method::GET, "/v1/topics/t/queues/0/messages/extra"),
        (Method::GET, "/v1/messages"),
        (Method::POST, "/v1/groups/g/heartbeat-typo"),
        (Method::GET, "/internal/nope"),
        (Method::POST, "/internal/raft/unknown"),
        (Method::GET, "/healthz"),
    ] {
        info!("--- {method} {uri}");
        let answer = node.request(method, uri, None).await;
        assert_error(answer, StatusCode::NOT_FOUND, "NOT_FOUND");
    }
    node.stop().await;
}

/// Known paths with a method they do not take answer 405 `METHOD_NOT_ALLOWED` with the
/// error shape.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_methods_are_not_allowed_with_the_error_shape() {
    let node = TestNode::start().await;
    for (method, uri) in [
        (Method::DELETE, "/v1/topics"),
        (Method::POST, "/v1/topics/t"),
        (Method::PUT, "/v1/topics/t/messages"),
        (Method::POST, "/v1/topics/t/queues/0/messages"),
        (Method::POST, "/v1/topics/t/queues"),
        (Method::PUT, "/v1/topics/t/queues/0/offset"),
        (
            Method::DELETE,
            "/v1/messages/00000000000000000000000000000000",
        ),
        (Method::GET, "/v1/groups/g/offsets/t/0"),
        (Method::POST, "/v1/groups/g/offsets"),
        (Method::POST, "/v1/routes/t"),
        (Method::DELETE, "/v1/cluster"),
        (Method::POST, "/health"),
        (Method::PUT, "/ready"),
        (Method::POST, "/metrics"),
        (Method::GET, "/internal/raft/vote"),
        (Method::POST, "/internal/raft/snapshot/offer"),
    ] {
        info!("--- {method} {uri}");
        let answer = node.request(method, uri, None).await;
        assert_error(answer, StatusCode::METHOD_NOT_ALLOWED, "METHOD_NOT_ALLOWED");
    }
    node.stop().await;
}
