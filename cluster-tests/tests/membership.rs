//! Membership under load: a fourth node joins (learner, catch-up, voter: the add
//! answers 202 and the test follows the join until it is done), takes
//! over leadership by transfer, an old node is removed and stops serving writes, a
//! wiped node rejoins under a new id — and no acknowledged message is lost, and the
//! new nodes' CommitLogs are identical to the others'.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use broker_proto::api::{ClusterResponse, GroupView, JoinState, JoinView, SendResponse};
use cluster_tests::harness::{
    authorized_client, decode, ClusterOptions, TestCluster, SMALL_STORAGE,
};
use serde_json::json;

const BINARY: &str = env!("CARGO_BIN_EXE_cluster-node");
const GROUP: &str = "broker-a";

/// Sends one message at a time through `url` until `stop`, retrying each with the
/// same producer id and sequence until it is acknowledged. Answers the
/// acknowledged (queue, offset, body).
async fn load(
    url: String,
    token: Option<String>,
    stop: Arc<AtomicBool>,
) -> Result<Vec<(u32, u64, String)>> {
    let http = authorized_client(token.as_deref())?
        .timeout(Duration::from_secs(15))
        .build()?;
    let mut acked = Vec::new();
    let mut sequence = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let body = format!("v{sequence}");
        let request =
            json!({"messages": [{"body": body, "producer_id": "load", "sequence": sequence}]});
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let answer = http
                .post(format!("{url}/v1/topics/m/messages"))
                .json(&request)
                .send()
                .await;
            if let Ok(response) = answer {
                if let Ok(sent) = decode::<SendResponse>(response).await {
                    let r = &sent.results[0];
                    acked.push((r.queue_id, r.queue_offset, body.clone()));
                    break;
                }
            }
            if Instant::now() > deadline {
                bail!("message {sequence} not acknowledged within 30 s");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        sequence += 1;
    }
    Ok(acked)
}

async fn call(
    cluster: &TestCluster,
    method: reqwest::Method,
    via: u64,
    path: &str,
    body: Option<serde_json::Value>,
) -> Result<GroupView> {
    let mut request = cluster
        .http
        .request(method, format!("{}{path}", cluster.url(via)))
        .timeout(Duration::from_secs(120));
    if let Some(body) = body {
        request = request.json(&body);
    }
    decode(request.send().await?).await
}

/// Adds node `node_id` at its URL through node `via` and follows the join until
/// it ends (the add answers 202 at once, or 200 `DONE` for a voter); answers the
/// group as its leader sees it afterwards.
async fn join(cluster: &TestCluster, via: u64, node_id: u64) -> Result<GroupView> {
    let path = format!("{}/v1/cluster/groups/{GROUP}/nodes", cluster.url(via));
    let answer = cluster
        .http
        .post(&path)
        .json(&json!({"node_id": node_id, "address": cluster.url(node_id)}))
        .send()
        .await?;
    let status = answer.status().as_u16();
    let mut join: JoinView = decode(answer).await?;
    ensure!(
        status == 202 || (status == 200 && join.state == JoinState::Done),
        "adding node {node_id} answered {status}: {join:?}"
    );
    let deadline = Instant::now() + Duration::from_secs(120);
    while !join.state.is_final() {
        ensure!(
            Instant::now() < deadline,
            "the join of node {node_id} is still {:?} after 120 s",
            join.state
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
        join = decode(cluster.http.get(format!("{path}/{node_id}")).send().await?).await?;
    }
    ensure!(
        join.state == JoinState::Done,
        "node {node_id} did not join: {join:?}"
    );
    let leader = cluster.wait_for_leader(Duration::from_secs(20)).await?;
    let answer: ClusterResponse = decode(
        cluster
            .http
            .get(format!("{}/v1/cluster", cluster.url(leader)))
            .send()
            .await?,
    )
    .await?;
    answer
        .groups
        .into_iter()
        .find(|g| g.group == GROUP)
        .ok_or_else(|| anyhow::anyhow!("{GROUP} is not listed by its leader"))
}

fn voters(view: &GroupView) -> BTreeSet<u64> {
    view.nodes
        .iter()
        .filter(|n| n.role != "learner")
        .map(|n| n.id)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nodes_join_and_leave_under_load_without_losing_messages() -> Result<()> {
    let mut cluster = TestCluster::start(
        std::path::Path::new(BINARY),
        ClusterOptions {
            extra_config: format!(
                "{SMALL_STORAGE}[control]\nregister_interval = \"200ms\"\nroute_expiry = \"2s\"\n"
            ),
            ..ClusterOptions::default()
        },
    )
    .await?;
    let leader = cluster.wait_for_leader(Duration::from_secs(20)).await?;
    cluster.create_topic(leader, "m", 4).await?;
    let stop = Arc::new(AtomicBool::new(false));
    // Node 3 stays a member throughout; it forwards to whoever leads.
    let producer = tokio::spawn(load(
        cluster.url(3).to_string(),
        cluster.token.clone(),
        Arc::clone(&stop),
    ));
    tokio::time::sleep(Duration::from_secs(1)).await;

    eprintln!("--- add node 4 through a follower: learner, catch-up, voter");
    let four = cluster.start_new_node(GROUP)?;
    let via = *[1u64, 2, 3].iter().find(|&&id| id != leader).unwrap_or(&3);
    let started = Instant::now();
    let path = format!("/v1/cluster/groups/{GROUP}/nodes");
    let view = join(&cluster, via, four).await?;
    eprintln!(
        "node {four} joined as a voter after {:?}",
        started.elapsed()
    );
    ensure!(
        voters(&view) == BTreeSet::from([1, 2, 3, four]),
        "voters {:?}",
        voters(&view)
    );
    let again = join(&cluster, via, four).await?;
    ensure!(
        voters(&again) == voters(&view),
        "adding a member again changes nothing"
    );
    let reuse = cluster
        .http
        .post(format!("{}{path}", cluster.url(1)))
        .json(&json!({"node_id": four, "address": "http://127.0.0.1:1"}))
        .send()
        .await?;
    ensure!(
        reuse.status() == 400,
        "a member's id at another address is refused: {}",
        reuse.status()
    );

    eprintln!("--- transfer leadership to node {four}");
    let started = Instant::now();
    let view = match call(
        &cluster,
        reqwest::Method::POST,
        1,
        &format!("/v1/cluster/groups/{GROUP}/transfer-leader"),
        Some(json!({"to": four})),
    )
    .await
    {
        Ok(view) => view,
        Err(e) => bail!("{e}\n{}", cluster.log_tails(40)),
    };
    ensure!(
        view.leader_id == Some(four),
        "leader after transfer: {:?}",
        view.leader_id
    );
    eprintln!("node {four} leads after {:?}", started.elapsed());

    eprintln!("--- remove node 1: it stops serving writes");
    let view = call(
        &cluster,
        reqwest::Method::DELETE,
        2,
        &format!("/v1/cluster/groups/{GROUP}/nodes/1"),
        None,
    )
    .await?;
    ensure!(
        voters(&view) == BTreeSet::from([2, 3, four]),
        "voters {:?}",
        voters(&view)
    );
    // The write must be answered by node 1 itself: a peer's "already forwarded"
    // marker stops it from forwarding (a client's marker is ignored, so the test
    // presents the cluster secret as a peer would).
    let (secret_file, _) = cluster.secret_files().context("a secured cluster")?;
    let secret = std::fs::read_to_string(secret_file)?.trim().to_string();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let answer = cluster
            .http
            .post(format!("{}/v1/topics/m/messages", cluster.url(1)))
            .header(broker::http::extract::FORWARDED_HEADER, "test")
            .header(broker::auth::cluster_secret::SECRET_HEADER, &secret)
            .json(&json!({"messages": [{"body": "to the removed node"}]}))
            .send()
            .await?;
        if !answer.status().is_success() {
            eprintln!("removed node 1 answers {} to a write", answer.status());
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "removed node 1 still accepts writes"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let missing = cluster
        .http
        .delete(format!(
            "{}/v1/cluster/groups/{GROUP}/nodes/1",
            cluster.url(2)
        ))
        .send()
        .await?;
    ensure!(
        missing.status() == 400,
        "removing a non-member: {}",
        missing.status()
    );

    eprintln!("--- remove node 2, wipe it, rejoin it under a new id");
    call(
        &cluster,
        reqwest::Method::DELETE,
        3,
        &format!("/v1/cluster/groups/{GROUP}/nodes/2"),
        None,
    )
    .await?;
    cluster.kill(2);
    std::fs::remove_dir_all(&cluster.node(2).data_dir)?;
    let five = cluster.start_new_node(GROUP)?;
    let view = join(&cluster, 3, five).await?;
    ensure!(
        voters(&view) == BTreeSet::from([3, four, five]),
        "voters {:?}",
        voters(&view)
    );
    cluster.stop(1, Duration::from_secs(10)).await;

    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::Relaxed);
    let acked = producer.await??;
    ensure!(
        acked.len() > 20,
        "only {} messages acknowledged",
        acked.len()
    );
    eprintln!("{} messages acknowledged during the changes", acked.len());

    eprintln!("--- every acknowledged message is on the new nodes; CommitLogs identical");
    let offsets = cluster.queue_max_offsets(four, "m").await?;
    for node in [3, five] {
        cluster
            .wait_for_offsets(node, "m", &offsets, Duration::from_secs(30))
            .await?;
    }
    for node in [four, five] {
        let mut stored = BTreeSet::new();
        for queue in 0..4 {
            for m in cluster.pull_all(node, "m", queue, 0).await? {
                stored.insert((m.queue_id, m.queue_offset, m.body.unwrap_or_default()));
            }
        }
        for message in &acked {
            ensure!(
                stored.contains(message),
                "node {node} lacks acknowledged {message:?}"
            );
        }
    }
    // Let the last entries reach every CommitLog file before comparing bytes.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let reference = cluster.commit_log_digest(3)?;
    for node in [four, five] {
        ensure!(
            cluster.commit_log_digest(node)? == reference,
            "node {node}'s CommitLog differs from node 3's"
        );
    }
    eprintln!("queue max offsets {offsets:?}");
    Ok(())
}
