//! Delayed delivery across leader kills and restarts, with RocketMQ's real delay
//! levels 1–5 (1 s, 5 s, 10 s, 30 s, 1 min): every delayed message reaches its
//! topic exactly once and never before its delay, while the leader is SIGKILLed
//! twice (once just before the 30 s level is due) and restarted. The same run
//! finds, by key, a message sent a minute earlier.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{ensure, Context, Result};
use broker_client::BrokerClient;
use broker_proto::api::{MessageInput, MessageView, SendRequest};
use cluster_tests::harness::{ClusterOptions, TestCluster, SMALL_STORAGE};

const BINARY: &str = env!("CARGO_BIN_EXE_cluster-node");
const TOPIC: &str = "timers";
const QUEUES: u32 = 4;
/// (delay level, its delay, messages sent with it).
const LEVELS: [(u32, Duration, usize); 6] = [
    (0, Duration::ZERO, 20),
    (1, Duration::from_secs(1), 20),
    (2, Duration::from_secs(5), 20),
    (3, Duration::from_secs(10), 20),
    (4, Duration::from_secs(30), 10),
    (5, Duration::from_secs(60), 5),
];

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis() as u64
}

/// What a sender knows about one message.
#[derive(Clone, Debug)]
struct Sent {
    msg_id: String,
    delay: Duration,
    /// Wall time just before the send request left.
    sent_ms: u64,
    deliver_ms: Option<u64>,
}

/// Every message seen in the topic, with the wall time it was first pulled.
type Received = Arc<Mutex<Vec<(u64, MessageView)>>>;

/// Pulls every queue of the topic from any node until stopped, recording messages.
fn spawn_reader(client: BrokerClient, received: Received) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut offsets = [0u64; QUEUES as usize];
        loop {
            for queue in 0..QUEUES {
                let page = client
                    .pull(TOPIC, queue, offsets[queue as usize], 256, 0, None)
                    .await
                    .ok();
                // A lagging replica may answer with an older end: never go back.
                let from = offsets[queue as usize];
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
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn delayed_messages_arrive_once_and_never_early_across_leader_kills() -> Result<()> {
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
    cluster.create_topic(leader, "audit", 1).await?;
    let urls: Vec<String> = cluster.nodes.values().map(|n| n.url.clone()).collect();
    let client = BrokerClient::new(urls, cluster.client_options())?;

    eprintln!("--- a keyed message to find a minute later");
    let started = Instant::now();
    let keyed_ms = now_ms();
    let keyed = cluster
        .send(
            leader,
            "audit",
            &SendRequest {
                messages: vec![MessageInput {
                    body: Some("sent a minute ago".into()),
                    keys: vec!["order-early".into()],
                    ..MessageInput::default()
                }],
                transaction: None,
            },
        )
        .await?;

    eprintln!("--- a level beyond the table is refused, and nothing is stored");
    let refused = cluster
        .http
        .post(format!(
            "{}/v1/topics/{TOPIC}/messages",
            cluster.url(leader)
        ))
        .json(&serde_json::json!({"messages": [{"body": "x", "delay_level": 19}]}))
        .send()
        .await?;
    ensure!(
        refused.status() == 400,
        "level 19 answered {}",
        refused.status()
    );
    let body: serde_json::Value = refused.json().await?;
    ensure!(body["code"] == "BAD_REQUEST", "error shape: {body}");

    eprintln!("--- delayed messages of levels 1-5 and immediate ones");
    let received: Received = Arc::default();
    let reader = spawn_reader(client.clone(), Arc::clone(&received));
    let mut sent: BTreeMap<String, Sent> = BTreeMap::new();
    for (level, delay, count) in LEVELS {
        let bodies: Vec<String> = (0..count).map(|i| format!("L{level}-{i:02}")).collect();
        let request = SendRequest {
            messages: bodies
                .iter()
                .map(|body| MessageInput {
                    body: Some(body.clone()),
                    tags: Some(format!("level{level}")),
                    keys: vec![body.clone()],
                    delay_level: Some(level),
                    ..MessageInput::default()
                })
                .collect(),
            transaction: None,
        };
        let sent_ms = now_ms();
        let answer = cluster.send(leader, TOPIC, &request).await?;
        for (body, result) in bodies.iter().zip(&answer.results) {
            if level == 0 {
                ensure!(result.topic == TOPIC && result.deliver_timestamp.is_none());
            } else {
                ensure!(
                    result.topic == "%SCHEDULE%",
                    "a delayed message waits in the schedule topic: {result:?}"
                );
                let due = result.deliver_timestamp.context("no deliver_timestamp")?;
                ensure!(due >= sent_ms + delay.as_millis() as u64);
            }
            sent.insert(
                body.clone(),
                Sent {
                    msg_id: result.msg_id.clone(),
                    delay,
                    sent_ms,
                    deliver_ms: result.deliver_timestamp,
                },
            );
        }
    }
    let total = sent.len();

    tokio::time::sleep(Duration::from_millis(2500).saturating_sub(started.elapsed())).await;
    eprintln!(
        "--- t={:?}: SIGKILL the leader, node {leader}",
        started.elapsed()
    );
    cluster.kill(leader);
    let second = cluster.wait_for_leader(Duration::from_secs(10)).await?;
    eprintln!("new leader {second} at t={:?}", started.elapsed());
    tokio::time::sleep(Duration::from_secs(8).saturating_sub(started.elapsed())).await;
    cluster.start_node(leader)?;

    // Just before the 30 s level is due, the leader that will deliver it dies.
    tokio::time::sleep(Duration::from_millis(29_700).saturating_sub(started.elapsed())).await;
    let third_victim = cluster
        .agreed_leader()
        .await
        .context("no agreed leader before the second kill")?;
    eprintln!(
        "--- t={:?}: SIGKILL the leader, node {third_victim}",
        started.elapsed()
    );
    cluster.kill(third_victim);
    let third = cluster.wait_for_leader(Duration::from_secs(10)).await?;
    eprintln!("new leader {third} at t={:?}", started.elapsed());
    tokio::time::sleep(Duration::from_secs(3)).await;
    cluster.start_node(third_victim)?;

    eprintln!("--- every message arrives");
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let count = received.lock().expect("lock").len();
        if count >= total && started.elapsed() > Duration::from_secs(62) {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "{count} of {total} arrived\n{}",
            cluster.log_tails(20)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    reader.abort();

    eprintln!("--- exactly once, never early, unchanged");
    let received = received.lock().expect("lock").clone();
    let mut times: BTreeMap<String, usize> = BTreeMap::new();
    let mut latest = Duration::ZERO;
    for (at, message) in &received {
        let body = message.body.clone().unwrap_or_default();
        *times.entry(body.clone()).or_default() += 1;
        let expected = sent
            .get(&body)
            .with_context(|| format!("phantom message {body}"))?;
        ensure!(
            message.topic == TOPIC,
            "{body} arrived in {}",
            message.topic
        );
        ensure!(
            message.msg_id == expected.msg_id,
            "{body} changed its id: {} != {}",
            message.msg_id,
            expected.msg_id
        );
        ensure!(
            !message.properties.contains_key("REAL_TOPIC")
                && !message.properties.contains_key("DELIVER_TIME_MS"),
            "schedule properties left on {body}: {:?}",
            message.properties
        );
        let earliest = expected.sent_ms + expected.delay.as_millis() as u64;
        ensure!(*at >= earliest, "{body} arrived {} ms early", earliest - at);
        if let Some(due) = expected.deliver_ms {
            ensure!(
                message.store_timestamp >= due,
                "{body} stored at {} before it was due at {due}",
                message.store_timestamp
            );
            latest = latest.max(Duration::from_millis(message.store_timestamp - due));
        }
    }
    let twice: Vec<_> = times.iter().filter(|(_, n)| **n > 1).collect();
    ensure!(twice.is_empty(), "delivered more than once: {twice:?}");
    ensure!(times.len() == total, "{} of {total} arrived", times.len());
    eprintln!("{total} delivered once each; latest delivery {latest:?} after due");

    eprintln!("--- every replica holds each message once");
    let leader = cluster.wait_for_leader(Duration::from_secs(10)).await?;
    let ends = cluster.queue_max_offsets(leader, TOPIC).await?;
    ensure!(
        ends.values().sum::<u64>() == total as u64,
        "queue ends {ends:?} hold more than the {total} messages"
    );
    for id in cluster.live_nodes() {
        cluster
            .wait_for_offsets(id, TOPIC, &ends, Duration::from_secs(10))
            .await?;
        ensure!(cluster.queue_max_offsets(id, TOPIC).await? == ends);
    }

    eprintln!("--- query by key finds the message sent a minute earlier");
    ensure!(started.elapsed() >= Duration::from_secs(60));
    let found = client
        .messages_by_key(
            "audit",
            "order-early",
            Some(keyed_ms - 1000),
            Some(now_ms()),
            Some(8),
        )
        .await?;
    ensure!(
        found.messages.len() == 1
            && found.messages[0].msg_id == keyed.results[0].msg_id
            && found.messages[0].body.as_deref() == Some("sent a minute ago"),
        "query by key: {:?}",
        found.messages
    );
    eprintln!("--- query by id gives a delayed message where it arrived");
    let delayed = &sent["L5-00"];
    let by_id = client.message_by_id(&delayed.msg_id).await?;
    ensure!(by_id.topic == TOPIC && by_id.body.as_deref() == Some("L5-00"));
    Ok(())
}
