//! `mqctl send --delay-level` and `mqctl group retry`: a delayed message waits in the
//! schedule topic and reaches its topic after its delay; a message given back goes
//! to the retry topic with a growing delay, or straight to the dead-letter topic.

use crate::mqctl_support;

use std::time::{Duration, Instant};

use mqctl_support::{now_ms, u64_at, TestNode};
use tracing::info;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delayed_sends_and_give_backs() -> anyhow::Result<()> {
    let node = TestNode::start().await?;
    node.mqctl(&["topic", "create", "jobs", "--queues", "1"])
        .await
        .ok();
    node.mqctl(&["send", "jobs", "boom"]).await.ok();

    info!("--- a message delayed by level 1 (1 s)");
    let sent_ms = now_ms();
    let sent = node
        .mqctl(&["--json", "send", "jobs", "later", "--delay-level", "1"])
        .await
        .ok()
        .json();
    let result = &sent["results"][0];
    assert_eq!(result["topic"], "%SCHEDULE%", "{sent}");
    let due = u64_at(result, "/deliver_timestamp");
    assert!(due >= sent_ms + 1000, "due {due} for a send at {sent_ms}");
    let msg_id = result["msg_id"].as_str().expect("msg_id").to_string();
    let deadline = Instant::now() + Duration::from_secs(20);
    let delivered = loop {
        let found = node.mqctl(&["--json", "query", "id", &msg_id]).await;
        if found.code == Some(0) && found.json()["topic"] == "jobs" {
            break found.json();
        }
        assert!(
            Instant::now() < deadline,
            "never delivered: {}",
            found.stderr
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(delivered["body"], "later");
    assert_eq!(u64_at(&delivered, "/queue_offset"), 1);
    assert!(u64_at(&delivered, "/store_timestamp") >= due);

    info!("--- a level beyond the table is refused");
    let refused = node
        .mqctl(&["send", "jobs", "x", "--delay-level", "19"])
        .await;
    assert_ne!(refused.code, Some(0));
    assert!(refused.stderr.contains("BAD_REQUEST"), "{}", refused.stderr);

    info!("--- give `boom` back: retry topic, reconsume 1, delay level 3 (10 s)");
    let retried = node
        .mqctl(&["--json", "group", "retry", "app", "jobs", "0", "0"])
        .await
        .ok()
        .json();
    assert_eq!(retried["topic"], "%RETRY%app", "{retried}");
    assert_eq!(retried["reconsume_times"], 1);
    assert!(u64_at(&retried, "/deliver_timestamp") >= now_ms() + 9_000);

    info!("--- and straight to the dead-letter topic");
    let dead = node
        .mqctl(&[
            "--json",
            "group",
            "retry",
            "app",
            "jobs",
            "0",
            "0",
            "--dead-letter",
        ])
        .await
        .ok()
        .json();
    assert_eq!(dead["topic"], "%DLQ%app");
    assert_eq!(dead["dead_letter"], true);
    let pulled = node
        .mqctl(&["--json", "pull", "%DLQ%app", "--queue", "0"])
        .await
        .ok();
    assert!(pulled.stdout.contains("ORIGIN_TOPIC"), "{}", pulled.stdout);

    info!("--- an offset with no message: MESSAGE_NOT_FOUND");
    let missing = node
        .mqctl(&["group", "retry", "app", "jobs", "0", "99"])
        .await;
    assert_ne!(missing.code, Some(0));
    assert!(
        missing.stderr.contains("MESSAGE_NOT_FOUND"),
        "{}",
        missing.stderr
    );
    node.stop().await;
    Ok(())
}
