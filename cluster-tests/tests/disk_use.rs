//! Disk follows data, and `DELETE` gives it back (issue "Hostile clients and full
//! disks", findings 3 and 4), on a three-node cluster with production file sizes:
//! a topic with 1,024 queues and one message in each costs each replica under
//! 10 MiB in its store (before: every queue's first message reserved a whole 5.7 MiB
//! ConsumeQueue file, 5.7 GiB per replica); deleting the topic removes its
//! ConsumeQueue directory on every replica, and a topic created again under the name
//! starts at offset 0 on every replica.
//!
//! Prints each replica's store and Raft-log growth.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use anyhow::{ensure, Result};
use broker_proto::api::{MessageInput, SendRequest};
use cluster_tests::harness::{ClusterOptions, TestCluster};

const BINARY: &str = env!("CARGO_BIN_EXE_cluster-node");
const TOPIC: &str = "wide";
const QUEUES: u32 = 1024;
const BATCH: u32 = 64;

/// Bytes the files under `dir` occupy on disk (allocated blocks, not sizes).
fn disk_use(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|entry| match entry.metadata() {
            Ok(m) if m.is_dir() => disk_use(&entry.path()),
            Ok(m) => m.blocks() * 512,
            Err(_) => 0,
        })
        .sum()
}

/// (store, raft log) bytes of each node.
fn usage(cluster: &TestCluster) -> Vec<(u64, u64, u64)> {
    cluster
        .nodes
        .values()
        .map(|node| {
            (
                node.id,
                disk_use(&node.data_dir.join("store")),
                disk_use(&node.data_dir.join("raft-log")),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_wide_topic_costs_little_disk_and_delete_gives_it_back() -> Result<()> {
    let cluster = TestCluster::start(Path::new(BINARY), ClusterOptions::default()).await?;
    let leader = cluster.wait_for_leader(Duration::from_secs(20)).await?;
    let before = usage(&cluster);

    cluster.create_topic(leader, TOPIC, QUEUES).await?;
    // A queue's first message creates its directory and file with a few fsyncs on
    // each replica (about 9 ms a queue on this machine's disk, all replicas sharing
    // it): batches small enough to commit well within the write timeout.
    for batch in 0..(QUEUES / BATCH) {
        let request = SendRequest {
            messages: (0..BATCH)
                .map(|i| MessageInput {
                    body: Some(format!("message for queue {}", batch * BATCH + i)),
                    queue_id: Some(batch * BATCH + i),
                    ..MessageInput::default()
                })
                .collect(),
            transaction: None,
        };
        cluster.send(leader, TOPIC, &request).await?;
    }
    let expected: BTreeMap<u32, u64> = (0..QUEUES).map(|q| (q, 1)).collect();
    for id in cluster.live_nodes() {
        cluster
            .wait_for_offsets(id, TOPIC, &expected, Duration::from_secs(20))
            .await?;
    }
    // Let the background flush reach every replica's files.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = usage(&cluster);
    for ((id, store0, raft0), (_, store1, raft1)) in before.iter().zip(&after) {
        let store = store1.saturating_sub(*store0);
        let raft = raft1.saturating_sub(*raft0);
        eprintln!(
            "node {id}: store +{store} bytes ({:.2} MiB), raft log +{raft} bytes ({:.2} MiB)",
            store as f64 / f64::from(1 << 20),
            raft as f64 / f64::from(1 << 20),
        );
        ensure!(
            store < 10 << 20,
            "node {id}: {store} bytes of store for one message in each of {QUEUES} queues"
        );
    }

    // DELETE reclaims the topic's ConsumeQueues on every replica.
    let status = cluster
        .http
        .delete(format!("{}/v1/topics/{TOPIC}", cluster.url(leader)))
        .send()
        .await?
        .status();
    ensure!(status.is_success(), "DELETE answered {status}");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let left: Vec<(u64, bool)> = cluster
            .nodes
            .values()
            .map(|node| {
                (
                    node.id,
                    node.data_dir
                        .join("store/consumequeue")
                        .join(TOPIC)
                        .exists(),
                )
            })
            .collect();
        if left.iter().all(|(_, exists)| !exists) {
            break;
        }
        ensure!(
            tokio::time::Instant::now() < deadline,
            "the topic's ConsumeQueues are still there: {left:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Created again, it starts empty at offset 0 on every replica: three messages
    // in queue 0, none in queue 1 (the old incarnation had one in each).
    cluster.create_topic(leader, TOPIC, 2).await?;
    cluster
        .send(
            leader,
            TOPIC,
            &SendRequest {
                messages: (0..3)
                    .map(|i| MessageInput {
                        body: Some(format!("again {i}")),
                        queue_id: Some(0),
                        ..MessageInput::default()
                    })
                    .collect(),
                transaction: None,
            },
        )
        .await?;
    let expected = BTreeMap::from([(0, 3), (1, 0)]);
    for id in cluster.live_nodes() {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let actual = cluster.queue_max_offsets(id, TOPIC).await.ok();
            if actual.as_ref() == Some(&expected) {
                break;
            }
            ensure!(
                tokio::time::Instant::now() < deadline,
                "node {id} holds {actual:?} of the topic created again, expected {expected:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    Ok(())
}
