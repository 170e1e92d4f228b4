//! Idempotent producers across a leader change.

use std::time::Duration;

use anyhow::{ensure, Result};
use broker_proto::api::{MessageInput, SendRequest};
use cluster_tests::harness::{ClusterOptions, TestCluster, SMALL_STORAGE};

const BINARY: &str = env!("CARGO_BIN_EXE_cluster-node");

/// A batch sent with `producer_id`/`sequence`, retried unchanged after the leader
/// that stored it was SIGKILLed, is answered with the first results and stored
/// once: the dedup table is replicated state, not the old leader's memory.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_retry_after_a_leader_kill_is_stored_once() -> Result<()> {
    let mut cluster = TestCluster::start(
        std::path::Path::new(BINARY),
        ClusterOptions {
            extra_config: SMALL_STORAGE.into(),
            ..ClusterOptions::default()
        },
    )
    .await?;
    let leader = cluster.wait_for_leader(Duration::from_secs(20)).await?;
    cluster.create_topic(leader, "payments", 2).await?;
    let request = SendRequest {
        messages: (0..5u64)
            .map(|sequence| MessageInput {
                body: Some(format!("payment {sequence}")),
                producer_id: Some("checkout-7".into()),
                sequence: Some(sequence),
                ..MessageInput::default()
            })
            .collect(),
        transaction: None,
    };

    eprintln!("--- send through leader {leader}");
    let first = cluster.send(leader, "payments", &request).await?;

    eprintln!("--- SIGKILL leader {leader}, wait for a new one, retry the same batch");
    cluster.kill(leader);
    let new_leader = cluster.wait_for_leader(Duration::from_secs(20)).await?;
    ensure!(new_leader != leader, "a live node leads");
    let retried = cluster.send(new_leader, "payments", &request).await?;
    ensure!(
        retried.results == first.results,
        "the retry must be answered with the first results"
    );

    eprintln!("--- a fresh sequence is stored as new; each payment is stored once");
    let fresh = SendRequest {
        messages: vec![MessageInput {
            body: Some("payment 5".into()),
            producer_id: Some("checkout-7".into()),
            sequence: Some(5),
            ..MessageInput::default()
        }],
        transaction: None,
    };
    let stored = cluster.send(new_leader, "payments", &fresh).await?;
    ensure!(
        !first
            .results
            .iter()
            .any(|r| r.msg_id == stored.results[0].msg_id),
        "new message, new id"
    );
    let mut bodies = Vec::new();
    for queue in 0..2 {
        bodies.extend(
            cluster
                .pull_all(new_leader, "payments", queue, 0)
                .await?
                .into_iter()
                .map(|m| m.body.unwrap_or_default()),
        );
    }
    bodies.sort();
    let expected: Vec<String> = (0..6).map(|i| format!("payment {i}")).collect();
    ensure!(bodies == expected, "stored bodies {bodies:?}");

    eprintln!("--- the killed node restarts and also answers the retry from its replicated table");
    cluster.start_node(leader)?;
    cluster.wait_for_leader(Duration::from_secs(20)).await?;
    let again = cluster.send(leader, "payments", &request).await?;
    ensure!(
        again.results == first.results,
        "a retry through the restarted node is deduplicated too"
    );
    Ok(())
}
