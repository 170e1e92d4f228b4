//! A planned stop: SIGTERM drains the node first. Five times, the leader of a
//! three-node group is stopped with SIGTERM while writes flow through the other
//! nodes: it hands the group to a follower before it exits (its log says so, and
//! the new leader is the one it named), so the group needs no election timeout;
//! the time from SIGTERM to the first write acknowledged afterwards is printed.
//! At the end every acknowledged message is in the topic, once, and nothing that
//! was not sent.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use broker_proto::api::{MessageInput, SendRequest};
use cluster_tests::harness::{ClusterOptions, TestCluster, SMALL_STORAGE};

const BINARY: &str = env!("CARGO_BIN_EXE_cluster-node");

fn one(body: String) -> SendRequest {
    SendRequest {
        messages: vec![MessageInput {
            body: Some(body),
            queue_id: Some(0),
            ..MessageInput::default()
        }],
        transaction: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_hands_the_group_over_before_the_leader_stops() -> Result<()> {
    let mut cluster = TestCluster::start(
        std::path::Path::new(BINARY),
        ClusterOptions {
            extra_config: SMALL_STORAGE.into(),
            ..ClusterOptions::default()
        },
    )
    .await?;
    let first = cluster.wait_for_leader(Duration::from_secs(20)).await?;
    cluster.create_topic(first, "events", 1).await?;
    let mut acknowledged = BTreeSet::new();
    // Every body sent; a write that failed with an unknown outcome may be stored.
    let mut attempted = BTreeSet::new();
    let mut gaps = Vec::new();
    for round in 0..5u32 {
        let leader = cluster.wait_for_leader(Duration::from_secs(20)).await?;
        let body = format!("round {round} before");
        attempted.insert(body.clone());
        cluster.send(leader, "events", &one(body.clone())).await?;
        acknowledged.insert(body);
        let survivors: Vec<u64> = cluster
            .live_nodes()
            .into_iter()
            .filter(|id| *id != leader)
            .collect();

        eprintln!("--- round {round}: SIGTERM leader {leader}");
        let handed_over = cluster.log_count(leader, "draining: leadership handed over");
        let stopped_at = Instant::now();
        cluster.stop(leader, Duration::from_secs(20)).await;
        let stop_took = stopped_at.elapsed();
        ensure!(
            cluster.log_count(leader, "draining: leadership handed over") == handed_over + 1,
            "node {leader} stopped without handing the group over:\n{}",
            cluster.log_tails(30)
        );
        // Writes through the survivors: the first one acknowledged ends the gap.
        let mut attempt = 0usize;
        let gap = loop {
            let target = survivors[attempt % survivors.len()];
            attempt += 1;
            let body = format!("round {round} after {attempt}");
            attempted.insert(body.clone());
            if cluster
                .send(target, "events", &one(body.clone()))
                .await
                .is_ok()
            {
                acknowledged.insert(body);
                break stopped_at.elapsed();
            }
            ensure!(
                stopped_at.elapsed() < Duration::from_secs(30),
                "no write was acknowledged within 30 s of stopping node {leader}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        eprintln!(
            "round {round}: node {leader} drained and exited in {stop_took:?}; a write was acknowledged {gap:?} after its SIGTERM"
        );
        gaps.push(gap);
        cluster.start_node(leader)?;
        cluster.wait_for_leader(Duration::from_secs(20)).await?;
    }
    gaps.sort();
    eprintln!(
        "SIGTERM of the leader -> first acknowledged write: median {:?}, max {:?} (5 planned stops)",
        gaps[gaps.len() / 2],
        gaps[gaps.len() - 1]
    );

    let leader = cluster.wait_for_leader(Duration::from_secs(20)).await?;
    let expected = acknowledged.len() as u64;
    cluster
        .wait_for_offsets(
            leader,
            "events",
            &[(0, expected)].into(),
            Duration::from_secs(20),
        )
        .await
        .context("every acknowledged write in the queue")?;
    let stored = cluster.pull_all(leader, "events", 0, 0).await?;
    let bodies: Vec<String> = stored.iter().filter_map(|m| m.body.clone()).collect();
    let unique: BTreeSet<String> = bodies.iter().cloned().collect();
    ensure!(
        unique.len() == bodies.len(),
        "a message is stored twice: {bodies:?}"
    );
    let missing: Vec<&String> = acknowledged.difference(&unique).collect();
    ensure!(
        missing.is_empty(),
        "acknowledged but not stored: {missing:?}"
    );
    let phantoms: Vec<&String> = unique.difference(&attempted).collect();
    ensure!(phantoms.is_empty(), "stored but never sent: {phantoms:?}");
    Ok(())
}
