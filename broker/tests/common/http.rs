//! Shared by the HTTP router tests (`broker/tests/http_*.rs`): a real single-node
//! broker started in-process, driven through `broker::http::router` with
//! `tower::ServiceExt::oneshot` (no sockets for the public API), and the checks every
//! error answer must pass.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode};
use axum::Router;
use broker::config::NodeConfig;
use broker::service::node::Node;
use serde_json::{json, Value};
use tower::ServiceExt;

/// Largest response body the tests read (metrics and batches stay far below it).
const MAX_RESPONSE_BYTES: usize = 64 << 20;
/// How long a one-node group may take to elect itself.
const READY_DEADLINE: Duration = Duration::from_secs(10);

/// A running single-node broker and the router in front of it.
pub struct TestNode {
    pub node: Arc<Node>,
    pub router: Router,
    /// Base URL the node advertises (the address its listener was bound to).
    pub url: String,
    /// Keeps the port reserved while the node runs (nothing accepts on it: the public
    /// API is driven in-process).
    _listener: tokio::net::TcpListener,
    /// Dropped after the node stopped.
    _dir: tempfile::TempDir,
}

/// An answer: status, headers and the raw body.
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: bytes::Bytes,
}

impl Answer {
    /// The body as JSON, checking the answer says so in its `Content-Type` (panics
    /// with the body text when it is not JSON).
    pub fn json(&self) -> Value {
        let content_type = self
            .headers
            .get(axum::http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok());
        assert!(
            content_type.is_some_and(|t| t.starts_with("application/json")),
            "a JSON answer ({}) has Content-Type application/json, not {content_type:?}: {}",
            self.status,
            String::from_utf8_lossy(&self.body)
        );
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "answer {} is not JSON ({e}): {}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    pub fn text(&self) -> String {
        String::from_utf8(self.body.to_vec()).expect("a text answer is UTF-8")
    }
}

impl TestNode {
    /// Starts a node with `NodeConfig::for_test` as it is.
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    /// Starts a node after `configure` adjusted its `NodeConfig::for_test`, and waits
    /// until `/ready` answers 200 (the node elected itself leader).
    pub async fn start_with(configure: impl FnOnce(&mut NodeConfig)) -> Self {
        let test = Self::start_unready(configure).await;
        test.wait_ready().await;
        test
    }

    /// Starts a node after `configure` adjusted its `NodeConfig::for_test`, without
    /// waiting for it to be ready (for nodes that never will be).
    pub async fn start_unready(configure: impl FnOnce(&mut NodeConfig)) -> Self {
        super::init_tracing();
        let dir = super::fast_tempdir();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binding a local port");
        let addr = listener
            .local_addr()
            .expect("a bound listener has an address");
        let mut config = NodeConfig::for_test(dir.path(), 1, addr);
        // A nearly full shared disk must not make retention delete files under a test.
        config.storage.disk_high_water_ratio = 1.0;
        configure(&mut config);
        config.validate().expect("the test configuration is valid");
        let url = config.advertise_url.clone();
        let node = broker::server::start(config)
            .await
            .expect("starting the broker node");
        let router = broker::http::router(Arc::clone(&node));
        Self {
            node,
            router,
            url,
            _listener: listener,
            _dir: dir,
        }
    }

    /// Polls `/ready` until it answers 200, within [`READY_DEADLINE`].
    async fn wait_ready(&self) {
        let deadline = Instant::now() + READY_DEADLINE;
        loop {
            let answer = self.call(Method::GET, "/ready", Body::empty(), &[]).await;
            if answer.status == StatusCode::OK && self.node.is_leader() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the node was not ready within {READY_DEADLINE:?}: {} {}",
                answer.status,
                String::from_utf8_lossy(&answer.body)
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Stops Raft and the store.
    pub async fn stop(self) {
        let Self {
            node, router, _dir, ..
        } = self;
        drop(router);
        broker::server::stop(node).await;
    }

    /// Sends one request through the router, as the bootstrap admin unless
    /// `headers` carry an `Authorization` of their own.
    pub async fn call(
        &self,
        method: Method,
        uri: &str,
        body: impl Into<Body>,
        headers: &[(&str, &str)],
    ) -> Answer {
        let own = headers
            .iter()
            .any(|(name, _)| name.eq_ignore_ascii_case("authorization"));
        let token = (!own).then_some(broker::config::TEST_ADMIN_TOKEN);
        self.call_with_token(method, uri, body, headers, token)
            .await
    }

    /// Sends one request without any `Authorization` header.
    pub async fn call_anonymous(
        &self,
        method: Method,
        uri: &str,
        body: impl Into<Body>,
        headers: &[(&str, &str)],
    ) -> Answer {
        self.call_with_token(method, uri, body, headers, None).await
    }

    /// Sends one request with `token` as its bearer token (none: no header).
    pub async fn call_with_token(
        &self,
        method: Method,
        uri: &str,
        body: impl Into<Body>,
        headers: &[(&str, &str)],
        token: Option<&str>,
    ) -> Answer {
        let mut builder = Request::builder().method(method).uri(uri);
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        if let Some(token) = token {
            builder = builder.header("authorization", format!("Bearer {token}"));
        }
        let request = builder.body(body.into()).expect("a well-formed request");
        let response = self
            .router
            .clone()
            .oneshot(request)
            .await
            .expect("the router is infallible");
        let status = response.status();
        let headers = response.headers().clone();
        let body = axum::body::to_bytes(response.into_body(), MAX_RESPONSE_BYTES)
            .await
            .expect("reading the answer body");
        Answer {
            status,
            headers,
            body,
        }
    }

    /// A request with an optional JSON body; the answer parsed as JSON.
    pub async fn request(
        &self,
        method: Method,
        uri: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let answer = match body {
            Some(body) => {
                self.call(
                    method,
                    uri,
                    body.to_string(),
                    &[("content-type", "application/json")],
                )
                .await
            }
            None => self.call(method, uri, Body::empty(), &[]).await,
        };
        (answer.status, answer.json())
    }

    /// A request with a raw body (malformed JSON and the like), as JSON.
    pub async fn request_raw(
        &self,
        method: Method,
        uri: &str,
        body: impl Into<Body>,
    ) -> (StatusCode, Value) {
        let answer = self
            .call(method, uri, body, &[("content-type", "application/json")])
            .await;
        (answer.status, answer.json())
    }

    pub async fn get(&self, uri: &str) -> (StatusCode, Value) {
        self.request(Method::GET, uri, None).await
    }

    /// `POST /v1/topics/{topic}/messages` with these message objects; expects 200.
    pub async fn send_ok(&self, topic: &str, messages: Vec<Value>) -> Value {
        let uri = format!("/v1/topics/{topic}/messages");
        let (status, body) = self
            .request(Method::POST, &uri, Some(json!({ "messages": messages })))
            .await;
        assert_eq!(status, StatusCode::OK, "send to {topic}: {body}");
        body
    }

    /// `PUT /v1/topics/{topic}` with `config`; expects 200.
    pub async fn create_topic(&self, topic: &str, config: Value) -> Value {
        let (status, body) = self
            .request(Method::PUT, &format!("/v1/topics/{topic}"), Some(config))
            .await;
        assert_eq!(status, StatusCode::OK, "creating topic {topic}: {body}");
        body
    }

    /// `GET` a pull URI (`/v1/topics/{topic}/queues/{q}/messages?…`); expects 200.
    pub async fn pull_ok(&self, uri: &str) -> Value {
        let (status, body) = self.get(uri).await;
        assert_eq!(status, StatusCode::OK, "pull {uri}: {body}");
        body
    }

    /// `GET /metrics`, checking it answers Prometheus text.
    pub async fn scrape(&self) -> String {
        let answer = self.call(Method::GET, "/metrics", Body::empty(), &[]).await;
        assert_eq!(answer.status, StatusCode::OK);
        let content_type = answer
            .headers
            .get(axum::http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        assert!(
            content_type.starts_with("text/plain"),
            "Prometheus text, got {content_type:?}"
        );
        answer.text()
    }

    /// The value of a Prometheus sample line `name value` of `/metrics`.
    pub async fn metric(&self, name: &str) -> f64 {
        let answer = self.call(Method::GET, "/metrics", Body::empty(), &[]).await;
        assert_eq!(answer.status, StatusCode::OK);
        metric_value(&answer.text(), name)
    }
}

/// The value of the sample `name` in Prometheus text; for a labelled family
/// (`name{code="…"}`), the sum over its series.
pub fn metric_value(text: &str, name: &str) -> f64 {
    let values: Vec<f64> = text
        .lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let (sample, value) = line.rsplit_once(' ')?;
            let family = sample.split_once('{').map_or(sample, |(family, _)| family);
            (family == name).then(|| value.trim().parse::<f64>().ok())?
        })
        .collect();
    assert!(!values.is_empty(), "metric {name} is missing from:\n{text}");
    values.iter().sum()
}

/// The value of one labelled series, `name{labels}` exactly as rendered
/// (`broker_rejected_requests_total{code="BAD_REQUEST"}`); 0 when absent.
pub fn series_value(text: &str, series: &str) -> f64 {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .find_map(|line| {
            let (sample, value) = line.rsplit_once(' ')?;
            (sample == series).then(|| value.trim().parse::<f64>().ok())?
        })
        .unwrap_or(0.0)
}

/// Checks a non-2xx answer: the expected status, and exactly the API's error shape
/// `{"code", "message", "leader"}` with `code` = `code`, a non-empty message and a
/// `leader` that is null (a single node never points elsewhere).
#[track_caller]
pub fn assert_error(answer: (StatusCode, Value), status: StatusCode, code: &str) {
    let (got_status, body) = answer;
    assert_eq!(got_status, status, "status of an error answer: {body}");
    let object = body
        .as_object()
        .unwrap_or_else(|| panic!("an error body is a JSON object: {body}"));
    let mut keys: Vec<&str> = object.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        ["code", "leader", "message"],
        "fields of an error body: {body}"
    );
    assert_eq!(body["code"], code, "code of an error body: {body}");
    assert!(
        body["message"].as_str().is_some_and(|m| !m.is_empty()),
        "an error body has a non-empty message: {body}"
    );
    assert!(
        body["leader"].is_null(),
        "a single node's error names no other leader: {body}"
    );
}

/// A JSON value as u64 (panics naming `what` otherwise).
#[track_caller]
pub fn as_u64(value: &Value, what: &str) -> u64 {
    value
        .as_u64()
        .unwrap_or_else(|| panic!("{what} is an unsigned integer, got {value}"))
}

/// A JSON value as an array (panics naming `what` otherwise).
#[track_caller]
pub fn as_array<'a>(value: &'a Value, what: &str) -> &'a Vec<Value> {
    value
        .as_array()
        .unwrap_or_else(|| panic!("{what} is an array, got {value}"))
}

/// Percent-encodes a path segment or query value (everything but `[A-Za-z0-9_.-]`).
pub fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.') {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// Checks that `value` is an object holding every field of `fields` (answers may carry
/// more fields than shared/API.md lists).
#[track_caller]
pub fn assert_fields(value: &Value, fields: &[&str], what: &str) {
    for field in fields {
        assert!(
            value.get(field).is_some(),
            "{what} lacks the field `{field}`: {value}"
        );
    }
}

/// The fields shared/API.md lists for one send result.
pub const SEND_RESULT_FIELDS: [&str; 6] = [
    "msg_id",
    "topic",
    "queue_id",
    "queue_offset",
    "commit_log_offset",
    "store_timestamp",
];

/// The fields shared/API.md lists for a message of a pull or a query (plus `body` or
/// `body_base64`, and `tags` when the message has tags: the tests check those).
pub const MESSAGE_FIELDS: [&str; 10] = [
    "msg_id",
    "topic",
    "queue_id",
    "queue_offset",
    "commit_log_offset",
    "keys",
    "properties",
    "born_timestamp",
    "store_timestamp",
    "reconsume_times",
];

/// The fields of a pull answer.
pub const PULL_FIELDS: [&str; 5] = [
    "status",
    "next_offset",
    "min_offset",
    "max_offset",
    "messages",
];

/// Milliseconds since the Unix epoch, as the broker stamps messages.
pub fn now_ms() -> u64 {
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("the clock is after 1970");
    u64::try_from(since.as_millis()).expect("milliseconds fit in u64")
}
