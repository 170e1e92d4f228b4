//! `mqctl topic create|list|describe|delete`, `routes` and `cluster status` against a
//! real single node: tables and `--json` both show what the API holds.

use crate::mqctl_support;

use mqctl_support::TestNode;
use tracing::info;

/// Creates a topic and reads it back through every topic command, in both output
/// forms, then deletes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topics_round_trip_in_tables_and_json() -> anyhow::Result<()> {
    let node = TestNode::start().await?;

    info!("--- create with 3 queues: the table shows the settings");
    let created = node
        .mqctl(&["topic", "create", "orders", "--queues", "3"])
        .await
        .ok();
    let rows = created.table();
    assert_eq!(rows.len(), 1, "{}", created.stdout);
    assert_eq!(rows[0]["TOPIC"], "orders");
    assert_eq!(rows[0]["READ_QUEUES"], "3");
    assert_eq!(rows[0]["WRITE_QUEUES"], "3");
    assert_eq!(rows[0]["PERM"], "6 (rw)");

    info!("--- update in JSON: read and write counts apart, read-only");
    let updated = node
        .mqctl(&[
            "--json",
            "topic",
            "create",
            "audit",
            "--read-queues",
            "2",
            "--write-queues",
            "1",
            "--perm",
            "4",
        ])
        .await
        .ok()
        .json();
    assert_eq!(updated["read_queue_nums"], 2);
    assert_eq!(updated["write_queue_nums"], 1);
    assert_eq!(updated["perm"], 4);

    info!("--- list holds both");
    let listed = node.mqctl(&["topic", "list"]).await.ok().table();
    let names: Vec<&str> = listed.iter().map(|r| r["TOPIC"].as_str()).collect();
    assert!(
        names.contains(&"orders") && names.contains(&"audit"),
        "{names:?}"
    );
    let listed_json = node.mqctl(&["--json", "topic", "list"]).await.ok().json();
    assert!(listed_json["topics"]
        .as_array()
        .is_some_and(|t| t.iter().any(|t| t["topic"] == "orders")));

    info!("--- describe: settings, route and queues");
    let described = node.mqctl(&["topic", "describe", "orders"]).await.ok();
    assert!(
        described.stdout.contains("read_queue_nums"),
        "{}",
        described.stdout
    );
    assert!(described.stdout.contains(&node.url), "{}", described.stdout);
    let described = node
        .mqctl(&["--json", "topic", "describe", "orders"])
        .await
        .ok()
        .json();
    assert_eq!(described["topic"]["topic"], "orders");
    assert_eq!(described["queues"].as_array().map(Vec::len), Some(3));
    assert_eq!(described["routes"][0]["leader"], node.url.as_str());

    info!("--- routes and cluster status name this node as leader");
    let routes = node.mqctl(&["routes", "orders"]).await.ok().table();
    assert_eq!(routes[0]["LEADER"], node.url);
    let cluster = node.mqctl(&["cluster", "status"]).await.ok().table();
    assert_eq!(cluster.len(), 1);
    assert_eq!(cluster[0]["NODE"], "1*");
    assert_eq!(cluster[0]["ROLE"], "leader");
    let cluster = node
        .mqctl(&["--json", "cluster", "status"])
        .await
        .ok()
        .json();
    assert_eq!(cluster["groups"][0]["leader"], node.url.as_str());

    info!("--- delete: gone from the list");
    node.mqctl(&["topic", "delete", "audit"]).await.ok();
    let listed = node.mqctl(&["topic", "list"]).await.ok().table();
    assert!(listed.iter().all(|r| r["TOPIC"] != "audit"));

    node.stop().await;
    Ok(())
}
