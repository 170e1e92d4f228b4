//! Transactional messages with real processes: transactions are committed and
//! rolled back while the leader is SIGKILLed in the middle of the resolutions
//! (some commits are accepted but not answered, or answered by a leader that then
//! dies); the producer repeats each resolution on any node until it is answered.
//! Afterwards every committed transaction's messages are in the topic exactly
//! once, and no rolled-back one's.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Result};
use broker_proto::api::{MessageInput, SendRequest, SendResponse};
use broker_proto::transaction::{TransactionInput, TransactionResolution};
use cluster_tests::harness::{decode, ClusterOptions, TestCluster, SMALL_STORAGE};

const BINARY: &str = env!("CARGO_BIN_EXE_cluster-node");
const TOPIC: &str = "orders";
const QUEUES: u32 = 2;
const TRANSACTIONS: usize = 40;
const PER_TRANSACTION: usize = 3;

/// Commits or rolls back `id` through the nodes in turn until one answers 200;
/// answers the resolution.
async fn resolve(
    cluster: &TestCluster,
    urls: &[String],
    id: &str,
    commit: bool,
) -> Result<TransactionResolution> {
    let action = if commit { "commit" } else { "rollback" };
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut attempt = 0usize;
    loop {
        let url = &urls[attempt % urls.len()];
        attempt += 1;
        let response = cluster
            .http
            .post(format!("{url}/v1/transactions/{id}/{action}"))
            .timeout(Duration::from_secs(5))
            .send()
            .await;
        if let Ok(response) = response {
            let status = response.status();
            if status.is_success() {
                return Ok(response.json().await?);
            }
            let body = response.text().await.unwrap_or_default();
            // A repeat of an accepted resolution answers 200, never 409/404.
            ensure!(
                status.as_u16() != 409 && status.as_u16() != 404,
                "{action} {id}: {status} {body}"
            );
        }
        if Instant::now() > deadline {
            bail!("{action} {id}: no answer within a minute");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn resolutions_survive_a_leader_kill_once_and_only_as_resolved() -> Result<()> {
    let mut cluster = TestCluster::start(
        std::path::Path::new(BINARY),
        ClusterOptions {
            extra_config: SMALL_STORAGE.to_string(),
            ..ClusterOptions::default()
        },
    )
    .await?;
    let leader = cluster.wait_for_leader(Duration::from_secs(10)).await?;
    cluster.create_topic(leader, TOPIC, QUEUES).await?;
    let urls: Vec<String> = cluster.nodes.values().map(|n| n.url.clone()).collect();

    eprintln!("--- {TRANSACTIONS} transactions of {PER_TRANSACTION} messages");
    let mut transactions: Vec<(String, bool, Vec<String>)> = Vec::new();
    for t in 0..TRANSACTIONS {
        let bodies: Vec<String> = (0..PER_TRANSACTION)
            .map(|i| format!("t{t:02}-{i}"))
            .collect();
        let request = SendRequest {
            messages: bodies
                .iter()
                .map(|b| MessageInput {
                    body: Some(b.clone()),
                    ..MessageInput::default()
                })
                .collect(),
            transaction: Some(TransactionInput {
                producer_group: "pg".into(),
            }),
        };
        let response = cluster
            .http
            .post(format!(
                "{}/v1/topics/{TOPIC}/messages",
                cluster.url(leader)
            ))
            .json(&request)
            .send()
            .await?;
        let sent: SendResponse = decode(response).await?;
        let id = sent.transaction_id.clone().unwrap_or_default();
        ensure!(id.len() == 32, "a transaction id: {sent:?}");
        transactions.push((id, t % 3 != 0, bodies));
    }

    eprintln!("--- resolve them while the leader is killed");
    let mut answers: BTreeMap<String, TransactionResolution> = BTreeMap::new();
    let mut killed = false;
    for (i, (id, commit, _)) in transactions.iter().enumerate() {
        if i == TRANSACTIONS / 2 && !killed {
            // Commits in flight at the kill: fire one without waiting.
            let url = format!(
                "{}/v1/transactions/{id}/{}",
                cluster.url(leader),
                if *commit { "commit" } else { "rollback" }
            );
            let _ = cluster
                .http
                .post(url)
                .timeout(Duration::from_millis(50))
                .send()
                .await;
            eprintln!("--- SIGKILL the leader, node {leader}");
            cluster.kill(leader);
            killed = true;
        }
        let answer = resolve(&cluster, &urls, id, *commit).await?;
        ensure!(
            answer.status == if *commit { "COMMITTED" } else { "ROLLED_BACK" },
            "{id}: {answer:?}"
        );
        ensure!(answer.messages == PER_TRANSACTION as u64, "{answer:?}");
        answers.insert(id.clone(), answer);
    }
    ensure!(
        answers.len() == TRANSACTIONS,
        "every transaction answered once"
    );
    let second = cluster.wait_for_leader(Duration::from_secs(10)).await?;
    cluster.start_node(leader)?;
    eprintln!("new leader {second}; node {leader} back");

    eprintln!("--- every committed message once, no rolled-back one");
    // Resolutions were answered by a leader: every node serves them once it
    // applied; read from the new leader.
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for queue in 0..QUEUES {
        for message in cluster.pull_all(second, TOPIC, queue, 0).await? {
            *seen.entry(message.body.unwrap_or_default()).or_default() += 1;
        }
    }
    for (id, commit, bodies) in &transactions {
        for body in bodies {
            let copies = seen.get(body).copied().unwrap_or_default();
            if *commit {
                ensure!(copies == 1, "{body} of committed {id}: {copies} copies");
            } else {
                ensure!(copies == 0, "{body} of rolled-back {id}: visible");
            }
        }
    }
    let committed = transactions.iter().filter(|(_, c, _)| *c).count();
    ensure!(
        seen.values().sum::<usize>() == committed * PER_TRANSACTION,
        "unexpected messages: {seen:?}"
    );
    eprintln!(
        "{committed} committed, {} rolled back, across a leader kill",
        TRANSACTIONS - committed
    );
    Ok(())
}
