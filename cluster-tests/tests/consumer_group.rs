//! Issue 5's acceptance run: two groups of three nodes, a topic over both, a
//! producer of the client library sending 20,000 messages while one group's leader
//! is SIGKILLed, and a consumer group whose members come and go while it runs: c1,
//! then c2 and c3 join, the leader is killed, c2 leaves cleanly and c4 joins. Every
//! acknowledged message is handled exactly once; each queue has one owner at a time
//! (in the global handling order every queue's offsets strictly increase: a second
//! owner would handle an offset again or interleave); and after rebalancing each
//! queue is owned by exactly one of c1, c3, c4.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::{bail, ensure, Result};
use broker::service::producer::group_hash;
use broker_client::{BrokerClient, ConsumerOptions, Producer, ProducerOptions, PushConsumer};
use broker_proto::api::{MessageInput, TopicRequest};
use broker_proto::properties::PROPERTY_RETRY_TOPIC;
use cluster_tests::harness::{ClusterOptions, TestCluster, SMALL_STORAGE};

const BINARY: &str = env!("CARGO_BIN_EXE_cluster-node");
const MESSAGES: usize = 20_000;
const BATCH: usize = 20;
const PRODUCERS: usize = 4;
const MEMBER_EXPIRY: Duration = Duration::from_secs(3);
/// Each producer's pause between batches: it stretches the send over about ten
/// seconds, so members join and leave while messages still arrive (unpaced, the
/// 20,000 messages are in within a few seconds — less than the coordinator's
/// settling time after a new leader term).
const PACE: Duration = Duration::from_millis(30);

/// One handled message, in the order handlers ran.
#[derive(Clone, Debug)]
struct HandledMessage {
    member: String,
    /// The message id: its first 8 hex digits are the storing broker group's hash.
    msg_id: String,
    /// Delivered through the retry topic (its queue and offset are that topic's).
    retried: bool,
    queue_id: u32,
    queue_offset: u64,
    body: String,
}

type Handled = Arc<Mutex<Vec<HandledMessage>>>;

/// The broker group that stored a message, from its id.
fn broker_group_of(msg_id: &str) -> Option<&'static str> {
    let hash = u32::from_str_radix(msg_id.get(..8)?, 16).ok()?;
    ["broker-a", "broker-b"]
        .into_iter()
        .find(|g| group_hash(g) == hash)
}

/// One owner at a time: in the global handling order, each queue's handled offsets
/// strictly increase. Two members owning a queue at once would both pull from the
/// committed offset, so one of them handles an offset the other already did (or
/// they interleave); a hand-over that lost a commit re-handles too.
fn check_one_owner_at_a_time(handled: &[HandledMessage]) -> Result<()> {
    let mut last: BTreeMap<(&str, u32), (u64, &str)> = BTreeMap::new();
    for (i, h) in handled.iter().enumerate() {
        ensure!(
            !h.retried,
            "message {} came through the retry topic",
            h.msg_id
        );
        let Some(group) = broker_group_of(&h.msg_id) else {
            bail!("message id {} names no known broker group", h.msg_id);
        };
        if let Some((offset, member)) =
            last.insert((group, h.queue_id), (h.queue_offset, &h.member))
        {
            ensure!(
                h.queue_offset > offset,
                "queue {group}/{} handled offset {} by {} (#{i}) after offset {offset} by {member}",
                h.queue_id,
                h.queue_offset,
                h.member
            );
        }
    }
    Ok(())
}

/// The check has teeth: a clean hand-over passes, an overlapping second owner (or a
/// re-handled batch) fails.
#[test]
fn the_one_owner_check_catches_overlapping_owners() {
    let a = format!("{:08X}", group_hash("broker-a"));
    let b = format!("{:08X}", group_hash("broker-b"));
    let m = |member: &str, group: &str, queue_id: u32, queue_offset: u64| HandledMessage {
        member: member.into(),
        msg_id: format!("{group}{:024X}", queue_offset),
        retried: false,
        queue_id,
        queue_offset,
        body: String::new(),
    };
    let clean = [
        m("c1", &a, 0, 0),
        m("c1", &b, 0, 0),
        m("c1", &a, 0, 1),
        m("c2", &a, 0, 2),
        m("c1", &b, 0, 1),
        m("c2", &a, 0, 3),
    ];
    assert!(check_one_owner_at_a_time(&clean).is_ok());
    let overlapping = [
        m("c1", &a, 0, 0),
        m("c1", &a, 0, 1),
        m("c2", &a, 0, 1),
        m("c1", &a, 0, 2),
        m("c2", &a, 0, 2),
    ];
    assert!(check_one_owner_at_a_time(&overlapping).is_err());
    let interleaved = [m("c1", &a, 1, 5), m("c2", &a, 1, 7), m("c1", &a, 1, 6)];
    assert!(check_one_owner_at_a_time(&interleaved).is_err());
    let mut retried = m("c1", &a, 0, 0);
    retried.retried = true;
    assert!(check_one_owner_at_a_time(&[retried]).is_err());
    assert!(check_one_owner_at_a_time(&[m("c1", "00000000", 0, 0)]).is_err());
}

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
            handled.lock().expect("lock").push(HandledMessage {
                member,
                retried: m.properties.contains_key(PROPERTY_RETRY_TOPIC),
                msg_id: m.msg_id,
                queue_id: m.queue_id,
                queue_offset: m.queue_offset,
                body: m.body.unwrap_or_default(),
            });
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
    let client = BrokerClient::new(urls, cluster.client_options())?;
    let topic = client
        .create_topic("orders", &TopicRequest::with_queues(4))
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
    let producers_done = Arc::new(AtomicUsize::new(0));
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
        let done = Arc::clone(&producers_done);
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
                tokio::time::sleep(PACE).await;
            }
            done.fetch_add(1, Ordering::SeqCst);
            failed
        }));
    }

    // Until `n` are acknowledged or the producers are done; answers how many were.
    let wait_acked = |n: usize| {
        let acked = Arc::clone(&acked);
        let done = Arc::clone(&producers_done);
        async move {
            loop {
                let count = acked.lock().expect("lock").len();
                if count >= n || done.load(Ordering::SeqCst) == PRODUCERS {
                    return count;
                }
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
    wait_acked(MESSAGES * 6 / 10).await;
    // A leave means something only if c2 consumed: wait until it has.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !handled
        .lock()
        .expect("lock")
        .iter()
        .any(|h| h.member == "c2")
    {
        ensure!(
            Instant::now() < deadline,
            "c2 never handled a message; it holds {:?}",
            second.assigned()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let count = acked.lock().expect("lock").len();
    eprintln!(
        "--- member c2 leaves cleanly ({count} acknowledged; producers {})",
        if producers_done.load(Ordering::SeqCst) < PRODUCERS {
            "still sending"
        } else {
            "done"
        }
    );
    second.shutdown().await;
    let count = wait_acked(MESSAGES * 3 / 4).await;
    eprintln!("--- member c4 joins ({count} acknowledged)");
    let fourth = consumer(&client, "c4", &handled);
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
            .map(|h| h.body.clone())
            .collect();
        let missing = acked.difference(&seen).count();
        if missing == 0 {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "{missing} acknowledged messages never handled; assignments {:?} / {:?} / {:?}",
            first.assigned(),
            third.assigned(),
            fourth.assigned()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    eprintln!("--- after rebalancing each of the 8 queues has exactly one owner of c1, c3, c4");
    // The members also hold the group's retry topic's queues once it exists: the
    // check is about `orders`.
    let orders = |c: &PushConsumer| -> Vec<_> {
        c.assigned()
            .into_iter()
            .filter(|q| q.topic == "orders")
            .collect()
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let owned: Vec<_> = [&first, &third, &fourth]
            .iter()
            .flat_map(|c| orders(c))
            .collect();
        let distinct: BTreeSet<_> = owned.iter().cloned().collect();
        let sizes: Vec<usize> = [&first, &third, &fourth]
            .iter()
            .map(|c| orders(c).len())
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
        *times.entry(h.body.as_str()).or_default() += 1;
    }
    let twice: Vec<_> = times.iter().filter(|(_, &n)| n > 1).take(10).collect();
    ensure!(twice.is_empty(), "handled more than once: {twice:?}");
    let by_member: BTreeMap<&str, usize> = handled.iter().fold(BTreeMap::new(), |mut m, h| {
        *m.entry(h.member.as_str()).or_default() += 1;
        m
    });
    eprintln!("{} handled ({by_member:?})", handled.len());

    eprintln!("--- one owner at a time: every queue's offsets strictly increase");
    check_one_owner_at_a_time(&handled)?;
    first.shutdown().await;
    third.shutdown().await;
    fourth.shutdown().await;
    Ok(())
}
