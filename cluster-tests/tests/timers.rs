//! Timer messages (`delay_ms`, `deliver_at`) with real processes: every timer
//! reaches its topic exactly once and never before its time while the leader is
//! SIGKILLed shortly before a run of them is due, and while every node is
//! stopped and started again (timers due during the outage arrive after it;
//! timers due later arrive on time from the index the nodes rebuilt). Timers due
//! while a settled leader serves arrive within a second.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{ensure, Result};
use broker_client::BrokerClient;
use broker_proto::api::{MessageInput, MessageView, SendRequest};
use cluster_tests::harness::{ClusterOptions, TestCluster, SMALL_STORAGE};

const BINARY: &str = env!("CARGO_BIN_EXE_cluster-node");
const TOPIC: &str = "reminders";
const QUEUES: u32 = 2;

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis() as u64
}

/// Every message seen in the topic, with the wall time it was first pulled.
type Received = Arc<Mutex<Vec<(u64, MessageView)>>>;

/// Pulls every queue of the topic from any node until stopped, recording messages.
fn spawn_reader(client: BrokerClient, received: Received) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut offsets = [0u64; QUEUES as usize];
        loop {
            for queue in 0..QUEUES {
                let from = offsets[queue as usize];
                let page = client.pull(TOPIC, queue, from, 256, 0, None).await.ok();
                // A lagging replica may answer with an older end: never go back.
                if let Some(page) = page.filter(|p| p.next_offset > from) {
                    let at = now_ms();
                    offsets[queue as usize] = page.next_offset;
                    received.lock().expect("lock").extend(
                        page.messages
                            .into_iter()
                            .filter(|m| m.queue_offset >= from)
                            .map(|m| (at, m)),
                    );
                }
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    })
}

/// Sends `count` timers named `{name}-{i}` due at `due_ms`; answers body → (id, due).
async fn send_timers(
    cluster: &TestCluster,
    node: u64,
    name: &str,
    count: usize,
    due_ms: u64,
) -> Result<BTreeMap<String, (String, u64)>> {
    let bodies: Vec<String> = (0..count).map(|i| format!("{name}-{i:02}")).collect();
    let request = SendRequest {
        messages: bodies
            .iter()
            .map(|body| MessageInput {
                body: Some(body.clone()),
                deliver_at: Some(due_ms),
                ..MessageInput::default()
            })
            .collect(),
        transaction: None,
    };
    let answer = cluster.send(node, TOPIC, &request).await?;
    let mut sent = BTreeMap::new();
    for (body, result) in bodies.iter().zip(&answer.results) {
        ensure!(
            result.topic == "%TIMER%",
            "a timer waits in the timer topic: {result:?}"
        );
        ensure!(result.deliver_timestamp == Some(due_ms), "{result:?}");
        sent.insert(body.clone(), (result.msg_id.clone(), due_ms));
    }
    Ok(sent)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn timers_arrive_once_and_never_early_across_a_leader_kill_and_a_full_restart() -> Result<()>
{
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
    let client = BrokerClient::new(urls, cluster.client_options())?;
    let received: Received = Arc::default();
    let reader = spawn_reader(client.clone(), Arc::clone(&received));

    eprintln!("--- timers due around a leader kill");
    let t0 = now_ms();
    let mut sent = BTreeMap::new();
    for (name, after) in [("k3000", 3000), ("k3300", 3300), ("k4000", 4000)] {
        sent.extend(send_timers(&cluster, leader, name, 10, t0 + after).await?);
    }
    // Due well after any failover: the settled leader's promise.
    let settled_from = t0 + 9000;
    sent.extend(send_timers(&cluster, leader, "k9000", 10, settled_from).await?);
    tokio::time::sleep(Duration::from_millis((t0 + 2700).saturating_sub(now_ms()))).await;
    eprintln!("--- SIGKILL the leader, node {leader}, 300 ms before the first run is due");
    cluster.kill(leader);
    let second = cluster.wait_for_leader(Duration::from_secs(10)).await?;
    eprintln!("new leader {second} after {} ms", now_ms() - t0 - 2700);
    cluster.start_node(leader)?;

    eprintln!("--- timers due during an outage of every node, and after it");
    tokio::time::sleep(Duration::from_millis(
        (settled_from + 1500).saturating_sub(now_ms()),
    ))
    .await;
    let leader = cluster.wait_for_leader(Duration::from_secs(10)).await?;
    let t1 = now_ms();
    let down_due = t1 + 2500;
    sent.extend(send_timers(&cluster, leader, "down", 10, down_due).await?);
    let after_due = t1 + 15_000;
    sent.extend(send_timers(&cluster, leader, "after", 10, after_due).await?);
    for id in cluster.nodes.keys().copied().collect::<Vec<_>>() {
        cluster.stop(id, Duration::from_secs(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(
        (down_due + 500).saturating_sub(now_ms()),
    ))
    .await;
    eprintln!("--- every node starts again");
    for id in cluster.nodes.keys().copied().collect::<Vec<_>>() {
        cluster.start_node(id)?;
    }
    cluster.wait_for_leader(Duration::from_secs(20)).await?;
    ensure!(
        now_ms() + 2000 < after_due,
        "the restart took too long for the timers due after it"
    );

    eprintln!("--- every timer arrives");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let count = received.lock().expect("lock").len();
        if count >= sent.len() || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Anything delivered twice would show up now.
    tokio::time::sleep(Duration::from_secs(2)).await;
    reader.abort();
    let received = received.lock().expect("lock").clone();
    let mut seen: BTreeMap<String, Vec<(u64, MessageView)>> = BTreeMap::new();
    for (at, message) in received {
        seen.entry(message.body.clone().unwrap_or_default())
            .or_default()
            .push((at, message));
    }
    let mut lags: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
    for (body, (msg_id, due)) in &sent {
        let copies = seen.get(body).map_or(&[][..], Vec::as_slice);
        ensure!(copies.len() == 1, "{body}: seen {} times", copies.len());
        let (at, message) = &copies[0];
        ensure!(message.msg_id == *msg_id, "{body} changed its id");
        ensure!(
            message.store_timestamp >= *due && *at >= *due,
            "{body} visible before its time: due {due}, stored {}, seen {at}",
            message.store_timestamp
        );
        let run = body.split('-').next().unwrap_or_default();
        lags.entry(run).or_default().push(at - due);
    }
    ensure!(seen.len() == sent.len(), "unexpected messages: {seen:?}");
    for (run, lags) in &lags {
        let worst = lags.iter().max().copied().unwrap_or_default();
        eprintln!("{run}: visible at most {worst} ms after its time");
        if *run == "k9000" || *run == "after" {
            ensure!(
                worst <= 1000,
                "{run}: {worst} ms late with a settled leader (the promise is within a second)"
            );
        }
    }
    Ok(())
}
