//! Issue 5's acceptance run: two groups of three nodes, a topic over both, a
//! producer of the client library sending 20,000 messages while one group's leader
//! is SIGKILLed, and a consumer group of three push consumers joining one after
//! another: every acknowledged message is handled exactly once, and after
//! rebalancing each queue is owned by exactly one member.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{ensure, Result};
use broker::api::{MessageInput, TopicRequest};
use broker::client::{
    BrokerClient, ClientOptions, ConsumerOptions, Producer, ProducerOptions, PushConsumer,
};
use cluster_tests::harness::{ClusterOptions, TestCluster, SMALL_STORAGE};

const BINARY: &str = env!("CARGO_BIN_EXE_cluster-node");
const MESSAGES: usize = 20_000;
const BATCH: usize = 20;
const PRODUCERS: usize = 4;
const MEMBER_EXPIRY: Duration = Duration::from_secs(3);

/// (member, queue, offset, body) of every handled message.
type Handled = Arc<Mutex<Vec<(String, u32, u64, String)>>>;

fn consumer(client: &BrokerClient, id: &str, handled: &Handled) -> PushConsumer {
    let mut options = ConsumerOptions::new("billing", id, &["orders"]);
    options.heartbeat_interval = Duration::from_millis(300);
    options.member_expiry = MEMBER_EXPIRY;
    let handled = Arc::clone(handled);
    let member = id.to_string();
    PushConsumer::start(client.clone(), options, move |m| {
        let handled = Arc::clone(&handled);
        let member = member.clone();
        async move {
            handled.lock().expect("lock").push((
                member,
                m.queue_id,
                m.queue_offset,
                m.body.unwrap_or_default(),
            ));
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_acknowledged_message_is_consumed_once_across_a_leader_kill() -> Result<()> {
    let mut cluster = TestCluster::start(
        std::path::Path::new(BINARY),
        ClusterOptions {
            groups: 2,
            extra_config: format!(
                "{SMALL_STORAGE}[control]\nregister_interval = \"200ms\"\nroute_expiry = \"2s\"\nmember_expiry = \"3s\"\n"
            ),
            ..ClusterOptions::default()
        },
    )
    .await?;
    cluster.wait_for_routes(2, Duration::from_secs(10)).await?;
    let urls: Vec<String> = cluster.nodes.values().map(|n| n.url.clone()).collect();
    let client = BrokerClient::new(urls, ClientOptions::default())?;
    let topic = client
        .create_topic(
            "orders",
            &TopicRequest {
                read_queue_nums: Some(4),
                write_queue_nums: Some(4),
                ..TopicRequest::default()
            },
        )
        .await?;
    ensure!(topic.groups.len() == 2, "topic in {:?}", topic.groups);
    // Every node must route to both groups before producers pick queues.
    let deadline = Instant::now() + Duration::from_secs(10);
    while client.route("orders").await?.groups.len() < 2 {
        ensure!(Instant::now() < deadline, "routes never listed both groups");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let handled: Handled = Arc::new(Mutex::new(Vec::new()));
    let first = consumer(&client, "c1", &handled);

    eprintln!("--- {PRODUCERS} producers send {MESSAGES} messages in batches of {BATCH}");
    let acked: Arc<Mutex<BTreeSet<String>>> = Arc::default();
    let mut producers = Vec::new();
    for p in 0..PRODUCERS {
        let producer = Producer::new(
            client.clone(),
            ProducerOptions {
                retries: 40,
                backoff_max: Duration::from_millis(500),
                ..ProducerOptions::default()
            },
        );
        let acked = Arc::clone(&acked);
        producers.push(tokio::spawn(async move {
            let mut failed = 0usize;
            for b in (p * BATCH..MESSAGES).step_by(PRODUCERS * BATCH) {
                let bodies: Vec<String> = (b..b + BATCH).map(|i| format!("m{i:05}")).collect();
                let batch = bodies
                    .iter()
                    .map(|body| MessageInput {
                        body: Some(body.clone()),
                        ..MessageInput::default()
                    })
                    .collect();
                match producer.send_messages("orders", batch).await {
                    Ok(_) => acked.lock().expect("lock").extend(bodies),
                    Err(e) => {
                        failed += 1;
                        eprintln!("batch {b} failed: {e}");
                    }
                }
            }
            failed
        }));
    }

    let wait_acked = |n: usize| {
        let acked = Arc::clone(&acked);
        async move {
            while acked.lock().expect("lock").len() < n {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    wait_acked(MESSAGES / 5).await;
    eprintln!("--- members c2 and c3 join");
    let second = consumer(&client, "c2", &handled);
    wait_acked(MESSAGES * 2 / 5).await;
    let third = consumer(&client, "c3", &handled);
    wait_acked(MESSAGES / 2).await;
    let leader = cluster
        .agreed_leader_of("broker-a")
        .await
        .unwrap_or_else(|| cluster.group_nodes("broker-a")[0]);
    eprintln!("--- SIGKILL broker-a's leader, node {leader}");
    let killed_at = Instant::now();
    cluster.kill(leader);
    let mut failed = 0;
    for producer in producers {
        failed += producer.await?;
    }
    let acked: BTreeSet<String> = acked.lock().expect("lock").clone();
    eprintln!(
        "{} acknowledged, {failed} batches failed; producers done {:?} after the kill",
        acked.len(),
        killed_at.elapsed()
    );
    ensure!(
        acked.len() >= MESSAGES * 9 / 10,
        "too few acknowledged: {}",
        acked.len()
    );

    eprintln!("--- every acknowledged message is handled");
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let seen: BTreeSet<String> = handled
            .lock()
            .expect("lock")
            .iter()
            .map(|h| h.3.clone())
            .collect();
        let missing = acked.difference(&seen).count();
        if missing == 0 {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "{missing} acknowledged messages never handled; assignments {:?} / {:?} / {:?}",
            first.assigned(),
            second.assigned(),
            third.assigned()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    eprintln!("--- after rebalancing each of the 8 queues has exactly one owner");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let owned: Vec<_> = [&first, &second, &third]
            .iter()
            .flat_map(|c| c.assigned())
            .collect();
        let distinct: BTreeSet<_> = owned.iter().cloned().collect();
        let sizes: Vec<usize> = [&first, &second, &third]
            .iter()
            .map(|c| c.assigned().len())
            .collect();
        if owned.len() == 8 && distinct.len() == 8 && sizes.iter().all(|&n| (2..=3).contains(&n)) {
            eprintln!("queues per member {sizes:?}");
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "assignment never settled: {owned:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    eprintln!("--- exactly once: no message handled twice");
    let handled = handled.lock().expect("lock").clone();
    let mut times: BTreeMap<&str, usize> = BTreeMap::new();
    for h in &handled {
        *times.entry(h.3.as_str()).or_default() += 1;
    }
    let twice: Vec<_> = times.iter().filter(|(_, &n)| n > 1).take(10).collect();
    ensure!(twice.is_empty(), "handled more than once: {twice:?}");
    let by_member: BTreeMap<&str, usize> = handled.iter().fold(BTreeMap::new(), |mut m, h| {
        *m.entry(h.0.as_str()).or_default() += 1;
        m
    });
    eprintln!("{} handled ({by_member:?})", handled.len());
    first.shutdown().await;
    second.shutdown().await;
    third.shutdown().await;
    Ok(())
}
