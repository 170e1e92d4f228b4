//! Replication through a real three-node group.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{ensure, Result};
use broker_proto::api::{MessageInput, SendRequest};
use cluster_tests::harness::{ClusterOptions, TestCluster, SMALL_STORAGE};

const BINARY: &str = env!("CARGO_BIN_EXE_cluster-node");

/// 10,000 messages sent through a follower and through the leader are pulled back
/// identically — same bodies, message ids, queue offsets — from each of the three
/// nodes, and the three CommitLogs are byte-identical.
///
/// Batches of 50 go alternately to a follower (which forwards to the leader) and
/// to the leader, eight at a time; every acknowledged (queue, offset) must be unique
/// and every queue dense from 0. Replication to each follower must have run
/// pipelined: requests sent before the previous one was answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ten_thousand_messages_read_back_identically_from_every_node() -> Result<()> {
    let cluster = TestCluster::start(
        std::path::Path::new(BINARY),
        ClusterOptions {
            extra_config: SMALL_STORAGE.into(),
            ..ClusterOptions::default()
        },
    )
    .await?;
    let leader = cluster.wait_for_leader(Duration::from_secs(20)).await?;
    let follower = *cluster
        .nodes
        .keys()
        .find(|id| **id != leader)
        .expect("three nodes");
    cluster.create_topic(leader, "orders", 4).await?;

    eprintln!("--- send 10,000 messages: 200 batches of 50, alternating follower {follower} and leader {leader}");
    let mut sends = tokio::task::JoinSet::new();
    let cluster = std::sync::Arc::new(cluster);
    for batch in 0..200u32 {
        let cluster = std::sync::Arc::clone(&cluster);
        let target = if batch % 2 == 0 { follower } else { leader };
        sends.spawn(async move {
            let request = SendRequest {
                messages: (0..50)
                    .map(|i| MessageInput {
                        body: Some(format!(
                            "message {batch}-{i} {}",
                            "x".repeat((batch as usize * 7 + i) % 300)
                        )),
                        tags: Some(format!("T{}", i % 3)),
                        keys: vec![format!("key-{batch}-{i}")],
                        ..MessageInput::default()
                    })
                    .collect(),
                transaction: None,
            };
            let response = cluster.send(target, "orders", &request).await?;
            anyhow::Ok((request, response))
        });
        if sends.len() >= 8 {
            sends.join_next().await.expect("a send is running")??;
        }
    }
    let mut expected: BTreeMap<(u32, u64), (String, String)> = BTreeMap::new();
    // The JoinSet drained above lost nothing: collect the rest, then re-send nothing.
    while let Some(done) = sends.join_next().await {
        let (request, response) = done??;
        ensure!(
            response.results.len() == request.messages.len(),
            "one result per message"
        );
        for (input, result) in request.messages.iter().zip(&response.results) {
            let previous = expected.insert(
                (result.queue_id, result.queue_offset),
                (
                    result.msg_id.clone(),
                    input.body.clone().expect("text body"),
                ),
            );
            ensure!(
                previous.is_none(),
                "two messages at {}/{}",
                result.queue_id,
                result.queue_offset
            );
        }
    }
    // The first batches were joined inside the loop; count what the queues hold.
    let leader_offsets = cluster.queue_max_offsets(leader, "orders").await?;
    let total: u64 = leader_offsets.values().sum();
    ensure!(
        total == 10_000,
        "the leader holds {total} messages, expected 10000"
    );

    eprintln!("--- every node catches up and returns the same messages");
    let mut reference: Option<Vec<Vec<(String, String, u64)>>> = None;
    for id in 1..=3 {
        cluster
            .wait_for_offsets(id, "orders", &leader_offsets, Duration::from_secs(30))
            .await?;
        let mut queues = Vec::new();
        for queue in 0..4 {
            let messages = cluster.pull_all(id, "orders", queue, 0).await?;
            for (i, message) in messages.iter().enumerate() {
                ensure!(
                    message.queue_offset == i as u64,
                    "queue {queue} has a gap at {i} on node {id}"
                );
                if let Some((msg_id, body)) = expected.get(&(queue, message.queue_offset)) {
                    ensure!(message.msg_id == *msg_id && message.body.as_deref() == Some(body.as_str()),
                        "node {id} queue {queue} offset {i} differs from what the send acknowledged");
                }
            }
            queues.push(
                messages
                    .into_iter()
                    .map(|m| (m.msg_id, m.body.unwrap_or_default(), m.commit_log_offset))
                    .collect::<Vec<_>>(),
            );
        }
        match &reference {
            None => reference = Some(queues),
            Some(reference) => ensure!(
                *reference == queues,
                "node {id} returns different messages than node 1"
            ),
        }
    }

    eprintln!("--- the CommitLogs are byte-identical");
    let digests: Vec<_> = (1..=3)
        .map(|id| cluster.commit_log_digest(id))
        .collect::<Result<_>>()?;
    ensure!(
        digests[0] == digests[1] && digests[1] == digests[2],
        "commit logs differ: {digests:?}"
    );
    ensure!(
        digests[0].len() > 1,
        "the test should roll several 1 MiB commit log files"
    );

    eprintln!("--- replication to each follower ran pipelined");
    for id in cluster.nodes.keys().copied().filter(|id| *id != leader) {
        let requests = cluster
            .metric(id, "broker_raft_append_stream_requests_total")
            .await?;
        let overlapped = cluster
            .metric(id, "broker_raft_append_stream_pipelined_requests_total")
            .await?;
        eprintln!("follower {id}: {requests} requests on append streams, {overlapped} overlapping an unanswered one");
        // Eight sends in flight keep the leader proposing while a follower
        // fsyncs: some requests must leave before the previous one's answer.
        ensure!(
            overlapped > 0.0,
            "follower {id} never saw a request overlap an unanswered one ({requests} on streams)"
        );
    }
    Ok(())
}
