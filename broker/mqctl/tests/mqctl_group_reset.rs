//! `mqctl group reset --timestamp`: a consumer group moved back to the first message
//! stored at or after a time, with `"force": true` (a plain commit would not move it
//! back), and `group offsets` shows the new lag.

use crate::mqctl_support;

use std::time::Duration;

use mqctl_support::{now_ms, u64_at, TestNode};
use tracing::info;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_by_timestamp_moves_the_group_back() -> anyhow::Result<()> {
    let node = TestNode::start().await?;
    node.mqctl(&["topic", "create", "billing", "--queues", "1"])
        .await
        .ok();

    info!("--- three messages, a boundary time, two more");
    for body in ["a", "b", "c"] {
        node.mqctl(&["send", "billing", body]).await.ok();
    }
    // Store times are in ms: step over the boundary so no message shares it.
    tokio::time::sleep(Duration::from_millis(20)).await;
    let boundary_ms = now_ms();
    tokio::time::sleep(Duration::from_millis(20)).await;
    for body in ["d", "e"] {
        node.mqctl(&["send", "billing", body]).await.ok();
    }

    info!("--- the group has consumed everything");
    let committed = node
        .mqctl(&[
            "--json",
            "group",
            "commit",
            "billing-app",
            "billing",
            "0",
            "5",
        ])
        .await
        .ok()
        .json();
    assert_eq!(committed["offset"], 5);
    info!("--- a plain commit backwards is ignored (and said so)");
    let ignored = node
        .mqctl(&["group", "commit", "billing-app", "billing", "0", "1"])
        .await
        .ok();
    assert_eq!(ignored.table()[0]["OFFSET"], "5");
    assert!(ignored.stderr.contains("--force"), "{}", ignored.stderr);

    info!("--- reset to the boundary: offset 3 (the first message after it), lag 2");
    let boundary = boundary_ms.to_string();
    let reset = node
        .mqctl(&[
            "group",
            "reset",
            "billing-app",
            "billing",
            "--timestamp",
            &boundary,
        ])
        .await
        .ok();
    let rows = reset.table();
    assert_eq!(rows.len(), 1, "{}", reset.stdout);
    assert_eq!(
        (rows[0]["QUEUE"].as_str(), rows[0]["OFFSET"].as_str()),
        ("0", "3")
    );
    let offsets = node
        .mqctl(&[
            "--json",
            "group",
            "offsets",
            "billing-app",
            "--topic",
            "billing",
        ])
        .await
        .ok()
        .json();
    assert_eq!(u64_at(&offsets, "/offsets/0/offset"), 3);
    assert_eq!(u64_at(&offsets, "/offsets/0/lag"), 2);

    info!("--- --earliest and --latest");
    let earliest = node
        .mqctl(&[
            "--json",
            "group",
            "reset",
            "billing-app",
            "billing",
            "--earliest",
        ])
        .await
        .ok()
        .json();
    assert_eq!(u64_at(&earliest, "/offsets/0/offset"), 0);
    let latest = node
        .mqctl(&["group", "reset", "billing-app", "billing", "--latest"])
        .await
        .ok()
        .table();
    assert_eq!(latest[0]["OFFSET"], "5");
    let table = node
        .mqctl(&["group", "offsets", "billing-app"])
        .await
        .ok()
        .table();
    assert_eq!(table[0]["LAG"], "0");
    // The node's own copy: on a single node the same.
    let stale = node
        .mqctl(&["group", "offsets", "billing-app", "--stale"])
        .await
        .ok()
        .table();
    assert_eq!(stale, table);

    node.stop().await;
    Ok(())
}
