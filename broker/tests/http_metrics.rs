//! `/metrics` of a real single-node broker moves by exactly what was done: per-topic
//! message and byte counters, send and pull latency histograms, rejections by
//! code, consumer lag per queue, Raft indexes, Raft log fsyncs and CommitLog
//! flushes. (Per-follower Raft lag needs followers: `scripts/testing/metrics-cluster.sh`
//! checks it on a real three-node cluster.)

use crate::common;

use std::time::{Duration, Instant};

use axum::http::{Method, StatusCode};
use common::http::{metric_value, series_value, TestNode};
use serde_json::json;
use tracing::info;

/// The applied index once it caught up with the last log index. openraft
/// publishes its metrics a moment after the apply that answered the client, so a
/// scrape right after a write may still show the index before it.
async fn settled_applied_index(node: &TestNode) -> f64 {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let text = node.scrape().await;
        let applied = metric_value(&text, "broker_raft_applied_index");
        if applied == metric_value(&text, "broker_raft_last_log_index") {
            return applied;
        }
        assert!(
            Instant::now() < deadline,
            "the applied index did not reach the last log index within 5 s:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Checks the text format's invariants for one histogram family: buckets are
/// cumulative and `+Inf` equals `_count`.
fn assert_histogram_consistent(text: &str, name: &str) {
    let buckets: Vec<f64> = text
        .lines()
        .filter(|l| l.starts_with(&format!("{name}_bucket{{")))
        .map(|l| {
            l.rsplit_once(' ')
                .and_then(|(_, v)| v.parse().ok())
                .expect("a bucket value")
        })
        .collect();
    assert!(buckets.len() > 5, "{name} has buckets:\n{text}");
    assert!(
        buckets.windows(2).all(|w| w[0] <= w[1]),
        "{name} buckets are cumulative: {buckets:?}"
    );
    let inf = series_value(text, &format!("{name}_bucket{{le=\"+Inf\"}}"));
    assert_eq!(inf, metric_value(text, &format!("{name}_count")), "{name}");
}

/// One send of three messages and one of one, pulls, an offset commit and two
/// rejected requests move every key series by exactly that much.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_series_move_by_what_was_done() {
    let node = TestNode::start_with(|config| config.auto_create_topics = false).await;
    node.create_topic(
        "orders",
        json!({"read_queue_nums": 2, "write_queue_nums": 2}),
    )
    .await;
    let applied_before = settled_applied_index(&node).await;
    let before = node.scrape().await;

    info!("--- two sends (4 messages, 3+4+5+6 = 18 body bytes)");
    node.send_ok(
        "orders",
        vec![
            json!({"body": "abc", "queue_id": 0}),
            json!({"body": "defg", "queue_id": 0}),
            json!({"body": "hijkl", "queue_id": 1}),
        ],
    )
    .await;
    node.send_ok("orders", vec![json!({"body": "mnopqr", "queue_id": 0})])
        .await;

    info!("--- one pull of queue 0 (3 messages, 13 bytes), one of queue 1 from its end (none)");
    let pulled = node
        .pull_ok("/v1/topics/orders/queues/0/messages?offset=0")
        .await;
    assert_eq!(pulled["messages"].as_array().map(Vec::len), Some(3));
    let empty = node
        .pull_ok("/v1/topics/orders/queues/1/messages?offset=1")
        .await;
    assert_eq!(empty["status"], "NO_NEW_MSG", "{empty}");

    info!("--- consumer group billing commits offset 1 on queue 0 (lag 2)");
    let (status, body) = node
        .request(
            Method::PUT,
            "/v1/groups/billing/offsets/orders/0",
            Some(json!({"offset": 1})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");

    info!("--- two rejections: malformed send (BAD_REQUEST), pull of an unknown topic (TOPIC_NOT_FOUND)");
    let (status, _) = node
        .request_raw(Method::POST, "/v1/topics/orders/messages", "{")
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = node
        .get("/v1/topics/nobody/queues/0/messages?offset=0")
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    let after = node.scrape().await;
    let delta = |series: &str| series_value(&after, series) - series_value(&before, series);
    let family_delta = |name: &str| metric_value(&after, name) - metric_value(&before, name);

    info!("--- per-topic counters");
    assert_eq!(
        delta("broker_topic_messages_in_total{topic=\"orders\"}"),
        4.0
    );
    assert_eq!(delta("broker_topic_bytes_in_total{topic=\"orders\"}"), 18.0);
    assert_eq!(
        delta("broker_topic_messages_out_total{topic=\"orders\"}"),
        3.0
    );
    assert_eq!(
        delta("broker_topic_bytes_out_total{topic=\"orders\"}"),
        13.0
    );
    assert_eq!(family_delta("broker_messages_in_total"), 4.0);
    assert_eq!(family_delta("broker_bytes_out_total"), 13.0);

    info!("--- latency histograms: 3 sends (one rejected), 3 pulls (one rejected)");
    assert_eq!(family_delta("broker_send_duration_seconds_count"), 3.0);
    assert_eq!(family_delta("broker_pull_duration_seconds_count"), 3.0);
    assert!(family_delta("broker_send_duration_seconds_sum") > 0.0);
    for name in [
        "broker_send_duration_seconds",
        "broker_pull_duration_seconds",
        "broker_commit_log_flush_duration_seconds",
    ] {
        assert_histogram_consistent(&after, name);
    }

    info!("--- rejections by code");
    assert_eq!(
        delta("broker_rejected_requests_total{code=\"BAD_REQUEST\"}"),
        1.0
    );
    assert_eq!(
        delta("broker_rejected_requests_total{code=\"TOPIC_NOT_FOUND\"}"),
        1.0
    );
    assert_eq!(family_delta("broker_rejected_requests_total"), 2.0);

    info!("--- consumer lag per queue: max 3, committed 1");
    assert_eq!(
        series_value(
            &after,
            "broker_consumer_group_lag_messages{consumer_group=\"billing\",topic=\"orders\",broker_group=\"broker-a\",queue=\"0\"}"
        ),
        2.0,
        "{after}"
    );

    info!("--- Raft: two sends and one commit were applied; this node leads");
    let applied = settled_applied_index(&node).await;
    assert_eq!(applied - applied_before, 3.0);
    assert_eq!(metric_value(&after, "broker_raft_leader_id"), 1.0);
    assert_eq!(
        series_value(
            &after,
            "broker_info{node_id=\"1\",broker_group=\"broker-a\",version=\"0.1.0\"}"
        ),
        1.0
    );
    assert_eq!(metric_value(&after, "broker_raft_is_leader"), 1.0);
    assert!(metric_value(&after, "broker_raft_log_disk_bytes") > 0.0);
    // Each acknowledged write waited for an fsync of the Raft log.
    assert!(
        family_delta("broker_raft_log_fsync_duration_seconds_count") >= 3.0,
        "{after}"
    );
    // (Its `_sum` may stay 0 here: the test's tmpfs syncs in under the 1 µs
    // resolution raft-log measures in.)

    info!("--- the background flush (every 100 ms in tests) times CommitLog flushes");
    let flushes_before = metric_value(&before, "broker_commit_log_flush_duration_seconds_count");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let now = node.scrape().await;
        if metric_value(&now, "broker_commit_log_flush_duration_seconds_count") > flushes_before {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no CommitLog flush was timed within 10 s:\n{now}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    node.stop().await;
}

/// Every sample line belongs to a family with HELP and TYPE, and counters end in
/// `_total` (Prometheus naming).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_family_has_help_and_type_and_counters_end_in_total() {
    let node = TestNode::start().await;
    node.send_ok("named", vec![json!({"body": "x"})]).await;
    let text = node.scrape().await;
    let mut kinds = std::collections::BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("TYPE name kind");
            assert!(text.contains(&format!("# HELP {name} ")), "{name} has HELP");
            kinds.insert(name.to_string(), kind.to_string());
        }
    }
    for (name, kind) in &kinds {
        assert!(name.starts_with("broker_"), "{name}");
        assert_eq!(
            kind == "counter",
            name.ends_with("_total"),
            "{name} is a {kind}"
        );
    }
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let sample = line.split([' ', '{']).next().unwrap_or_default();
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|suffix| {
                let base = sample.strip_suffix(suffix)?;
                kinds.contains_key(base).then_some(base)
            })
            .unwrap_or(sample);
        assert!(kinds.contains_key(family), "{line}: no TYPE for {family}");
    }
    node.stop().await;
}
