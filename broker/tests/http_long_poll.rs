//! Long polling on `GET /v1/topics/{topic}/queues/{queue_id}/messages?max_wait_ms=…`
//! through the router of a real single-node broker: a held pull answers as soon as
//! a message arrives, and NO_NEW_MSG once the wait is over when none does.

use crate::common;

use std::time::{Duration, Instant};

use axum::http::StatusCode;
use common::http::{as_array, TestNode};
use serde_json::json;
use tracing::info;

/// Longest the test waits for the pull to be held before sending.
const HOLD_DEADLINE: Duration = Duration::from_secs(5);

/// A pull with `max_wait_ms=5000` at the end of a queue is held (the node's
/// `broker_held_polls` gauge shows it, and the pull has not answered); a message sent
/// from another task then makes it answer FOUND with that message, within half of
/// its wait — it did not sleep out the 5 s. After it answered, nothing is held.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_pull_answers_when_a_message_arrives() {
    let node = TestNode::start().await;
    node.send_ok("lp", vec![json!({"body": "old", "queue_id": 0})])
        .await;

    info!("--- start a pull at the end of queue 0, willing to wait 5 s");
    let router = node.router.clone();
    let pull = tokio::spawn(async move {
        use tower::ServiceExt;
        let request = axum::http::Request::builder()
            .header(
                "authorization",
                format!("Bearer {}", broker::config::TEST_ADMIN_TOKEN),
            )
            .uri("/v1/topics/lp/queues/0/messages?offset=1&max_wait_ms=5000")
            .body(axum::body::Body::empty())
            .expect("a well-formed request");
        let response = router.oneshot(request).await.expect("infallible router");
        let status = response.status();
        let body = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .expect("reading the pull answer");
        (status, Instant::now(), body)
    });

    info!("--- wait until the node holds it");
    let deadline = Instant::now() + HOLD_DEADLINE;
    while node.metric("broker_held_polls").await < 1.0 {
        assert!(
            Instant::now() < deadline,
            "the pull was not held within {HOLD_DEADLINE:?}"
        );
        assert!(!pull.is_finished(), "the pull answered before any message");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(!pull.is_finished(), "a held pull has not answered");

    info!("--- send a message from this task while the pull waits");
    let sent_at = Instant::now();
    let sent = node
        .send_ok("lp", vec![json!({"body": "new", "queue_id": 0})])
        .await;
    let (status, answered_at, body) = tokio::time::timeout(Duration::from_millis(2500), pull)
        .await
        .expect("the pull answered within half of its wait after the send")
        .expect("the pull task did not panic");
    assert!(answered_at >= sent_at, "the pull answered after the send");

    info!("--- it answered FOUND with the new message");
    assert_eq!(status, StatusCode::OK);
    let body: serde_json::Value = serde_json::from_slice(&body).expect("a JSON pull answer");
    assert_eq!(body["status"], "FOUND", "{body}");
    assert_eq!(body["next_offset"], 2, "{body}");
    let messages = as_array(&body["messages"], "messages");
    assert_eq!(messages.len(), 1, "{body}");
    assert_eq!(messages[0]["body"], "new");
    assert_eq!(messages[0]["msg_id"], sent["results"][0]["msg_id"]);
    assert_eq!(node.metric("broker_held_polls").await, 0.0);
    node.stop().await;
}

/// A pull with `max_wait_ms` and no message arriving answers NO_NEW_MSG, and only
/// after waiting (not at once); a message to another queue of the topic does not
/// wake it with anything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_pull_answers_no_new_msg_after_the_wait() {
    let node = TestNode::start().await;
    node.create_topic("quiet", json!({})).await;

    info!("--- pull the empty queue 0 with a 400 ms wait; meanwhile send to queue 1");
    let started = Instant::now();
    let router = node.router.clone();
    let pull = tokio::spawn(async move {
        use tower::ServiceExt;
        let request = axum::http::Request::builder()
            .header(
                "authorization",
                format!("Bearer {}", broker::config::TEST_ADMIN_TOKEN),
            )
            .uri("/v1/topics/quiet/queues/0/messages?offset=0&max_wait_ms=400")
            .body(axum::body::Body::empty())
            .expect("a well-formed request");
        let response = router.oneshot(request).await.expect("infallible router");
        let status = response.status();
        let body = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .expect("reading the pull answer");
        (status, body)
    });
    node.send_ok("quiet", vec![json!({"body": "elsewhere", "queue_id": 1})])
        .await;
    let (status, body) = pull.await.expect("the pull task did not panic");
    let waited = started.elapsed();

    info!("--- NO_NEW_MSG, after the wait");
    assert_eq!(status, StatusCode::OK);
    let body: serde_json::Value = serde_json::from_slice(&body).expect("a JSON pull answer");
    assert_eq!(body["status"], "NO_NEW_MSG", "{body}");
    assert_eq!(body["next_offset"], 0, "{body}");
    assert!(as_array(&body["messages"], "messages").is_empty());
    assert!(
        waited >= Duration::from_millis(400),
        "the pull waited out max_wait_ms (answered after {waited:?})"
    );

    info!("--- without max_wait_ms the same pull answers at once");
    let pull = node
        .pull_ok("/v1/topics/quiet/queues/0/messages?offset=0")
        .await;
    assert_eq!(pull["status"], "NO_NEW_MSG", "{pull}");
    node.stop().await;
}

/// Held polls are bounded by `http.max_held_polls`: with a cap of one and one pull
/// held, a second long poll is answered at once (NO_NEW_MSG) instead of being held;
/// the first is still woken by a message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_polls_are_capped() {
    let node = TestNode::start_with(|config| config.http.max_held_polls = 1).await;
    node.create_topic("capped", json!({})).await;

    info!("--- hold one pull (5 s wait) on queue 0");
    let router = node.router.clone();
    let held = tokio::spawn(async move {
        use tower::ServiceExt;
        let request = axum::http::Request::builder()
            .header(
                "authorization",
                format!("Bearer {}", broker::config::TEST_ADMIN_TOKEN),
            )
            .uri("/v1/topics/capped/queues/0/messages?offset=0&max_wait_ms=5000")
            .body(axum::body::Body::empty())
            .expect("a well-formed request");
        let response = router.oneshot(request).await.expect("infallible router");
        let body = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .expect("reading the pull answer");
        serde_json::from_slice::<serde_json::Value>(&body).expect("a JSON pull answer")
    });
    let deadline = Instant::now() + HOLD_DEADLINE;
    while node.metric("broker_held_polls").await < 1.0 {
        assert!(Instant::now() < deadline, "the pull was not held");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    info!("--- a second long poll (5 s wait) is answered at once");
    let second = tokio::time::timeout(
        Duration::from_millis(2500),
        node.pull_ok("/v1/topics/capped/queues/1/messages?offset=0&max_wait_ms=5000"),
    )
    .await
    .expect("the second pull was not held");
    assert_eq!(second["status"], "NO_NEW_MSG", "{second}");
    assert!(!held.is_finished(), "the first pull is still held");

    info!("--- a message wakes the first");
    node.send_ok("capped", vec![json!({"body": "wake", "queue_id": 0})])
        .await;
    let first = tokio::time::timeout(Duration::from_millis(2500), held)
        .await
        .expect("the held pull answered after the send")
        .expect("the pull task did not panic");
    assert_eq!(first["status"], "FOUND", "{first}");
    node.stop().await;
}
