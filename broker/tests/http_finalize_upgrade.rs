//! `POST /v1/cluster/groups/{group}/finalize-upgrade` on a real single-node
//! broker. A group this build bootstraps enables queue claims by itself (alone,
//! every voter speaks its protocol), so the call answers that they are on and
//! that it changed nothing; the group's name must exist, the body must be empty
//! or `{}`, and the call changes the group for good, so only a cluster admin may
//! make it. (Enabling in a group upgraded from protocol 1, and the refusal while
//! a voter still runs it, are in `scripts/testing/rolling-upgrade.sh`.)

use crate::common;

use std::time::{Duration, Instant};

use axum::http::{Method, StatusCode};
use common::http::{assert_error, TestNode};
use serde_json::json;

const FINALIZE: &str = "/v1/cluster/groups/broker-a/finalize-upgrade";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fresh_group_has_claims_and_a_finalize_is_a_no_op() {
    let node = TestNode::start().await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while node.node.shared.state().claims.is_none() {
        assert!(
            Instant::now() < deadline,
            "a freshly bootstrapped group never enabled claims"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (status, body) = node.request(Method::POST, FINALIZE, None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body,
        json!({"group": "broker-a", "protocol": broker::peer_protocol::VERSION,
               "queue_claims": true, "enabled_now": false})
    );
    let (status, again) = node.request(Method::POST, FINALIZE, Some(json!({}))).await;
    assert_eq!((status, again), (StatusCode::OK, body));

    assert_error(
        node.request(Method::POST, FINALIZE, Some(json!({"force": true})))
            .await,
        StatusCode::BAD_REQUEST,
        "BAD_REQUEST",
    );
    assert_error(
        node.request(
            Method::POST,
            "/v1/cluster/groups/broker-zz/finalize-upgrade",
            None,
        )
        .await,
        StatusCode::NOT_FOUND,
        "BROKER_GROUP_NOT_FOUND",
    );
    node.stop().await;
}
