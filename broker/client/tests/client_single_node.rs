//! The client library against a real single-node broker served in-process: every
//! endpoint method round-trips (also those naming a broker group, and the
//! membership calls), idempotent retries store once, a dead seed is skipped, and
//! the batching producer packs concurrent sends without losing, duplicating or
//! wrongly failing any.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use broker::config::NodeConfig;
use broker::service::node::Node;
use broker_client::api::{JoinState, MessageInput, RetryRequest, SendRequest, TopicRequest};
use broker_client::{
    BatchingOptions, BatchingProducer, BrokerClient, ClientError, ClientOptions, CommitMode,
    GroupQueue, Producer, ProducerOptions, PullOptions,
};
use tracing::info;

/// A node serving HTTP on an ephemeral loopback port.
struct TestNode {
    node: Arc<Node>,
    url: String,
    server: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

impl TestNode {
    async fn start() -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let node = broker::server::start(NodeConfig::for_test(dir.path(), 1, addr)).await?;
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

/// The client as the test node's bootstrap admin.
fn admin_options() -> ClientOptions {
    ClientOptions {
        token: Some(broker::config::TEST_ADMIN_TOKEN.into()),
        ..ClientOptions::default()
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

/// Waits (with a deadline) until the node reports a leader.
async fn wait_ready(client: &BrokerClient) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match client.ready().await {
            Ok(_) => return Ok(()),
            Err(e) if Instant::now() < deadline => {
                info!("not ready yet: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => anyhow::bail!("node not ready in time: {e}"),
        }
    }
}

fn text(body: &str) -> MessageInput {
    MessageInput {
        body: Some(body.into()),
        ..MessageInput::default()
    }
}

fn dead_url() -> anyhow::Result<String> {
    // Bind then drop: nothing listens on that port afterwards.
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    Ok(format!("http://127.0.0.1:{port}"))
}

/// Every endpoint method against a real node; names with `%` and `|` survive the
/// path encoding; refusals are classified as final.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_endpoint_round_trips() -> anyhow::Result<()> {
    init_tracing();
    let node = TestNode::start().await?;
    let client = BrokerClient::new(vec![node.url.clone()], admin_options())?;
    wait_ready(&client).await?;
    client.health().await?;
    let topic = "client%test|1";

    info!("--- create a topic with 2 queues and read it back");
    let created = client
        .create_topic(topic, &TopicRequest::with_queues(2))
        .await?;
    assert_eq!(
        (created.topic.as_str(), created.write_queue_nums),
        (topic, 2)
    );
    assert_eq!(client.topic(topic).await?, created);
    assert!(client.topics().await?.topics.contains(&created));
    let route = client.route(topic).await?;
    assert_eq!(route.groups[0].leader.as_deref(), Some(node.url.as_str()));
    let cluster = client.cluster().await?;
    assert_eq!(cluster.groups[0].leader.as_deref(), Some(node.url.as_str()));

    info!("--- send two keyed messages to queue 1 and pull them");
    let before_ms = broker::storage::now_ms();
    let keyed = |body: &str| MessageInput {
        keys: vec!["order-42".into()],
        tags: Some("TagA".into()),
        properties: BTreeMap::from([("k".to_string(), "v".to_string())]),
        queue_id: Some(1),
        ..text(body)
    };
    let sent = client
        .send(
            topic,
            &SendRequest {
                messages: vec![keyed("one"), keyed("two")],
                transaction: None,
            },
        )
        .await?;
    assert_eq!(sent.results.len(), 2);
    assert_eq!(
        sent.results[1].queue_offset,
        sent.results[0].queue_offset + 1
    );
    let pulled = client.pull(topic, 1, 0, 32, 0, Some("TagA||TagB")).await?;
    assert_eq!(pulled.status, "FOUND");
    let bodies: Vec<_> = pulled.messages.iter().map(|m| m.body.as_deref()).collect();
    assert_eq!(bodies, [Some("one"), Some("two")]);
    assert_eq!(
        pulled.messages[0].properties.get("k").map(String::as_str),
        Some("v")
    );
    let empty = client
        .pull(topic, 1, pulled.next_offset, 32, 100, None)
        .await?;
    assert_eq!(empty.status, "NO_NEW_MSG");
    let queues = client.queues(topic).await?;
    assert_eq!(queues.queues.len(), 2);
    assert_eq!(queues.queues[1].max_offset, 2);

    info!("--- queries: by id, by key, by time");
    let by_id = client.message_by_id(&sent.results[0].msg_id).await?;
    assert_eq!(by_id.body.as_deref(), Some("one"));
    let by_key = client
        .messages_by_key(topic, "order-42", Some(before_ms), None, Some(10))
        .await?;
    assert_eq!(by_key.messages.len(), 2);
    assert_eq!(client.offset_by_timestamp(topic, 1, before_ms).await?, 0);
    assert_eq!(client.offset_by_timestamp(topic, 1, u64::MAX).await?, 2);

    info!("--- consumer offsets: advance, a late lower commit is ignored, force resets");
    let committed = client
        .commit_offset("g1", topic, 1, 2, CommitMode::Advance)
        .await?;
    assert_eq!(committed.offset, 2);
    let ignored = client
        .commit_offset("g1", topic, 1, 1, CommitMode::Advance)
        .await?;
    assert_eq!(ignored.offset, 2);
    let reset = client
        .commit_offset("g1", topic, 1, 1, CommitMode::Force)
        .await?;
    assert_eq!(reset.offset, 1);
    let offsets = client.group_offsets("g1", Some(topic)).await?;
    assert_eq!((offsets.offsets[0].offset, offsets.offsets[0].lag), (1, 1));

    info!("--- refusals are final, not retryable");
    let missing = client
        .pull("no-such-topic", 0, 0, 1, 0, None)
        .await
        .expect_err("404");
    assert!(
        missing.is_not_found() && !missing.is_retryable(),
        "{missing}"
    );
    assert_eq!(missing.status(), Some(404));
    let bad = client.message_by_id("not-an-id").await.expect_err("bad id");
    assert_eq!(bad.code(), Some("BAD_REQUEST"));
    assert!(!bad.is_outcome_unknown());
    let empty_batch = client
        .send(
            topic,
            &SendRequest {
                messages: vec![],
                transaction: None,
            },
        )
        .await
        .expect_err("empty batch");
    assert_eq!(empty_batch.code(), Some("BAD_REQUEST"));

    info!("--- delete the topic");
    client.delete_topic(topic).await?;
    let gone = client.topic(topic).await.expect_err("deleted");
    assert_eq!(gone.code(), Some("TOPIC_NOT_FOUND"));
    node.stop().await;
    Ok(())
}

/// The calls that name a broker group (`?group=`, `?broker_group=`) and the
/// membership calls, against the node's own group and an unknown one: answers
/// decode, and refusals carry the API's codes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_scoped_and_membership_calls_round_trip() -> anyhow::Result<()> {
    init_tracing();
    let node = TestNode::start().await?;
    let client = BrokerClient::new(vec![node.url.clone()], admin_options())?;
    wait_ready(&client).await?;
    let group = client.cluster().await?.group;
    let topic = "scoped";
    client
        .create_topic(topic, &TopicRequest::with_queues(2))
        .await?;
    let code = |error: ClientError| (error.status(), error.code().map(str::to_string));

    info!("--- send to the named group, list its queues, pull and find by time");
    let before_ms = broker::storage::now_ms();
    let batch = SendRequest {
        messages: vec![MessageInput {
            queue_id: Some(1),
            ..text("one")
        }],
        transaction: None,
    };
    let sent = client.send_to_group(topic, &group, &batch).await?;
    assert_eq!(sent.group, group);
    let queues = client.queues_in(topic, Some(&group)).await?;
    assert_eq!(queues.queues.len(), 2);
    assert!(queues.queues.iter().all(|q| q.group == group));
    assert_eq!(client.queues_in(topic, None).await?.queues, queues.queues);
    let queue = GroupQueue {
        topic: topic.into(),
        group: group.clone(),
        queue_id: 1,
    };
    let pulled = client
        .pull_queue(&queue, 0, &PullOptions::default())
        .await?;
    assert_eq!(pulled.messages[0].body.as_deref(), Some("one"));
    assert_eq!(
        client.queue_offset_by_timestamp(&queue, before_ms).await?,
        0
    );
    assert_eq!(client.queue_offset_by_timestamp(&queue, u64::MAX).await?, 1);

    info!("--- commit in the named group; past the end is CONFLICT");
    let committed = client
        .commit_queue_offset("g1", &queue, 1, CommitMode::Advance)
        .await?;
    assert_eq!(committed.offset, 1);
    assert_eq!(client.committed_offset("g1", &queue).await?, Some(1));
    let past_end = client
        .commit_queue_offset("g1", &queue, 9, CommitMode::Advance)
        .await
        .expect_err("beyond the queue's end");
    assert_eq!(code(past_end), (Some(409), Some("CONFLICT".into())));

    info!("--- give back, in the named group and in the one the node resolves");
    let retried = client.give_back("g1", &queue, 0, 0).await?;
    assert_eq!(retried.topic, "%RETRY%g1");
    let request = RetryRequest {
        topic: topic.into(),
        queue_id: 1,
        queue_offset: 0,
        delay_level: -1,
    };
    let dead = client.give_back_with("g1", &request, None).await?;
    assert_eq!((dead.topic.as_str(), dead.dead_letter), ("%DLQ%g1", true));

    info!("--- an unknown broker group or queue: 404 with its own code");
    let unknown = GroupQueue {
        group: "no-such-group".into(),
        ..queue.clone()
    };
    let not_found = [
        client
            .queues_in(topic, Some("no-such-group"))
            .await
            .map(drop),
        client
            .pull_queue(&unknown, 0, &PullOptions::default())
            .await
            .map(drop),
        client
            .queue_offset_by_timestamp(&unknown, 0)
            .await
            .map(drop),
        client
            .send_to_group(topic, "no-such-group", &batch)
            .await
            .map(drop),
        client.give_back("g1", &unknown, 0, 0).await.map(drop),
    ];
    for answer in not_found {
        let error = answer.expect_err("unknown group");
        assert_eq!(
            code(error),
            (Some(404), Some("BROKER_GROUP_NOT_FOUND".into()))
        );
    }
    let past_queues = GroupQueue {
        queue_id: 7,
        ..queue.clone()
    };
    let error = client
        .queue_offset_by_timestamp(&past_queues, 0)
        .await
        .expect_err("no queue 7");
    assert_eq!(code(error), (Some(404), Some("QUEUE_NOT_FOUND".into())));

    info!("--- membership: node 1 is a voter and leads; other ids are refused");
    let join = client.join(&group, 1).await?;
    assert_eq!((join.node_id, join.state), (1, JoinState::Done));
    let again = client.add_node(&group, 1, &node.url).await?;
    assert_eq!(again.state, JoinState::Done, "{again:?}");
    let view = client.transfer_leader(&group, 1).await?;
    assert_eq!(
        (view.group.as_str(), view.leader_id),
        (group.as_str(), Some(1))
    );
    let refusals = [
        (client.join(&group, 9).await.map(drop), 404, "NOT_FOUND"),
        (
            client.remove_node(&group, 9).await.map(drop),
            400,
            "BAD_REQUEST",
        ),
        (
            client.remove_node(&group, 1).await.map(drop),
            400,
            "BAD_REQUEST",
        ),
        (
            client.transfer_leader(&group, 9).await.map(drop),
            400,
            "BAD_REQUEST",
        ),
        (
            client
                .add_node("no-such-group", 7, &node.url)
                .await
                .map(drop),
            404,
            "BROKER_GROUP_NOT_FOUND",
        ),
    ];
    for (answer, status, word) in refusals {
        let error = answer.expect_err(word);
        assert_eq!(code(error), (Some(status), Some(word.into())));
    }
    node.stop().await;
    Ok(())
}

/// A producer's resend of the same (producer_id, sequence) is answered with the first
/// result and stored once; a dead seed in front of the live node is skipped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotent_resends_store_once_and_dead_seeds_are_skipped() -> anyhow::Result<()> {
    init_tracing();
    let node = TestNode::start().await?;
    let client = BrokerClient::new(vec![dead_url()?, node.url.clone()], admin_options())?;
    wait_ready(&client).await?;
    let topic = "idem";

    info!("--- a producer sends three batches through a dead seed and the live node");
    let producer = Producer::new(client.clone(), ProducerOptions::default());
    let mut results = Vec::new();
    for i in 0..3 {
        let sent = producer
            .send_messages(
                topic,
                vec![text(&format!("m{i}a")), text(&format!("m{i}b"))],
            )
            .await?;
        results.extend(sent.results);
    }
    assert_eq!(client.leader().as_deref(), Some(node.url.as_str()));
    assert_eq!(producer.stats().batches_sent, 3);

    info!("--- resend sequences 2 and 3 by hand: the broker answers the first results");
    let resend = |sequence: u64, body: &str| MessageInput {
        producer_id: Some(producer.producer_id().to_string()),
        sequence: Some(sequence),
        ..text(body)
    };
    let again = client
        .send(
            topic,
            &SendRequest {
                messages: vec![resend(2, "m1a"), resend(3, "m1b")],
                transaction: None,
            },
        )
        .await?;
    assert_eq!(again.results, results[2..4]);

    info!("--- every queue together holds the six messages once");
    let queues = client.queues(topic).await?;
    let stored: u64 = queues
        .queues
        .iter()
        .map(|q| q.max_offset - q.min_offset)
        .sum();
    assert_eq!(stored, 6);

    info!("--- only dead nodes: a connect error, retryable, known not applied");
    let dead = BrokerClient::new(vec![dead_url()?, dead_url()?], admin_options())?;
    let error = dead
        .send(
            topic,
            &SendRequest {
                messages: vec![text("x")],
                transaction: None,
            },
        )
        .await
        .expect_err("nobody listens");
    assert!(matches!(error, ClientError::Transport(_)), "{error:?}");
    assert!(error.is_connect() && error.is_retryable() && !error.is_outcome_unknown());
    node.stop().await;
    Ok(())
}

/// 400 single-message sends at once on a batching producer with 2 request slots
/// are acknowledged with distinct places in far fewer requests; then 100 more with
/// a body above the broker's 256 KiB limit among them: only that one fails, with
/// the broker's own 400 (not its batch's). Each good body is stored exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batching_producer_packs_concurrent_sends_and_fails_only_the_bad_one(
) -> anyhow::Result<()> {
    init_tracing();
    let node = TestNode::start().await?;
    let client = BrokerClient::new(vec![node.url.clone()], admin_options())?;
    wait_ready(&client).await?;
    let topic = "batching";
    client
        .create_topic(topic, &TopicRequest::with_queues(4))
        .await?;
    let producer = BatchingProducer::new(
        client.clone(),
        ProducerOptions::default(),
        BatchingOptions {
            max_requests: 2,
            ..BatchingOptions::default()
        },
    )?;
    let mut places = HashSet::new();
    let mut acknowledged = Vec::new();

    info!("--- 400 sends at once");
    const SENDS: usize = 400;
    let bodies: Vec<String> = (0..SENDS).map(|i| format!("m{i}")).collect();
    let answers =
        futures::future::join_all(bodies.iter().map(|body| producer.send(topic, text(body)))).await;
    for (body, answer) in bodies.iter().zip(answers) {
        let sent = answer.map_err(|e| anyhow::anyhow!("send {body}: {e}"))?;
        assert!(
            places.insert((sent.queue_id, sent.queue_offset)),
            "{body} was answered with a place already given: {sent:?}"
        );
        acknowledged.push(body.clone());
    }
    let stats = producer.stats();
    info!("batching stats: {stats:?}");
    assert!(
        stats.largest_batch > 1 && stats.requests < SENDS as u64 / 2,
        "{SENDS} concurrent sends should share requests: {stats:?}"
    );

    info!("--- 100 more at once, one of them oversized");
    let oversized = "x".repeat(300 << 10);
    let bodies: Vec<String> = (SENDS..SENDS + 100)
        .map(|i| {
            if i == SENDS + 50 {
                oversized.clone()
            } else {
                format!("m{i}")
            }
        })
        .collect();
    let answers =
        futures::future::join_all(bodies.iter().map(|body| producer.send(topic, text(body)))).await;
    for (body, answer) in bodies.iter().zip(answers) {
        if *body == oversized {
            let error = answer.expect_err("a 300 KiB body is above the 256 KiB limit");
            assert!(
                matches!(error, ClientError::Api { status: 400, .. }),
                "the bad message gets the broker's own refusal: {error:?}"
            );
            continue;
        }
        let sent = answer.map_err(|e| anyhow::anyhow!("send {body}: {e}"))?;
        assert!(
            places.insert((sent.queue_id, sent.queue_offset)),
            "{sent:?}"
        );
        acknowledged.push(body.clone());
    }
    info!("batching stats: {:?}", producer.stats());

    info!("--- every acknowledged body is stored exactly once; the oversized one is not");
    let mut stored = Vec::new();
    for queue in client.queues(topic).await?.queues {
        let mut offset = queue.min_offset;
        while offset < queue.max_offset {
            let pulled = client
                .pull(topic, queue.queue_id, offset, 1024, 0, None)
                .await?;
            stored.extend(
                pulled
                    .messages
                    .into_iter()
                    .map(|m| m.body.unwrap_or_default()),
            );
            offset = pulled.next_offset;
        }
    }
    stored.sort();
    acknowledged.sort();
    assert_eq!(acknowledged.len(), SENDS + 99);
    assert_eq!(stored, acknowledged);
    node.stop().await;
    Ok(())
}
