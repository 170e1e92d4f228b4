//! A leader whose state machine trails the group (fault switch `lagging-apply`:
//! it applies each run of committed entries 700 ms late — a new leader's usual
//! state right after an election) still finds what a consumer saw on another
//! replica: a give-back of a message the leader has not applied yet copies it
//! instead of answering 404 (which the push consumer takes as "drop it": an
//! acknowledged message lost from its retry chain), and an offset commit up to a
//! message it has not applied yet is stored instead of refused with 409.
//!
//! Needs the node binary built with fault switches:
//! `cargo test --release -p cluster-tests --features fault-injection --test lagging_leader`
//! (scripts/test.sh runs it).

#![cfg(feature = "fault-injection")]

use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use broker_proto::api::{MessageInput, PullResponse, SendRequest};
use cluster_tests::harness::{ClusterOptions, TestCluster};
use serde_json::{json, Value};

const BINARY: &str = env!("CARGO_BIN_EXE_cluster-node");
/// The node that applies late, made leader.
const LAGGING: u64 = 3;
/// A node that applies at once, where the consumer reads.
const PROMPT: u64 = 1;

async fn call(
    cluster: &TestCluster,
    id: u64,
    method: &str,
    path: &str,
    body: Value,
) -> Result<(u16, Value)> {
    let url = format!("{}{path}", cluster.url(id));
    let request = match method {
        "POST" => cluster.http.post(url),
        "PUT" => cluster.http.put(url),
        other => bail!("method {other}"),
    };
    let response = request.json(&body).send().await?;
    let status = response.status().as_u16();
    let text = response.text().await?;
    Ok((
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    ))
}

/// Sends one message through the lagging leader in the background (its answer
/// waits for its own late apply) and returns once the prompt node serves it, with
/// the send still unanswered: the leader has not applied it yet.
async fn sent_but_not_applied_by_the_leader(
    cluster: &TestCluster,
    body: &str,
    offset: u64,
) -> Result<tokio::task::JoinHandle<Result<()>>> {
    let http = cluster.http.clone();
    let url = format!("{}/v1/topics/jobs/messages", cluster.url(LAGGING));
    let request = SendRequest {
        messages: vec![MessageInput {
            body: Some(body.into()),
            queue_id: Some(0),
            ..MessageInput::default()
        }],
        transaction: None,
    };
    let send = tokio::spawn(async move {
        let response = http.post(url).json(&request).send().await?;
        ensure!(
            response.status().is_success(),
            "send: {}",
            response.text().await?
        );
        Ok(())
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let page: PullResponse = cluster
            .get(
                PROMPT,
                &format!("/v1/topics/jobs/queues/0/messages?offset={offset}"),
            )
            .await?;
        if page
            .messages
            .iter()
            .any(|m| m.body.as_deref() == Some(body))
        {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "{body} never reached node {PROMPT}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    ensure!(
        !send.is_finished(),
        "the send was answered before the test could act: the leader is not lagging"
    );
    Ok(send)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_lagging_leader_gives_back_and_commits_what_a_follower_served() -> Result<()> {
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
    let leader = cluster.wait_for_leader(Duration::from_secs(10)).await?;
    if leader != LAGGING {
        let (status, body) = call(
            &cluster,
            leader,
            "POST",
            "/v1/cluster/groups/broker-a/transfer-leader",
            json!({ "to": LAGGING }),
        )
        .await?;
        ensure!(status == 200, "transfer-leader: {status} {body}");
        let deadline = Instant::now() + Duration::from_secs(10);
        while cluster.agreed_leader().await != Some(LAGGING) {
            ensure!(
                Instant::now() < deadline,
                "node {LAGGING} did not become leader"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    cluster.create_topic(LAGGING, "jobs", 1).await?;

    eprintln!("--- give back a message the leader has not applied yet");
    let send = sent_but_not_applied_by_the_leader(&cluster, "first", 0).await?;
    let (status, answer) = call(
        &cluster,
        LAGGING,
        "POST",
        "/v1/groups/workers/retry",
        json!({ "topic": "jobs", "queue_id": 0, "queue_offset": 0 }),
    )
    .await?;
    ensure!(
        status == 200,
        "give-back at the lagging leader: {status} {answer}"
    );
    ensure!(answer["topic"] == "%RETRY%workers", "{answer}");
    send.await.context("send task")??;

    eprintln!("--- commit an offset past a message the leader has not applied yet");
    let send = sent_but_not_applied_by_the_leader(&cluster, "second", 1).await?;
    let (status, answer) = call(
        &cluster,
        LAGGING,
        "PUT",
        "/v1/groups/workers/offsets/jobs/0",
        json!({ "offset": 2 }),
    )
    .await?;
    ensure!(
        status == 200,
        "commit at the lagging leader: {status} {answer}"
    );
    ensure!(answer["offset"] == 2, "{answer}");
    send.await.context("send task")??;

    eprintln!("--- past the end once applied: still refused");
    let (status, answer) = call(
        &cluster,
        LAGGING,
        "PUT",
        "/v1/groups/workers/offsets/jobs/0",
        json!({ "offset": 3 }),
    )
    .await?;
    ensure!(status == 409, "commit past the end: {status} {answer}");
    let (status, answer) = call(
        &cluster,
        LAGGING,
        "POST",
        "/v1/groups/workers/retry",
        json!({ "topic": "jobs", "queue_id": 0, "queue_offset": 2 }),
    )
    .await?;
    ensure!(status == 404, "give-back past the end: {status} {answer}");
    Ok(())
}
