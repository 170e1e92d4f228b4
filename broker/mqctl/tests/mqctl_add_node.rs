//! `mqctl cluster add-node` follows the asynchronous join the broker runs: it
//! starts the join, polls it until it ends, and reports a failed one on stderr
//! with exit 1 (the learner is removed by the broker); `--wait 0s` prints the join
//! as started and returns.

use crate::mqctl_support;

use std::time::Duration;

use broker_proto::units::HumanDuration;
use mqctl_support::TestNode;
use tracing::info;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn add_node_follows_the_join_until_it_ends() -> anyhow::Result<()> {
    let node = TestNode::start_with(|config| {
        config.control.join_timeout = HumanDuration(Duration::from_secs(1));
    })
    .await?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let dead = format!("http://127.0.0.1:{port}");

    info!("--- --wait 0s: the join as started, exit 0");
    let started = node
        .mqctl(&[
            "--json", "cluster", "add-node", "broker-a", "7", &dead, "--wait", "0s",
        ])
        .await
        .ok()
        .json();
    assert_eq!(started["node_id"], 7, "{started}");
    assert!(
        ["ADDING_LEARNER", "CATCHING_UP"].contains(&started["state"].as_str().unwrap_or_default()),
        "{started}"
    );

    info!("--- the same add, followed: it fails once the join timeout passed");
    let failed = node
        .mqctl(&["cluster", "add-node", "broker-a", "7", &dead])
        .await;
    assert_eq!(failed.code, Some(1), "{failed:?}");
    assert!(
        failed
            .stderr
            .starts_with("error: FAILED: node 7 did not join: "),
        "{failed:?}"
    );
    assert!(
        failed.stderr.contains("the learner was removed"),
        "{failed:?}"
    );
    assert!(
        failed.stdout.contains("FAILED"),
        "the join's row: {failed:?}"
    );

    let status = node
        .mqctl(&["--json", "cluster", "status"])
        .await
        .ok()
        .json();
    let nodes = status["groups"][0]["nodes"]
        .as_array()
        .map(Vec::len)
        .unwrap_or_default();
    assert_eq!(nodes, 1, "only node 1 is left: {status}");
    node.stop().await;
    Ok(())
}
