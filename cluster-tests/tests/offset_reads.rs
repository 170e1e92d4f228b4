//! Committed offsets read from a follower that trails its group (fault switch
//! `lagging-apply`: it applies each run of committed entries 700 ms late) answer
//! at least every commit acknowledged before the read began — the follower takes
//! its leader's read index and waits for its own apply to reach it — while
//! `stale=true` answers its own copy at once. A consumer that takes over a queue
//! resumes from such a read: a stale one redelivers what was already consumed.
//!
//! Needs the node binary built with fault switches:
//! `cargo test --release -p cluster-tests --features fault-injection --test offset_reads`
//! (scripts/test.sh runs it).

#![cfg(feature = "fault-injection")]

use std::time::{Duration, Instant};

use anyhow::{ensure, Result};
use broker_proto::api::{GroupOffsetsResponse, MessageInput, SendRequest};
use cluster_tests::harness::{ClusterOptions, TestCluster};
use serde_json::json;

const BINARY: &str = env!("CARGO_BIN_EXE_cluster-node");
/// The node that applies late, kept a follower.
const LAGGING: u64 = 3;

/// The group's committed offset of `jobs` queue 0 as node `id` answers it.
async fn read_offset(cluster: &TestCluster, id: u64, stale: bool) -> Result<u64> {
    let path = if stale {
        "/v1/groups/workers/offsets?topic=jobs&stale=true"
    } else {
        "/v1/groups/workers/offsets?topic=jobs"
    };
    let answer: GroupOffsetsResponse = cluster.get(id, path).await?;
    Ok(answer
        .offsets
        .iter()
        .find(|o| o.queue_id == 0)
        .map_or(0, |o| o.offset))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_lagging_follower_answers_every_acknowledged_commit() -> Result<()> {
    let cluster = TestCluster::start(
        std::path::Path::new(BINARY),
        ClusterOptions {
            fault: Some((LAGGING, "lagging-apply")),
            ..ClusterOptions::default()
        },
    )
    .await?;
    ensure!(
        cluster.log_contains(LAGGING, "FAULT INJECTION ACTIVE"),
        "node {LAGGING} does not run the fault switch"
    );
    let mut leader = cluster.wait_for_leader(Duration::from_secs(10)).await?;
    if leader == LAGGING {
        let to = 1;
        let response = cluster
            .http
            .post(format!(
                "{}/v1/cluster/groups/broker-a/transfer-leader",
                cluster.url(leader)
            ))
            .json(&json!({ "to": to }))
            .send()
            .await?;
        ensure!(
            response.status().is_success(),
            "transfer-leader: {}",
            response.text().await?
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        while cluster.agreed_leader().await != Some(to) {
            ensure!(Instant::now() < deadline, "node {to} did not become leader");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        leader = to;
    }
    cluster.create_topic(leader, "jobs", 1).await?;
    let request = SendRequest {
        messages: (0..10)
            .map(|n| MessageInput {
                body: Some(format!("job {n}")),
                queue_id: Some(0),
                ..MessageInput::default()
            })
            .collect(),
        transaction: None,
    };
    cluster.send(leader, "jobs", &request).await?;

    let mut stale_behind = 0;
    for offset in 1..=10u64 {
        let response = cluster
            .http
            .put(format!(
                "{}/v1/groups/workers/offsets/jobs/0",
                cluster.url(leader)
            ))
            .json(&json!({ "offset": offset }))
            .send()
            .await?;
        ensure!(
            response.status().is_success(),
            "commit {offset}: {}",
            response.text().await?
        );
        // Acknowledged: a read that begins now, on the lagging follower, sees it.
        let (stale, read) = tokio::join!(
            read_offset(&cluster, LAGGING, true),
            read_offset(&cluster, LAGGING, false)
        );
        let (stale, read) = (stale?, read?);
        ensure!(
            read >= offset,
            "node {LAGGING} answered offset {read} after the commit of {offset} was acknowledged"
        );
        ensure!(
            stale <= offset,
            "stale read {stale} beyond the last commit {offset}"
        );
        if stale < offset {
            stale_behind += 1;
        }
    }
    // The switch works: the follower's own copy trailed the acknowledged commits.
    eprintln!("stale=true answered behind the last commit {stale_behind} times of 10");
    ensure!(
        stale_behind > 0,
        "the lagging follower's own copy was never behind: the test shows nothing"
    );
    Ok(())
}
