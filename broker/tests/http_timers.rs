//! Timer messages (shared/API.md "Timer messages") through the router of a real
//! single-node broker: a message sent with `delay_ms` or `deliver_at` waits in
//! the timer topic, becomes visible in its topic at its time — never before,
//! within a second after, exactly once; a time already passed means now; 2,000
//! timers due in the same second all arrive once within 5 s; a delay past
//! `consumer.max_delay`, or a timer mixed with a delay level, answers 400 and
//! stores nothing.

use crate::common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use axum::http::{Method, StatusCode};
use common::http::{as_array, as_u64, assert_error, now_ms, TestNode};
use serde_json::{json, Value};

/// Reads queue 0 of `topic` from `offset`, answering the messages and the next
/// offset.
async fn pull(node: &TestNode, topic: &str, offset: u64) -> (Vec<Value>, u64) {
    let page = node
        .pull_ok(&format!(
            "/v1/topics/{topic}/queues/0/messages?offset={offset}&max_messages=1024"
        ))
        .await;
    let messages = as_array(&page["messages"], "messages").clone();
    (messages, as_u64(&page["next_offset"], "next_offset"))
}

/// Watches queue 0 of `topic` until `expected` messages arrived or `deadline`
/// passed; answers each message with the wall-clock time it was first seen.
async fn watch(
    node: &TestNode,
    topic: &str,
    expected: usize,
    deadline: Instant,
) -> Vec<(u64, Value)> {
    let mut seen = Vec::new();
    let mut offset = 0;
    while seen.len() < expected && Instant::now() < deadline {
        let (messages, next) = pull(node, topic, offset).await;
        let at = now_ms();
        seen.extend(messages.into_iter().map(|m| (at, m)));
        offset = next;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    seen
}

fn due_of(result: &Value) -> u64 {
    as_u64(&result["deliver_timestamp"], "deliver_timestamp")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timer_is_visible_at_its_time_never_before_and_once() {
    let node = TestNode::start().await;
    node.create_topic(
        "orders",
        json!({"read_queue_nums": 1, "write_queue_nums": 1}),
    )
    .await;
    let now = now_ms();
    let sent = node
        .send_ok(
            "orders",
            vec![
                json!({"body": "in 1.5 s", "delay_ms": 1500, "tags": "T", "keys": ["k1"], "properties": {"p": "v"}}),
                json!({"body": "at +2 s", "deliver_at": now + 2000}),
                json!({"body": "in 2.5 s", "delay_ms": 2500}),
                json!({"body": "already due", "deliver_at": now.saturating_sub(60_000)}),
            ],
        )
        .await;
    let results = as_array(&sent["results"], "results");
    // A timer waits in the timer topic and says when it is due; a time passed is now.
    for result in &results[..3] {
        assert_eq!(result["topic"], "%TIMER%", "{result}");
        assert!(due_of(result) >= now + 1500, "{result}");
    }
    assert_eq!(results[3]["topic"], "orders", "{}", results[3]);
    assert!(
        results[3].get("deliver_timestamp").is_none(),
        "{}",
        results[3]
    );
    let due: BTreeMap<String, u64> = results[..3]
        .iter()
        .map(|r| (r["msg_id"].as_str().expect("msg_id").to_string(), due_of(r)))
        .collect();

    let seen = watch(&node, "orders", 4, Instant::now() + Duration::from_secs(10)).await;
    assert_eq!(seen.len(), 4, "all four arrive: {seen:?}");
    for (at, message) in &seen {
        let id = message["msg_id"].as_str().expect("msg_id");
        let Some(&due) = due.get(id) else {
            assert_eq!(message["body"], "already due");
            continue;
        };
        let stored = as_u64(&message["store_timestamp"], "store_timestamp");
        assert!(
            stored >= due && *at >= due,
            "{id} visible before its time: due {due}, stored {stored}, seen {at}"
        );
        assert!(
            *at <= due + 1000,
            "{id} visible {} ms after its time (the promise is within a second)",
            at - due
        );
        // The timer's own properties are gone; the user's stay.
        let properties = message["properties"].as_object().expect("properties");
        assert!(
            !properties.contains_key("REAL_TOPIC") && !properties.contains_key("DELIVER_TIME_MS"),
            "{message}"
        );
    }
    let first = &seen
        .iter()
        .find(|(_, m)| m["body"] == "in 1.5 s")
        .expect("the first timer")
        .1;
    assert_eq!(first["tags"], "T");
    assert_eq!(first["keys"], json!(["k1"]));
    assert_eq!(first["properties"]["p"], "v");

    // Exactly once: nothing more comes.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (all, _) = pull(&node, "orders", 0).await;
    assert_eq!(all.len(), 4, "each timer once: {all:?}");
    assert_eq!(node.metric("broker_timers_pending").await, 0.0);
    assert_eq!(node.metric("broker_timers_delivered_total").await, 3.0);
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_timers_due_in_the_same_second_arrive_once_within_five_seconds() {
    const TIMERS: u64 = 2000;
    let node = TestNode::start().await;
    node.create_topic(
        "ticks",
        json!({"read_queue_nums": 1, "write_queue_nums": 1}),
    )
    .await;
    // Due within one second, a few seconds out (the sends take a while).
    let second = (now_ms() / 1000 + 4) * 1000;
    for batch in 0..TIMERS / 250 {
        let messages = (0..250)
            .map(|i| {
                let n = batch * 250 + i;
                json!({"body": format!("tick-{n}"), "deliver_at": second + n % 1000})
            })
            .collect();
        node.send_ok("ticks", messages).await;
    }
    assert!(now_ms() < second, "the sends took past the due second");
    assert_eq!(node.metric("broker_timers_pending").await, TIMERS as f64);
    let deadline = Instant::now() + Duration::from_millis(second + 5000 - now_ms());
    let seen = watch(&node, "ticks", TIMERS as usize, deadline).await;
    assert_eq!(seen.len() as u64, TIMERS, "all within 5 s of their second");
    let mut bodies: Vec<&str> = seen
        .iter()
        .map(|(_, m)| m["body"].as_str().expect("body"))
        .collect();
    bodies.sort_unstable();
    bodies.dedup();
    assert_eq!(bodies.len() as u64, TIMERS, "each once");
    for (at, message) in &seen {
        let n: u64 = message["body"].as_str().expect("body")["tick-".len()..]
            .parse()
            .expect("a number");
        assert!(*at >= second + n % 1000, "tick-{n} early");
    }
    let latest = seen.iter().map(|(at, _)| *at).max().unwrap_or_default();
    eprintln!(
        "2,000 timers due in one second: the last visible {} ms after the second began",
        latest - second
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (all, _) = pull(&node, "ticks", 0).await;
    let (more, _) = pull(&node, "ticks", 1024).await;
    assert_eq!((all.len() + more.len()) as u64, TIMERS, "nothing twice");
    assert_eq!(node.metric("broker_timers_pending").await, 0.0);
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timers_past_max_delay_or_mixed_with_a_delay_level_are_refused() {
    let node = TestNode::start_with(|config| {
        config.consumer.max_delay = broker::units::HumanDuration(Duration::from_secs(3600));
    })
    .await;
    node.create_topic(
        "orders",
        json!({"read_queue_nums": 1, "write_queue_nums": 1}),
    )
    .await;
    let uri = "/v1/topics/orders/messages";
    let now = now_ms();
    for (message, says) in [
        (json!({"body": "x", "delay_ms": 3_600_001}), "delay_ms"),
        (
            json!({"body": "x", "deliver_at": now + 3_700_000}),
            "max_delay",
        ),
        (
            json!({"body": "x", "delay_ms": 10, "deliver_at": now + 10}),
            "not both",
        ),
        (
            json!({"body": "x", "delay_ms": 10, "delay_level": 2}),
            "not both",
        ),
        (json!({"body": "x", "delay_ms": -1}), ""),
        (json!({"body": "x", "deliver_at": "tomorrow"}), ""),
    ] {
        // A good message first: the whole batch is refused.
        let answer = node
            .request(
                Method::POST,
                uri,
                Some(json!({"messages": [{"body": "fine", "delay_ms": 5000}, message]})),
            )
            .await;
        assert!(
            answer.1["message"]
                .as_str()
                .unwrap_or_default()
                .contains(says),
            "{message}: {}",
            answer.1
        );
        assert_error(answer, StatusCode::BAD_REQUEST, "BAD_REQUEST");
    }
    // The longest delay allowed is fine.
    node.send_ok(
        "orders",
        vec![json!({"body": "in an hour", "delay_ms": 3_600_000})],
    )
    .await;
    assert_eq!(node.metric("broker_timers_pending").await, 1.0);
    let (stored, _) = pull(&node, "orders", 0).await;
    assert!(stored.is_empty(), "nothing visible: {stored:?}");
    // The timer topic is the broker's.
    let (status, answer) = node
        .request(
            Method::POST,
            "/v1/topics/%25TIMER%25/messages",
            Some(json!({"messages": [{"body": "x"}]})),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    node.stop().await;
}
