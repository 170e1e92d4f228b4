//! Every answer carries `x-request-id` (an incoming acceptable one is kept), and
//! with JSON logs the request's log lines carry it as a span field.

use crate::common;

use std::io::Write;
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::http::{Method, StatusCode};
use common::http::TestNode;
use serde_json::{json, Value};
use tracing::info;

/// Log lines written by the JSON subscriber of [`json_logs`].
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("log buffer").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The broker's JSON logging writing into `logs`, as a dispatcher a test makes the
/// default of its own thread only: this binary's other tests log through the
/// process-wide text subscriber, and this one must see every line of its request.
fn json_logs(logs: &Captured) -> tracing::Dispatch {
    let writer = logs.clone();
    broker::launch::log_dispatch(
        true,
        tracing_subscriber::EnvFilter::new("info,broker::http::request_id=debug,openraft=error"),
        move || writer.clone(),
    )
}

fn request_id(answer: &common::http::Answer) -> String {
    answer
        .headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_else(|| panic!("answer {} has an x-request-id", answer.status))
        .to_string()
}

/// Answers, successful or not, carry a request id: a new one, or the caller's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_answer_has_a_request_id() {
    let node = TestNode::start().await;
    info!("--- a success, an API error, an unknown endpoint: each gets a fresh id");
    let mut seen = std::collections::BTreeSet::new();
    for (method, uri, status) in [
        (Method::GET, "/v1/topics", StatusCode::OK),
        (Method::GET, "/v1/topics/nope/queues", StatusCode::NOT_FOUND),
        (Method::GET, "/no/such/endpoint", StatusCode::NOT_FOUND),
        (
            Method::POST,
            "/v1/topics/t/messages",
            StatusCode::BAD_REQUEST,
        ),
    ] {
        let answer = node
            .call(
                method,
                uri,
                Body::from("{"),
                &[("content-type", "application/json")],
            )
            .await;
        assert_eq!(answer.status, status, "{uri}");
        let id = request_id(&answer);
        assert_eq!(id.len(), 16, "{id}");
        assert!(id.bytes().all(|b| b.is_ascii_hexdigit()), "{id}");
        assert!(seen.insert(id), "ids differ between requests");
    }
    info!("--- an acceptable incoming id is kept; an unacceptable one is replaced");
    let answer = node
        .call(
            Method::GET,
            "/health",
            Body::empty(),
            &[("x-request-id", "client-7/abc")],
        )
        .await;
    assert_eq!(request_id(&answer), "client-7/abc");
    let long = "x".repeat(200);
    let answer = node
        .call(
            Method::GET,
            "/health",
            Body::empty(),
            &[("x-request-id", &long)],
        )
        .await;
    let replaced = request_id(&answer);
    assert_ne!(replaced, long);
    assert_eq!(replaced.len(), 16);
    info!("--- the error body keeps API.md's shape (the id is in the header only)");
    let (status, body) = node.get("/v1/topics/nope/queues").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let keys: Vec<&String> = body.as_object().expect("an object").keys().collect();
    assert_eq!(keys, ["code", "leader", "message"]);
    node.stop().await;
}

/// With JSON logs, the line a request logs carries its id, method and route as
/// span fields. The node runs on this thread's runtime (current-thread), so the
/// thread's default subscriber sees its request spans.
#[test]
fn json_log_lines_carry_the_request_id() {
    let logs = Captured::default();
    let _default = tracing::dispatcher::set_default(&json_logs(&logs));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.block_on(async {
        let node = TestNode::start().await;
        let answer = node
            .call(
                Method::POST,
                "/v1/topics/logged/messages",
                json!({"messages": [{"body": "x"}]}).to_string(),
                &[
                    ("x-request-id", "trace-me-123"),
                    ("content-type", "application/json"),
                ],
            )
            .await;
        assert_eq!(answer.status, StatusCode::OK);
        let text =
            String::from_utf8(logs.0.lock().expect("log buffer").clone()).expect("UTF-8 logs");
        let lines: Vec<Value> = text
            .lines()
            .map(|line| {
                serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"))
            })
            .collect();
        assert!(!lines.is_empty(), "some lines were logged");
        let answered = lines
            .iter()
            .find(|line| line["span"]["request_id"] == "trace-me-123")
            .unwrap_or_else(|| panic!("a line carries request_id trace-me-123:\n{text}"));
        assert_eq!(answered["fields"]["message"], "answered", "{answered}");
        assert_eq!(answered["fields"]["status"], 200, "{answered}");
        assert_eq!(answered["span"]["method"], "POST", "{answered}");
        assert_eq!(
            answered["span"]["route"], "/v1/topics/{topic}/messages",
            "{answered}"
        );
        node.stop().await;
    });
}
