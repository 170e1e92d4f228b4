//! A node that missed more than the leader keeps in its Raft log catches up by
//! snapshot: the CommitLog bytes it lacks are streamed to it.

use std::time::{Duration, Instant};

use anyhow::{ensure, Result};
use broker_proto::api::{MessageInput, SendRequest};
use cluster_tests::harness::{ClusterOptions, TestCluster, SMALL_STORAGE};

const BINARY: &str = env!("CARGO_BIN_EXE_cluster-node");

/// Stop a follower; write enough entries that the leader snapshots and purges its
/// Raft log past everything the follower has; restart it. It can only catch up by
/// snapshot: it must end with every message and a CommitLog byte-identical to the
/// others, and its log must say it installed a snapshot.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_behind_the_purged_log_catches_up_by_snapshot() -> Result<()> {
    let mut cluster = TestCluster::start(
        std::path::Path::new(BINARY),
        ClusterOptions {
            extra_config: format!(
                "{SMALL_STORAGE}[raft]\nsnapshot_logs_since_last = 100\nmax_in_snapshot_log_to_keep = 20\n"
            ),
            ..ClusterOptions::default()
        },
    )
    .await?;
    let leader = cluster.wait_for_leader(Duration::from_secs(20)).await?;
    let lagging = *cluster
        .nodes
        .keys()
        .find(|id| **id != leader)
        .expect("three nodes");
    cluster.create_topic(leader, "audit", 2).await?;
    cluster
        .send(
            leader,
            "audit",
            &SendRequest {
                messages: vec![MessageInput {
                    body: Some("before".into()),
                    ..MessageInput::default()
                }],
                transaction: None,
            },
        )
        .await?;

    eprintln!("--- stop node {lagging}; write 600 entries so the leader purges past it");
    cluster.stop(lagging, Duration::from_secs(10)).await;
    for i in 0..600u32 {
        let request = SendRequest {
            messages: (0..4)
                .map(|j| MessageInput {
                    body: Some(format!("entry {i} message {j} {}", "p".repeat(200))),
                    ..MessageInput::default()
                })
                .collect(),
            transaction: None,
        };
        cluster.send(leader, "audit", &request).await?;
    }
    // Snapshots are built and the log purged behind them in the background, and a
    // leader does not purge entries a replication request still uses (openraft's
    // `try_purge_log`), such as one in flight to the node just stopped: a release
    // build can write the 600 entries before that settles (seen once in CI:
    // purged index 0 right after the last write), so wait for it.
    let written = Instant::now();
    let purged = loop {
        let purged = cluster.metric(leader, "broker_raft_purged_index").await?;
        if purged > 300.0 || written.elapsed() > Duration::from_secs(20) {
            break purged;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    eprintln!(
        "--- purged index {purged}, {} ms after the last write",
        written.elapsed().as_millis()
    );
    ensure!(
        purged > 300.0,
        "the leader should have purged its log within 20 s (purged index {purged})"
    );

    eprintln!("--- restart node {lagging}: it must catch up by snapshot");
    cluster.start_node(lagging)?;
    let expected = cluster.queue_max_offsets(leader, "audit").await?;
    cluster
        .wait_for_offsets(lagging, "audit", &expected, Duration::from_secs(60))
        .await?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cluster.log_contains(lagging, "installed snapshot") {
        ensure!(
            Instant::now() < deadline,
            "node {lagging} caught up without a snapshot?\n{}",
            cluster.log_tails(30)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    eprintln!("--- it serves every message and its CommitLog matches the others");
    for queue in 0..2 {
        let from_leader = cluster.pull_all(leader, "audit", queue, 0).await?;
        let from_lagging = cluster.pull_all(lagging, "audit", queue, 0).await?;
        ensure!(
            from_leader == from_lagging,
            "queue {queue} differs on node {lagging}"
        );
    }
    cluster
        .send(
            leader,
            "audit",
            &SendRequest {
                messages: vec![MessageInput {
                    body: Some("after".into()),
                    ..MessageInput::default()
                }],
                transaction: None,
            },
        )
        .await?;
    let expected = cluster.queue_max_offsets(leader, "audit").await?;
    for id in 1..=3 {
        cluster
            .wait_for_offsets(id, "audit", &expected, Duration::from_secs(30))
            .await?;
    }
    let digests: Vec<_> = (1..=3)
        .map(|id| cluster.commit_log_digest(id))
        .collect::<Result<_>>()?;
    ensure!(
        digests[0] == digests[1] && digests[1] == digests[2],
        "commit logs differ: {digests:?}"
    );
    Ok(())
}
