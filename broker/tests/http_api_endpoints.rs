//! Every endpoint shared/API.md promises is routed: a request to it reaches a handler
//! (whatever that handler answers) rather than the router's "no such endpoint" (404
//! NOT_FOUND) or "wrong method" (405) fallbacks. The behaviour of each endpoint has
//! its own test file; this one only catches endpoints missing from the router.

use crate::common;

use axum::http::Method;
use common::http::TestNode;
use serde_json::json;
use tracing::info;

/// Requests with bodies no handler accepts (empty objects: missing fields), so that a
/// routed endpoint answers without changing anything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_api_endpoint_is_routed() {
    let node = TestNode::start().await;
    node.send_ok("t", vec![json!({"body": "x", "queue_id": 0})])
        .await;
    let endpoints = [
        (Method::POST, "/v1/topics/t/messages"),
        (Method::GET, "/v1/topics/t/queues/0/messages?offset=0"),
        (Method::GET, "/v1/topics/t/queues"),
        (Method::GET, "/v1/topics/t/queues/0/offset?timestamp=0"),
        (Method::GET, "/v1/messages/00000000000000000000000000000000"),
        (Method::GET, "/v1/topics/t/messages?key=k"),
        (Method::PUT, "/v1/groups/g/offsets/t/0"),
        (Method::GET, "/v1/groups/g/offsets?topic=t"),
        (Method::POST, "/v1/groups/g/heartbeat"),
        (Method::POST, "/v1/groups/g/retry"),
        (Method::POST, "/v1/groups/g/offsets/reset"),
        (Method::PUT, "/v1/topics/u"),
        (Method::GET, "/v1/topics"),
        (Method::GET, "/v1/topics/t"),
        (Method::DELETE, "/v1/topics/nobody"),
        (Method::GET, "/v1/routes/t"),
        (Method::GET, "/v1/cluster"),
        (Method::POST, "/v1/cluster/groups/broker-a/nodes"),
        (Method::DELETE, "/v1/cluster/groups/broker-a/nodes/99"),
        (Method::POST, "/v1/cluster/groups/broker-a/transfer-leader"),
        (Method::GET, "/health"),
        (Method::GET, "/ready"),
        (Method::GET, "/metrics"),
    ];
    let mut unrouted = Vec::new();
    for (method, uri) in endpoints {
        info!("--- {method} {uri}");
        let body = (method == Method::POST || method == Method::PUT).then(|| json!({}));
        let answer = node.call(
            method.clone(),
            uri,
            body.map(|b| b.to_string()).unwrap_or_default(),
            &[("content-type", "application/json")],
        );
        let answer = answer.await;
        let code = serde_json::from_slice::<serde_json::Value>(&answer.body)
            .ok()
            .and_then(|v| v["code"].as_str().map(str::to_string));
        if matches!(code.as_deref(), Some("NOT_FOUND" | "METHOD_NOT_ALLOWED")) {
            unrouted.push(format!("{method} {uri}"));
        }
    }
    assert!(
        unrouted.is_empty(),
        "endpoints of shared/API.md without a handler: {unrouted:?}"
    );
    node.stop().await;
}
