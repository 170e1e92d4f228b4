//! Streaming pull, `GET /v1/topics/{topic}/queues/{queue_id}/stream` (shared/API.md
//! "Streaming pull"): messages as server-sent events in offset order, resuming with
//! `Last-Event-ID` on the same node or another one, the JSON errors answered before
//! any event, the queue's retained minimum, keep-alive comments, the held-poll cap,
//! a deleted topic, and a stream for a topic another broker group serves.
//!
//! Single-node cases drive the router in-process (`common::http::TestNode`) and read
//! the answer body frame by frame. The common harness does not serve HTTP, so it
//! cannot make a group of several nodes: the cluster cases start nodes in this
//! process with `broker::server::run`, each on its own port, and talk to them over
//! real sockets.

use crate::common;

use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use broker::config::{NodeConfig, TEST_ADMIN_TOKEN};
use broker::units::{ByteSize, HumanDuration};
use bytes::Bytes;
use common::http::{as_array, as_u64, assert_error, TestNode};
use futures::stream::BoxStream;
use futures::StreamExt;
use serde_json::{json, Value};
use tower::ServiceExt;
use tracing::info;

/// Longest a test waits for one event (or the end of a stream).
const PATIENCE: Duration = Duration::from_secs(10);
/// The keep-alive interval shared/API.md promises, with room for a slow machine.
const KEEP_ALIVE_PATIENCE: Duration = Duration::from_secs(20);

/// One block of a server-sent event stream (its lines up to a blank one).
#[derive(Debug, Default)]
struct Frame {
    id: Option<String>,
    event: Option<String>,
    data: Vec<String>,
    comments: Vec<String>,
}

impl Frame {
    fn parse(block: &str) -> Self {
        let mut frame = Self::default();
        for line in block.lines().filter(|line| !line.is_empty()) {
            if let Some(comment) = line.strip_prefix(':') {
                frame.comments.push(comment.trim_start().to_string());
                continue;
            }
            let (field, value) = line.split_once(':').unwrap_or((line, ""));
            let value = value.strip_prefix(' ').unwrap_or(value).to_string();
            match field {
                "id" => frame.id = Some(value),
                "event" => frame.event = Some(value),
                "data" => frame.data.push(value),
                other => panic!("unexpected field `{other}` in an event: {block:?}"),
            }
        }
        frame
    }
}

/// An answer body read as server-sent events.
struct Events {
    body: BoxStream<'static, Result<Bytes, String>>,
    buffer: Vec<u8>,
}

impl Events {
    /// Reads the body of an in-process answer. A task polls the body as a server
    /// writing it to a socket would (an SSE body only runs while polled), and
    /// drops it once this reader is dropped, as a server does when its client
    /// goes away.
    fn of_router(response: axum::response::Response) -> Self {
        let mut body = response.into_body().into_data_stream();
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, String>>(16);
        tokio::spawn(async move {
            loop {
                let chunk = tokio::select! {
                    () = tx.closed() => return,
                    chunk = body.next() => chunk,
                };
                let Some(chunk) = chunk else { return };
                if tx.send(chunk.map_err(|e| e.to_string())).await.is_err() {
                    return;
                }
            }
        });
        let body = futures::stream::unfold(rx, |mut rx| async move {
            let chunk = rx.recv().await?;
            Some((chunk, rx))
        });
        Self {
            body: body.boxed(),
            buffer: Vec::new(),
        }
    }

    /// Reads the body of an answer over a socket.
    fn of_reqwest(response: reqwest::Response) -> Self {
        let body = futures::stream::unfold(Some(response), |response| async move {
            let mut response = response?;
            match response.chunk().await {
                Ok(Some(chunk)) => Some((Ok(chunk), Some(response))),
                Ok(None) => None,
                Err(e) => Some((Err(e.to_string()), None)),
            }
        });
        Self {
            body: body.boxed(),
            buffer: Vec::new(),
        }
    }

    /// The next frame, or `None` once the body ended; panics when nothing came
    /// within `patience`.
    async fn next_frame(&mut self, patience: Duration) -> Option<Frame> {
        let deadline = tokio::time::Instant::now() + patience;
        loop {
            if let Some(end) = self.buffer.windows(2).position(|w| w == b"\n\n") {
                let block: Vec<u8> = self.buffer.drain(..end + 2).collect();
                let block = String::from_utf8(block).expect("events are UTF-8");
                return Some(Frame::parse(&block));
            }
            let chunk = tokio::time::timeout_at(deadline, self.body.next())
                .await
                .unwrap_or_else(|_| panic!("no event within {patience:?}"));
            match chunk {
                Some(Ok(chunk)) => self.buffer.extend_from_slice(&chunk),
                Some(Err(e)) => panic!("reading the stream failed: {e}"),
                None => {
                    assert!(
                        self.buffer.is_empty(),
                        "the stream ended inside an event: {:?}",
                        String::from_utf8_lossy(&self.buffer)
                    );
                    return None;
                }
            }
        }
    }

    /// The next message event (skipping keep-alive comments): its id and data.
    async fn next_message(&mut self) -> (u64, Value) {
        loop {
            let frame = self.next_frame(PATIENCE).await.expect("the stream goes on");
            if frame.id.is_none() && frame.event.is_none() && frame.data.is_empty() {
                continue;
            }
            assert_eq!(frame.event.as_deref(), Some("message"), "{frame:?}");
            assert_eq!(frame.data.len(), 1, "one data line per event: {frame:?}");
            let id = frame
                .id
                .as_deref()
                .and_then(|id| id.parse::<u64>().ok())
                .unwrap_or_else(|| panic!("an event's id is its queue offset: {frame:?}"));
            let data: Value = serde_json::from_str(&frame.data[0]).expect("data is JSON");
            assert_eq!(
                data["queue_offset"], id,
                "the id is the queue offset: {data}"
            );
            return (id, data);
        }
    }

    /// The ids of the next `count` message events.
    async fn ids(&mut self, count: usize) -> Vec<u64> {
        let mut ids = Vec::with_capacity(count);
        for _ in 0..count {
            ids.push(self.next_message().await.0);
        }
        ids
    }
}

/// Opens a stream through the node's router as the bootstrap admin; expects 200
/// with `text/event-stream`.
async fn open(node: &TestNode, uri: &str, headers: &[(&str, &str)]) -> Events {
    let mut request = Request::builder()
        .uri(uri)
        .header("accept", "text/event-stream")
        .header("authorization", format!("Bearer {TEST_ADMIN_TOKEN}"));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = request.body(Body::empty()).expect("a well-formed request");
    let response = node
        .router
        .clone()
        .oneshot(request)
        .await
        .expect("the router is infallible");
    assert_event_stream(response.status(), response.headers(), uri);
    Events::of_router(response)
}

#[track_caller]
fn assert_event_stream(status: StatusCode, headers: &axum::http::HeaderMap, uri: &str) {
    assert_eq!(status, StatusCode::OK, "GET {uri}");
    let content_type = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    assert!(
        content_type.starts_with("text/event-stream"),
        "GET {uri} answers text/event-stream, not {content_type:?}"
    );
}

/// A stream request that must fail: the whole answer, which is JSON.
async fn refused(node: &TestNode, uri: &str, headers: &[(&str, &str)]) -> (StatusCode, Value) {
    let mut all = vec![("accept", "text/event-stream")];
    all.extend_from_slice(headers);
    let answer = node.call(Method::GET, uri, Body::empty(), &all).await;
    (answer.status, answer.json())
}

/// Waits until `/metrics` shows `name` at `value`.
async fn wait_for_metric(node: &TestNode, name: &str, value: f64) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let now = node.metric(name).await;
        if now == value {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{name} stayed {now}, not {value}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn bodies(count: std::ops::Range<usize>, queue_id: u32) -> Vec<Value> {
    count
        .map(|i| json!({"body": format!("m{i}"), "tags": if i % 2 == 0 { "Even" } else { "Odd" }, "queue_id": queue_id}))
        .collect()
}

/// 30 stored messages and 20 sent while the stream is open arrive as 50 events,
/// ids 0..50 in order, `event: message`, each `data` exactly the message as a pull
/// answers it. Closing the stream lets go of its held poll.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_messages_arrive_as_fifty_events_in_offset_order() {
    let node = TestNode::start().await;
    node.send_ok("feed", bodies(0..30, 0)).await;

    info!("--- open a stream at offset 0; the 30 stored messages arrive");
    let mut events = open(&node, "/v1/topics/feed/queues/0/stream?offset=0", &[]).await;
    let mut got = Vec::new();
    for _ in 0..30 {
        got.push(events.next_message().await);
    }

    info!("--- the stream waits in a held poll; 20 more messages arrive as sent");
    wait_for_metric(&node, "broker_held_polls", 1.0).await;
    node.send_ok("feed", bodies(30..40, 0)).await;
    node.send_ok("feed", bodies(40..50, 0)).await;
    for _ in 0..20 {
        got.push(events.next_message().await);
    }

    info!("--- 50 events in offset order, each the message a pull answers");
    let ids: Vec<u64> = got.iter().map(|(id, _)| *id).collect();
    assert_eq!(ids, (0..50).collect::<Vec<u64>>());
    let pull = node
        .pull_ok("/v1/topics/feed/queues/0/messages?offset=0&max_messages=50")
        .await;
    let pulled = as_array(&pull["messages"], "messages");
    assert_eq!(pulled.len(), 50, "{pull}");
    for ((_, data), message) in got.iter().zip(pulled) {
        assert_eq!(data, message);
    }

    info!("--- closing the stream ends its held poll");
    drop(events);
    wait_for_metric(&node, "broker_held_polls", 0.0).await;
    node.stop().await;
}

/// `Last-Event-ID` resumes after the offset it names, and wins over `offset`;
/// without `offset` it is enough. `tags` filters the events like a pull. A stream
/// resumed past the end of the queue stays there until the queue reaches it (it
/// does not jump back to the end and repeat events).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn last_event_id_resumes_after_it_and_tags_filter() {
    let node = TestNode::start().await;
    node.send_ok("resume", bodies(0..10, 1)).await;

    info!("--- Last-Event-ID 4 with offset=0: from 5");
    let mut events = open(
        &node,
        "/v1/topics/resume/queues/1/stream?offset=0",
        &[("last-event-id", "4")],
    )
    .await;
    assert_eq!(events.ids(5).await, [5, 6, 7, 8, 9]);

    info!("--- Last-Event-ID without offset");
    let mut events = open(
        &node,
        "/v1/topics/resume/queues/1/stream",
        &[("last-event-id", "8")],
    )
    .await;
    assert_eq!(events.ids(1).await, [9]);

    info!("--- tags=Odd: only the odd messages");
    let mut events = open(
        &node,
        "/v1/topics/resume/queues/1/stream?offset=0&tags=Odd",
        &[],
    )
    .await;
    assert_eq!(events.ids(5).await, [1, 3, 5, 7, 9]);

    info!("--- past the queue's end (a replica behind the client's): waits there");
    let mut events = open(
        &node,
        "/v1/topics/resume/queues/1/stream",
        &[("last-event-id", "11")],
    )
    .await;
    node.send_ok("resume", bodies(10..14, 1)).await;
    assert_eq!(events.ids(1).await, [12]);
    node.stop().await;
}

/// Each bad request is answered with the API's JSON error instead of a stream:
/// unknown topic 404 TOPIC_NOT_FOUND; a non-numeric, negative or missing offset,
/// a non-numeric or last-possible Last-Event-ID, a bad tag filter 400; a queue
/// past the topic's queues 404 QUEUE_NOT_FOUND; a write-only topic 403; no token
/// 401.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_are_json_errors_before_any_event() {
    let node = TestNode::start().await;
    node.create_topic("q", json!({"read_queue_nums": 2, "write_queue_nums": 2}))
        .await;

    info!("--- unknown topic");
    assert_error(
        refused(&node, "/v1/topics/nobody/queues/0/stream?offset=0", &[]).await,
        StatusCode::NOT_FOUND,
        "TOPIC_NOT_FOUND",
    );

    let bad = [
        ("offset is not a number", "?offset=abc", None),
        ("offset is negative", "?offset=-1", None),
        ("no offset and no Last-Event-ID", "", None),
        ("Last-Event-ID is not a number", "?offset=0", Some("abc")),
        ("Last-Event-ID is empty", "?offset=0", Some("")),
        (
            "nothing follows Last-Event-ID",
            "?offset=0",
            Some("18446744073709551615"),
        ),
        ("an empty tag", "?offset=0&tags=A%7C%7C%7C%7CB", None),
    ];
    for (case, query, last_event_id) in bad {
        info!("--- {case}");
        let headers: Vec<(&str, &str)> = last_event_id
            .map(|id| ("last-event-id", id))
            .into_iter()
            .collect();
        assert_error(
            refused(
                &node,
                &format!("/v1/topics/q/queues/0/stream{query}"),
                &headers,
            )
            .await,
            StatusCode::BAD_REQUEST,
            "BAD_REQUEST",
        );
    }

    info!("--- queue past the topic's queues");
    assert_error(
        refused(&node, "/v1/topics/q/queues/2/stream?offset=0", &[]).await,
        StatusCode::NOT_FOUND,
        "QUEUE_NOT_FOUND",
    );

    info!("--- a write-only topic");
    node.create_topic("sink", json!({"perm": 2})).await;
    assert_error(
        refused(&node, "/v1/topics/sink/queues/0/stream?offset=0", &[]).await,
        StatusCode::FORBIDDEN,
        "NO_PERMISSION",
    );

    info!("--- no token");
    let answer = node
        .call_anonymous(
            Method::GET,
            "/v1/topics/q/queues/0/stream?offset=0",
            Body::empty(),
            &[("accept", "text/event-stream")],
        )
        .await;
    assert_eq!(
        answer.headers.get("www-authenticate").map(|v| v.as_bytes()),
        Some(&b"Bearer"[..])
    );
    assert_error(
        (answer.status, answer.json()),
        StatusCode::UNAUTHORIZED,
        "UNAUTHORIZED",
    );
    node.stop().await;
}

/// After retention deleted the oldest CommitLog file, a stream started at 0 (below
/// the queue's minimum) goes on from the minimum — the pull's `next_offset`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_below_the_retained_minimum_starts_at_the_minimum() {
    let node = TestNode::start_with(|config| {
        // 64 KiB CommitLog files, expired as soon as a later file exists, checked often.
        config.storage.commit_log_file_size = ByteSize(64 << 10);
        config.storage.max_message_size = ByteSize(16 << 10);
        config.storage.file_reserved_time = HumanDuration(Duration::ZERO);
        config.storage.retention_interval = HumanDuration(Duration::from_millis(20));
    })
    .await;
    info!("--- about 150 KiB of messages: three CommitLog files");
    for i in 0..12 {
        node.send_ok(
            "old",
            vec![json!({"body": format!("{i:>12288}"), "queue_id": 0})],
        )
        .await;
    }

    info!("--- wait until retention moved the queue's minimum");
    let deadline = Instant::now() + PATIENCE;
    let min = loop {
        let pull = node
            .pull_ok("/v1/topics/old/queues/0/messages?offset=12")
            .await;
        let min = as_u64(&pull["min_offset"], "min_offset");
        if min > 0 {
            break min;
        }
        assert!(
            Instant::now() < deadline,
            "retention did not delete a file: {pull}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };

    info!("--- a stream at 0 starts at the minimum {min}");
    let mut events = open(&node, "/v1/topics/old/queues/0/stream?offset=0", &[]).await;
    let count = usize::try_from(12 - min).expect("a small count");
    assert_eq!(events.ids(count).await, (min..12).collect::<Vec<u64>>());
    node.stop().await;
}

/// Deleting the topic ends its open stream (the body ends, without an event).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_topic_ends_the_stream() {
    let node = TestNode::start().await;
    node.send_ok("doomed", bodies(0..1, 0)).await;
    let mut events = open(&node, "/v1/topics/doomed/queues/0/stream?offset=0", &[]).await;
    assert_eq!(events.ids(1).await, [0]);
    wait_for_metric(&node, "broker_held_polls", 1.0).await;

    info!("--- delete the topic; the stream ends");
    let (status, body) = node
        .request(Method::DELETE, "/v1/topics/doomed", None)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let frame = events.next_frame(PATIENCE).await;
    assert!(frame.is_none(), "the stream ended, no event: {frame:?}");
    node.stop().await;
}

/// An idle stream sends the comment `: keep-alive` about every 15 s, and still
/// delivers the next message after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_stream_sends_keep_alive_comments() {
    let node = TestNode::start().await;
    node.create_topic("idle", json!({})).await;
    let mut events = open(&node, "/v1/topics/idle/queues/0/stream?offset=0", &[]).await;

    info!("--- nothing to send: a comment after about 15 s");
    let started = Instant::now();
    let frame = events
        .next_frame(KEEP_ALIVE_PATIENCE)
        .await
        .expect("the stream goes on");
    let waited = started.elapsed();
    assert_eq!(frame.comments, ["keep-alive"], "{frame:?}");
    assert!(
        (frame.id, frame.event, frame.data.len()) == (None, None, 0),
        "a comment only"
    );
    assert!(
        waited >= Duration::from_secs(14),
        "the comment came after the idle interval, not after {waited:?}"
    );

    info!("--- a message after the comment arrives as an event");
    node.send_ok("idle", bodies(0..1, 0)).await;
    assert_eq!(events.ids(1).await, [0]);
    node.stop().await;
}

/// With `http.max_held_polls` = 1 and one stream holding it, a second stream is
/// not held: it reads a few times a second (no busy loop), and still delivers a
/// message sent to its queue.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_past_the_held_poll_cap_does_not_spin() {
    let node = TestNode::start_with(|config| config.http.max_held_polls = 1).await;
    node.create_topic("capped", json!({})).await;
    let _first = open(&node, "/v1/topics/capped/queues/0/stream?offset=0", &[]).await;
    wait_for_metric(&node, "broker_held_polls", 1.0).await;

    info!("--- a second stream, past the cap: count its pulls over 2 s");
    let mut second = open(&node, "/v1/topics/capped/queues/1/stream?offset=0", &[]).await;
    let before = node.metric("broker_pull_requests_total").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let pulls = node.metric("broker_pull_requests_total").await - before;
    // 200 ms apart: about 10; a spinning loop would make thousands.
    assert!(pulls <= 20.0, "{pulls} pulls in 2 s");
    assert_eq!(node.metric("broker_held_polls").await, 1.0);

    info!("--- a message to its queue still arrives");
    node.send_ok("capped", bodies(0..1, 1)).await;
    assert_eq!(second.ids(1).await, [0]);
    node.stop().await;
}

/// Nodes of one or more broker groups, each run by `broker::server::run` in this
/// process on its own port.
struct Cluster {
    nodes: Vec<ClusterNode>,
    http: reqwest::Client,
}

struct ClusterNode {
    id: u64,
    url: String,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
    _dir: tempfile::TempDir,
}

impl Cluster {
    /// Starts a node for each `(id, group)` (every group's first node bootstraps
    /// it; all know each other as seeds) and waits until each is ready.
    async fn start(layout: &[(u64, &str)]) -> Self {
        common::init_tracing();
        let mut listeners = Vec::new();
        for _ in layout {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("binding a local port");
            let addr = listener.local_addr().expect("a bound listener's address");
            listeners.push((listener, addr));
        }
        let url = |i: usize| format!("http://{}", listeners[i].1);
        let seeds: Vec<String> = (0..layout.len()).map(url).collect();
        let mut nodes = Vec::new();
        let mut configs = Vec::new();
        for (i, (id, group)) in layout.iter().enumerate() {
            let dir = common::fast_tempdir();
            let mut config = NodeConfig::for_test(dir.path(), *id, listeners[i].1);
            config.group = (*group).to_string();
            config.peers = layout
                .iter()
                .enumerate()
                .filter(|(_, (_, g))| g == group)
                .map(|(j, (peer, _))| format!("{peer}={}", url(j)))
                .collect();
            config.seeds = seeds.clone();
            config.control.register_interval = HumanDuration(Duration::from_millis(200));
            config.storage.disk_high_water_ratio = 1.0;
            config.validate().expect("the test configuration is valid");
            configs.push((config, dir));
        }
        for ((listener, _), (config, dir)) in listeners.into_iter().zip(configs) {
            let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
            let (id, url) = (config.node_id, config.advertise_url.clone());
            let task = tokio::spawn(broker::server::run(config, listener, async move {
                let _ = stopped.await;
            }));
            nodes.push(ClusterNode {
                id,
                url,
                stop,
                task,
                _dir: dir,
            });
        }
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert(
            reqwest::header::AUTHORIZATION,
            format!("Bearer {TEST_ADMIN_TOKEN}")
                .parse()
                .expect("a header value"),
        );
        let http = reqwest::Client::builder()
            .default_headers(headers)
            .connect_timeout(Duration::from_secs(1))
            .build()
            .expect("a client");
        let cluster = Self { nodes, http };
        for node in &cluster.nodes {
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                let ready = cluster
                    .http
                    .get(format!("{}/ready", node.url))
                    .timeout(Duration::from_secs(2))
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success());
                if ready {
                    break;
                }
                assert!(Instant::now() < deadline, "node {} is not ready", node.id);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        cluster
    }

    fn url(&self, id: u64) -> &str {
        &self
            .nodes
            .iter()
            .find(|node| node.id == id)
            .unwrap_or_else(|| panic!("no node {id}"))
            .url
    }

    /// A JSON request to node `id`; the status and JSON answer.
    async fn request(
        &self,
        id: u64,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.url(id)))
            .timeout(PATIENCE);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("the node answers");
        let status = StatusCode::from_u16(response.status().as_u16()).expect("a status");
        let body = response.json().await.expect("a JSON answer");
        (status, body)
    }

    async fn send_ok(&self, id: u64, topic: &str, messages: Vec<Value>) {
        let (status, body) = self
            .request(
                id,
                reqwest::Method::POST,
                &format!("/v1/topics/{topic}/messages"),
                Some(json!({ "messages": messages })),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "send through node {id}: {body}");
    }

    /// Opens a stream on node `id`; the raw answer.
    async fn get_stream(
        &self,
        id: u64,
        path: &str,
        last_event_id: Option<&str>,
    ) -> reqwest::Response {
        let mut request = self
            .http
            .get(format!("{}{path}", self.url(id)))
            .header("accept", "text/event-stream");
        if let Some(last) = last_event_id {
            request = request.header("last-event-id", last);
        }
        tokio::time::timeout(PATIENCE, request.send())
            .await
            .expect("the stream's head within the patience")
            .expect("the node answers")
    }

    /// Opens a stream on node `id`; expects 200 with `text/event-stream`.
    async fn open(&self, id: u64, path: &str, last_event_id: Option<&str>) -> Events {
        let response = self.get_stream(id, path, last_event_id).await;
        let status = StatusCode::from_u16(response.status().as_u16()).expect("a status");
        let mut headers = axum::http::HeaderMap::new();
        if let Some(value) = response.headers().get("content-type") {
            headers.insert(
                "content-type",
                axum::http::HeaderValue::from_bytes(value.as_bytes()).expect("a header value"),
            );
        }
        assert_event_stream(status, &headers, path);
        Events::of_reqwest(response)
    }

    async fn stop(self) {
        for node in self.nodes {
            let _ = node.stop.send(());
            let ended = tokio::time::timeout(Duration::from_secs(30), node.task)
                .await
                .unwrap_or_else(|_| panic!("node {} did not stop", node.id));
            ended
                .expect("the node task did not panic")
                .unwrap_or_else(|e| panic!("node {} failed: {e:#}", node.id));
        }
    }
}

/// In a group of three, a stream read on node 1 is resumed on node 2 with the
/// `Last-Event-ID` it reached (and an `offset` the header overrides): node 2
/// continues at the next offset, with no event repeated or skipped, and delivers
/// messages sent after the reconnect.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stream_resumes_on_another_node_with_last_event_id() {
    let cluster = Cluster::start(&[(1, "broker-a"), (2, "broker-a"), (3, "broker-a")]).await;
    let (status, body) = cluster
        .request(
            1,
            reqwest::Method::PUT,
            "/v1/topics/orders",
            Some(json!({"read_queue_nums": 2, "write_queue_nums": 2})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    cluster.send_ok(1, "orders", bodies(0..10, 0)).await;

    info!("--- read events 0..=5 on node 1, then close");
    let path = "/v1/topics/orders/queues/0/stream?offset=0";
    let mut events = cluster.open(1, path, None).await;
    assert_eq!(events.ids(6).await, [0, 1, 2, 3, 4, 5]);
    drop(events);

    info!("--- resume on node 2 after 5, once it applied the topic");
    let deadline = Instant::now() + PATIENCE;
    while cluster
        .request(2, reqwest::Method::GET, "/v1/topics/orders", None)
        .await
        .0
        != StatusCode::OK
    {
        assert!(Instant::now() < deadline, "node 2 never applied the topic");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut events = cluster.open(2, path, Some("5")).await;
    assert_eq!(events.ids(4).await, [6, 7, 8, 9]);

    info!("--- messages sent through node 3 arrive on node 2's stream");
    cluster.send_ok(3, "orders", bodies(10..15, 0)).await;
    assert_eq!(events.ids(5).await, [10, 11, 12, 13, 14]);

    info!("--- a bad Last-Event-ID on node 3: JSON 400");
    let response = cluster.get_stream(3, path, Some("five")).await;
    assert_eq!(response.status().as_u16(), 400);
    let body: Value = response.json().await.expect("a JSON error");
    assert_eq!(body["code"], "BAD_REQUEST", "{body}");
    drop(events);
    cluster.stop().await;
}

/// A stream asked of a node of group a, for a topic only group b serves, is
/// relayed from a node of group b as it arrives (the relay does not wait for the
/// answer's end), with `Last-Event-ID` going along; group b's JSON errors are
/// relayed as they are.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stream_of_another_group_is_relayed() {
    let cluster = Cluster::start(&[(1, "broker-a"), (2, "broker-b")]).await;
    let (status, body) = cluster
        .request(
            2,
            reqwest::Method::PUT,
            "/v1/topics/far",
            Some(json!({"read_queue_nums": 1, "write_queue_nums": 1, "groups": ["broker-b"]})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");

    info!("--- wait until node 1 routes the topic to group b");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, route) = cluster
            .request(1, reqwest::Method::GET, "/v1/routes/far", None)
            .await;
        if status == StatusCode::OK && route["groups"][0]["group"] == "broker-b" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "node 1 never routed `far`: {route}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    cluster.send_ok(2, "far", bodies(0..3, 0)).await;

    info!("--- a stream through node 1: the stored messages, then a new one");
    let path = "/v1/topics/far/queues/0/stream?offset=0";
    let mut events = cluster.open(1, path, None).await;
    assert_eq!(events.ids(3).await, [0, 1, 2]);
    cluster.send_ok(2, "far", bodies(3..4, 0)).await;
    let (id, data) = events.next_message().await;
    assert_eq!((id, data["body"].clone()), (3, json!("m3")));
    drop(events);

    info!("--- Last-Event-ID goes along");
    let mut events = cluster.open(1, path, Some("2")).await;
    assert_eq!(events.ids(1).await, [3]);
    drop(events);
    let metrics = cluster
        .http
        .get(format!("{}/metrics", cluster.url(1)))
        .send()
        .await
        .expect("node 1 answers")
        .text()
        .await
        .expect("metrics text");
    let forwarded = common::http::metric_value(&metrics, "broker_forwarded_requests_total");
    assert!(
        forwarded >= 2.0,
        "node 1 forwarded the streams: {forwarded}"
    );

    info!("--- group b's error for a queue it does not have, relayed as JSON");
    let response = cluster
        .get_stream(1, "/v1/topics/far/queues/1/stream?offset=0", None)
        .await;
    assert_eq!(response.status().as_u16(), 404);
    let body: Value = response.json().await.expect("a JSON error");
    assert_eq!(body["code"], "QUEUE_NOT_FOUND", "{body}");
    cluster.stop().await;
}
