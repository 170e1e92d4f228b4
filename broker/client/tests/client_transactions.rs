//! The [`TransactionProducer`] against a real single-node broker served
//! in-process, with short check timings: the local transaction runs while the
//! messages are invisible, its answer commits (visible once) or rolls back
//! (never visible); a transaction left open is offered to the check callback with
//! its messages and keys and resolved as the callback answers; one the callback
//! never decides is rolled back by the broker, after which a commit is a
//! `CONFLICT`; a refused send runs no local transaction.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use broker::config::NodeConfig;
use broker::service::node::Node;
use broker::units::HumanDuration;
use broker_client::api::{MessageInput, TopicRequest};
use broker_client::{
    BrokerClient, ClientError, ClientOptions, LocalTransactionState, TransactionProducer,
    TransactionProducerOptions,
};
use tracing::info;

const TOPIC: &str = "orders";
const GROUP: &str = "order-service";
/// Every wait on a condition ends by then.
const DEADLINE: Duration = Duration::from_secs(20);

/// A node serving HTTP on an ephemeral loopback port.
struct TestNode {
    node: Arc<Node>,
    url: String,
    server: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

impl TestNode {
    /// Checks offered 300 ms after the send, again every 300 ms, rolled back
    /// after the third.
    async fn start() -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let mut config = NodeConfig::for_test(dir.path(), 1, addr);
        config.transaction.check_after = HumanDuration(Duration::from_millis(300));
        config.transaction.check_interval = HumanDuration(Duration::from_millis(300));
        config.transaction.max_checks = 3;
        let node = broker::server::start(config).await?;
        let app = broker::http::router(Arc::clone(&node));
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self {
            node,
            url: format!("http://{addr}"),
            server,
            _dir: dir,
        })
    }

    async fn stop(self) {
        self.server.abort();
        broker::server::stop(self.node).await;
    }
}

fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,openraft=warn")),
        )
        .with_test_writer()
        .try_init();
}

/// A client of `node` as its bootstrap admin, once the node has a leader, with
/// a one-queue topic.
async fn client_with_topic(node: &TestNode) -> anyhow::Result<BrokerClient> {
    let options = ClientOptions {
        token: Some(broker::config::TEST_ADMIN_TOKEN.into()),
        ..ClientOptions::default()
    };
    let client = BrokerClient::new(vec![node.url.clone()], options)?;
    let deadline = Instant::now() + DEADLINE;
    while let Err(e) = client.ready().await {
        anyhow::ensure!(Instant::now() < deadline, "node not ready in time: {e}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    client
        .create_topic(TOPIC, &TopicRequest::with_queues(1))
        .await?;
    Ok(client)
}

/// A message with `body` and the key `key`.
fn keyed(body: &str, key: &str) -> MessageInput {
    MessageInput {
        body: Some(body.into()),
        keys: vec![key.into()],
        ..MessageInput::default()
    }
}

/// Every body visible in the topic, in order.
async fn visible(client: &BrokerClient) -> anyhow::Result<Vec<String>> {
    let pulled = client.pull(TOPIC, 0, 0, 256, 0, None).await?;
    Ok(pulled
        .messages
        .into_iter()
        .map(|m| m.body.unwrap_or_default())
        .collect())
}

/// What a check offered: its count, topic and bodies.
type Offer = (u32, String, Vec<String>);

/// The decision an order's check gets, by the order key its messages carry.
fn decision_of(key: &str) -> LocalTransactionState {
    if key.starts_with("paid-") {
        LocalTransactionState::Commit
    } else if key.starts_with("cancelled-") {
        LocalTransactionState::Rollback
    } else {
        LocalTransactionState::Unknown
    }
}

/// Waits until `condition` holds, or fails naming `what`.
async fn wait_for<F, Fut>(what: &str, mut condition: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<bool>>,
{
    let deadline = Instant::now() + DEADLINE;
    while !condition().await? {
        anyhow::ensure!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_local_transaction_commits_or_rolls_back_its_messages() -> anyhow::Result<()> {
    init_tracing();
    let node = TestNode::start().await?;
    let client = client_with_topic(&node).await?;
    let producer = TransactionProducer::start(
        client.clone(),
        TransactionProducerOptions::new(GROUP),
        |_check| async { LocalTransactionState::Rollback },
    )?;

    // Committed: invisible while the local transaction runs, then visible once.
    let seen_while_running = Arc::new(Mutex::new(None));
    let seen = Arc::clone(&seen_while_running);
    let probe = client.clone();
    let committed = producer
        .send(
            TOPIC,
            vec![
                keyed("order 1 placed", "o-1"),
                keyed("order 1 billed", "o-1"),
            ],
            |sent| {
                let has_id = sent.transaction_id.is_some();
                async move {
                    *seen.lock().expect("not poisoned") =
                        Some((has_id, visible(&probe).await.ok()));
                    LocalTransactionState::Commit
                }
            },
        )
        .await?;
    assert_eq!(
        seen_while_running.lock().expect("not poisoned").take(),
        Some((true, Some(Vec::new()))),
        "the local transaction runs with the id in hand and nothing visible yet"
    );
    assert!(committed.is_committed(), "{committed:?}");
    assert!(committed.resolve_error.is_none(), "{committed:?}");
    let resolution = committed.resolution.as_ref().expect("resolved");
    assert_eq!(resolution.transaction_id, committed.transaction_id);
    assert_eq!(resolution.messages, 2);
    assert_eq!(
        visible(&client).await?,
        ["order 1 placed", "order 1 billed"]
    );

    // Rolled back: never visible.
    let rolled_back = producer
        .send(TOPIC, vec![keyed("order 2 placed", "o-2")], |_| async {
            LocalTransactionState::Rollback
        })
        .await?;
    assert!(!rolled_back.is_committed(), "{rolled_back:?}");
    assert_eq!(
        rolled_back.resolution.as_ref().map(|r| r.status.as_str()),
        Some("ROLLED_BACK")
    );
    // Repeating a resolution through the producer answers the same; the
    // opposite is a conflict.
    let again = producer.resolve(&committed.transaction_id, true).await?;
    assert_eq!(&again, resolution);
    let opposite = producer
        .resolve(&rolled_back.transaction_id, true)
        .await
        .expect_err("a rolled-back transaction cannot be committed");
    assert!(opposite.is_conflict(), "{opposite}");

    // A refused send runs no local transaction and opens nothing.
    let ran = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&ran);
    let mut stamped = keyed("order 3", "o-3");
    stamped.producer_id = Some("p-1".into());
    stamped.sequence = Some(1);
    let refused = producer
        .send(TOPIC, vec![stamped], |_| async move {
            flag.store(true, Ordering::SeqCst);
            LocalTransactionState::Commit
        })
        .await
        .expect_err("a transaction's messages carry no producer_id");
    assert_eq!(refused.code(), Some("BAD_REQUEST"), "{refused}");
    assert!(!ran.load(Ordering::SeqCst));
    let empty = producer
        .send(TOPIC, Vec::new(), |_| async {
            LocalTransactionState::Commit
        })
        .await
        .expect_err("an empty transaction");
    assert!(matches!(empty, ClientError::InvalidArgument(_)), "{empty}");

    assert_eq!(
        visible(&client).await?,
        ["order 1 placed", "order 1 billed"],
        "exactly the committed batch, once"
    );
    let stats = producer.shutdown().await;
    info!(?stats, "producer");
    assert_eq!((stats.sent, stats.send_failed), (2, 2), "{stats:?}");
    // The commit and its repeat; the rollback; the refused commit.
    assert_eq!(
        (stats.committed, stats.rolled_back, stats.conflicts),
        (2, 1, 1),
        "{stats:?}"
    );
    node.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_transactions_are_settled_through_the_check_callback() -> anyhow::Result<()> {
    init_tracing();
    let node = TestNode::start().await?;
    let client = client_with_topic(&node).await?;
    // What the callback was offered: order key → (check count, topic, bodies).
    let offered: Arc<Mutex<BTreeMap<String, Offer>>> = Arc::default();
    let record = Arc::clone(&offered);
    let producer = TransactionProducer::start(
        client.clone(),
        TransactionProducerOptions {
            check_wait: Duration::from_secs(2),
            ..TransactionProducerOptions::new(GROUP)
        },
        move |check| {
            let key = check.messages[0].keys.first().cloned().unwrap_or_default();
            let bodies = check
                .messages
                .iter()
                .map(|m| m.body.clone().unwrap_or_default())
                .collect();
            record.lock().expect("not poisoned").insert(
                key.clone(),
                (check.check_count, check.topic.clone(), bodies),
            );
            async move { decision_of(&key) }
        },
    )?;

    // Three local transactions that cannot tell yet: the checks decide.
    let mut ids = BTreeMap::new();
    for (key, bodies) in [
        ("paid-7", vec!["order 7 placed", "order 7 paid"]),
        ("cancelled-8", vec!["order 8 placed"]),
        ("pending-9", vec!["order 9 placed"]),
    ] {
        let messages = bodies.iter().map(|body| keyed(body, key)).collect();
        let sent = producer
            .send(TOPIC, messages, |_| async {
                LocalTransactionState::Unknown
            })
            .await?;
        assert!(
            sent.resolution.is_none() && sent.resolve_error.is_none(),
            "{sent:?}"
        );
        ids.insert(key, sent.transaction_id);
    }
    assert!(
        visible(&client).await?.is_empty(),
        "nothing before the checks"
    );

    wait_for("the paid order's messages", || async {
        Ok(!visible(&client).await?.is_empty())
    })
    .await?;
    {
        let offered = offered.lock().expect("not poisoned");
        let (count, topic, bodies) = &offered["paid-7"];
        assert_eq!(
            (*count, topic.as_str()),
            (1, TOPIC),
            "the first check decides"
        );
        assert_eq!(bodies, &["order 7 placed", "order 7 paid"]);
    }
    // The undecided order is offered until its last check, then rolled back by
    // the broker: a late commit is refused.
    wait_for("the pending order's third check", || async {
        Ok(offered
            .lock()
            .expect("not poisoned")
            .get("pending-9")
            .is_some_and(|(count, _, _)| *count == 3))
    })
    .await?;
    // The broker rolls it back one check interval after the last offer (its
    // scheduler runs every 200 ms): give it that, and more, before committing.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let late = producer
        .resolve(&ids["pending-9"], true)
        .await
        .expect_err("committed after its last check went unanswered");
    assert!(late.is_conflict(), "{late}");
    let rolled_back = producer.resolve(&ids["pending-9"], false).await?;
    assert!(rolled_back.by_timeout, "{rolled_back:?}");
    let cancelled = producer.resolve(&ids["cancelled-8"], false).await?;
    assert!(
        !cancelled.by_timeout,
        "the check rolled it back: {cancelled:?}"
    );

    assert_eq!(
        visible(&client).await?,
        ["order 7 placed", "order 7 paid"],
        "the paid order once, nothing else"
    );
    let stats = producer.shutdown().await;
    info!(?stats, "producer");
    assert_eq!(stats.sent, 3, "{stats:?}");
    // The three local Unknowns and the pending order's three.
    assert_eq!(stats.left_open, 6, "{stats:?}");
    assert_eq!(
        stats.checks, 5,
        "paid once, cancelled once, pending thrice: {stats:?}"
    );
    node.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_producer_with_only_pub_answers_its_checks() -> anyhow::Result<()> {
    init_tracing();
    let node = TestNode::start().await?;
    let admin = client_with_topic(&node).await?;
    let user: broker_client::api::UserRequest = serde_json::from_value(serde_json::json!({
        "name": "order-service",
        "permissions": [{"resource": format!("topic:{TOPIC}"), "actions": ["pub"]}],
    }))?;
    let token = admin.create_user(&user).await?.token;
    let client = BrokerClient::new(
        vec![node.url.clone()],
        ClientOptions {
            token: Some(token),
            ..ClientOptions::default()
        },
    )?;
    let listing = client
        .cluster()
        .await
        .expect_err("only admins list the cluster");
    assert_eq!(listing.status(), Some(403), "{listing}");

    // Without the cluster listing it polls the groups its topics' routes name
    // (none before its first send: the answering node's group meanwhile).
    let producer = TransactionProducer::start(
        client.clone(),
        TransactionProducerOptions {
            check_wait: Duration::from_secs(1),
            groups_refresh: Duration::from_millis(200),
            ..TransactionProducerOptions::new(GROUP)
        },
        |check| async move { decision_of(&check.messages[0].keys[0]) },
    )?;
    let sent = producer
        .send(TOPIC, vec![keyed("order 5 placed", "paid-5")], |_| async {
            LocalTransactionState::Unknown
        })
        .await?;
    wait_for("the checked order's message", || async {
        Ok(!visible(&admin).await?.is_empty())
    })
    .await?;
    assert_eq!(visible(&admin).await?, ["order 5 placed"]);
    let resolution = producer.resolve(&sent.transaction_id, true).await?;
    assert!(!resolution.by_timeout, "{resolution:?}");
    let stats = producer.shutdown().await;
    assert_eq!(
        stats.committed, 2,
        "the check's commit and the repeat: {stats:?}"
    );
    node.stop().await;
    Ok(())
}
