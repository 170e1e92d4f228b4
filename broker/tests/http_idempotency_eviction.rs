//! Idempotent sends under a flood of throwaway producer ids, through the router of a
//! real single-node broker (issue 18, finding 8): the dedup table used to be an LRU
//! of 10,000 producers, so 20,000 one-message producers evicted a real producer's
//! window and its retry was stored twice. Now a full table refuses *new* producers
//! (503 UNAVAILABLE, counted in `broker_producer_table_full_total`) and never drops
//! a producer whose window is still kept.

use crate::common;

use axum::http::{Method, StatusCode};
use common::http::{as_array, as_u64, assert_error, TestNode};
use serde_json::{json, Value};
use tracing::info;

const TOPIC: &str = "idem-flood";
/// Throwaway producer ids the hostile client cycles through.
const THROWAWAY_PRODUCERS: usize = 20_000;
/// Messages per hostile request (each with its own producer id): the largest
/// idempotent batch.
const PER_REQUEST: usize = 256;

async fn send(node: &TestNode, messages: Vec<Value>) -> (StatusCode, Value) {
    node.request(
        Method::POST,
        &format!("/v1/topics/{TOPIC}/messages"),
        Some(json!({ "messages": messages })),
    )
    .await
}

fn stamped(producer: &str, sequence: u64, body: &str) -> Value {
    json!({"body": body, "queue_id": 0, "producer_id": producer, "sequence": sequence})
}

/// The number of messages in queue 0 whose body is `body`.
async fn stored_copies(node: &TestNode, body: &str) -> usize {
    let mut copies = 0;
    let mut offset = 0;
    loop {
        let page = node
            .pull_ok(&format!(
                "/v1/topics/{TOPIC}/queues/0/messages?offset={offset}&max_messages=1024"
            ))
            .await;
        let messages = as_array(&page["messages"], "messages");
        copies += messages.iter().filter(|m| m["body"] == body).count();
        let next = as_u64(&page["next_offset"], "next_offset");
        if messages.is_empty() || next == offset {
            return copies;
        }
        offset = next;
    }
}

/// A real producer sends; a hostile client then cycles through 20,000 throwaway
/// producer ids. The real producer's retry still answers its first result and is
/// stored once; the flood is refused with 503 UNAVAILABLE saying the producer table
/// is full once it is, and counted; the real producer keeps sending new sequences,
/// and a send without `producer_id` is unaffected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throwaway_producer_ids_cannot_evict_a_real_producers_window() {
    let node = TestNode::start().await;
    node.create_topic(TOPIC, json!({"read_queue_nums": 1, "write_queue_nums": 1}))
        .await;

    info!("--- the real producer stores sequence 1");
    let (status, first) = send(&node, vec![stamped("real", 1, "precious")]).await;
    assert_eq!(status, StatusCode::OK, "{first}");
    let original = first["results"][0].clone();

    info!("--- {THROWAWAY_PRODUCERS} throwaway producer ids, {PER_REQUEST} per request");
    let (mut accepted, mut refused) = (0usize, 0usize);
    for chunk in (0..THROWAWAY_PRODUCERS)
        .collect::<Vec<_>>()
        .chunks(PER_REQUEST)
    {
        let messages = chunk
            .iter()
            .map(|i| stamped(&format!("throwaway-{i}"), 0, "junk"))
            .collect();
        let (status, body) = send(&node, messages).await;
        if status == StatusCode::OK {
            accepted += chunk.len();
            continue;
        }
        refused += chunk.len();
        let message = body["message"].as_str().unwrap_or_default().to_string();
        assert_error(
            (status, body.clone()),
            StatusCode::SERVICE_UNAVAILABLE,
            "UNAVAILABLE",
        );
        assert!(
            message.contains("producer table is full"),
            "the refusal says why: {body}"
        );
    }
    info!(accepted, refused, "flood over");

    info!("--- the real producer's retry answers the first result, stored once");
    let (status, retry) = send(&node, vec![stamped("real", 1, "precious")]).await;
    assert_eq!(status, StatusCode::OK, "{retry}");
    assert_eq!(
        retry["results"][0], original,
        "the retry must answer the first store, not a second one"
    );
    assert_eq!(stored_copies(&node, "precious").await, 1, "stored once");

    info!("--- the table filled up to its cap, then refused the flood, and counted");
    // The real producer holds one place; a request is refused whole when its new
    // producers do not all fit, so fewer than one request's worth stay unused.
    let room = broker::replication::group_state::MAX_PRODUCERS - 1;
    assert!(
        accepted <= room && accepted + PER_REQUEST > room,
        "{accepted} throwaway producers accepted, the table has room for {room}"
    );
    assert_eq!(accepted + refused, THROWAWAY_PRODUCERS);
    assert!(
        node.metric("broker_producer_table_full_total").await >= 1.0,
        "the refusals are counted"
    );

    info!("--- a known producer keeps sending; a send without producer_id is unaffected");
    let (status, body) = send(&node, vec![stamped("real", 2, "more")]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = send(&node, vec![json!({"body": "plain", "queue_id": 0})]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    node.stop().await;
}
