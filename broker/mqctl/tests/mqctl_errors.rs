//! `mqctl` failures: an API error prints `error: CODE: message` on stderr and exits
//! 1; an unreachable server names the cause; a bad command line exits 2.

use crate::mqctl_support;

use mqctl_support::{run_mqctl, TestNode};
use tracing::info;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_are_readable_and_exit_non_zero() -> anyhow::Result<()> {
    let node = TestNode::start().await?;

    info!("--- an unknown topic: TOPIC_NOT_FOUND, exit 1, nothing on stdout");
    let missing = node.mqctl(&["topic", "describe", "no-such-topic"]).await;
    assert_eq!(missing.code, Some(1), "{missing:?}");
    assert!(missing.stdout.is_empty(), "{missing:?}");
    assert!(
        missing.stderr.starts_with("error: TOPIC_NOT_FOUND: "),
        "{missing:?}"
    );
    assert!(missing.stderr.contains("no-such-topic"), "{missing:?}");

    info!("--- a malformed message id: BAD_REQUEST");
    let bad = node.mqctl(&["query", "id", "not-an-id"]).await;
    assert_eq!(bad.code, Some(1), "{bad:?}");
    assert!(bad.stderr.starts_with("error: BAD_REQUEST: "), "{bad:?}");

    info!("--- a queue the topic does not have: named, exit 2");
    node.mqctl(&["topic", "create", "t1", "--queues", "2"])
        .await
        .ok();
    let no_queue = node.mqctl(&["pull", "t1", "--queue", "7"]).await;
    assert_eq!(no_queue.code, Some(2), "{no_queue:?}");
    assert!(
        no_queue.stderr.contains("broker-a/0, broker-a/1"),
        "{no_queue:?}"
    );

    info!("--- nothing listening: a connect error with the OS's reason");
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let dead = run_mqctl(&format!("http://127.0.0.1:{port}"), &["topic", "list"]).await;
    assert_eq!(dead.code, Some(1), "{dead:?}");
    assert!(dead.stderr.starts_with("error: connect: "), "{dead:?}");
    assert!(dead.stderr.contains("refused"), "{dead:?}");

    info!("--- a bad command line: clap's message, exit 2");
    let usage = node.mqctl(&["send", "t1"]).await;
    assert_eq!(usage.code, Some(2), "{usage:?}");
    let bad_url = run_mqctl("127.0.0.1:1", &["topic", "list"]).await;
    assert_eq!(bad_url.code, Some(1), "{bad_url:?}");
    assert!(
        bad_url.stderr.starts_with("error: invalid_url: "),
        "{bad_url:?}"
    );

    node.stop().await;
    Ok(())
}
