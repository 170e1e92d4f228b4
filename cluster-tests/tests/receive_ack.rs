//! Receive and ack across real node processes: leases and acks are replicated, so
//! a leader kill delivers no acked message again and no leased message before
//! its `invisible_until`; any node answers (it forwards to the leader); and a
//! receive takes messages from every broker group serving the topic, acks going
//! back to the group each handle names.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use broker_proto::api::{MessageInput, SendRequest};
use broker_proto::receive::{AckResponse, ReceiveResponse, ReceivedMessage};
use cluster_tests::harness::{decode, ClusterOptions, TestCluster};
use serde_json::{json, Value};

const BINARY: &str = env!("CARGO_BIN_EXE_cluster-node");
const GROUP: &str = "jobs";

async fn post<T: serde::de::DeserializeOwned>(
    cluster: &TestCluster,
    id: u64,
    path: &str,
    body: Value,
) -> Result<T> {
    let response = cluster
        .http
        .post(format!("{}{path}", cluster.url(id)))
        .json(&body)
        .send()
        .await?;
    decode(response).await
}

async fn receive(
    cluster: &TestCluster,
    id: u64,
    topic: &str,
    body: Value,
) -> Result<Vec<ReceivedMessage>> {
    let answer: ReceiveResponse = post(
        cluster,
        id,
        &format!("/v1/groups/{GROUP}/topics/{topic}/receive"),
        body,
    )
    .await?;
    Ok(answer.messages)
}

async fn ack(cluster: &TestCluster, id: u64, messages: &[ReceivedMessage]) -> Result<Vec<String>> {
    let handles: Vec<&str> = messages.iter().map(|m| m.receipt_handle.as_str()).collect();
    let answer: AckResponse = post(
        cluster,
        id,
        &format!("/v1/groups/{GROUP}/ack"),
        json!({ "receipt_handles": handles }),
    )
    .await?;
    Ok(answer.results.into_iter().map(|r| r.status).collect())
}

fn batch(prefix: &str, n: usize) -> SendRequest {
    SendRequest {
        messages: (0..n)
            .map(|i| MessageInput {
                body: Some(format!("{prefix}-{i}")),
                ..MessageInput::default()
            })
            .collect(),
        transaction: None,
    }
}

fn body(message: &ReceivedMessage) -> String {
    message.message.body.clone().unwrap_or_default()
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default()
}

/// 60 messages: 20 acked, 20 leased for a minute, 20 leased for 3 s and left to
/// expire; then the leader is killed. After the failover, receiving through the
/// survivors delivers exactly the 20 whose short lease ended — never an acked
/// one, never one of the minute-long leases — each with attempt 2.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_leader_kill_delivers_no_acked_message_again_and_no_leased_one_early() -> Result<()> {
    let mut cluster =
        TestCluster::start(std::path::Path::new(BINARY), ClusterOptions::default()).await?;
    let leader = cluster.wait_for_leader(Duration::from_secs(20)).await?;
    cluster.create_topic(leader, "work", 4).await?;
    cluster.send(leader, "work", &batch("m", 60)).await?;
    // Through a follower: it forwards to the leader.
    let follower = *cluster
        .live_nodes()
        .iter()
        .find(|id| **id != leader)
        .context("a follower")?;

    let mut all = Vec::new();
    while all.len() < 60 {
        let got = receive(
            &cluster,
            follower,
            "work",
            json!({"max_messages": 20, "invisible_ms": 60000}),
        )
        .await?;
        ensure!(!got.is_empty(), "received only {} of 60", all.len());
        all.extend(got);
    }
    all.sort_by_key(body);
    let acked: Vec<ReceivedMessage> = all[..20].to_vec();
    let long: Vec<ReceivedMessage> = all[20..40].to_vec();
    let short: Vec<ReceivedMessage> = all[40..].to_vec();
    ensure!(
        ack(&cluster, follower, &acked).await? == vec!["OK"; 20],
        "acks"
    );
    // The short ones: change their leases to 3 s from now.
    let mut short_until = 0;
    for message in &short {
        let changed: Value = post(
            &cluster,
            leader,
            &format!("/v1/groups/{GROUP}/change-invisible"),
            json!({"receipt_handle": message.receipt_handle, "invisible_ms": 3000}),
        )
        .await?;
        short_until = short_until.max(changed["invisible_until"].as_u64().unwrap_or_default());
    }

    eprintln!("--- SIGKILL leader {leader}");
    cluster.kill(leader);
    let new_leader = cluster.wait_for_leader(Duration::from_secs(20)).await?;
    eprintln!("    new leader {new_leader}");
    let acked_bodies: BTreeSet<String> = acked.iter().map(body).collect();
    let long_bodies: BTreeSet<String> = long.iter().map(body).collect();
    let short_bodies: BTreeSet<String> = short.iter().map(body).collect();

    let mut again: BTreeMap<String, u32> = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while again.len() < 20 {
        ensure!(
            Instant::now() < deadline,
            "only {} of the 20 expired came back",
            again.len()
        );
        let got = match receive(
            &cluster,
            new_leader,
            "work",
            json!({"max_messages": 32, "invisible_ms": 60000, "max_wait_ms": 1000}),
        )
        .await
        {
            Ok(got) => got,
            Err(e) => {
                eprintln!("    receive failed (failover): {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        let at = now_ms();
        for message in got {
            let text = body(&message);
            ensure!(
                !acked_bodies.contains(&text),
                "acked message {text} delivered again"
            );
            ensure!(
                !long_bodies.contains(&text),
                "{text} delivered while its minute-long lease runs"
            );
            ensure!(short_bodies.contains(&text), "unexpected {text}");
            // Answered (so granted) no earlier than the lease's end; 50 ms for
            // the shared clock's reading order.
            ensure!(
                at + 50 >= short_until,
                "{text} delivered {} ms before its lease ended",
                short_until - at
            );
            ensure!(
                message.delivery_attempt == 2,
                "{text} came back with attempt {}",
                message.delivery_attempt
            );
            ensure!(
                again
                    .insert(text.clone(), message.delivery_attempt)
                    .is_none(),
                "{text} delivered twice"
            );
        }
    }
    let extra = receive(&cluster, new_leader, "work", json!({"max_messages": 32})).await?;
    ensure!(
        extra.is_empty(),
        "nothing else is deliverable: {:?}",
        extra.iter().map(body).collect::<Vec<_>>()
    );

    eprintln!("--- the old leader rejoins; the acks of the 20 long leases land on the new leader");
    cluster.start_node(leader)?;
    cluster.wait_for_leader(Duration::from_secs(20)).await?;
    let statuses = ack(&cluster, leader, &long).await?;
    ensure!(
        statuses == vec!["OK"; 20],
        "acks of leases granted before the kill: {statuses:?}"
    );
    Ok(())
}

/// Two broker groups serve a topic: one receive (wait included) gets messages
/// of both, and one ack with handles of both groups acks them all.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_receive_takes_from_every_broker_group() -> Result<()> {
    let cluster = TestCluster::start(
        std::path::Path::new(BINARY),
        ClusterOptions {
            nodes: 1,
            groups: 2,
            ..ClusterOptions::default()
        },
    )
    .await?;
    cluster.wait_for_routes(2, Duration::from_secs(30)).await?;
    for id in [1, 2] {
        cluster.create_topic(id, "spread", 2).await?;
    }
    cluster.wait_for_routes(2, Duration::from_secs(30)).await?;
    // Wait until node 1 sees the topic in both groups.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let route: Value = cluster.get(1, "/v1/routes/spread").await?;
        if route["groups"].as_array().map_or(0, Vec::len) == 2 {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "node 1 never saw both groups serve the topic: {route}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    cluster.send(1, "spread", &batch("a", 5)).await?;
    cluster.send(2, "spread", &batch("b", 5)).await?;

    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while got.len() < 10 {
        ensure!(Instant::now() < deadline, "received {} of 10", got.len());
        got.extend(
            receive(
                &cluster,
                1,
                "spread",
                json!({"max_messages": 10, "max_wait_ms": 2000}),
            )
            .await?,
        );
    }
    let groups: BTreeSet<String> = got.iter().map(|m| m.broker_group.clone()).collect();
    ensure!(groups.len() == 2, "messages of both groups: {groups:?}");
    ensure!(
        ack(&cluster, 1, &got).await? == vec!["OK"; 10],
        "acks across groups"
    );
    ensure!(
        receive(&cluster, 2, "spread", json!({"max_messages": 10}))
            .await?
            .is_empty(),
        "nothing left"
    );
    Ok(())
}
