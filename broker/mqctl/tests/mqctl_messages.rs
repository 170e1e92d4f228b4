//! `mqctl send|pull|tail|query` against a real single node: a message sent with tags,
//! keys and properties pulls back the same in a table and in JSON; a file sends one
//! message per line; a bulk send stores exactly N; queries by id and key find them;
//! `tail -f` prints messages sent while it follows.

use crate::mqctl_support;

use std::time::Duration;

use mqctl_support::{u64_at, TestNode};
use tracing::info;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_pull_query_and_tail() -> anyhow::Result<()> {
    let node = TestNode::start().await?;
    node.mqctl(&["topic", "create", "orders", "--queues", "4"])
        .await
        .ok();

    info!("--- send one message to queue 1 and pull it back as JSON");
    let sent = node
        .mqctl(&[
            "--json",
            "send",
            "orders",
            "hello world",
            "--tags",
            "TagA",
            "--key",
            "order-42",
            "--property",
            "k=v",
            "--queue-id",
            "1",
        ])
        .await
        .ok()
        .json();
    let msg_id = sent["results"][0]["msg_id"]
        .as_str()
        .expect("a msg_id")
        .to_string();
    assert_eq!(sent["results"][0]["queue_id"], 1);
    assert_eq!(sent["results"][0]["group"], "broker-a");
    let pulled = node
        .mqctl(&["--json", "pull", "orders", "--queue", "1"])
        .await
        .ok()
        .json();
    let queue = &pulled["queues"][0];
    assert_eq!(queue["status"], "FOUND");
    assert_eq!(u64_at(queue, "/next_offset"), 1);
    let message = &queue["messages"][0];
    assert_eq!(message["body"], "hello world");
    assert_eq!(message["tags"], "TagA");
    assert_eq!(message["keys"][0], "order-42");
    assert_eq!(message["properties"]["k"], "v");
    assert_eq!(message["msg_id"], msg_id.as_str());

    info!("--- the same pull as a table, every queue: one row");
    let table = node.mqctl(&["pull", "orders"]).await.ok();
    let rows = table.table();
    assert_eq!(rows.len(), 1, "{}", table.stdout);
    assert_eq!(rows[0]["QUEUE"], "broker-a/1");
    assert_eq!(rows[0]["BODY"], "hello world");
    assert_eq!(rows[0]["KEYS"], "order-42");
    assert!(
        table.stderr.contains("broker-a/1: FOUND, next offset 1"),
        "{}",
        table.stderr
    );

    info!("--- a tag filter that matches nothing");
    let filtered = node
        .mqctl(&["--json", "pull", "orders", "--queue", "1", "--tags", "TagB"])
        .await
        .ok()
        .json();
    assert_eq!(
        filtered["queues"][0]["messages"].as_array().map(Vec::len),
        Some(0)
    );

    info!("--- send a file: one message per non-empty line, in order, to queue 2");
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("lines.txt");
    std::fs::write(&file, "first\nsecond\n\nthird\n")?;
    let file_arg = file.to_string_lossy().into_owned();
    let from_file = node
        .mqctl(&[
            "send",
            "orders",
            "--file",
            &file_arg,
            "--queue-id",
            "2",
            "--batch",
            "2",
        ])
        .await
        .ok()
        .table();
    let offsets: Vec<&str> = from_file.iter().map(|r| r["OFFSET"].as_str()).collect();
    assert_eq!(offsets, ["0", "1", "2"]);
    let lines = node
        .mqctl(&["--json", "pull", "orders", "--queue", "2"])
        .await
        .ok()
        .json();
    let bodies: Vec<&str> = lines["queues"][0]["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .filter_map(|m| m["body"].as_str())
        .collect();
    assert_eq!(bodies, ["first", "second", "third"]);

    info!("--- tail without -f: the last 2 of queue 2, oldest first");
    let tail = node
        .mqctl(&["--json", "tail", "orders", "--queue", "2", "-n", "2"])
        .await
        .ok()
        .json_lines();
    let bodies: Vec<&str> = tail.iter().filter_map(|m| m["body"].as_str()).collect();
    assert_eq!(bodies, ["second", "third"]);

    info!("--- bulk: exactly N stored, and a msgs/s figure");
    let bulk = node
        .mqctl(&[
            "send", "orders", "--bulk", "1000", "--batch", "50", "--size", "64",
        ])
        .await
        .ok();
    assert!(
        bulk.stdout.starts_with("sent 1000 messages in "),
        "{}",
        bulk.stdout
    );
    assert!(bulk.stdout.contains("msgs/s"), "{}", bulk.stdout);
    let described = node
        .mqctl(&["--json", "topic", "describe", "orders"])
        .await
        .ok()
        .json();
    let stored: u64 = described["queues"]
        .as_array()
        .expect("queues")
        .iter()
        .map(|q| u64_at(q, "/max_offset") - u64_at(q, "/min_offset"))
        .sum();
    assert_eq!(stored, 1 + 3 + 1000);
    let bulk_json = node
        .mqctl(&[
            "--json",
            "send",
            "orders",
            "--bulk",
            "10",
            "--concurrency",
            "3",
            "--batch",
            "3",
        ])
        .await
        .ok()
        .json();
    assert_eq!(bulk_json["sent"], 10);

    info!("--- query by id and by key");
    let by_id = node
        .mqctl(&["--json", "query", "id", &msg_id])
        .await
        .ok()
        .json();
    assert_eq!(by_id["body"], "hello world");
    let by_id_table = node.mqctl(&["query", "id", &msg_id]).await.ok().table();
    assert!(by_id_table
        .iter()
        .any(|r| r["FIELD"] == "body" && r["VALUE"] == "hello world"));
    let by_key = node
        .mqctl(&["query", "key", "orders", "order-42"])
        .await
        .ok()
        .table();
    assert_eq!(by_key.len(), 1);
    assert_eq!(by_key[0]["MSG_ID"], msg_id);

    info!("--- tail -f from the end of every queue sees messages sent afterwards");
    let url = node.url.clone();
    let follower = tokio::spawn(async move {
        mqctl_support::run_mqctl(
            &url,
            &[
                "--json",
                "tail",
                "orders",
                "-f",
                "-n",
                "0",
                "--count",
                "3",
                "--wait-ms",
                "500",
            ],
        )
        .await
    });
    // The follower must have read the queue ends before the sends, or it would start
    // after them; a pause well above its start-up time, then sends until it exits.
    tokio::time::sleep(Duration::from_millis(500)).await;
    for round in 0..20 {
        if follower.is_finished() {
            break;
        }
        let body = format!("live-{round}");
        node.mqctl(&["send", "orders", &body]).await.ok();
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let followed = tokio::time::timeout(Duration::from_secs(30), follower)
        .await??
        .ok();
    let live = followed.json_lines();
    assert_eq!(live.len(), 3, "{}", followed.stdout);
    assert!(live
        .iter()
        .all(|m| m["body"].as_str().is_some_and(|b| b.starts_with("live-"))));
    assert!(live.iter().all(|m| m["group"] == "broker-a"));

    node.stop().await;
    Ok(())
}
