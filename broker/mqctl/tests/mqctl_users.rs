//! `mqctl` on a secured node: without a token or with a wrong one every command
//! fails with `UNAUTHORIZED` and a hint naming `MQ_TOKEN`; an admin manages users
//! (`mqctl user create|list|show|update|delete|rotate`); a user's token does what
//! its permissions allow and gets `NO_PERMISSION` (with a hint) for the rest; a
//! rotated or deleted token stops working; `--token-file` reads a token from a file.

use crate::mqctl_support;

use std::time::{Duration, Instant};

use broker::config::TEST_ADMIN_TOKEN;
use mqctl_support::{Run, TestNode};
use serde_json::json;
use tracing::info;

/// The API promises a user change takes effect on every node within 5 s.
const EFFECT_DEADLINE: Duration = Duration::from_secs(10);

/// Runs `mqctl` as `token` until `done` holds for the run, or fails at the deadline.
async fn eventually(
    node: &TestNode,
    token: Option<&str>,
    args: &[&str],
    what: &str,
    done: impl Fn(&Run) -> bool,
) -> Run {
    let deadline = Instant::now() + EFFECT_DEADLINE;
    loop {
        let run = node.mqctl_as(token, args).await;
        if done(&run) {
            return run;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: not within {EFFECT_DEADLINE:?}; last run: {run:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn refused(run: &Run, code: &str) -> bool {
    run.code == Some(1) && run.stderr.starts_with(&format!("error: {code}: "))
}

/// The token a `create` or `rotate` printed: stdout is exactly one line.
#[track_caller]
fn printed_token(run: &Run) -> String {
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(lines.len(), 1, "the token alone on stdout: {run:?}");
    let token = lines[0].trim().to_string();
    assert!(
        token.len() >= 16,
        "a token of at least 16 characters: {run:?}"
    );
    assert!(
        run.stderr.contains("shown only this once"),
        "stderr says the token is shown once: {run:?}"
    );
    token
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_are_managed_and_tokens_enforced() -> anyhow::Result<()> {
    let node = TestNode::start().await?;

    info!("--- no token, then a wrong one: UNAUTHORIZED with a hint naming MQ_TOKEN");
    for token in [None, Some("not-a-token-of-this-cluster")] {
        let run = node.mqctl_as(token, &["topic", "list"]).await;
        assert!(refused(&run, "UNAUTHORIZED"), "{run:?}");
        assert!(run.stdout.is_empty(), "{run:?}");
        assert!(
            run.stderr.contains("\nhint: ") && run.stderr.contains("MQ_TOKEN"),
            "{run:?}"
        );
    }

    info!("--- the admin creates the topic and a pub-only user with a quota");
    node.mqctl(&["topic", "create", "orders", "--queues", "2"])
        .await
        .ok();
    let created = node
        .mqctl(&[
            "user",
            "create",
            "orders-svc",
            "--permission",
            "topic:orders=pub",
            "--send-messages-per-s",
            "1000",
        ])
        .await
        .ok();
    let token = printed_token(&created);
    assert_ne!(token, TEST_ADMIN_TOKEN);

    info!("--- creating it again: CONFLICT");
    let again = node.mqctl(&["user", "create", "orders-svc"]).await;
    assert!(refused(&again, "CONFLICT"), "{again:?}");

    info!("--- list and show: permissions and quota, never the token");
    let list = node.mqctl(&["user", "list"]).await.ok();
    assert!(!list.stdout.contains(&token), "{list:?}");
    let rows = list.table();
    let row = rows
        .iter()
        .find(|r| r["NAME"] == "orders-svc")
        .unwrap_or_else(|| panic!("orders-svc listed: {list:?}"));
    assert_eq!(row["PERMISSIONS"], "topic:orders=pub", "{list:?}");
    assert_eq!(row["SEND_MSGS_PER_S"], "1000", "{list:?}");
    let shown = node
        .mqctl(&["--json", "user", "show", "orders-svc"])
        .await
        .ok()
        .json();
    assert_eq!(
        shown["permissions"],
        json!([{"resource": "topic:orders", "actions": ["pub"]}])
    );
    assert_eq!(shown["quotas"], json!({"send_messages_per_s": 1000}));

    info!("--- as orders-svc: sending to orders works");
    eventually(
        &node,
        Some(&token),
        &["send", "orders", "hello"],
        "orders-svc sends",
        |r| r.code == Some(0),
    )
    .await;

    info!("--- as orders-svc: other topics, pulls, users: NO_PERMISSION with a hint");
    for args in [
        &["send", "payments", "hello"][..],
        &["topic", "create", "orders", "--queues", "4"],
        &["pull", "orders", "--queue", "0"],
        &["user", "list"],
    ] {
        let run = node.mqctl_as(Some(&token), args).await;
        assert!(refused(&run, "NO_PERMISSION"), "{args:?}: {run:?}");
        assert!(
            run.stderr.contains("\nhint: ") && run.stderr.contains("mqctl user update"),
            "{run:?}"
        );
    }

    info!("--- update adds sub and keeps the quota; the user may pull then");
    let updated = node
        .mqctl(&[
            "--json",
            "user",
            "update",
            "orders-svc",
            "--permission",
            "topic:orders=pub,sub",
        ])
        .await
        .ok()
        .json();
    assert_eq!(
        updated["permissions"],
        json!([{"resource": "topic:orders", "actions": ["pub", "sub"]}])
    );
    assert_eq!(updated["quotas"], json!({"send_messages_per_s": 1000}));
    eventually(
        &node,
        Some(&token),
        &["pull", "orders", "--queue", "0"],
        "orders-svc pulls after the update",
        |r| r.code == Some(0),
    )
    .await;

    info!("--- update --no-quotas drops the quota and keeps the permissions");
    let unlimited = node
        .mqctl(&["--json", "user", "update", "orders-svc", "--no-quotas"])
        .await
        .ok()
        .json();
    assert_eq!(unlimited["quotas"], json!({}));
    assert_eq!(unlimited["permissions"], updated["permissions"]);

    info!("--- rotate: a new token works, the old one stops");
    let rotated = node.mqctl(&["user", "rotate", "orders-svc"]).await.ok();
    let new_token = printed_token(&rotated);
    assert_ne!(new_token, token);
    eventually(
        &node,
        Some(&token),
        &["send", "orders", "old token"],
        "the old token is refused",
        |r| refused(r, "UNAUTHORIZED"),
    )
    .await;
    eventually(
        &node,
        Some(&new_token),
        &["send", "orders", "new token"],
        "the new token sends",
        |r| r.code == Some(0),
    )
    .await;

    info!("--- delete: the token stops working, the user is gone");
    let deleted = node.mqctl(&["user", "delete", "orders-svc"]).await.ok();
    assert!(
        deleted.stdout.starts_with("deleted user orders-svc"),
        "{deleted:?}"
    );
    eventually(
        &node,
        Some(&new_token),
        &["send", "orders", "deleted"],
        "the deleted user's token is refused",
        |r| refused(r, "UNAUTHORIZED"),
    )
    .await;
    let gone = node.mqctl(&["user", "show", "orders-svc"]).await;
    assert!(refused(&gone, "USER_NOT_FOUND"), "{gone:?}");

    info!("--- --json create prints the whole answer, token included");
    let json_created = node
        .mqctl(&[
            "--json",
            "user",
            "create",
            "reader",
            "--permission",
            "group:billing*=sub",
            "--permission",
            "topic:orders=sub",
        ])
        .await
        .ok()
        .json();
    assert_eq!(json_created["name"], "reader");
    assert!(
        json_created["token"]
            .as_str()
            .is_some_and(|t| t.len() >= 16),
        "{json_created}"
    );

    info!("--- malformed permissions are a bad command line (exit 2), nothing created");
    for bad in [
        "topic:orders",
        "topic:orders=write",
        "queue:x=pub",
        "topic:orders=",
    ] {
        let run = node
            .mqctl(&["user", "create", "bad-user", "--permission", bad])
            .await;
        assert_eq!(run.code, Some(2), "{bad}: {run:?}");
    }
    let missing = node.mqctl(&["user", "show", "bad-user"]).await;
    assert!(refused(&missing, "USER_NOT_FOUND"), "{missing:?}");

    info!("--- --token-file reads the token from a file");
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("token");
    std::fs::write(&file, format!("{TEST_ADMIN_TOKEN}\n"))?;
    let file_arg = file.display().to_string();
    let by_file = node
        .mqctl_as(None, &["--token-file", &file_arg, "user", "list"])
        .await
        .ok();
    assert!(
        by_file.table().iter().any(|r| r["NAME"] == "reader"),
        "{by_file:?}"
    );

    node.stop().await;
    Ok(())
}
