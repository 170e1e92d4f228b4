//! Issue 6's consumer features on a real three-node group, in one cluster (one test
//! function, so no two clusters share the machine's cores):
//!
//! * **tag filtering over HTTP** — `tags=A`, `A||B` and `*` return exactly the
//!   matching messages of a queue holding tags A, B, C and none; a page where nothing
//!   matches answers `NO_MATCHED_MSG` and moves `next_offset` past it; a malformed
//!   expression is a 400 `BAD_REQUEST` in the API's error shape;
//! * **broadcasting** — two `MessageModel::Broadcasting` members of one group each
//!   handle every message exactly once, commit nothing on the broker, and end with
//!   local offsets at every queue's end; a third member seeded with a copy of the
//!   first's offsets handles exactly the messages sent after it;
//! * **reset by time** — a clustering group that consumed a topic to its end is
//!   reset to a time between two sends: every queue's offset moves to the first
//!   message stored at or after it (as `offset_by_timestamp` says), and a new member
//!   handles exactly the later send, once; unknown topics and incomplete bodies are
//!   refused.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, ensure, Context, Result};
use broker_client::{BrokerClient, ConsumerOptions, GroupQueue, MessageModel, PushConsumer};
use broker_proto::api::{MessageInput, PullResponse, SendRequest, SendResultView, TopicRequest};
use cluster_tests::harness::{ClusterOptions, TestCluster, SMALL_STORAGE};
use serde_json::{json, Value};

const BINARY: &str = env!("CARGO_BIN_EXE_cluster-node");
const CONTROL: &str =
    "[control]\nregister_interval = \"200ms\"\nroute_expiry = \"2s\"\nmember_expiry = \"3s\"\n";
const MEMBER_EXPIRY: Duration = Duration::from_secs(3);
/// Liveness deadline of each "eventually" below: generous, never a speed claim.
const PATIENCE: Duration = Duration::from_secs(20);

/// What a member handled: (body, topic, broker group, queue, offset).
type Handled = Arc<Mutex<Vec<(String, String, u32, u64)>>>;

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn message(body: String, tags: Option<&str>, queue_id: Option<u32>) -> MessageInput {
    MessageInput {
        body: Some(body),
        tags: tags.map(str::to_string),
        queue_id,
        ..MessageInput::default()
    }
}

/// Sends `bodies` in batches of 20 (round-robin over the queues).
async fn send_bodies(
    client: &BrokerClient,
    topic: &str,
    bodies: &[String],
) -> Result<Vec<SendResultView>> {
    let mut results = Vec::new();
    for chunk in bodies.chunks(20) {
        let request = SendRequest {
            messages: chunk
                .iter()
                .map(|b| message(b.clone(), None, None))
                .collect(),
            transaction: None,
        };
        let answer = client
            .send(topic, &request)
            .await
            .with_context(|| format!("sending to {topic}"))?;
        results.extend(answer.results);
    }
    Ok(results)
}

/// A push consumer recording every message it handles into `handled`.
fn start_consumer(
    client: &BrokerClient,
    options: ConsumerOptions,
    handled: &Handled,
) -> PushConsumer {
    let handled = Arc::clone(handled);
    PushConsumer::start(client.clone(), options, move |m| {
        let handled = Arc::clone(&handled);
        async move {
            handled.lock().expect("lock").push((
                m.body.unwrap_or_default(),
                m.topic,
                m.queue_id,
                m.queue_offset,
            ));
        }
    })
}

fn options(group: &str, id: &str, topic: &str, model: MessageModel) -> ConsumerOptions {
    let mut options = ConsumerOptions::new(group, id, &[topic]);
    options.heartbeat_interval = Duration::from_millis(300);
    options.member_expiry = MEMBER_EXPIRY;
    options.pull.max_wait_ms = 500;
    options.model = model;
    options
}

/// How many times each body was handled.
fn counts(handled: &Handled) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for h in handled.lock().expect("lock").iter() {
        *counts.entry(h.0.clone()).or_default() += 1;
    }
    counts
}

/// Every queue of `topic` with its max offset.
async fn queue_ends(client: &BrokerClient, topic: &str) -> Result<BTreeMap<GroupQueue, u64>> {
    Ok(client
        .queues(topic)
        .await?
        .queues
        .into_iter()
        .map(|q| {
            (
                GroupQueue {
                    topic: topic.to_string(),
                    group: q.group,
                    queue_id: q.queue_id,
                },
                q.max_offset,
            )
        })
        .collect())
}

/// Checks an error answer: its status and the API's error shape with `code`.
async fn expect_error(
    response: reqwest::Response,
    status: u16,
    code: &str,
    what: &str,
) -> Result<()> {
    let got = response.status().as_u16();
    let body: Value = response
        .json()
        .await
        .with_context(|| format!("{what}: error body is not JSON"))?;
    ensure!(
        got == status,
        "{what}: HTTP {got}, expected {status}: {body}"
    );
    ensure!(
        body["code"] == code,
        "{what}: code {}, expected {code}",
        body["code"]
    );
    ensure!(body["message"].is_string(), "{what}: no message in {body}");
    ensure!(
        body.get("leader")
            .is_some_and(|l| l.is_null() || l.is_string()),
        "{what}: no leader field in {body}"
    );
    Ok(())
}

/// Pulls queue 0 of `topic` from `from` to its end through `tags` on `url`, in pages
/// of `page`; answers the messages and the status of every page.
async fn pull_tags(
    cluster: &TestCluster,
    url: &str,
    topic: &str,
    tags: Option<&str>,
    from: u64,
    page: u32,
) -> Result<(Vec<(u64, String, Option<String>)>, Vec<String>)> {
    let mut offset = from;
    let mut out = Vec::new();
    let mut statuses = Vec::new();
    loop {
        let mut query = vec![
            ("offset", offset.to_string()),
            ("max_messages", page.to_string()),
        ];
        if let Some(tags) = tags {
            query.push(("tags", tags.to_string()));
        }
        let response = cluster
            .http
            .get(format!("{url}/v1/topics/{topic}/queues/0/messages"))
            .query(&query)
            .send()
            .await?;
        let answer: PullResponse = cluster_tests::harness::decode(response).await?;
        statuses.push(answer.status.clone());
        match answer.status.as_str() {
            "NO_NEW_MSG" => return Ok((out, statuses)),
            "FOUND" | "NO_MATCHED_MSG" => {
                ensure!(
                    answer.next_offset > offset,
                    "tags {tags:?}: page at {offset} did not move on ({})",
                    answer.status
                );
                ensure!(
                    (answer.status == "FOUND") != answer.messages.is_empty(),
                    "tags {tags:?}: {} with {} messages",
                    answer.status,
                    answer.messages.len()
                );
                out.extend(
                    answer
                        .messages
                        .into_iter()
                        .map(|m| (m.queue_offset, m.body.unwrap_or_default(), m.tags)),
                );
                offset = answer.next_offset;
            }
            other => bail!("tags {tags:?}: pull at {offset} answered {other}"),
        }
    }
}

/// Waits until `done` holds, failing with `what()` after [`PATIENCE`].
async fn eventually<F, W>(mut done: F, what: W) -> Result<Duration>
where
    F: FnMut() -> bool,
    W: Fn() -> String,
{
    let start = Instant::now();
    while !done() {
        if start.elapsed() > PATIENCE {
            bail!("not within {PATIENCE:?}: {}", what());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(start.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tags_broadcasting_and_reset_by_time() -> Result<()> {
    let started = Instant::now();
    let cluster = TestCluster::start(
        std::path::Path::new(BINARY),
        ClusterOptions {
            extra_config: format!("{SMALL_STORAGE}{CONTROL}"),
            ..ClusterOptions::default()
        },
    )
    .await?;
    cluster.wait_for_routes(1, Duration::from_secs(10)).await?;
    let urls: Vec<String> = cluster.nodes.values().map(|n| n.url.clone()).collect();
    let client = BrokerClient::new(urls, cluster.client_options())?;
    let leader = cluster.wait_for_leader(Duration::from_secs(10)).await?;
    // Pulls go to the leader: a follower may not have applied the last send yet.
    let leader_url = cluster.url(leader).to_string();
    let four_queues = TopicRequest::with_queues(4);

    phase_tags(&cluster, &client, &leader_url).await?;
    phase_broadcasting(&client, &four_queues).await?;
    phase_reset(&cluster, &client, &four_queues).await?;
    eprintln!("done in {:?}", started.elapsed());
    Ok(())
}

/// Phase a: tag filtering over HTTP.
async fn phase_tags(cluster: &TestCluster, client: &BrokerClient, leader_url: &str) -> Result<()> {
    eprintln!("--- a: 30 messages tagged A, B, none in turn, then 10 tagged C, in queue 0");
    client
        .create_topic("tagged", &TopicRequest::with_queues(1))
        .await?;
    let tag_of = |i: u64| match i {
        30.. => Some("C"),
        _ => [Some("A"), Some("B"), None][(i % 3) as usize],
    };
    let messages: Vec<MessageInput> = (0..40u64)
        .map(|i| message(format!("t{i:02}"), tag_of(i), Some(0)))
        .collect();
    let sent = client
        .send(
            "tagged",
            &SendRequest {
                messages,
                transaction: None,
            },
        )
        .await?;
    ensure!(
        sent.results
            .iter()
            .enumerate()
            .all(|(i, r)| r.queue_id == 0 && r.queue_offset == i as u64),
        "the messages are not offsets 0..40 of queue 0: {:?}",
        sent.results
            .iter()
            .map(|r| (r.queue_id, r.queue_offset))
            .collect::<Vec<_>>()
    );
    let expect = |wanted: &[Option<&str>]| -> Vec<(u64, String, Option<String>)> {
        (0..40u64)
            .filter(|&i| wanted.contains(&tag_of(i)))
            .map(|i| (i, format!("t{i:02}"), tag_of(i).map(str::to_string)))
            .collect()
    };
    let cases: [(Option<&str>, Vec<Option<&str>>); 5] = [
        (Some("A"), vec![Some("A")]),
        (Some("A||B"), vec![Some("A"), Some("B")]),
        (Some("B || C"), vec![Some("B"), Some("C")]),
        (Some("*"), vec![Some("A"), Some("B"), Some("C"), None]),
        (None, vec![Some("A"), Some("B"), Some("C"), None]),
    ];
    for (tags, wanted) in cases {
        for page in [4, 1024] {
            let (got, _) = pull_tags(cluster, leader_url, "tagged", tags, 0, page).await?;
            ensure!(
                got == expect(&wanted),
                "tags {tags:?} in pages of {page}: got {got:?}"
            );
        }
    }

    eprintln!("--- a: pages where nothing matches answer NO_MATCHED_MSG and move past");
    let (got, statuses) = pull_tags(cluster, leader_url, "tagged", Some("A"), 28, 5).await?;
    ensure!(
        got.is_empty() && statuses == ["NO_MATCHED_MSG", "NO_NEW_MSG"],
        "tags A from 28 (only B, none and C there): {got:?}, pages {statuses:?}"
    );
    let response = cluster
        .http
        .get(format!("{leader_url}/v1/topics/tagged/queues/0/messages"))
        .query(&[("offset", "30"), ("max_messages", "32"), ("tags", "A||B")])
        .send()
        .await?;
    let page: PullResponse = cluster_tests::harness::decode(response).await?;
    ensure!(
        page.status == "NO_MATCHED_MSG" && page.messages.is_empty() && page.next_offset == 40,
        "tags A||B over the C run: {} with {} messages, next {}",
        page.status,
        page.messages.len(),
        page.next_offset
    );

    eprintln!("--- a: a malformed expression is a 400 BAD_REQUEST");
    for bad in ["A||||B", "A||", "||"] {
        let response = cluster
            .http
            .get(format!("{leader_url}/v1/topics/tagged/queues/0/messages"))
            .query(&[("offset", "0"), ("tags", bad)])
            .send()
            .await?;
        expect_error(response, 400, "BAD_REQUEST", &format!("tags={bad}")).await?;
    }
    Ok(())
}

/// Phase b: broadcasting through the client library.
async fn phase_broadcasting(client: &BrokerClient, four_queues: &TopicRequest) -> Result<()> {
    const FIRST: usize = 200;
    const LATER: usize = 40;
    eprintln!("--- b: two broadcasting members of group `radio` on a 4-queue topic");
    client.create_topic("news", four_queues).await?;
    let handled: Vec<Handled> = (0..3).map(|_| Handled::default()).collect();
    let b1 = start_consumer(
        client,
        options("radio", "b1", "news", MessageModel::Broadcasting),
        &handled[0],
    );
    let b2 = start_consumer(
        client,
        options("radio", "b2", "news", MessageModel::Broadcasting),
        &handled[1],
    );
    let bodies: Vec<String> = (0..FIRST).map(|i| format!("n{i:03}")).collect();
    let results = send_bodies(client, "news", &bodies).await?;
    let used: BTreeSet<u32> = results.iter().map(|r| r.queue_id).collect();
    ensure!(used.len() == 4, "round robin used queues {used:?}");
    let ends = queue_ends(client, "news").await?;
    ensure!(ends.len() == 4, "queues of news: {ends:?}");

    eprintln!("--- b: each member handles all {FIRST} messages and its offsets reach every end");
    for (member, h) in [(&b1, &handled[0]), (&b2, &handled[1])] {
        let took = eventually(
            || counts(h).len() == FIRST && member.offsets() == ends,
            || {
                format!(
                    "a member handled {} distinct of {FIRST}; offsets {:?}, ends {ends:?}",
                    counts(h).len(),
                    member.offsets()
                )
            },
        )
        .await?;
        eprintln!("member caught up {took:?} after the queue ends were read");
    }
    for (name, h) in [("b1", &handled[0]), ("b2", &handled[1])] {
        let counts = counts(h);
        let twice: Vec<_> = counts.iter().filter(|(_, &n)| n != 1).take(10).collect();
        ensure!(
            twice.is_empty(),
            "{name} handled some more than once: {twice:?}"
        );
        let seen: BTreeSet<&String> = counts.keys().collect();
        ensure!(
            seen == bodies.iter().collect(),
            "{name} handled other messages than sent"
        );
    }

    eprintln!("--- b: nothing committed on the broker for `radio`");
    for topic in [None, Some("news")] {
        let offsets = client.group_offsets("radio", topic).await?;
        ensure!(
            offsets.offsets.is_empty(),
            "broadcasting committed offsets (topic filter {topic:?}): {:?}",
            offsets.offsets
        );
    }

    eprintln!("--- b: a third member resumes from a copy of b1's offsets");
    let mut seeded = options("radio", "b3", "news", MessageModel::Broadcasting);
    seeded.initial_offsets = b1.offsets();
    let b3 = start_consumer(client, seeded, &handled[2]);
    let later: Vec<String> = (0..LATER).map(|i| format!("later{i:02}")).collect();
    send_bodies(client, "news", &later).await?;
    let ends = queue_ends(client, "news").await?;
    for (member, h) in [(&b1, &handled[0]), (&b2, &handled[1]), (&b3, &handled[2])] {
        eventually(
            || member.offsets() == ends && counts(h).len() >= LATER,
            || {
                format!(
                    "a member's offsets {:?} never reached {ends:?} ({} handled)",
                    member.offsets(),
                    counts(h).len()
                )
            },
        )
        .await?;
    }
    let b3_counts = counts(&handled[2]);
    ensure!(
        b3_counts.keys().collect::<Vec<_>>() == later.iter().collect::<Vec<_>>()
            && b3_counts.values().all(|&n| n == 1),
        "b3 handled {b3_counts:?}, expected each of the {LATER} later messages once"
    );
    for (name, h) in [("b1", &handled[0]), ("b2", &handled[1])] {
        let counts = counts(h);
        ensure!(
            counts.len() == FIRST + LATER && counts.values().all(|&n| n == 1),
            "{name} handled {} distinct messages ({} more than once), expected {} once each",
            counts.len(),
            counts.values().filter(|&&n| n > 1).count(),
            FIRST + LATER
        );
    }
    ensure!(
        client
            .group_offsets("radio", None)
            .await?
            .offsets
            .is_empty(),
        "broadcasting committed offsets after the later send"
    );
    b1.shutdown().await;
    b2.shutdown().await;
    b3.shutdown().await;
    Ok(())
}

/// Phase c: reset by time.
async fn phase_reset(
    cluster: &TestCluster,
    client: &BrokerClient,
    four_queues: &TopicRequest,
) -> Result<()> {
    const BATCH: usize = 40;
    eprintln!("--- c: two sends to `events`, a time between them");
    client.create_topic("events", four_queues).await?;
    let early: Vec<String> = (0..BATCH).map(|i| format!("early{i:02}")).collect();
    let late: Vec<String> = (0..BATCH).map(|i| format!("late{i:02}")).collect();
    let early_results = send_bodies(client, "events", &early).await?;
    let reset_to = early_results
        .iter()
        .map(|r| r.store_timestamp)
        .max()
        .context("no results")?
        + 1;
    // The leader stamps with the same clock: once it is past `reset_to`, every later
    // message is stored at or after it (checked below, not assumed).
    while now_ms() <= reset_to + 2 {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let late_results = send_bodies(client, "events", &late).await?;
    ensure!(
        late_results.iter().all(|r| r.store_timestamp >= reset_to),
        "a late message was stored before {reset_to}: {late_results:?}"
    );
    // Where each queue must be reset to: its first late message.
    let mut expected: BTreeMap<u32, u64> = BTreeMap::new();
    for r in &late_results {
        let e = expected.entry(r.queue_id).or_insert(r.queue_offset);
        *e = (*e).min(r.queue_offset);
    }
    ensure!(expected.len() == 4, "late messages in queues {expected:?}");
    let ends = queue_ends(client, "events").await?;

    eprintln!("--- c: a clustering member of `rewind` consumes to the end and commits");
    let first_handled = Handled::default();
    let first = start_consumer(
        client,
        options("rewind", "r1", "events", MessageModel::Clustering),
        &first_handled,
    );
    let committed_at_end = |offsets: &broker_proto::api::GroupOffsetsResponse| {
        offsets.offsets.len() == 4
            && offsets.offsets.iter().all(|o| {
                ends.iter().any(|(q, max)| {
                    q.queue_id == o.queue_id && q.group == o.group && o.offset == *max
                })
            })
    };
    let deadline = Instant::now() + PATIENCE;
    loop {
        let offsets = client.group_offsets("rewind", Some("events")).await?;
        if counts(&first_handled).len() == 2 * BATCH && committed_at_end(&offsets) {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "r1 handled {} of {}; committed {:?}, ends {ends:?}",
            counts(&first_handled).len(),
            2 * BATCH,
            offsets.offsets
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    first.shutdown().await;

    eprintln!("--- c: reset `rewind` to {reset_to}, between the sends");
    let answer = client.reset_offsets("rewind", "events", reset_to).await?;
    let answered: BTreeMap<u32, u64> = answer
        .offsets
        .iter()
        .filter(|o| o.topic == "events")
        .map(|o| (o.queue_id, o.offset))
        .collect();
    ensure!(
        answered == expected,
        "reset answered {answered:?}, the first late message of each queue is at {expected:?}"
    );
    for (&queue_id, &offset) in &expected {
        let by_time = client
            .offset_by_timestamp("events", queue_id, reset_to)
            .await?;
        ensure!(
            by_time == offset,
            "queue {queue_id}: offset_by_timestamp {by_time}, first late message at {offset}"
        );
    }
    let stored: BTreeMap<u32, u64> = client
        .group_offsets("rewind", Some("events"))
        .await?
        .offsets
        .iter()
        .map(|o| (o.queue_id, o.offset))
        .collect();
    ensure!(
        stored == expected,
        "offsets after the reset: {stored:?}, expected {expected:?}"
    );

    eprintln!("--- c: an unknown topic is 404, an incomplete body 400");
    let url = cluster.url(1);
    let post = |body: Value| {
        cluster
            .http
            .post(format!("{url}/v1/groups/rewind/offsets/reset"))
            .json(&body)
            .send()
    };
    expect_error(
        post(json!({"topic": "no-such-topic", "timestamp": 0})).await?,
        404,
        "TOPIC_NOT_FOUND",
        "reset of an unknown topic",
    )
    .await?;
    expect_error(
        post(json!({"topic": "events"})).await?,
        400,
        "BAD_REQUEST",
        "reset without a timestamp",
    )
    .await?;
    expect_error(
        post(json!({"timestamp": reset_to})).await?,
        400,
        "BAD_REQUEST",
        "reset without a topic",
    )
    .await?;

    eprintln!("--- c: a new member re-consumes exactly the late messages");
    let second_handled = Handled::default();
    let second = start_consumer(
        client,
        options("rewind", "r2", "events", MessageModel::Clustering),
        &second_handled,
    );
    let deadline = Instant::now() + PATIENCE;
    loop {
        let offsets = client.group_offsets("rewind", Some("events")).await?;
        if counts(&second_handled).len() >= BATCH && committed_at_end(&offsets) {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "after the reset r2 handled {} of the {BATCH} late messages; committed {:?}, r2 holds {:?}",
            counts(&second_handled).len(),
            offsets.offsets,
            second.assigned()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    second.shutdown().await;
    let again = counts(&second_handled);
    ensure!(
        again.keys().collect::<Vec<_>>() == late.iter().collect::<Vec<_>>()
            && again.values().all(|&n| n == 1),
        "after the reset r2 handled {again:?}, expected each late message once"
    );
    Ok(())
}
