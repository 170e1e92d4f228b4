//! Accepting and serving connections: TLS, the connection limit, timeouts, and
//! errors in the API's shape from the HTTP layer itself.
//!
//! The client API and the node-to-node plane (Raft, route registration,
//! forwarded requests) share one port, so a client must not be able to starve
//! the peers. Every accepted connection is one of:
//!
//! * **client** — counted against `http.max_connections`;
//! * **peer** — it presented the cluster secret on an `/internal/` request (or
//!   carried a forwarded request with it): not counted, never refused;
//! * **probation** — accepted while the client slots were full. It may only make
//!   `/internal/` requests: a valid secret makes it a peer, anything else is
//!   answered 503 and the connection closed; it is closed unpromoted after
//!   [`PROBATION`]. At most [`MAX_PROBATION`] wait; a new one evicts the oldest,
//!   so a flood of client connections cannot keep a peer from getting through
//!   (it would have to open them faster than the peer's first request arrives).
//!
//! The file limit of the process must leave room for the peers above
//! `max_connections` (cluster.sh and deploy/ set 65536).
//!
//! Each connection is HTTP/1.1 through hyper with `http.header_read_timeout`
//! (a head must arrive whole within it, also on an idle keep-alive connection,
//! which it closes), `http.max_header_size`, and [`own_errors`] turning hyper's
//! own error answers into JSON ones. Body read timeouts and the rest are tower
//! layers in the router.

pub mod own_errors;

use std::collections::VecDeque;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::atomic::{AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Request, Response};
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Notify};
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;
use tracing::{debug, warn};

use self::own_errors::{AnswerSlot, AnswerSlots, OwnErrorsIo};
use crate::http::error::ApiError;

/// How long a connection accepted over the limit may take to show it is a peer.
pub const PROBATION: Duration = Duration::from_secs(2);
/// Most connections on probation at once.
pub const MAX_PROBATION: usize = 64;
/// How long the server waits for open connections to finish after shutdown
/// begins (long polls end early: see `raft::poll_waiters`).
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Idle time before the first TCP keepalive probe on an accepted connection.
const TCP_KEEPALIVE_IDLE: Duration = Duration::from_secs(10);
/// Time between unanswered probes.
const TCP_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(2);
/// How long sent data may stay unacknowledged before the connection is dropped;
/// it also caps the keepalive probing (about 30 s in all).
const TCP_USER_TIMEOUT: Duration = Duration::from_secs(30);

/// What a connection is, for the limit (see the module doc).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum ConnectionClass {
    Client,
    Peer,
    Probation,
}

impl ConnectionClass {
    fn from_u8(value: u8) -> Self {
        match value {
            0 => Self::Client,
            1 => Self::Peer,
            _ => Self::Probation,
        }
    }

    fn as_u8(self) -> u8 {
        match self {
            Self::Client => 0,
            Self::Peer => 1,
            Self::Probation => 2,
        }
    }
}

/// One accepted connection; every request on it carries an `Arc` of it.
pub struct Connection {
    id: u64,
    class: AtomicU8,
    registry: Arc<ConnectionRegistry>,
    /// Notified when the connection must close at once (probation over).
    evicted: Notify,
}

impl Connection {
    pub fn class(&self) -> ConnectionClass {
        ConnectionClass::from_u8(self.class.load(Ordering::Acquire))
    }

    /// The connection presented the cluster secret: it no longer counts against
    /// the client limit and is never evicted.
    pub fn promote_to_peer(&self) {
        let previous = ConnectionClass::from_u8(
            self.class
                .swap(ConnectionClass::Peer.as_u8(), Ordering::AcqRel),
        );
        match previous {
            ConnectionClass::Peer => return,
            ConnectionClass::Client => {
                self.registry.clients.fetch_sub(1, Ordering::AcqRel);
            }
            ConnectionClass::Probation => {
                self.registry.probation.fetch_sub(1, Ordering::AcqRel);
            }
        }
        self.registry.peers.fetch_add(1, Ordering::AcqRel);
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        let counter = match self.class() {
            ConnectionClass::Client => &self.registry.clients,
            ConnectionClass::Peer => &self.registry.peers,
            ConnectionClass::Probation => &self.registry.probation,
        };
        counter.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Counts of open connections by class, and the limit; read by `/metrics`.
pub struct ConnectionRegistry {
    max_clients: usize,
    clients: AtomicUsize,
    peers: AtomicUsize,
    probation: AtomicUsize,
    /// Probation connections, oldest first (dead or promoted ones are skipped).
    waiting: Mutex<VecDeque<Weak<Connection>>>,
    next_id: AtomicU64,
    /// Connections closed on probation: evicted by a newer one or timed out.
    pub evicted_total: AtomicU64,
    /// Requests answered 503 because the connection was over the limit.
    pub refused_requests_total: AtomicU64,
}

/// Open connections by class, for `/metrics`.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct ConnectionCounts {
    pub clients: usize,
    pub peers: usize,
    pub probation: usize,
}

impl ConnectionRegistry {
    pub fn new(max_clients: usize) -> Arc<Self> {
        Arc::new(Self {
            max_clients,
            clients: AtomicUsize::new(0),
            peers: AtomicUsize::new(0),
            probation: AtomicUsize::new(0),
            waiting: Mutex::new(VecDeque::new()),
            next_id: AtomicU64::new(0),
            evicted_total: AtomicU64::new(0),
            refused_requests_total: AtomicU64::new(0),
        })
    }

    pub fn counts(&self) -> ConnectionCounts {
        ConnectionCounts {
            clients: self.clients.load(Ordering::Acquire),
            peers: self.peers.load(Ordering::Acquire),
            probation: self.probation.load(Ordering::Acquire),
        }
    }

    /// Admits a new connection: a client slot if one is free, else probation
    /// (evicting the oldest probation connection when they are all taken).
    pub fn admit(self: &Arc<Self>) -> Arc<Connection> {
        let has_slot = self
            .clients
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max_clients).then_some(n + 1)
            })
            .is_ok();
        let class = if has_slot {
            ConnectionClass::Client
        } else {
            self.probation.fetch_add(1, Ordering::AcqRel);
            ConnectionClass::Probation
        };
        let connection = Arc::new(Connection {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            class: AtomicU8::new(class.as_u8()),
            registry: Arc::clone(self),
            evicted: Notify::new(),
        });
        if class == ConnectionClass::Probation {
            let mut waiting = self
                .waiting
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            waiting.retain(|c| {
                c.upgrade()
                    .is_some_and(|c| c.class() == ConnectionClass::Probation)
            });
            while waiting.len() >= MAX_PROBATION {
                if let Some(oldest) = waiting.pop_front().and_then(|c| c.upgrade()) {
                    self.evicted_total.fetch_add(1, Ordering::Relaxed);
                    oldest.evicted.notify_one();
                }
            }
            waiting.push_back(Arc::downgrade(&connection));
        }
        connection
    }
}

/// How the server serves connections.
#[derive(Clone)]
pub struct ServeOptions {
    pub tls: Option<TlsAcceptor>,
    pub header_read_timeout: Duration,
    pub max_header_bytes: usize,
}

/// Serves `app` on `listener` until `shutdown` resolves, then lets open
/// connections finish (up to [`SHUTDOWN_GRACE`]).
///
/// # Errors
/// None today: accept errors (out of file descriptors, a connection reset before
/// it was accepted) are logged and the loop goes on.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    options: ServeOptions,
    registry: Arc<ConnectionRegistry>,
    shutdown: impl Future<Output = ()> + Send,
) -> std::io::Result<()> {
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut shutdown = pin!(shutdown);
    let mut http1 = hyper::server::conn::http1::Builder::new();
    http1
        .timer(TokioTimer::new())
        .header_read_timeout(options.header_read_timeout)
        .max_buf_size(options.max_header_bytes.max(8192))
        .keep_alive(true);
    loop {
        let (stream, remote) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // EMFILE and friends: back off a little instead of spinning.
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        tune_socket(&stream);
        let connection = registry.admit();
        let task = ConnectionTask {
            app: app.clone(),
            http1: http1.clone(),
            tls: options.tls.clone(),
            handshake_timeout: options.header_read_timeout,
            connection,
            remote,
            stop: stop_rx.clone(),
        };
        tokio::spawn(task.run(stream));
    }
    drop(listener);
    let _ = stop_tx.send(true);
    // Every connection task holds a receiver: wait until they are gone.
    let drained = async {
        while stop_tx.receiver_count() > 1 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    if tokio::time::timeout(SHUTDOWN_GRACE, drained).await.is_err() {
        warn!(
            open = stop_tx.receiver_count() - 1,
            "connections still open after the shutdown grace period"
        );
    }
    Ok(())
}

/// Small answers (acks, Raft RPC replies) must not wait for Nagle's algorithm. A
/// peer that vanished without a FIN (a partition, a power cut) must not hold a
/// connection for long: a follower's append stream waits for its leader's next
/// request indefinitely otherwise. Keepalive probes find an idle dead peer;
/// TCP_USER_TIMEOUT one that stopped acknowledging data we sent (probes do not run
/// while data is unacked).
fn tune_socket(stream: &TcpStream) {
    if let Err(e) = stream.set_nodelay(true) {
        warn!(error = %e, "cannot set TCP_NODELAY");
    }
    let socket = socket2::SockRef::from(stream);
    let keepalive = socket2::TcpKeepalive::new()
        .with_time(TCP_KEEPALIVE_IDLE)
        .with_interval(TCP_KEEPALIVE_INTERVAL);
    if let Err(e) = socket.set_tcp_keepalive(&keepalive) {
        warn!(error = %e, "cannot set TCP keepalive");
    }
    if let Err(e) = socket.set_tcp_user_timeout(Some(TCP_USER_TIMEOUT)) {
        warn!(error = %e, "cannot set TCP_USER_TIMEOUT");
    }
}

struct ConnectionTask {
    app: Router,
    http1: hyper::server::conn::http1::Builder,
    tls: Option<TlsAcceptor>,
    handshake_timeout: Duration,
    connection: Arc<Connection>,
    remote: SocketAddr,
    stop: watch::Receiver<bool>,
}

impl ConnectionTask {
    async fn run(self, stream: TcpStream) {
        let connection = Arc::clone(&self.connection);
        let serving = async {
            match self.tls.clone() {
                Some(acceptor) => {
                    // The handshake has the same deadline as a request head: a
                    // client that opens a connection and says nothing is closed.
                    match tokio::time::timeout(self.handshake_timeout, acceptor.accept(stream))
                        .await
                    {
                        Ok(Ok(tls)) => self.serve_http(tls).await,
                        Ok(Err(e)) => {
                            debug!(remote = %self.remote, error = %e, "TLS handshake failed")
                        }
                        Err(_) => debug!(remote = %self.remote, "TLS handshake timed out"),
                    }
                }
                None => self.serve_http(stream).await,
            }
        };
        let probation = async {
            if connection.class() != ConnectionClass::Probation {
                return std::future::pending().await;
            }
            tokio::select! {
                () = connection.evicted.notified() => {}
                () = tokio::time::sleep(PROBATION) => {
                    if connection.class() != ConnectionClass::Probation {
                        return std::future::pending().await;
                    }
                    connection.registry.evicted_total.fetch_add(1, Ordering::Relaxed);
                }
            }
            debug!(
                connection = connection.id,
                "closing a connection over the limit"
            );
        };
        tokio::select! {
            () = serving => {}
            () = probation => {}
        }
    }

    async fn serve_http<IO>(&self, io: IO)
    where
        IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let slots = AnswerSlots::default();
        let io = TokioIo::new(OwnErrorsIo::new(io, slots.clone()));
        let service = ConnectionService {
            app: self.app.clone(),
            connection: Arc::clone(&self.connection),
            remote: self.remote,
            slots,
        };
        let service = hyper::service::service_fn(move |request| service.clone().call(request));
        let mut served = pin!(self.http1.serve_connection(io, service).with_upgrades());
        let mut stop = self.stop.clone();
        let stopping = async move {
            // The guard `wait_for` answers is not Send: drop it here.
            let _ = stop.wait_for(|stop| *stop).await.is_ok();
        };
        tokio::select! {
            result = served.as_mut() => log_end(result, self.remote),
            () = stopping => {
                served.as_mut().graceful_shutdown();
                log_end(served.await, self.remote);
            }
        }
    }
}

fn log_end(result: Result<(), hyper::Error>, remote: SocketAddr) {
    if let Err(e) = result {
        // Header timeouts, resets, parse errors: a client's problem, not ours.
        debug!(%remote, error = %e, "connection ended with an error");
    }
}

/// The router, seen from one connection: hands each request the connection and
/// the client address, and tells [`own_errors`] about each answer.
#[derive(Clone)]
struct ConnectionService {
    app: Router,
    connection: Arc<Connection>,
    remote: SocketAddr,
    slots: AnswerSlots,
}

impl ConnectionService {
    async fn call(
        self,
        request: Request<Incoming>,
    ) -> Result<Response<Body>, std::convert::Infallible> {
        let head_request = request.method() == axum::http::Method::HEAD;
        let response = if self.connection.class() == ConnectionClass::Probation
            && !request.uri().path().starts_with("/internal/")
        {
            self.connection
                .registry
                .refused_requests_total
                .fetch_add(1, Ordering::Relaxed);
            let mut response = axum::response::IntoResponse::into_response(ApiError::unavailable(
                "this node has too many open client connections (http.max_connections); retry later or reuse a connection",
            ));
            response.headers_mut().insert(
                axum::http::header::CONNECTION,
                axum::http::HeaderValue::from_static("close"),
            );
            response
        } else {
            let mut request = request.map(Body::new);
            request.extensions_mut().insert(ConnectInfo(self.remote));
            request
                .extensions_mut()
                .insert(Arc::clone(&self.connection));
            match self.app.oneshot(request).await {
                Ok(response) => response,
                Err(never) => match never {},
            }
        };
        self.slots.push(AnswerSlot { head_request });
        Ok(response)
    }
}
