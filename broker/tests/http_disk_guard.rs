//! A single node's guards for its disk, through its router, without filling a disk:
//!
//! * the low-water mark: `storage.disk_full_ratio` set below what the data
//!   directory's filesystem already uses (read from `statvfs` by the test), so the
//!   node counts its disk as nearly full. Sends and give-backs answer 503
//!   UNAVAILABLE naming the usage and the mark; reads, topic changes and offset
//!   commits still work (they store no messages), and the node stays ready.
//! * fail-stop: the node's health marked failed as the health watch does on a
//!   fatal Raft error. `/ready`, sends and topic writes answer 503 UNAVAILABLE
//!   naming the reason (not NOT_LEADER with a null leader), `/health` says FAILED,
//!   routes name no leader, and `broker_storage_failed` is 1. (A real full disk is
//!   the cluster test `disk_full`.)

use crate::common;

use axum::http::{Method, StatusCode};
use common::http::{assert_error, TestNode};
use serde_json::{json, Value};
use tracing::info;

/// Bytes of the file that keeps the test's filesystem over its mark.
const BALLAST_BYTES: usize = 8 << 20;

/// An error answer's message (after [`assert_error`] checked its shape).
fn message(answer: &(StatusCode, Value)) -> String {
    answer.1["message"].as_str().unwrap_or_default().to_string()
}

/// Sends are refused above the mark with the usage in the message; everything that
/// stores no message goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn above_the_low_water_mark_sends_are_unavailable_and_reads_work() {
    let mut mark = 0.0;
    let node = TestNode::start_with(|config| {
        // The test directory may be on a nearly empty tmpfs: a ballast file makes
        // sure the filesystem holds at least twice the mark, whatever else runs.
        let ballast = config.data_dir.join("ballast");
        std::fs::write(&ballast, vec![1u8; BALLAST_BYTES]).expect("writing the ballast");
        let stat = rustix::fs::statvfs(&config.data_dir).expect("statvfs");
        let total = (stat.f_blocks * stat.f_frsize) as f64;
        mark = BALLAST_BYTES as f64 / total / 2.0;
        config.storage.disk_full_ratio = Some(mark);
    })
    .await;
    info!(
        mark,
        "--- the node is ready and leads although its disk is over the mark"
    );
    let (status, ready) = node.get("/ready").await;
    assert_eq!(status, StatusCode::OK, "{ready}");
    let used = node.metric("broker_disk_used_ratio").await;
    assert!(
        used > mark,
        "broker_disk_used_ratio {used} is above the mark {mark}"
    );
    assert_eq!(node.metric("broker_storage_failed").await, 0.0);

    info!("--- topic changes are not message writes: they pass");
    node.create_topic("t", json!({"read_queue_nums": 1, "write_queue_nums": 1}))
        .await;

    info!("--- a send: UNAVAILABLE naming the usage and the mark");
    let answer = node
        .request(
            Method::POST,
            "/v1/topics/t/messages",
            Some(json!({"messages": [{"body": "x", "producer_id": "p", "sequence": 1}]})),
        )
        .await;
    let text = message(&answer);
    assert_error(answer, StatusCode::SERVICE_UNAVAILABLE, "UNAVAILABLE");
    assert!(
        text.contains("disk nearly full") && text.contains("writes refused above"),
        "the refusal says why: {text}"
    );

    info!("--- a give-back stores a message too: UNAVAILABLE");
    let answer = node
        .request(
            Method::POST,
            "/v1/groups/g/retry",
            Some(json!({"topic": "t", "queue_id": 0, "queue_offset": 0})),
        )
        .await;
    let text = message(&answer);
    assert_error(answer, StatusCode::SERVICE_UNAVAILABLE, "UNAVAILABLE");
    assert!(text.contains("disk nearly full"), "{text}");

    info!("--- reads and offset commits work; nothing was stored");
    let pulled = node
        .pull_ok("/v1/topics/t/queues/0/messages?offset=0")
        .await;
    assert_eq!(
        pulled["max_offset"], 0,
        "no refused send was stored: {pulled}"
    );
    let (status, body) = node
        .request(
            Method::PUT,
            "/v1/groups/g/offsets/t/0",
            Some(json!({"offset": 0})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "offset commit: {body}");
    node.stop().await;
}

/// A node marked failed answers 503 UNAVAILABLE with the reason everywhere a write
/// or readiness is asked, and names no leader.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_node_is_unavailable_not_a_leader() {
    let node = TestNode::start().await;
    node.create_topic("t", json!({"read_queue_nums": 1, "write_queue_nums": 1}))
        .await;
    node.send_ok("t", vec![json!({"body": "before"})]).await;

    info!("--- storage fails (as the health watch marks a fatal Raft error)");
    node.node
        .health
        .fail("I/O error on /data/store/commitlog: No space left on device".into());

    info!("--- ready: 503 UNAVAILABLE naming the reason");
    let answer = node.get("/ready").await;
    let text = message(&answer);
    assert_error(answer, StatusCode::SERVICE_UNAVAILABLE, "UNAVAILABLE");
    assert!(
        text.contains("storage failed") && text.contains("No space left on device"),
        "{text}"
    );

    info!("--- writes: 503 UNAVAILABLE naming the reason, not NOT_LEADER");
    for (method, uri, body) in [
        (
            Method::POST,
            "/v1/topics/t/messages",
            json!({"messages": [{"body": "x"}]}),
        ),
        (Method::PUT, "/v1/topics/u", json!({})),
        (
            Method::PUT,
            "/v1/groups/g/offsets/t/0",
            json!({"offset": 1}),
        ),
    ] {
        let answer = node.request(method.clone(), uri, Some(body)).await;
        let text = message(&answer);
        assert_error(answer, StatusCode::SERVICE_UNAVAILABLE, "UNAVAILABLE");
        assert!(
            text.contains("No space left on device"),
            "{method} {uri}: {text}"
        );
    }

    info!("--- health: up, but FAILED with the reason; routes name no leader; metric is 1");
    let (status, health) = node.get("/health").await;
    assert_eq!(status, StatusCode::OK, "{health}");
    assert_eq!(health["status"], "FAILED", "{health}");
    assert!(health["reason"]
        .as_str()
        .is_some_and(|r| r.contains("No space left on device")));
    let (status, route) = node.get("/v1/routes/t").await;
    assert_eq!(status, StatusCode::OK, "{route}");
    assert!(route["groups"][0]["leader"].is_null(), "{route}");
    assert_eq!(node.metric("broker_storage_failed").await, 1.0);
    assert!(!node.node.is_leader());

    info!("--- its own copy still reads");
    let pulled = node
        .pull_ok("/v1/topics/t/queues/0/messages?offset=0")
        .await;
    assert_eq!(pulled["messages"][0]["body"], "before", "{pulled}");
    node.stop().await;
}
