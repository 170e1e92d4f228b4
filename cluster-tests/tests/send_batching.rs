//! The leader batches concurrent sends into shared Raft entries; every request is
//! still answered, deduplicated and stored as if it were alone, on every replica.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use anyhow::{ensure, Result};
use broker_proto::api::{MessageInput, SendRequest, SendResponse};
use cluster_tests::harness::{ClusterOptions, TestCluster, SMALL_STORAGE};
use futures::future::join_all;

const BINARY: &str = env!("CARGO_BIN_EXE_cluster-node");
/// Distinct messages, one per request.
const MESSAGES: u64 = 240;
/// The first this many are also sent a second time, at the same moment (a retry
/// racing its original, as after a lost answer).
const REPEATED: u64 = 80;

fn request(sequence: u64) -> SendRequest {
    SendRequest {
        messages: vec![MessageInput {
            body: Some(format!("order {sequence}")),
            producer_id: Some(format!("checkout-{}", sequence % 6)),
            sequence: Some(sequence / 6),
            ..MessageInput::default()
        }],
        transaction: None,
    }
}

/// 320 requests at once: fewer Raft entries than requests are applied (the leader
/// batched), a request and its racing repeat get the same answer, every message is
/// stored exactly once, and the three CommitLogs end byte-identical.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_sends_share_entries_and_are_answered_alone() -> Result<()> {
    let cluster = TestCluster::start(
        std::path::Path::new(BINARY),
        ClusterOptions {
            extra_config: SMALL_STORAGE.into(),
            ..ClusterOptions::default()
        },
    )
    .await?;
    let leader = cluster.wait_for_leader(Duration::from_secs(20)).await?;
    cluster.create_topic(leader, "orders", 4).await?;
    let applied_before = cluster.metric(leader, "broker_raft_applied_index").await?;

    let sequences: Vec<u64> = (0..MESSAGES).chain(0..REPEATED).collect();
    let requests: Vec<SendRequest> = sequences.iter().map(|&s| request(s)).collect();
    let answers: Vec<Result<SendResponse>> = join_all(
        requests
            .iter()
            .map(|request| cluster.send(leader, "orders", request)),
    )
    .await;
    let mut by_sequence: BTreeMap<u64, SendResponse> = BTreeMap::new();
    for (&sequence, answer) in sequences.iter().zip(answers) {
        let answer = answer?;
        ensure!(answer.results.len() == 1, "one result per message");
        if let Some(first) = by_sequence.get(&sequence) {
            ensure!(
                first.results == answer.results,
                "order {sequence} and its repeat were answered differently: {:?} vs {:?}",
                first.results,
                answer.results
            );
        } else {
            by_sequence.insert(sequence, answer);
        }
    }
    let places: BTreeSet<(u32, u64)> = by_sequence
        .values()
        .map(|a| (a.results[0].queue_id, a.results[0].queue_offset))
        .collect();
    ensure!(
        places.len() as u64 == MESSAGES,
        "{} distinct places for {MESSAGES} messages",
        places.len()
    );

    // openraft publishes the applied index a moment after the apply that answered:
    // wait until it has stood still for a while.
    let requests = sequences.len() as f64;
    let mut applied = cluster.metric(leader, "broker_raft_applied_index").await?;
    let mut unchanged = 0;
    while unchanged < 5 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = cluster.metric(leader, "broker_raft_applied_index").await?;
        unchanged = if now == applied { unchanged + 1 } else { 0 };
        applied = now;
    }
    let entries = applied - applied_before;
    eprintln!("--- {requests} send requests took {entries} Raft entries");
    ensure!(
        entries > 0.0 && entries < requests,
        "{requests} concurrent requests should share entries, took {entries}"
    );

    let mut bodies = Vec::new();
    for queue in 0..4 {
        bodies.extend(
            cluster
                .pull_all(leader, "orders", queue, 0)
                .await?
                .into_iter()
                .map(|m| m.body.unwrap_or_default()),
        );
    }
    bodies.sort();
    let mut expected: Vec<String> = (0..MESSAGES).map(|i| format!("order {i}")).collect();
    expected.sort();
    ensure!(
        bodies == expected,
        "stored once each: {} bodies",
        bodies.len()
    );

    let offsets = cluster.queue_max_offsets(leader, "orders").await?;
    for id in cluster.live_nodes() {
        cluster
            .wait_for_offsets(id, "orders", &offsets, Duration::from_secs(20))
            .await?;
    }
    // Let every replica flush; then their CommitLogs must be the same bytes.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let digests = cluster
        .live_nodes()
        .into_iter()
        .map(|id| cluster.commit_log_digest(id))
        .collect::<Result<Vec<_>>>()?;
    ensure!(
        digests.windows(2).all(|w| w[0] == w[1]),
        "replicas differ: {digests:?}"
    );
    Ok(())
}
