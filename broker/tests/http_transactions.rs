//! Transactional messages (shared/API.md "Transactional messages") through the
//! router of a real single-node broker: a send with `transaction` stores half
//! messages no consumer sees and answers a transaction id; a commit makes them
//! visible once, a rollback never; a repeat answers the same, the opposite 409, an
//! unknown id 404; an open transaction is offered to its producer group's checks
//! and rolled back by the broker after its last one; bad requests get a 400.

use crate::common;

use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Method, StatusCode};
use common::http::{as_array, as_u64, assert_error, TestNode};
use serde_json::{json, Value};

async fn pull_bodies(node: &TestNode, topic: &str) -> Vec<Value> {
    let page = node
        .pull_ok(&format!(
            "/v1/topics/{topic}/queues/0/messages?offset=0&max_messages=1024"
        ))
        .await;
    as_array(&page["messages"], "messages").clone()
}

/// Sends `bodies` as one transaction of producer group `pg`; answers its id and
/// the send's results.
async fn send_transaction(
    node: &TestNode,
    topic: &str,
    pg: &str,
    bodies: &[&str],
) -> (String, Vec<Value>) {
    let messages: Vec<Value> = bodies
        .iter()
        .map(|b| json!({"body": b, "tags": "T", "keys": [format!("k-{b}")], "properties": {"p": *b}}))
        .collect();
    let (status, answer) = node
        .request(
            Method::POST,
            &format!("/v1/topics/{topic}/messages"),
            Some(json!({"messages": messages, "transaction": {"producer_group": pg}})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "transactional send: {answer}");
    let id = answer["transaction_id"]
        .as_str()
        .unwrap_or_else(|| panic!("a transaction id: {answer}"))
        .to_string();
    assert_eq!(id.len(), 32, "{id}");
    (id, as_array(&answer["results"], "results").clone())
}

async fn resolve(node: &TestNode, id: &str, action: &str) -> (StatusCode, Value) {
    node.request(
        Method::POST,
        &format!("/v1/transactions/{id}/{action}"),
        None,
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_shows_the_batch_once_and_a_rollback_never() {
    let node = TestNode::start().await;
    node.create_topic(
        "orders",
        json!({"read_queue_nums": 1, "write_queue_nums": 1}),
    )
    .await;

    let (id, results) = send_transaction(&node, "orders", "pg", &["a", "b", "c"]).await;
    for result in &results {
        assert_eq!(
            result["topic"], "%HALF%",
            "half messages wait in the half topic: {result}"
        );
    }
    assert!(
        pull_bodies(&node, "orders").await.is_empty(),
        "invisible until committed"
    );
    assert_eq!(node.metric("broker_transactions_open").await, 1.0);

    let (status, committed) = resolve(&node, &id, "commit").await;
    assert_eq!(status, StatusCode::OK, "{committed}");
    assert_eq!(committed["status"], "COMMITTED");
    assert_eq!(committed["transaction_id"], id.as_str());
    assert_eq!(committed["topic"], "orders");
    assert_eq!(as_u64(&committed["messages"], "messages"), 3);
    let visible = pull_bodies(&node, "orders").await;
    let bodies: Vec<&str> = visible
        .iter()
        .map(|m| m["body"].as_str().expect("body"))
        .collect();
    assert_eq!(bodies, ["a", "b", "c"]);
    for (message, result) in visible.iter().zip(&results) {
        assert_eq!(
            message["msg_id"], result["msg_id"],
            "a committed message keeps its id"
        );
        assert_eq!(message["tags"], "T");
        assert_eq!(
            message["properties"],
            json!({"p": message["body"]}),
            "{message}"
        );
    }
    // A repeat answers the same; the opposite is a conflict; nothing changes.
    assert_eq!(
        resolve(&node, &id, "commit").await,
        (StatusCode::OK, committed.clone())
    );
    assert_error(
        resolve(&node, &id, "rollback").await,
        StatusCode::CONFLICT,
        "CONFLICT",
    );
    // An empty object is a body too.
    let answer = node
        .request(
            Method::POST,
            &format!("/v1/transactions/{id}/commit"),
            Some(json!({})),
        )
        .await;
    assert_eq!(answer, (StatusCode::OK, committed));

    let (second, _) = send_transaction(&node, "orders", "pg", &["x", "y"]).await;
    let (status, rolled_back) = resolve(&node, &second, "rollback").await;
    assert_eq!(status, StatusCode::OK, "{rolled_back}");
    assert_eq!(rolled_back["status"], "ROLLED_BACK");
    assert_eq!(rolled_back["by_timeout"], false);
    assert_eq!(
        resolve(&node, &second, "rollback").await,
        (StatusCode::OK, rolled_back)
    );
    assert_error(
        resolve(&node, &second, "commit").await,
        StatusCode::CONFLICT,
        "CONFLICT",
    );
    assert_eq!(
        pull_bodies(&node, "orders").await.len(),
        3,
        "a rolled-back batch never shows"
    );

    assert_error(
        resolve(&node, "0123456789ABCDEF0123456789ABCDEF", "commit").await,
        StatusCode::NOT_FOUND,
        "TRANSACTION_NOT_FOUND",
    );
    assert_eq!(node.metric("broker_transactions_open").await, 0.0);
    assert_eq!(
        node.metric("broker_transactions_committed_total").await,
        1.0
    );
    assert_eq!(
        node.metric("broker_transactions_rolled_back_total").await,
        1.0
    );
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_transaction_requests_get_a_400_and_store_nothing() {
    let node = TestNode::start().await;
    node.create_topic(
        "orders",
        json!({"read_queue_nums": 1, "write_queue_nums": 1}),
    )
    .await;
    let uri = "/v1/topics/orders/messages";
    for body in [
        json!({"messages": [{"body": "x"}], "transaction": {}}),
        json!({"messages": [{"body": "x"}], "transaction": {"producer_group": ""}}),
        json!({"messages": [{"body": "x"}], "transaction": {"producer_group": "a b"}}),
        json!({"messages": [{"body": "x"}], "transaction": {"producer_group": "pg", "extra": 1}}),
        json!({"messages": [{"body": "x", "producer_id": "p", "sequence": 1}], "transaction": {"producer_group": "pg"}}),
        json!({"messages": [{"body": "x", "delay_level": 2}], "transaction": {"producer_group": "pg"}}),
        json!({"messages": [{"body": "x", "delay_ms": 5000}], "transaction": {"producer_group": "pg"}}),
    ] {
        let answer = node.request(Method::POST, uri, Some(body.clone())).await;
        assert_eq!(answer.0, StatusCode::BAD_REQUEST, "{body}: {}", answer.1);
        assert_error(answer, StatusCode::BAD_REQUEST, "BAD_REQUEST");
    }
    assert_eq!(node.metric("broker_transactions_open").await, 0.0);
    for (id, action) in [("nothex", "commit"), ("0123", "rollback")] {
        assert_error(
            resolve(&node, id, action).await,
            StatusCode::BAD_REQUEST,
            "BAD_REQUEST",
        );
    }
    let (id, _) = send_transaction(&node, "orders", "pg", &["a"]).await;
    let answer = node
        .request(
            Method::POST,
            &format!("/v1/transactions/{id}/commit"),
            Some(json!({"commit": true})),
        )
        .await;
    assert_error(answer, StatusCode::BAD_REQUEST, "BAD_REQUEST");
    let answer = node
        .call(
            Method::POST,
            &format!("/v1/transactions/{id}/commit"),
            Body::from("not json"),
            &[("content-type", "application/json")],
        )
        .await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    assert!(pull_bodies(&node, "orders").await.is_empty());
    assert_error(
        node.get("/v1/producer-groups/pg/transaction-checks?max_wait_ms=30001")
            .await,
        StatusCode::BAD_REQUEST,
        "BAD_REQUEST",
    );
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_transaction_is_checked_then_rolled_back_after_its_last_check() {
    let node = TestNode::start_with(|config| {
        config.transaction.check_after = broker::units::HumanDuration(Duration::from_millis(300));
        config.transaction.check_interval =
            broker::units::HumanDuration(Duration::from_millis(300));
        config.transaction.max_checks = 2;
    })
    .await;
    node.create_topic(
        "orders",
        json!({"read_queue_nums": 1, "write_queue_nums": 1}),
    )
    .await;
    let (answered, _) = send_transaction(&node, "orders", "pg", &["a", "b"]).await;
    let (abandoned, _) = send_transaction(&node, "orders", "pg", &["z"]).await;
    // Another producer group's transaction is not offered to pg.
    let (other, _) = send_transaction(&node, "orders", "other-pg", &["o"]).await;

    let checks_uri = "/v1/producer-groups/pg/transaction-checks?max_wait_ms=5000";
    let mut seen: Vec<(String, u64)> = Vec::new();
    let started = Instant::now();
    while seen.len() < 2 && started.elapsed() < Duration::from_secs(10) {
        let (status, answer) = node.get(checks_uri).await;
        assert_eq!(status, StatusCode::OK, "{answer}");
        for check in as_array(&answer["checks"], "checks") {
            let id = check["transaction_id"].as_str().expect("id").to_string();
            assert_ne!(id, other, "another group's transaction");
            assert_eq!(check["topic"], "orders");
            let messages = as_array(&check["messages"], "messages");
            let bodies: Vec<&str> = messages
                .iter()
                .map(|m| m["body"].as_str().expect("body"))
                .collect();
            if id == answered {
                assert_eq!(bodies, ["a", "b"]);
            } else {
                assert_eq!(bodies, ["z"]);
            }
            assert_eq!(messages[0]["topic"], "orders", "shown as their topic's");
            assert!(messages[0]["properties"].get("TRAN_ID").is_none());
            seen.push((id, as_u64(&check["check_count"], "check_count")));
        }
    }
    assert!(
        started.elapsed() >= Duration::from_millis(250),
        "offered before check_after"
    );
    assert_eq!(seen.len(), 2, "both offered once: {seen:?}");
    assert!(seen.iter().all(|(_, count)| *count == 1), "{seen:?}");
    // The producer answers one check.
    assert_eq!(resolve(&node, &answered, "commit").await.0, StatusCode::OK);

    // The other is offered again (its second check)...
    let started = Instant::now();
    let second = loop {
        let (status, answer) = node.get(checks_uri).await;
        assert_eq!(status, StatusCode::OK, "{answer}");
        if let Some(check) = as_array(&answer["checks"], "checks").first() {
            break check.clone();
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "no second check"
        );
    };
    assert_eq!(second["transaction_id"], abandoned.as_str());
    assert_eq!(as_u64(&second["check_count"], "check_count"), 2);
    // ...then rolled back by the broker, as is the one nobody ever polled for.
    let started = Instant::now();
    while node.metric("broker_transactions_timed_out_total").await < 2.0 {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "never rolled back"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (status, rolled) = resolve(&node, &abandoned, "rollback").await;
    assert_eq!(status, StatusCode::OK, "{rolled}");
    assert_eq!(rolled["by_timeout"], true, "{rolled}");
    assert_error(
        resolve(&node, &abandoned, "commit").await,
        StatusCode::CONFLICT,
        "CONFLICT",
    );
    assert_error(
        resolve(&node, &other, "commit").await,
        StatusCode::CONFLICT,
        "CONFLICT",
    );
    let bodies: Vec<String> = pull_bodies(&node, "orders")
        .await
        .iter()
        .map(|m| m["body"].as_str().expect("body").to_string())
        .collect();
    assert_eq!(
        bodies,
        ["a", "b"],
        "the answered one once, the abandoned one never"
    );
    assert!(node.metric("broker_transaction_checks_total").await >= 3.0);
    assert_eq!(
        node.metric("broker_transactions_timed_out_total").await,
        2.0
    );
    node.stop().await;
}
