//! `mqctl cluster finalize-upgrade GROUP` prints the group's protocol and that
//! queue claims are on (a group this build bootstrapped turns them on by itself,
//! so the first call may or may not be the one that did); a repeat changed
//! nothing; an unknown group exits 1 with the broker's code.

use crate::mqctl_support;

use mqctl_support::TestNode;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finalize_upgrade_reports_the_groups_protocol() -> anyhow::Result<()> {
    let node = TestNode::start().await?;
    let first = node
        .mqctl(&["--json", "cluster", "finalize-upgrade", "broker-a"])
        .await
        .ok()
        .json();
    assert_eq!(first["queue_claims"], true, "{first}");
    let done = node
        .mqctl(&["--json", "cluster", "finalize-upgrade", "broker-a"])
        .await
        .ok()
        .json();
    assert_eq!(
        done,
        serde_json::json!({"group": "broker-a", "protocol": broker::peer_protocol::VERSION,
                           "queue_claims": true, "enabled_now": false})
    );
    let table = node
        .mqctl(&["cluster", "finalize-upgrade", "broker-a"])
        .await
        .ok();
    assert!(
        table.stdout.contains("QUEUE_CLAIMS") && table.stdout.contains("broker-a"),
        "{table:?}"
    );
    let unknown = node
        .mqctl(&["cluster", "finalize-upgrade", "broker-zz"])
        .await;
    assert_eq!(unknown.code, Some(1), "{unknown:?}");
    assert!(
        unknown.stderr.contains("BROKER_GROUP_NOT_FOUND"),
        "{unknown:?}"
    );
    node.stop().await;
    Ok(())
}
