//! A topic's queue offsets through the router of a real single-node broker:
//! `GET /v1/topics/{topic}/queues` and the offset by store time
//! `GET /v1/topics/{topic}/queues/{queue_id}/offset?timestamp=MS`.

use crate::common;

use std::time::{Duration, Instant};

use axum::http::StatusCode;
use common::http::{as_array, as_u64, assert_error, assert_fields, now_ms, TestNode};
use serde_json::json;
use tracing::info;

/// `GET /v1/topics/{topic}/queues` lists every queue of the topic (as many as the
/// larger of its read and write queue counts) with the group and its min/max offsets,
/// which follow the sends; an unknown topic is TOPIC_NOT_FOUND.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queues_list_every_queue_with_its_offsets() {
    let node = TestNode::start().await;
    node.create_topic("q", json!({"read_queue_nums": 2, "write_queue_nums": 3}))
        .await;

    info!("--- a fresh topic: three empty queues");
    let (status, body) = node.get("/v1/topics/q/queues").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["topic"], "q", "{body}");
    let queues = as_array(&body["queues"], "queues");
    assert_eq!(queues.len(), 3, "{body}");
    for (i, queue) in queues.iter().enumerate() {
        assert_fields(
            queue,
            &["group", "queue_id", "min_offset", "max_offset"],
            "a queue",
        );
        assert_eq!(queue["group"], "broker-a", "{queue}");
        assert_eq!(as_u64(&queue["queue_id"], "queue_id"), i as u64, "{queue}");
        assert_eq!(queue["min_offset"], 0, "{queue}");
        assert_eq!(queue["max_offset"], 0, "{queue}");
    }

    info!("--- three messages to queue 0, one to queue 2");
    node.send_ok(
        "q",
        vec![
            json!({"body": "a", "queue_id": 0}),
            json!({"body": "b", "queue_id": 2}),
            json!({"body": "c", "queue_id": 0}),
            json!({"body": "d", "queue_id": 0}),
        ],
    )
    .await;
    let (_, body) = node.get("/v1/topics/q/queues").await;
    let max: Vec<u64> = as_array(&body["queues"], "queues")
        .iter()
        .map(|q| as_u64(&q["max_offset"], "max_offset"))
        .collect();
    assert_eq!(max, [3, 0, 1], "{body}");

    info!("--- unknown topic");
    assert_error(
        node.get("/v1/topics/nobody/queues").await,
        StatusCode::NOT_FOUND,
        "TOPIC_NOT_FOUND",
    );
    node.stop().await;
}

/// The offset by time is the first offset whose store time is >= the timestamp: 0
/// for any time up to the first message's, the second batch's first offset for a time
/// after the first message and up to the second batch's, `max_offset` for a time after
/// every message, and 0 on an empty queue. Bad requests are refused with the error
/// shape.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offset_by_timestamp_finds_the_first_message_stored_at_or_after() {
    let node = TestNode::start().await;
    let offset = |timestamp: u64| {
        let node = &node;
        async move {
            let (status, body) = node
                .get(&format!(
                    "/v1/topics/t/queues/0/offset?timestamp={timestamp}"
                ))
                .await;
            assert_eq!(status, StatusCode::OK, "{body}");
            as_u64(&body["offset"], "offset")
        }
    };

    info!("--- one message, then (once the clock moved on) a batch of two");
    let first = node
        .send_ok("t", vec![json!({"body": "a", "queue_id": 0})])
        .await;
    let t0 = as_u64(&first["results"][0]["store_timestamp"], "store_timestamp");
    let deadline = Instant::now() + Duration::from_secs(2);
    while now_ms() <= t0 {
        assert!(
            Instant::now() < deadline,
            "the clock did not move past {t0}"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let second = node
        .send_ok(
            "t",
            vec![
                json!({"body": "b", "queue_id": 0}),
                json!({"body": "c", "queue_id": 0}),
            ],
        )
        .await;
    let t1 = as_u64(&second["results"][0]["store_timestamp"], "store_timestamp");
    assert!(
        t1 > t0,
        "the second batch was stored later ({t0} then {t1})"
    );

    info!("--- look the offsets up by time");
    assert_eq!(offset(0).await, 0);
    assert_eq!(offset(t0).await, 0);
    assert_eq!(offset(t0 + 1).await, 1);
    assert_eq!(offset(t1).await, 1);
    assert_eq!(offset(t1 + 1).await, 3, "after every message: max_offset");
    assert_eq!(offset(u64::MAX).await, 3);

    info!("--- an empty queue of the topic answers 0");
    let (status, body) = node
        .get(&format!("/v1/topics/t/queues/3/offset?timestamp={t1}"))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body, json!({"offset": 0}));

    for (case, uri) in [
        ("missing timestamp", "/v1/topics/t/queues/0/offset"),
        (
            "timestamp not a number",
            "/v1/topics/t/queues/0/offset?timestamp=yesterday",
        ),
        (
            "negative timestamp",
            "/v1/topics/t/queues/0/offset?timestamp=-5",
        ),
        (
            "queue id not a number",
            "/v1/topics/t/queues/x/offset?timestamp=0",
        ),
    ] {
        info!("--- {case}");
        assert_error(node.get(uri).await, StatusCode::BAD_REQUEST, "BAD_REQUEST");
    }
    info!("--- queue beyond the topic's");
    assert_error(
        node.get("/v1/topics/t/queues/4/offset?timestamp=0").await,
        StatusCode::NOT_FOUND,
        "QUEUE_NOT_FOUND",
    );
    info!("--- unknown topic");
    assert_error(
        node.get("/v1/topics/nobody/queues/0/offset?timestamp=0")
            .await,
        StatusCode::NOT_FOUND,
        "TOPIC_NOT_FOUND",
    );
    node.stop().await;
}
