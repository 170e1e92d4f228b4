//! Retention in a running cluster: with a tiny window (2 s), CommitLog files are
//! deleted on every replica while a push consumer keeps consuming; pulls below the
//! new minimum answer `OFFSET_TOO_SMALL`, a lagging group's offsets are reported
//! clamped to the minimum and it resumes there; a follower restarted after the
//! deletion recovers. Then the disk high-water mark alone (72 h window) deletes
//! the oldest files of a second cluster.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{ensure, Result};
use broker_client::{BrokerClient, ConsumerOptions, PushConsumer};
use broker_proto::api::{GroupOffsetsResponse, MessageInput, PullResponse, SendRequest};
use cluster_tests::harness::{ClusterOptions, TestCluster, SMALL_STORAGE};

const BINARY: &str = env!("CARGO_BIN_EXE_cluster-node");
const TOPIC: &str = "events";
const QUEUES: u32 = 2;
/// 4 KiB bodies in 1 MiB CommitLog files: ~250 messages a file.
const BODY: usize = 4096;

fn config(retention: &str) -> String {
    format!(
        "{SMALL_STORAGE}{retention}retention_interval = \"300ms\"\n[raft]\nsnapshot_logs_since_last = 20\nmax_in_snapshot_log_to_keep = 10\n[control]\nregister_interval = \"200ms\"\nroute_expiry = \"2s\"\nmember_expiry = \"3s\"\n"
    )
}

/// Sends `count` messages numbered from `first`, in batches; answers where each
/// was stored: number -> (queue, offset).
async fn send(
    cluster: &TestCluster,
    first: usize,
    count: usize,
) -> Result<BTreeMap<usize, (u32, u64)>> {
    let mut stored = BTreeMap::new();
    for start in (first..first + count).step_by(25) {
        let leader = cluster.wait_for_leader(Duration::from_secs(10)).await?;
        let messages = (start..(start + 25).min(first + count))
            .map(|i| MessageInput {
                body: Some(format!("{i:06}{}", "x".repeat(BODY - 6))),
                ..MessageInput::default()
            })
            .collect();
        let answer = cluster
            .send(
                leader,
                TOPIC,
                &SendRequest {
                    messages,
                    transaction: None,
                },
            )
            .await?;
        for (i, result) in answer.results.iter().enumerate() {
            stored.insert(start + i, (result.queue_id, result.queue_offset));
        }
    }
    Ok(stored)
}

/// Waits until every live node's queues start above 0; answers the leader's
/// (min, max) per queue.
async fn wait_for_deletion(cluster: &TestCluster) -> Result<BTreeMap<u32, (u64, u64)>> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut all_deleted = true;
        for id in cluster.live_nodes() {
            let queues: broker_proto::api::QueuesResponse = cluster
                .get(id, &format!("/v1/topics/{TOPIC}/queues"))
                .await?;
            all_deleted &= queues.queues.iter().all(|q| q.min_offset > 0);
            let first_file = cluster
                .node(id)
                .data_dir
                .join("store/commitlog/00000000000000000000");
            all_deleted &= !first_file.exists();
        }
        if all_deleted {
            let leader = cluster.wait_for_leader(Duration::from_secs(10)).await?;
            let queues: broker_proto::api::QueuesResponse = cluster
                .get(leader, &format!("/v1/topics/{TOPIC}/queues"))
                .await?;
            return Ok(queues
                .queues
                .iter()
                .map(|q| (q.queue_id, (q.min_offset, q.max_offset)))
                .collect());
        }
        ensure!(
            Instant::now() < deadline,
            "retention deleted nothing on some node\n{}",
            cluster.log_tails(20)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Bodies' numbers handled by a consumer.
type Handled = Arc<Mutex<Vec<usize>>>;

fn consumer(client: &BrokerClient, group: &str, handled: &Handled) -> PushConsumer {
    let mut options = ConsumerOptions::new(group, &format!("{group}-1"), &[TOPIC]);
    options.heartbeat_interval = Duration::from_millis(300);
    options.member_expiry = Duration::from_secs(3);
    let handled = Arc::clone(handled);
    PushConsumer::start(client.clone(), options, move |m| {
        let handled = Arc::clone(&handled);
        async move {
            let number = m.body.as_deref().unwrap_or_default()[..6]
                .parse()
                .unwrap_or(usize::MAX);
            handled.lock().expect("lock").push(number);
        }
    })
}

async fn wait_handled(handled: &Handled, expected: &BTreeSet<usize>) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let seen: BTreeSet<usize> = handled.lock().expect("lock").iter().copied().collect();
        if expected.is_subset(&seen) {
            return Ok(());
        }
        ensure!(
            Instant::now() < deadline,
            "{} of {} handled",
            expected.intersection(&seen).count(),
            expected.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until `handled` holds every message of `stored` that is still stored when
/// checked; answers how many `handled` holds then. Retention goes on deleting files
/// older than 2 s meanwhile, so what "still stored" means is read again each time
/// (a count taken once could become unreachable, and did under load).
async fn wait_read_all_still_stored(
    client: &BrokerClient,
    handled: &Handled,
    stored: &BTreeMap<usize, (u32, u64)>,
    group: &str,
) -> Result<usize> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let queues: broker_proto::api::QueuesResponse = client.queues(TOPIC).await?;
        let min: BTreeMap<u32, u64> = queues
            .queues
            .iter()
            .map(|q| (q.queue_id, q.min_offset))
            .collect();
        let seen: BTreeSet<usize> = handled.lock().expect("lock").iter().copied().collect();
        let unread: Vec<usize> = stored
            .iter()
            .filter(|(n, (queue, offset))| !seen.contains(n) && *offset >= min[queue])
            .map(|(n, _)| *n)
            .collect();
        if unread.is_empty() {
            return Ok(seen.len());
        }
        ensure!(
            Instant::now() < deadline,
            "group {group}: {} stored messages never handled, e.g. {:?}",
            unread.len(),
            &unread[..unread.len().min(5)]
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The two tests take turns: two clusters at once are too much for CI's 2 cores.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_tiny_window_deletes_old_files_while_consumers_keep_working() -> Result<()> {
    let _turn = ONE_AT_A_TIME.lock().await;
    let mut cluster = TestCluster::start(
        Path::new(BINARY),
        ClusterOptions {
            extra_config: config("file_reserved_time = \"2s\"\n"),
            ..ClusterOptions::default()
        },
    )
    .await?;
    let leader = cluster.wait_for_leader(Duration::from_secs(10)).await?;
    cluster.create_topic(leader, TOPIC, QUEUES).await?;
    let urls: Vec<String> = cluster.nodes.values().map(|n| n.url.clone()).collect();
    let client = BrokerClient::new(urls, cluster.client_options())?;
    // A group that committed offset 0 and then stopped consuming.
    for queue in 0..QUEUES {
        let response = cluster
            .http
            .put(format!(
                "{}/v1/groups/slow/offsets/{TOPIC}/{queue}",
                cluster.url(leader)
            ))
            .json(&serde_json::json!({"offset": 0}))
            .send()
            .await?;
        ensure!(response.status().is_success());
    }
    let handled: Handled = Arc::default();
    let live = consumer(&client, "live", &handled);
    let deadline = Instant::now() + Duration::from_secs(30);
    while live.assigned().len() < QUEUES as usize {
        ensure!(Instant::now() < deadline, "the live consumer got no queues");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    eprintln!("--- 1,500 messages of 4 KiB (~6 CommitLog files) while `live` consumes");
    let mut stored = send(&cluster, 0, 1500).await?;
    let ends = wait_for_deletion(&cluster).await?;
    eprintln!("queues after retention (min, max): {ends:?}");

    eprintln!("--- a pull below the minimum answers OFFSET_TOO_SMALL");
    let (min0, max0) = ends[&0];
    let page: PullResponse = cluster
        .get(
            leader,
            &format!("/v1/topics/{TOPIC}/queues/0/messages?offset=0"),
        )
        .await?;
    ensure!(
        page.status == "OFFSET_TOO_SMALL"
            && page.min_offset >= min0
            && page.next_offset == page.min_offset,
        "pull at 0: {} next {} min {}",
        page.status,
        page.next_offset,
        page.min_offset
    );

    eprintln!("--- the lagging group's offsets are reported at the minimum");
    let offsets: GroupOffsetsResponse = cluster
        .get(leader, &format!("/v1/groups/slow/offsets?topic={TOPIC}"))
        .await?;
    ensure!(offsets.offsets.len() == QUEUES as usize);
    for offset in &offsets.offsets {
        let (min, _) = ends[&offset.queue_id];
        ensure!(
            offset.offset >= min && offset.lag == offset.max_offset - offset.offset,
            "slow group offset {offset:?} below the minimum {min}"
        );
    }

    eprintln!("--- the live consumer keeps working: it misses only what was deleted unread");
    let seen = wait_read_all_still_stored(&client, &handled, &stored, "live").await?;
    eprintln!("live handled {seen} of 1500; the rest was deleted before it read them");
    stored.extend(send(&cluster, 1500, 100).await?);
    wait_handled(&handled, &(1500..1600).collect()).await?;
    let all = handled.lock().expect("lock").clone();
    let distinct: BTreeSet<usize> = all.iter().copied().collect();
    ensure!(distinct.len() == all.len(), "live handled messages twice");

    eprintln!("--- the lagging group resumes at the minimum");
    let slow_handled: Handled = Arc::default();
    let slow = consumer(&client, "slow", &slow_handled);
    wait_read_all_still_stored(&client, &slow_handled, &stored, "slow").await?;
    let oldest = *slow_handled
        .lock()
        .expect("lock")
        .iter()
        .min()
        .unwrap_or(&0);
    ensure!(
        oldest > 0 && max0 > min0,
        "the slow group read deleted messages: {oldest}"
    );

    eprintln!("--- a follower restarted after the deletion recovers");
    let follower = cluster
        .live_nodes()
        .into_iter()
        .find(|id| *id != leader)
        .expect("a follower");
    cluster.stop(follower, Duration::from_secs(10)).await;
    cluster.start_node(follower)?;
    let leader = cluster.wait_for_leader(Duration::from_secs(10)).await?;
    let expected = cluster.queue_max_offsets(leader, TOPIC).await?;
    cluster
        .wait_for_offsets(follower, TOPIC, &expected, Duration::from_secs(30))
        .await?;
    live.shutdown().await;
    slow.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_disk_high_water_mark_deletes_the_oldest_files_early() -> Result<()> {
    let _turn = ONE_AT_A_TIME.lock().await;
    let cluster = TestCluster::start(
        Path::new(BINARY),
        ClusterOptions {
            // Any real disk is fuller than 0.1 %: only the mark deletes here.
            extra_config: config("file_reserved_time = \"72h\"\ndisk_high_water_ratio = 0.001\n"),
            ..ClusterOptions::default()
        },
    )
    .await?;
    let leader = cluster.wait_for_leader(Duration::from_secs(10)).await?;
    cluster.create_topic(leader, TOPIC, QUEUES).await?;
    send(&cluster, 0, 1500).await?;
    let ends = wait_for_deletion(&cluster).await?;
    eprintln!("queues after high-water deletion (min, max): {ends:?}");
    let page: PullResponse = cluster
        .get(
            leader,
            &format!("/v1/topics/{TOPIC}/queues/1/messages?offset=0"),
        )
        .await?;
    ensure!(
        page.status == "OFFSET_TOO_SMALL",
        "pull at 0: {}",
        page.status
    );
    // Still writable and readable at the end.
    send(&cluster, 1500, 25).await?;
    Ok(())
}
