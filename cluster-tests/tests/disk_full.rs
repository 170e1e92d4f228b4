//! A node whose disk fills up fails stop, and comes back on its own once there is
//! room (issue "Hostile clients and full disks", finding 5).
//!
//! Node 3's data directory is a 96 MiB tmpfs. A producer sends numbered messages
//! (`producer_id` + `sequence`, retried until acknowledged) and records every
//! acknowledged one. A filler file then takes node 3's disk to ENOSPC. Expected:
//! node 3's `/ready` answers 503 UNAVAILABLE naming the storage failure within
//! seconds, and so do writes sent to it (not NOT_LEADER with a null leader); the
//! other two keep taking writes (electing a new leader if node 3 led). With the
//! filler deleted, node 3 re-executes itself (same PID), recovers its store and
//! catches up: it is ready again and holds every acknowledged message.
//!
//! Two variants: node 3 a follower (it fails on the next replicated write), and
//! node 3 the leader (no writes until it sees its disk over the low-water mark:
//! it hands leadership off, then fails as a follower on the new leader's first
//! entry).
//! The times to 503 and to recovery are printed; the only timing assertions are
//! generous deadlines that catch a node that never fails or never comes back.

use std::collections::BTreeSet;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use broker_proto::api::{MessageInput, SendRequest};
use cluster_tests::harness::{ClusterOptions, TestCluster, SMALL_STORAGE};
use serde_json::{json, Value};

const BINARY: &str = env!("CARGO_BIN_EXE_cluster-node");
const TOPIC: &str = "events";
/// The node whose data directory is the small tmpfs.
const FULL: u64 = 3;
const TMPFS_MIB: u64 = 96;
const PRODUCER: &str = "disk-full-producer";

/// The producer's state: the next sequence and every acknowledged one.
#[derive(Default)]
struct Producer {
    next: u64,
    acknowledged: BTreeSet<u64>,
}

fn message_body(sequence: u64) -> String {
    format!("message {sequence}")
}

impl Producer {
    /// Sends the next message until some node among `targets` acknowledges it
    /// (the same `producer_id` + `sequence` every time, so a retry is stored once).
    async fn send_one(&mut self, cluster: &TestCluster, targets: &[u64]) -> Result<()> {
        let sequence = self.next;
        let request = SendRequest {
            messages: vec![MessageInput {
                body: Some(message_body(sequence)),
                producer_id: Some(PRODUCER.into()),
                sequence: Some(sequence),
                ..MessageInput::default()
            }],
            transaction: None,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut attempt = 0usize;
        loop {
            let target = targets[attempt % targets.len()];
            attempt += 1;
            match cluster.send(target, TOPIC, &request).await {
                Ok(response) if response.results.len() == 1 => {
                    self.acknowledged.insert(sequence);
                    self.next += 1;
                    return Ok(());
                }
                Ok(response) => bail!("one message, {} results", response.results.len()),
                Err(e) if Instant::now() < deadline => {
                    tracing::debug!(target, error = %e, "send refused; retrying");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e) => bail!(
                    "message {sequence} not acknowledged within 30 s: {e}\n{}",
                    cluster.log_tails(20)
                ),
            }
        }
    }

    async fn send_many(&mut self, cluster: &TestCluster, targets: &[u64], n: u64) -> Result<()> {
        for _ in 0..n {
            self.send_one(cluster, targets).await?;
        }
        Ok(())
    }
}

/// A request's status and JSON body.
async fn call(
    cluster: &TestCluster,
    method: reqwest::Method,
    id: u64,
    path: &str,
    body: Option<Value>,
) -> Result<(u16, Value)> {
    let mut request = cluster
        .http
        .request(method, format!("{}{path}", cluster.url(id)));
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await?;
    let status = response.status().as_u16();
    let text = response.text().await?;
    let json = serde_json::from_str(&text).unwrap_or(Value::String(text));
    Ok((status, json))
}

/// Writes a filler file in `dir` until the filesystem is full (ENOSPC).
fn fill(dir: &Path) -> Result<PathBuf> {
    let path = dir.join("filler");
    let mut file = std::fs::File::create(&path)?;
    let chunk = vec![0xa5u8; 1 << 20];
    loop {
        match file.write_all(&chunk) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(28) => return Ok(path),
            Err(e) => return Err(e).context("writing the filler"),
        }
    }
}

/// Waits until `id`'s `/ready` answers `status`; answers the last body.
async fn wait_ready_status(
    cluster: &TestCluster,
    id: u64,
    status: u16,
    timeout: Duration,
) -> Result<Value> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok((got, body)) = call(cluster, reqwest::Method::GET, id, "/ready", None).await {
            if got == status {
                return Ok(body);
            }
        }
        if Instant::now() > deadline {
            bail!(
                "node {id}'s /ready did not answer {status} within {timeout:?}\n{}",
                cluster.log_tails(30)
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum Role {
    Follower,
    Leader,
}

/// `storage.on_failure`.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum OnFailure {
    /// The node waits for room and re-executes itself.
    Restart,
    /// The node exits with status 1; the test restarts it, as a supervisor would.
    Exit,
}

async fn scenario(role: Role, on_failure: OnFailure) -> Result<()> {
    let mut extra_config = SMALL_STORAGE.to_string();
    if on_failure == OnFailure::Exit {
        // SMALL_STORAGE ends in the [storage] section.
        extra_config.push_str("on_failure = \"exit\"\n");
    }
    let mut cluster = TestCluster::start(
        Path::new(BINARY),
        ClusterOptions {
            extra_config,
            tmpfs_data: Some((FULL, TMPFS_MIB)),
            ..ClusterOptions::default()
        },
    )
    .await?;
    let leader = cluster.wait_for_leader(Duration::from_secs(20)).await?;
    cluster.create_topic(leader, TOPIC, 2).await?;
    let mut producer = Producer::default();
    let all = [1, 2, 3];
    let others = [1, 2];

    match role {
        Role::Follower if leader == FULL => {
            eprintln!("--- node {FULL} leads: hand leadership to node 1 so it is a follower");
            transfer_leader(&cluster, leader, 1).await?;
        }
        Role::Leader if leader != FULL => {
            eprintln!("--- make node {FULL} the leader");
            transfer_leader(&cluster, leader, FULL).await?;
        }
        _ => {}
    }
    eprintln!("--- {role:?} variant: 100 messages through every node");
    producer.send_many(&cluster, &all, 100).await?;

    eprintln!("--- fill node {FULL}'s disk to ENOSPC");
    let data_dir = cluster.node(FULL).data_dir.clone();
    let filler = tokio::task::spawn_blocking(move || fill(&data_dir)).await??;
    let filled_at = Instant::now();
    let pid = cluster.pid(FULL).context("node 3 runs")?;

    if role == Role::Leader {
        eprintln!("--- no writes until node {FULL} sees its disk over the low-water mark: it hands leadership off");
        let deadline = Instant::now() + Duration::from_secs(5);
        while cluster.metric(FULL, "broker_disk_used_ratio").await? <= 0.9 {
            ensure!(
                Instant::now() < deadline,
                "node {FULL} did not see its full disk"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match leader_of(&cluster, &others).await {
                Ok(leader) if leader != FULL => break,
                _ => ensure!(
                    Instant::now() < deadline,
                    "node {FULL} kept leading with a full disk\n{}",
                    cluster.log_tails(20)
                ),
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        ensure!(cluster.log_contains(FULL, "handing leadership to node"));
        eprintln!(
            "    leadership handed off {:?} after the disk filled",
            filled_at.elapsed()
        );
    }

    if on_failure == OnFailure::Exit {
        return exit_and_restart(cluster, producer, filler, filled_at).await;
    }

    eprintln!("--- keep writing through the other nodes until node {FULL} reports the failure");
    let deadline = filled_at + Duration::from_secs(20);
    let failure = loop {
        producer.send_many(&cluster, &others, 5).await?;
        let (status, body) = call(&cluster, reqwest::Method::GET, FULL, "/ready", None).await?;
        if status == 503
            && body["message"]
                .as_str()
                .is_some_and(|m| m.contains("storage failed"))
        {
            break body;
        }
        ensure!(
            Instant::now() < deadline,
            "node {FULL} did not report a storage failure within 20 s (last /ready {status} {body})\n{}",
            cluster.log_tails(30)
        );
    };
    let time_to_503 = filled_at.elapsed();
    eprintln!("    node {FULL} /ready after {time_to_503:?}: {failure}");
    ensure!(failure["code"] == "UNAVAILABLE", "{failure}");

    eprintln!("--- a write sent to node {FULL}: 503 UNAVAILABLE naming the failure");
    let (status, body) = call(
        &cluster,
        reqwest::Method::POST,
        FULL,
        &format!("/v1/topics/{TOPIC}/messages"),
        Some(json!({"messages": [{"body": "to the failed node"}]})),
    )
    .await?;
    ensure!(
        status == 503 && body["code"] == "UNAVAILABLE",
        "a write to the failed node: {status} {body}"
    );
    ensure!(
        body["message"]
            .as_str()
            .is_some_and(|m| m.contains("storage failed")),
        "{body}"
    );
    ensure!(cluster.metric(FULL, "broker_storage_failed").await? == 1.0);

    eprintln!("--- the other two keep taking writes");
    let before = Instant::now();
    producer.send_many(&cluster, &others, 50).await?;
    let new_leader = leader_of(&cluster, &others).await?;
    ensure!(new_leader != FULL, "the failed node leads");
    eprintln!(
        "    50 more acknowledged in {:?}; leader is node {new_leader}",
        before.elapsed()
    );

    eprintln!("--- delete the filler: node {FULL} restarts itself and catches up");
    std::fs::remove_file(&filler)?;
    let freed_at = Instant::now();
    wait_ready_status(&cluster, FULL, 200, Duration::from_secs(30)).await?;
    let time_to_ready = freed_at.elapsed();
    ensure!(
        cluster.exit_status(FULL).is_none(),
        "node {FULL} exited instead of re-executing itself"
    );
    // The harness's child is still the process it started (no exit above), and
    // that process started serving a second time: a new run under the same PID.
    ensure!(
        cluster.log_contains(FULL, "re-executing the process"),
        "node {FULL}'s log tells of the re-exec"
    );
    ensure!(
        cluster.log_count(FULL, "serving HTTP on") == 2,
        "node {FULL} served {} times, not twice",
        cluster.log_count(FULL, "serving HTTP on")
    );
    ensure!(cluster.metric(FULL, "broker_storage_failed").await? == 0.0);
    eprintln!(
        "    node {FULL} ready {time_to_ready:?} after the filler was deleted (same PID {pid})"
    );

    verify(&cluster, &mut producer).await?;
    eprintln!(
        "{role:?} variant: time to 503 {time_to_503:?}, time to ready after freeing space {time_to_ready:?}; {} messages acknowledged and read back from node {FULL}",
        producer.acknowledged.len(),
    );
    Ok(())
}

/// `on_failure = "exit"`: node 3 exits with status 1 once it fails; started again
/// (as systemd or Kubernetes would) after the filler is gone, it catches up.
async fn exit_and_restart(
    mut cluster: TestCluster,
    mut producer: Producer,
    filler: PathBuf,
    filled_at: Instant,
) -> Result<()> {
    let others = [1, 2];
    eprintln!("--- keep writing through the other nodes until node {FULL} exits");
    let deadline = filled_at + Duration::from_secs(20);
    let status = loop {
        producer.send_many(&cluster, &others, 5).await?;
        if let Some(status) = cluster.exit_status(FULL) {
            break status;
        }
        ensure!(
            Instant::now() < deadline,
            "node {FULL} did not exit within 20 s\n{}",
            cluster.log_tails(30)
        );
    };
    let time_to_exit = filled_at.elapsed();
    ensure!(status.code() == Some(1), "node {FULL} exited with {status}");
    ensure!(cluster.log_contains(FULL, "storage failed"));
    eprintln!("    node {FULL} exited ({status}) {time_to_exit:?} after the disk filled");
    producer.send_many(&cluster, &others, 50).await?;

    eprintln!("--- delete the filler and start node {FULL} again");
    std::fs::remove_file(&filler)?;
    cluster.kill(FULL); // reaps the exited process
    let started_at = Instant::now();
    cluster.start_node(FULL)?;
    wait_ready_status(&cluster, FULL, 200, Duration::from_secs(30)).await?;
    let time_to_ready = started_at.elapsed();
    verify(&cluster, &mut producer).await?;
    eprintln!(
        "Exit variant: time to exit {time_to_exit:?}, ready {time_to_ready:?} after the restart; {} messages acknowledged and read back from node {FULL}",
        producer.acknowledged.len()
    );
    Ok(())
}

/// Node 3 holds every acknowledged message, each once, and nothing else.
async fn verify(cluster: &TestCluster, producer: &mut Producer) -> Result<()> {
    let all = [1, 2, 3];
    eprintln!("--- node {FULL} holds every acknowledged message");
    producer.send_many(cluster, &all, 10).await?;
    let leader = cluster.wait_for_leader(Duration::from_secs(10)).await?;
    let expected = cluster.queue_max_offsets(leader, TOPIC).await?;
    cluster
        .wait_for_offsets(FULL, TOPIC, &expected, Duration::from_secs(30))
        .await?;
    let mut stored = Vec::new();
    for queue in expected.keys() {
        for message in cluster.pull_all(FULL, TOPIC, *queue, 0).await? {
            stored.push(message.body.unwrap_or_default());
        }
    }
    let distinct: BTreeSet<&String> = stored.iter().collect();
    ensure!(
        distinct.len() == stored.len(),
        "a retried message was stored twice"
    );
    for sequence in &producer.acknowledged {
        ensure!(
            distinct.contains(&message_body(*sequence)),
            "acknowledged message {sequence} is missing on node {FULL}"
        );
    }
    ensure!(
        stored.len() == producer.acknowledged.len(),
        "{} stored, {} acknowledged",
        stored.len(),
        producer.acknowledged.len()
    );
    Ok(())
}

/// The leader nodes `ids` agree on (the failed node names none, so the harness's
/// `wait_for_leader`, which asks every live node, waits for its recovery).
async fn leader_of(cluster: &TestCluster, ids: &[u64]) -> Result<u64> {
    let mut leaders = BTreeSet::new();
    for &id in ids {
        let view: broker_proto::api::ClusterResponse = cluster.get(id, "/v1/cluster").await?;
        let group = view.groups.first().context("one group")?;
        leaders.insert(group.leader_id.context("a leader is known")?);
    }
    ensure!(leaders.len() == 1, "nodes {ids:?} disagree: {leaders:?}");
    leaders.into_iter().next().context("one leader")
}

/// Hands leadership of broker-a from `from` to `to` and waits until all agree.
async fn transfer_leader(cluster: &TestCluster, from: u64, to: u64) -> Result<()> {
    let (status, body) = call(
        cluster,
        reqwest::Method::POST,
        from,
        "/v1/cluster/groups/broker-a/transfer-leader",
        Some(json!({"to": to})),
    )
    .await?;
    ensure!(status == 200, "transfer-leader: {status} {body}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while cluster.agreed_leader().await != Some(to) {
        ensure!(Instant::now() < deadline, "node {to} did not become leader");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

/// Node 3 follows when its disk fills.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_follower_with_a_full_disk_fails_stop_and_recovers() -> Result<()> {
    scenario(Role::Follower, OnFailure::Restart).await
}

/// Node 3 follows when its disk fills, and is configured to exit on failure.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_on_failure_exit_a_full_disk_exits_and_a_restart_recovers() -> Result<()> {
    scenario(Role::Follower, OnFailure::Exit).await
}

/// Node 3 leads when its disk fills.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_leader_with_a_full_disk_hands_off_fails_stop_and_recovers() -> Result<()> {
    scenario(Role::Leader, OnFailure::Restart).await
}
