//! Issue 22: a consumer group's coordinator fails over without the cold-start
//! wait. Three members consume a topic of 8 queues from a three-node group; the
//! group's leader (the coordinator) is SIGKILLed and a fourth member joins right
//! away. The new leader knows every queue's holder from the replicated claims
//! (`replication::claims`), so the fourth member gets queues as soon as their
//! holders let go — well within one `member_expiry` (10 s, the default), which is
//! what a coordinator without claims waits before granting anything new.
//!
//! Throughout, no queue has two owners: in the global handling order each queue's
//! offsets strictly increase (a second owner would pull from the same committed
//! offset and handle an offset again, or interleave), and every acknowledged
//! message is handled.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{ensure, Result};
use broker_client::{BrokerClient, ConsumerOptions, Producer, ProducerOptions, PushConsumer};
use broker_proto::api::{MessageInput, TopicRequest};
use cluster_tests::harness::{ClusterOptions, TestCluster, SMALL_STORAGE};

const BINARY: &str = env!("CARGO_BIN_EXE_cluster-node");
const MEMBER_EXPIRY: Duration = Duration::from_secs(10);
const QUEUES: u32 = 8;

/// (member, queue, offset, body), in handling order.
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

/// The queues of `orders` a member consumes now.
fn orders(member: &PushConsumer) -> Vec<u32> {
    member
        .assigned()
        .into_iter()
        .filter(|q| q.topic == "orders")
        .map(|q| q.queue_id)
        .collect()
}

/// One owner at a time: per queue, handled offsets strictly increase.
fn check_one_owner_at_a_time(handled: &[(String, u32, u64, String)]) -> Result<()> {
    let mut last: BTreeMap<u32, (u64, &str)> = BTreeMap::new();
    for (member, queue, offset, _) in handled {
        if let Some((before, by)) = last.insert(*queue, (*offset, member)) {
            ensure!(
                *offset > before,
                "queue {queue}: {member} handled offset {offset} after {by} handled {before}"
            );
        }
    }
    Ok(())
}

#[test]
fn the_one_owner_check_catches_a_second_owner() {
    let h = |m: &str, q, o| (m.to_string(), q, o, String::new());
    assert!(check_one_owner_at_a_time(&[h("a", 0, 1), h("b", 0, 2), h("a", 1, 1)]).is_ok());
    assert!(check_one_owner_at_a_time(&[h("a", 0, 1), h("b", 0, 1)]).is_err());
    assert!(check_one_owner_at_a_time(&[h("a", 0, 2), h("b", 0, 3), h("a", 0, 3)]).is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_member_joining_after_the_coordinator_dies_gets_queues_at_once() -> Result<()> {
    let mut cluster = TestCluster::start(
        std::path::Path::new(BINARY),
        ClusterOptions {
            extra_config: format!("{SMALL_STORAGE}[control]\nmember_expiry = \"10s\"\n"),
            ..ClusterOptions::default()
        },
    )
    .await?;
    cluster.wait_for_leader(Duration::from_secs(20)).await?;
    let urls: Vec<String> = cluster.nodes.values().map(|n| n.url.clone()).collect();
    let client = BrokerClient::new(urls, cluster.client_options())?;
    client
        .create_topic("orders", &TopicRequest::with_queues(QUEUES))
        .await?;

    // A producer that keeps sending through the failover.
    let acked: Arc<Mutex<BTreeSet<String>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let producing = {
        let producer = Producer::new(
            client.clone(),
            ProducerOptions {
                retries: 40,
                backoff_max: Duration::from_millis(300),
                ..ProducerOptions::default()
            },
        );
        let (acked, stop) = (Arc::clone(&acked), Arc::clone(&stop));
        tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.load(Ordering::SeqCst) {
                let bodies: Vec<String> = (n..n + 8).map(|i| format!("m{i:06}")).collect();
                n += 8;
                let batch = bodies
                    .iter()
                    .map(|body| MessageInput {
                        body: Some(body.clone()),
                        ..MessageInput::default()
                    })
                    .collect();
                if producer.send_messages("orders", batch).await.is_ok() {
                    acked.lock().expect("lock").extend(bodies);
                }
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
        })
    };

    let handled: Handled = Arc::default();
    let members = [
        consumer(&client, "c1", &handled),
        consumer(&client, "c2", &handled),
        consumer(&client, "c3", &handled),
    ];
    eprintln!("--- three members share the {QUEUES} queues");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut shares: Vec<usize> = members.iter().map(|m| orders(m).len()).collect();
        shares.sort_unstable();
        if shares == [2, 3, 3] {
            break;
        }
        ensure!(Instant::now() < deadline, "shares {shares:?} after 30 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;

    let leader = cluster.wait_for_leader(Duration::from_secs(5)).await?;
    eprintln!("--- SIGKILL the coordinator, node {leader}; member c4 joins at once");
    let killed = Instant::now();
    cluster.kill(leader);
    let fourth = consumer(&client, "c4", &handled);
    let mut elected = None;
    let mut first_queue = None;
    let deadline = killed + MEMBER_EXPIRY * 3;
    while first_queue.is_none() {
        ensure!(
            Instant::now() < deadline,
            "c4 has no queue {:?} after the kill (leader elected after {elected:?})",
            deadline - killed
        );
        if elected.is_none() {
            if let Some(new) = cluster.agreed_leader().await {
                if new != leader {
                    elected = Some(killed.elapsed());
                }
            }
        }
        if !orders(&fourth).is_empty() {
            first_queue = Some(killed.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let first_queue = first_queue.expect("set above");
    let elected = elected.unwrap_or(first_queue);
    eprintln!(
        "new leader seen {elected:?} after the kill; c4 got its first queue {first_queue:?} after the kill, {:?} after the election (member_expiry {MEMBER_EXPIRY:?})",
        first_queue.saturating_sub(elected)
    );
    ensure!(
        first_queue.saturating_sub(elected) < MEMBER_EXPIRY,
        "c4 waited {:?} after the election: the new coordinator waited out member_expiry",
        first_queue.saturating_sub(elected)
    );

    eprintln!("--- the four members come to share the queues 2/2/2/2");
    let all = [&members[0], &members[1], &members[2], &fourth];
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let shares: Vec<usize> = all.iter().map(|m| orders(m).len()).collect();
        if shares == [2, 2, 2, 2] {
            break;
        }
        ensure!(Instant::now() < deadline, "shares {shares:?} after 30 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!(
        "shared 2/2/2/2 {:?} after the kill; producing 3 s more",
        killed.elapsed()
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.store(true, Ordering::SeqCst);
    producing.await?;

    let acked = acked.lock().expect("lock").clone();
    let deadline = Instant::now() + Duration::from_secs(60);
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
            "{missing} of {} acknowledged messages never handled",
            acked.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let handled = handled.lock().expect("lock").clone();
    check_one_owner_at_a_time(&handled)?;
    let by_c4 = handled.iter().filter(|h| h.0 == "c4").count();
    eprintln!(
        "{} acknowledged, {} handled ({by_c4} by c4), each queue by one owner at a time",
        acked.len(),
        handled.len()
    );
    ensure!(by_c4 > 0, "c4 handled nothing");
    for member in members {
        member.shutdown().await;
    }
    fourth.shutdown().await;
    Ok(())
}
