//! `mqctl send --transaction`, `mqctl tx commit|rollback|checks` against a real
//! node with short check timings: a transaction's message stays invisible until
//! `tx commit`, a rolled-back one never shows, a repeat answers the same and the
//! opposite fails (exit 1, `CONFLICT`); an open one is offered by `tx checks`
//! (table and JSON, also naming the broker group) and settled by the id it
//! prints.

use crate::mqctl_support;

use std::time::Duration;

use broker::units::HumanDuration;
use mqctl_support::TestNode;
use serde_json::Value;

/// The bodies `mqctl pull` shows in the topic's only queue.
async fn visible(node: &TestNode) -> Vec<String> {
    let pulled = node
        .mqctl(&["--json", "pull", "orders", "--queue", "0"])
        .await
        .ok();
    let pulled = pulled.json();
    pulled["queues"][0]["messages"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| m["body"].as_str().map(str::to_string))
        .collect()
}

/// `mqctl --json send orders BODY --transaction app`: the transaction id.
async fn open(node: &TestNode, body: &str) -> String {
    let sent = node
        .mqctl(&["--json", "send", "orders", body, "--transaction", "app"])
        .await
        .ok()
        .json();
    let id = sent["transaction_id"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert_eq!(id.len(), 32, "{sent}");
    assert_eq!(sent["results"][0]["topic"], "%HALF%", "{sent}");
    id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactions_from_the_command_line() -> anyhow::Result<()> {
    let node = TestNode::start_with(|config| {
        config.transaction.check_after = HumanDuration(Duration::from_millis(300));
        config.transaction.check_interval = HumanDuration(Duration::from_secs(60));
    })
    .await?;
    node.mqctl(&["topic", "create", "orders", "--queues", "1"])
        .await
        .ok();

    let paid = open(&node, "order 1 paid").await;
    let cancelled = open(&node, "order 2 cancelled").await;
    assert!(visible(&node).await.is_empty(), "nothing before a commit");

    let committed = node
        .mqctl(&["--json", "tx", "commit", &paid])
        .await
        .ok()
        .json();
    assert_eq!(committed["status"], "COMMITTED", "{committed}");
    assert_eq!(committed["messages"], 1, "{committed}");
    let table = node.mqctl(&["tx", "rollback", &cancelled]).await.ok();
    assert!(
        table.stdout.contains(&format!("{cancelled} ROLLED_BACK")),
        "{}",
        table.stdout
    );
    // A repeat answers the same; the opposite is refused.
    let again = node
        .mqctl(&["--json", "tx", "commit", &paid])
        .await
        .ok()
        .json();
    assert_eq!(again, committed);
    let opposite = node.mqctl(&["tx", "commit", &cancelled]).await;
    assert_eq!(opposite.code, Some(1), "{opposite:?}");
    assert!(opposite.stderr.contains("CONFLICT"), "{}", opposite.stderr);
    let unknown = node
        .mqctl(&["tx", "commit", "0123456789abcdef0123456789abcdef"])
        .await;
    assert_eq!(unknown.code, Some(1), "{unknown:?}");
    assert!(
        unknown.stderr.contains("TRANSACTION_NOT_FOUND"),
        "{}",
        unknown.stderr
    );
    assert_eq!(visible(&node).await, ["order 1 paid"]);

    // Left open: offered to the producer group's checks after check_after.
    let pending = open(&node, "order 3 pending").await;
    let checks = node
        .mqctl(&["tx", "checks", "app", "--wait", "10s"])
        .await
        .ok();
    let rows = checks.table();
    assert_eq!(rows.len(), 1, "{}", checks.stdout);
    assert_eq!(rows[0]["TRANSACTION"], pending);
    assert_eq!(rows[0]["TOPIC"], "orders");
    assert_eq!(rows[0]["CHECK"], "1");
    assert_eq!(rows[0]["BODY"], "order 3 pending");
    // Taken: not offered again before check_interval.
    let none = node
        .mqctl(&[
            "--json",
            "tx",
            "checks",
            "app",
            "--broker-group",
            "broker-a",
        ])
        .await
        .ok();
    assert_eq!(
        none.json()["checks"],
        Value::Array(Vec::new()),
        "{}",
        none.stdout
    );
    node.mqctl(&["tx", "commit", &pending]).await.ok();
    assert_eq!(visible(&node).await, ["order 1 paid", "order 3 pending"]);

    // Bad input: a malformed id, a wait over the cap, an unknown broker group.
    let malformed = node.mqctl(&["tx", "commit", "xyz"]).await;
    assert_eq!(malformed.code, Some(1), "{malformed:?}");
    assert!(
        malformed.stderr.contains("BAD_REQUEST"),
        "{}",
        malformed.stderr
    );
    let long = node.mqctl(&["tx", "checks", "app", "--wait", "31s"]).await;
    assert_eq!(long.code, Some(1), "{long:?}");
    assert!(long.stderr.contains("BAD_REQUEST"), "{}", long.stderr);
    let elsewhere = node
        .mqctl(&["tx", "checks", "app", "--broker-group", "broker-z"])
        .await;
    assert_eq!(elsewhere.code, Some(1), "{elsewhere:?}");
    assert!(
        elsewhere.stderr.contains("BROKER_GROUP_NOT_FOUND"),
        "{}",
        elsewhere.stderr
    );
    node.stop().await;
    Ok(())
}
