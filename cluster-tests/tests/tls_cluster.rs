//! A three-node group over TLS (client API and Raft, rustls, a CA the harness
//! makes): sends through a follower (forwarded over TLS) are replicated to every
//! node on pipelined append streams (HTTP upgrades inside TLS), read back from
//! each, survive a leader kill, and plain HTTP to a node's port gets no answer.

use std::time::Duration;

use anyhow::{ensure, Context, Result};
use broker_proto::api::{MessageInput, SendRequest};
use cluster_tests::harness::{ClusterOptions, TestCluster};

const BINARY: &str = env!("CARGO_BIN_EXE_cluster-node");

fn batch(tag: &str, n: usize) -> SendRequest {
    SendRequest {
        messages: (0..n)
            .map(|i| MessageInput {
                body: Some(format!("{tag}-{i}")),
                ..MessageInput::default()
            })
            .collect(),
        transaction: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_tls_group_replicates_fails_over_and_refuses_plain_http() -> Result<()> {
    let mut cluster = TestCluster::start(
        std::path::Path::new(BINARY),
        ClusterOptions {
            tls: true,
            ..ClusterOptions::default()
        },
    )
    .await?;
    let leader = cluster.wait_for_leader(Duration::from_secs(30)).await?;
    ensure!(cluster.url(leader).starts_with("https://"));
    let follower = *cluster
        .nodes
        .keys()
        .find(|id| **id != leader)
        .context("a follower")?;
    cluster.create_topic(leader, "secure", 2).await?;

    eprintln!("--- 40 batches of 50 through follower {follower} and leader {leader}");
    for i in 0..40 {
        let via = if i % 2 == 0 { follower } else { leader };
        cluster
            .send(via, "secure", &batch(&format!("b{i}"), 50))
            .await?;
    }
    let expected = cluster.queue_max_offsets(leader, "secure").await?;
    ensure!(expected.values().sum::<u64>() == 2000, "{expected:?}");
    for id in cluster.live_nodes() {
        cluster
            .wait_for_offsets(id, "secure", &expected, Duration::from_secs(20))
            .await?;
    }
    for id in cluster.live_nodes().into_iter().filter(|id| *id != leader) {
        let streams = cluster
            .metric(id, "broker_raft_append_stream_requests_total")
            .await?;
        ensure!(streams > 0.0, "follower {id} got no append stream over TLS");
    }

    eprintln!("--- plain HTTP to a TLS port gets no HTTP answer");
    let plain = reqwest::Client::new()
        .get(cluster.url(leader).replacen("https://", "http://", 1) + "/health")
        .timeout(Duration::from_secs(5))
        .send()
        .await;
    ensure!(
        plain.is_err(),
        "plain HTTP was answered: {:?}",
        plain.map(|r| r.status())
    );

    eprintln!("--- kill the leader: a new one is elected over TLS and takes sends");
    cluster.kill(leader);
    let new_leader = cluster.wait_for_leader(Duration::from_secs(30)).await?;
    ensure!(new_leader != leader);
    cluster
        .send(new_leader, "secure", &batch("after", 10))
        .await?;
    let total: u64 = cluster
        .queue_max_offsets(new_leader, "secure")
        .await?
        .values()
        .sum();
    ensure!(total == 2010, "{total}");
    Ok(())
}
