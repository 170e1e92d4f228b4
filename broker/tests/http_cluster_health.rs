//! The read-only control plane through the router of a real single-node broker:
//! `GET /v1/routes/{topic}`, `GET /v1/cluster`, `GET /health`, `GET /ready` and
//! `GET /metrics`.

use crate::common;

use std::time::{Duration, Instant};

use axum::http::{Method, StatusCode};
use common::http::{as_array, as_u64, assert_error, assert_fields, metric_value, TestNode};
use serde_json::json;
use tracing::info;

/// A topic's route names this group with its leader (this node's URL), its replicas
/// (this node) and the topic's queue counts and perm; an unknown topic is
/// TOPIC_NOT_FOUND.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_name_the_group_leader_and_queues() {
    let node = TestNode::start().await;
    node.create_topic(
        "routed",
        json!({"read_queue_nums": 3, "write_queue_nums": 2, "perm": 6}),
    )
    .await;
    let (status, route) = node.get("/v1/routes/routed").await;
    assert_eq!(status, StatusCode::OK, "{route}");
    assert_eq!(route["topic"], "routed", "{route}");
    let groups = as_array(&route["groups"], "groups");
    assert_eq!(groups.len(), 1, "{route}");
    let group = &groups[0];
    assert_fields(
        group,
        &[
            "group",
            "leader",
            "replicas",
            "read_queue_nums",
            "write_queue_nums",
            "perm",
        ],
        "a route group",
    );
    assert_eq!(group["group"], "broker-a", "{route}");
    assert_eq!(group["leader"], node.url.as_str(), "{route}");
    assert_eq!(group["replicas"], json!([node.url]), "{route}");
    assert_eq!(group["read_queue_nums"], 3, "{route}");
    assert_eq!(group["write_queue_nums"], 2, "{route}");
    assert_eq!(group["perm"], 6, "{route}");

    info!("--- unknown topic");
    assert_error(
        node.get("/v1/routes/nobody").await,
        StatusCode::NOT_FOUND,
        "TOPIC_NOT_FOUND",
    );
    node.stop().await;
}

/// `/v1/cluster` shows this node's group with its leader (node 1, this URL), the
/// term, and the one node as leader with its term, log and applied indexes, and
/// reachable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_shows_the_group_and_its_node() {
    let node = TestNode::start().await;
    node.send_ok("c", vec![json!({"body": "x"})]).await;

    info!("--- wait until Raft's metrics (published after the answer) show the send applied");
    let deadline = Instant::now() + Duration::from_secs(5);
    let cluster = loop {
        let (status, cluster) = node.get("/v1/cluster").await;
        assert_eq!(status, StatusCode::OK, "{cluster}");
        if cluster["groups"][0]["nodes"][0]["applied_index"].as_u64() >= Some(1) {
            break cluster;
        }
        assert!(
            Instant::now() < deadline,
            "applied_index did not reach 1: {cluster}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    assert_eq!(cluster["node_id"], 1, "{cluster}");
    assert_eq!(cluster["group"], "broker-a", "{cluster}");
    let groups = as_array(&cluster["groups"], "groups");
    assert_eq!(groups.len(), 1, "{cluster}");
    let group = &groups[0];
    assert_fields(
        group,
        &["group", "leader", "nodes", "registration_age_ms"],
        "a cluster group",
    );
    assert_eq!(group["group"], "broker-a", "{cluster}");
    assert_eq!(group["leader"], node.url.as_str(), "{cluster}");
    let term = as_u64(&group["term"], "term");
    assert!(term >= 1, "a leader was elected: {cluster}");
    let nodes = as_array(&group["nodes"], "nodes");
    assert_eq!(nodes.len(), 1, "{cluster}");
    let me = &nodes[0];
    assert_fields(
        me,
        &[
            "id",
            "role",
            "term",
            "last_log_index",
            "applied_index",
            "reachable",
        ],
        "a cluster node",
    );
    assert_eq!(me["id"], 1, "{cluster}");
    assert_eq!(me["url"], node.url.as_str(), "{cluster}");
    assert_eq!(me["role"], "leader", "{cluster}");
    assert_eq!(me["term"], term, "{cluster}");
    assert_eq!(me["reachable"], true, "{cluster}");
    let last = as_u64(&me["last_log_index"], "last_log_index");
    let applied = as_u64(&me["applied_index"], "applied_index");
    assert!(
        applied >= 1 && applied <= last,
        "the send was applied: {cluster}"
    );
    node.stop().await;
}

/// `/health` answers 200 `{"status": "UP"}`; `/ready` answers 200 with this group and
/// its leader once the node elected itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_ready() {
    let node = TestNode::start().await;
    let (status, health) = node.get("/health").await;
    assert_eq!(status, StatusCode::OK, "{health}");
    assert_eq!(health["status"], "UP", "{health}");

    let (status, ready) = node.get("/ready").await;
    assert_eq!(status, StatusCode::OK, "{ready}");
    assert_eq!(ready["status"], "READY", "{ready}");
    assert_eq!(ready["group"], "broker-a", "{ready}");
    assert_eq!(ready["leader_id"], 1, "{ready}");
    assert_eq!(ready["leader"], node.url.as_str(), "{ready}");
    node.stop().await;
}

/// `/metrics` is Prometheus text holding every counter and gauge, and the counters
/// count: one send request of two messages (11 body bytes) and one pull returning
/// them move the in/out counters by exactly that; the node reports itself leader.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_text_has_the_counters() {
    let node = TestNode::start().await;
    let counters = [
        "broker_messages_in_total",
        "broker_bytes_in_total",
        "broker_messages_out_total",
        "broker_bytes_out_total",
        "broker_send_requests_total",
        "broker_pull_requests_total",
        "broker_forwarded_requests_total",
        "broker_rejected_requests_total",
    ];
    let gauges = [
        "broker_raft_term",
        "broker_raft_is_leader",
        "broker_raft_last_log_index",
        "broker_raft_committed_index",
        "broker_raft_applied_index",
        "broker_commit_log_disk_bytes",
        "broker_consume_queue_disk_bytes",
        "broker_index_disk_bytes",
        "broker_commit_log_max_offset",
        "broker_held_polls",
    ];

    info!("--- every metric is there, with HELP and TYPE");
    let before = node.scrape().await;
    for (names, kind) in [(&counters[..], "counter"), (&gauges[..], "gauge")] {
        for name in names {
            metric_value(&before, name);
            assert!(
                before.contains(&format!("# TYPE {name} {kind}\n")),
                "{name} is a {kind}:\n{before}"
            );
            assert!(
                before.contains(&format!("# HELP {name} ")),
                "{name} has help"
            );
        }
    }
    assert_eq!(metric_value(&before, "broker_raft_is_leader"), 1.0);
    assert!(metric_value(&before, "broker_raft_term") >= 1.0);

    info!("--- one send of two messages, one pull of them");
    node.send_ok(
        "m",
        vec![
            json!({"body": "hello", "queue_id": 0}),
            json!({"body": "world!", "queue_id": 0}),
        ],
    )
    .await;
    node.pull_ok("/v1/topics/m/queues/0/messages?offset=0")
        .await;
    let after = node.scrape().await;
    let delta = |name: &str| metric_value(&after, name) - metric_value(&before, name);
    assert_eq!(delta("broker_send_requests_total"), 1.0);
    assert_eq!(delta("broker_messages_in_total"), 2.0);
    assert_eq!(delta("broker_bytes_in_total"), 11.0);
    assert_eq!(delta("broker_pull_requests_total"), 1.0);
    assert_eq!(delta("broker_messages_out_total"), 2.0);
    assert_eq!(delta("broker_bytes_out_total"), 11.0);
    assert_eq!(delta("broker_forwarded_requests_total"), 0.0);
    assert!(delta("broker_commit_log_max_offset") > 0.0);
    node.stop().await;
}

/// `broker_rejected_requests_total` ("Requests answered with an error.") counts
/// requests answered with an error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_requests_are_counted() {
    let node = TestNode::start_with(|config| config.auto_create_topics = false).await;
    let before = node.metric("broker_rejected_requests_total").await;
    info!("--- three requests answered with errors");
    assert_error(
        node.request(
            Method::POST,
            "/v1/topics/nobody/messages",
            Some(json!({"messages": [{"body": "x"}]})),
        )
        .await,
        StatusCode::NOT_FOUND,
        "TOPIC_NOT_FOUND",
    );
    assert_error(
        node.request_raw(Method::POST, "/v1/topics/t/messages", "{")
            .await,
        StatusCode::BAD_REQUEST,
        "BAD_REQUEST",
    );
    assert_error(
        node.get("/v1/topics/nobody/queues/0/messages?offset=0")
            .await,
        StatusCode::NOT_FOUND,
        "TOPIC_NOT_FOUND",
    );
    let after = node.metric("broker_rejected_requests_total").await;
    assert_eq!(after - before, 3.0, "three rejected requests were counted");
    node.stop().await;
}
