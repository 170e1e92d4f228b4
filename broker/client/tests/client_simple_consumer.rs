//! The [`SimpleConsumer`] against a fake node that serves receive, ack and
//! change-invisible as shared/API.md ("Receive and ack") says: each handle names
//! one lease, a change spends it and issues a new one, an ack of a spent handle
//! answers `EXPIRED`. Each test scripts the fake's messages and checks what the
//! consumer sent: a handled message is acked, a failed one is given back with
//! the retry delay, a slow handler's lease is extended and the ack carries the
//! newest handle, a refused ack is counted and not retried, and a FIFO run stops
//! at its first failure.

use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use broker_client::api::{ErrorBody, MessageView};
use broker_client::proto::receive::{
    AckRequest, AckResponse, AckResult, ChangeInvisibleRequest, ChangeInvisibleResponse,
    ReceiveRequest, ReceiveResponse, ReceivedMessage, ACK_EXPIRED, ACK_INVALID, ACK_OK,
    DEFAULT_RECEIVE_MESSAGES, MAX_INVISIBLE_MS, MIN_INVISIBLE_MS,
};
use broker_client::{
    BrokerClient, ClientOptions, ConsumeResult, SimpleConsumer, SimpleConsumerOptions,
    SimpleConsumerStats,
};
use tracing::info;

const GROUP: &str = "billing";
const TOPIC: &str = "orders";
/// Every wait on a condition ends by then.
const DEADLINE: Duration = Duration::from_secs(15);

/// The fake node's leases and what it was sent.
#[derive(Default)]
struct Leases {
    /// Messages not delivered yet, delivered in this order.
    pending: VecDeque<MessageView>,
    /// Answer this many receives with 503 `UNAVAILABLE` first.
    failing_receives: usize,
    /// Messages (by id) whose ack answers `EXPIRED` although the handle is live.
    expire_on_ack: HashSet<String>,
    /// Handles of leases held now.
    live: HashSet<String>,
    /// Every handle issued, in order, with its message id.
    issued: Vec<(String, String)>,
    receives: Vec<ReceiveRequest>,
    /// The handles of each ack request.
    acks: Vec<Vec<String>>,
    changes: Vec<ChangeInvisibleRequest>,
}

impl Leases {
    /// A new lease on `msg_id`: `{msg_id}#{n}` for its n-th handle.
    fn issue(&mut self, msg_id: &str) -> String {
        let n = self.issued.iter().filter(|(_, id)| id == msg_id).count();
        let handle = format!("{msg_id}#{n}");
        self.live.insert(handle.clone());
        self.issued.push((handle.clone(), msg_id.to_string()));
        handle
    }

    fn msg_id_of(&self, handle: &str) -> Option<String> {
        self.issued
            .iter()
            .find(|(h, _)| h == handle)
            .map(|(_, id)| id.clone())
    }

    /// The handles issued for `msg_id`, oldest first.
    fn handles_of(&self, msg_id: &str) -> Vec<String> {
        self.issued
            .iter()
            .filter(|(_, id)| id == msg_id)
            .map(|(h, _)| h.clone())
            .collect()
    }

    fn acked_handles(&self) -> Vec<String> {
        self.acks.iter().flatten().cloned().collect()
    }
}

#[derive(Default)]
struct Fake {
    leases: Mutex<Leases>,
}

impl Fake {
    fn lock(&self) -> MutexGuard<'_, Leases> {
        self.leases.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn api_error(status: StatusCode, code: &str) -> Response {
    let body = ErrorBody {
        code: code.into(),
        message: "fake".into(),
        leader: None,
    };
    (status, Json(body)).into_response()
}

async fn receive(
    State(fake): State<Arc<Fake>>,
    Path((group, topic)): Path<(String, String)>,
    Json(request): Json<ReceiveRequest>,
) -> Response {
    let wait_ms = {
        let mut leases = fake.lock();
        leases.receives.push(request.clone());
        if group != GROUP || topic != TOPIC {
            return api_error(StatusCode::NOT_FOUND, "TOPIC_NOT_FOUND");
        }
        if leases.failing_receives > 0 {
            leases.failing_receives -= 1;
            return api_error(StatusCode::SERVICE_UNAVAILABLE, "UNAVAILABLE");
        }
        if !leases.pending.is_empty() {
            let max = request.max_messages.unwrap_or(DEFAULT_RECEIVE_MESSAGES);
            let count = max.min(leases.pending.len());
            let taken: Vec<MessageView> = leases.pending.drain(..count).collect();
            let messages = taken
                .into_iter()
                .map(|message| ReceivedMessage {
                    receipt_handle: leases.issue(&message.msg_id),
                    message,
                    delivery_attempt: 1,
                    invisible_until: 0,
                    broker_group: "broker-a".into(),
                })
                .collect();
            return Json(ReceiveResponse { messages }).into_response();
        }
        request.max_wait_ms.unwrap_or(0)
    };
    // Empty only once the wait is over.
    tokio::time::sleep(Duration::from_millis(wait_ms)).await;
    Json(ReceiveResponse::default()).into_response()
}

async fn ack(
    State(fake): State<Arc<Fake>>,
    Path(group): Path<String>,
    Json(request): Json<AckRequest>,
) -> Response {
    let mut leases = fake.lock();
    leases.acks.push(request.receipt_handles.clone());
    if group != GROUP {
        return api_error(StatusCode::BAD_REQUEST, "BAD_REQUEST");
    }
    let results = request
        .receipt_handles
        .into_iter()
        .map(|handle| {
            let status = match leases.msg_id_of(&handle) {
                None => ACK_INVALID,
                Some(id) if leases.expire_on_ack.contains(&id) => ACK_EXPIRED,
                Some(_) if leases.live.remove(&handle) => ACK_OK,
                // Spent by a change, or acked already.
                Some(_) => ACK_EXPIRED,
            };
            AckResult {
                receipt_handle: handle,
                status: status.into(),
            }
        })
        .collect();
    Json(AckResponse { results }).into_response()
}

async fn change_invisible(
    State(fake): State<Arc<Fake>>,
    Path(group): Path<String>,
    Json(request): Json<ChangeInvisibleRequest>,
) -> Response {
    let mut leases = fake.lock();
    leases.changes.push(request.clone());
    let ms = request.invisible_ms;
    if group != GROUP || (ms != 0 && !(MIN_INVISIBLE_MS..=MAX_INVISIBLE_MS).contains(&ms)) {
        return api_error(StatusCode::BAD_REQUEST, "BAD_REQUEST");
    }
    let msg_id = leases.msg_id_of(&request.receipt_handle);
    let Some(msg_id) = msg_id.filter(|_| leases.live.remove(&request.receipt_handle)) else {
        return api_error(StatusCode::CONFLICT, "EXPIRED");
    };
    let receipt_handle = leases.issue(&msg_id);
    Json(ChangeInvisibleResponse {
        receipt_handle,
        invisible_until: ms,
    })
    .into_response()
}

/// Serves the fake on an ephemeral loopback port; returns its base URL. Anything
/// else (the client's leader probe `GET /ready`) answers "no leader known".
async fn fake_node(fake: Arc<Fake>) -> anyhow::Result<(String, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    let app = Router::new()
        .route("/v1/groups/{group}/topics/{topic}/receive", post(receive))
        .route("/v1/groups/{group}/ack", post(ack))
        .route(
            "/v1/groups/{group}/change-invisible",
            post(change_invisible),
        )
        .fallback(|| async { api_error(StatusCode::SERVICE_UNAVAILABLE, "UNAVAILABLE") })
        .with_state(fake);
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok((url, server))
}

fn message(msg_id: &str, queue_id: u32, queue_offset: u64, body: &str) -> MessageView {
    MessageView {
        msg_id: msg_id.into(),
        topic: TOPIC.into(),
        queue_id,
        queue_offset,
        commit_log_offset: 0,
        body: Some(body.into()),
        body_base64: None,
        tags: None,
        keys: Vec::new(),
        properties: Default::default(),
        born_timestamp: 0,
        store_timestamp: 0,
        reconsume_times: 0,
        producer_id: None,
        sequence: None,
    }
}

fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_test_writer()
        .try_init();
}

/// A client of `url` that only probes for a leader while it knows none.
fn client(url: &str) -> anyhow::Result<BrokerClient> {
    let options = ClientOptions {
        leader_refresh_interval: None,
        ..ClientOptions::default()
    };
    Ok(BrokerClient::new(vec![url.to_string()], options)?)
}

/// Short waits, so the tests do not idle.
fn options() -> SimpleConsumerOptions {
    SimpleConsumerOptions {
        max_wait: Duration::from_millis(200),
        backoff_initial: Duration::from_millis(20),
        backoff_max: Duration::from_millis(100),
        ..SimpleConsumerOptions::new(GROUP, TOPIC)
    }
}

/// Bodies the handler saw, in order.
type Seen = Arc<Mutex<Vec<String>>>;

/// A handler that records each body and answers by it: `fail…` fails, `slow…`
/// takes 1.5 s, anything else succeeds at once.
fn by_body(
    seen: &Seen,
) -> impl Fn(
    ReceivedMessage,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = ConsumeResult> + Send>>
       + Send
       + Sync
       + 'static {
    let seen = Arc::clone(seen);
    move |received: ReceivedMessage| {
        let seen = Arc::clone(&seen);
        Box::pin(async move {
            let body = received.message.body.unwrap_or_default();
            seen.lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(body.clone());
            if body.starts_with("fail") {
                return ConsumeResult::RetryLater;
            }
            if body.starts_with("slow") {
                tokio::time::sleep(Duration::from_millis(1500)).await;
            }
            ConsumeResult::Success
        })
    }
}

/// A fake node and a consumer of it with the [`by_body`] handler.
struct Rig {
    fake: Arc<Fake>,
    server: tokio::task::JoinHandle<()>,
    seen: Seen,
    consumer: SimpleConsumer,
}

/// What a rig did, once stopped.
struct Done {
    stats: SimpleConsumerStats,
    leases: Leases,
    /// Bodies the handler saw, in order.
    seen: Vec<String>,
}

impl Rig {
    /// Serves a fake node that `script` set up, and starts a consumer of it.
    async fn start(
        script: impl FnOnce(&mut Leases),
        options: SimpleConsumerOptions,
    ) -> anyhow::Result<Self> {
        init_tracing();
        let fake = Arc::new(Fake::default());
        script(&mut fake.lock());
        let (url, server) = fake_node(Arc::clone(&fake)).await?;
        let seen = Seen::default();
        let consumer = SimpleConsumer::start(client(&url)?, options, by_body(&seen))?;
        Ok(Self {
            fake,
            server,
            seen,
            consumer,
        })
    }

    /// Waits (up to [`DEADLINE`]) until the consumer's stats satisfy `done`.
    async fn wait_for(
        &self,
        what: &str,
        done: impl Fn(&SimpleConsumerStats) -> bool,
    ) -> anyhow::Result<()> {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let stats = self.consumer.stats();
            if done(&stats) {
                return Ok(());
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "timed out waiting for {what}: {stats:?}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Shuts the consumer down (within [`DEADLINE`]), then the fake node.
    async fn stop(self) -> anyhow::Result<Done> {
        let stats = tokio::time::timeout(DEADLINE, self.consumer.shutdown()).await?;
        self.server.abort();
        let leases = std::mem::take(&mut *self.fake.lock());
        let seen = self.seen.lock().unwrap_or_else(|e| e.into_inner()).clone();
        Ok(Done {
            stats,
            leases,
            seen,
        })
    }
}

/// The first receive fails (503) and is retried after a backoff; every message
/// the handler takes is acked with the handle it was delivered with, and the
/// receives ask for what the options say.
#[tokio::test]
async fn handled_messages_are_acked_after_a_failed_receive() -> anyhow::Result<()> {
    init_tracing();
    info!("--- start: the first receive is refused, the next one delivers three");
    let script = |leases: &mut Leases| {
        leases.failing_receives = 1;
        for i in 0..3 {
            let body = format!("ok-{i}");
            leases
                .pending
                .push_back(message(&format!("m{i}"), i, 0, &body));
        }
    };
    let rig = Rig::start(script, options()).await?;
    rig.wait_for("three acks", |s| s.acked == 3).await?;
    let Done {
        stats,
        leases,
        mut seen,
    } = rig.stop().await?;
    assert_eq!(stats.receive_errors, 1, "{stats:?}");
    assert_eq!(stats.received, 3, "{stats:?}");
    assert_eq!(stats.nacked + stats.ack_expired + stats.ack_failed, 0);

    info!("--- each delivered handle was acked once; nothing was changed");
    let mut acked = leases.acked_handles();
    acked.sort();
    assert_eq!(acked, ["m0#0", "m1#0", "m2#0"]);
    assert!(leases.changes.is_empty());
    let first = &leases.receives[0];
    assert_eq!(first.max_messages, Some(DEFAULT_RECEIVE_MESSAGES));
    assert_eq!(first.invisible_ms, Some(30_000));
    assert_eq!(first.max_wait_ms, Some(200));
    assert!(!first.fifo && first.tags.is_none());
    seen.sort();
    assert_eq!(seen, ["ok-0", "ok-1", "ok-2"]);
    Ok(())
}

/// A message the handler fails is given back by a change-invisible of the retry
/// delay (2 s here), with the handle it was delivered with, and is not acked.
#[tokio::test]
async fn a_failed_message_is_given_back_with_the_retry_delay() -> anyhow::Result<()> {
    init_tracing();
    info!("--- one fails, one succeeds");
    let script = |leases: &mut Leases| {
        leases
            .pending
            .extend([message("bad", 0, 0, "fail"), message("good", 1, 0, "ok")]);
    };
    let options = SimpleConsumerOptions {
        retry_delay: Duration::from_secs(2),
        ..options()
    };
    let rig = Rig::start(script, options).await?;
    rig.wait_for("a nack and an ack", |s| s.nacked == 1 && s.acked == 1)
        .await?;
    let Done { stats, leases, .. } = rig.stop().await?;
    assert_eq!(stats.give_back_failed, 0, "{stats:?}");

    info!("--- given back with the delivered handle and the retry delay; not acked");
    assert_eq!(leases.changes.len(), 1);
    assert_eq!(leases.changes[0].receipt_handle, "bad#0");
    assert_eq!(leases.changes[0].invisible_ms, 2_000);
    assert_eq!(leases.acked_handles(), ["good#0"]);
    Ok(())
}

/// A handler that takes 1.5 s under 1 s leases: the consumer extends the lease
/// (by the lease duration) before it runs out, and acks with the newest handle.
#[tokio::test]
async fn a_slow_handler_has_its_lease_extended_and_acked_with_the_new_handle() -> anyhow::Result<()>
{
    init_tracing();
    info!("--- the handler outlives the first lease");
    let script = |leases: &mut Leases| leases.pending.push_back(message("m", 0, 0, "slow"));
    let options = SimpleConsumerOptions {
        invisible_duration: Duration::from_secs(1),
        ..options()
    };
    let rig = Rig::start(script, options).await?;
    rig.wait_for("the ack", |s| s.acked == 1).await?;
    let Done { stats, leases, .. } = rig.stop().await?;
    assert!(stats.lease_extensions >= 1, "{stats:?}");
    assert_eq!(stats.leases_lost, 0, "{stats:?}");

    info!("--- each extension named the handle before it; the ack the last");
    let handles = leases.handles_of("m");
    assert_eq!(handles.len() as u64, 1 + stats.lease_extensions);
    let changed: Vec<&str> = leases
        .changes
        .iter()
        .map(|c| c.receipt_handle.as_str())
        .collect();
    assert_eq!(changed, handles[..handles.len() - 1]);
    assert!(leases.changes.iter().all(|c| c.invisible_ms == 1_000));
    let last = handles.last().cloned().unwrap_or_default();
    assert_eq!(leases.acked_handles(), std::slice::from_ref(&last));
    assert_ne!(last, "m#0", "the ack uses the extended lease's handle");
    Ok(())
}

/// An ack answered `EXPIRED` is counted and logged, and the handle is not sent
/// again.
#[tokio::test]
async fn an_expired_ack_is_counted_not_retried() -> anyhow::Result<()> {
    let script = |leases: &mut Leases| {
        leases.pending.push_back(message("late", 0, 0, "ok"));
        leases.expire_on_ack.insert("late".into());
    };
    let rig = Rig::start(script, options()).await?;
    rig.wait_for("the refused ack", |s| s.ack_expired == 1)
        .await?;
    let Done { stats, leases, .. } = rig.stop().await?;
    assert_eq!(stats.acked, 0, "{stats:?}");
    assert_eq!(leases.acks, [vec!["late#0".to_string()]]);
    Ok(())
}

/// FIFO: one queue's run of three, the second fails. The first is acked, the
/// second given back with the retry delay, the third given back at once without
/// being handled, so the queue comes again in order from the failed one.
#[tokio::test]
async fn a_fifo_run_stops_at_its_first_failure() -> anyhow::Result<()> {
    let script = |leases: &mut Leases| {
        leases.pending.extend([
            message("q0", 0, 0, "ok-0"),
            message("q1", 0, 1, "fail-1"),
            message("q2", 0, 2, "ok-2"),
        ]);
    };
    let options = SimpleConsumerOptions {
        fifo: true,
        ..options()
    };
    let rig = Rig::start(script, options).await?;
    rig.wait_for("the run resolved", |s| {
        s.acked == 1 && s.nacked == 1 && s.released == 1
    })
    .await?;
    let Done { leases, seen, .. } = rig.stop().await?;
    assert!(leases.receives.iter().all(|r| r.fifo));
    assert_eq!(leases.acked_handles(), ["q0#0"]);
    let changes: Vec<(&str, u64)> = leases
        .changes
        .iter()
        .map(|c| (c.receipt_handle.as_str(), c.invisible_ms))
        .collect();
    assert_eq!(changes, [("q1#0", 1_000), ("q2#0", 0)]);
    assert_eq!(seen, ["ok-0", "fail-1"]);
    Ok(())
}
