//! `mqctl receive`, `ack` and `nack` against a fake node that serves the
//! receive-and-ack endpoints with fixed answers in the shape shared/API.md gives
//! them: what each command sends, what it prints (table and JSON), and how it
//! exits (1 when a handle is not acked or a lease has expired, 2 for a bad
//! argument).

use crate::mqctl_support;

use std::sync::{Arc, Mutex};

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use mqctl_support::{init_tracing, run_mqctl};
use serde_json::{json, Value};
use tracing::info;

const FIRST: &str = "1:broker-a:orders:0:7:1:1700000030000:billing";
const SECOND: &str = "1:broker-a:orders:1:3:2:1700000030000:billing";

/// What the fake node was sent: (path, body) per request.
type Requests = Arc<Mutex<Vec<(String, Value)>>>;

fn record(requests: &Requests, path: String, body: &Value) {
    requests
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push((path, body.clone()));
}

fn received(handle: &str, queue_id: u32, offset: u64, attempt: u32, body: &str) -> Value {
    json!({
        "msg_id": format!("id-{queue_id}-{offset}"), "topic": "orders",
        "queue_id": queue_id, "queue_offset": offset, "commit_log_offset": 0,
        "body": body, "tags": "A", "keys": [], "properties": {},
        "born_timestamp": 1_700_000_000_000u64, "store_timestamp": 1_700_000_000_000u64,
        "reconsume_times": 0, "receipt_handle": handle, "delivery_attempt": attempt,
        "invisible_until": 1_700_000_030_000u64, "broker_group": "broker-a",
    })
}

async fn receive(
    State(requests): State<Requests>,
    Path((group, topic)): Path<(String, String)>,
    Json(body): Json<Value>,
) -> Json<Value> {
    record(&requests, format!("{group}/{topic}/receive"), &body);
    Json(json!({"messages": [
        received(FIRST, 0, 7, 1, "hello"),
        received(SECOND, 1, 3, 2, "again"),
    ]}))
}

/// `OK`, except `EXPIRED` for handles containing `gone` and `INVALID` for `bogus`.
async fn ack(
    State(requests): State<Requests>,
    Path(group): Path<String>,
    Json(body): Json<Value>,
) -> Json<Value> {
    record(&requests, format!("{group}/ack"), &body);
    let results: Vec<Value> = body["receipt_handles"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|handle| {
            let text = handle.as_str().unwrap_or_default();
            let status = if text.contains("gone") {
                "EXPIRED"
            } else if text.contains("bogus") {
                "INVALID"
            } else {
                "OK"
            };
            json!({"receipt_handle": handle, "status": status})
        })
        .collect();
    Json(json!({ "results": results }))
}

/// A new handle (the old one with `'`), or 409 `EXPIRED` for handles containing
/// `gone`.
async fn change_invisible(
    State(requests): State<Requests>,
    Path(group): Path<String>,
    Json(body): Json<Value>,
) -> Response {
    record(&requests, format!("{group}/change-invisible"), &body);
    let handle = body["receipt_handle"].as_str().unwrap_or_default();
    if handle.contains("gone") {
        let error = json!({"code": "EXPIRED", "message": "the lease ran out", "leader": null});
        return (StatusCode::CONFLICT, Json(error)).into_response();
    }
    Json(json!({"receipt_handle": format!("{handle}'"), "invisible_until": 1_700_000_060_000u64}))
        .into_response()
}

/// Serves the fake on an ephemeral loopback port; returns its base URL.
async fn fake_node(requests: Requests) -> anyhow::Result<(String, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    let app = Router::new()
        .route("/v1/groups/{group}/topics/{topic}/receive", post(receive))
        .route("/v1/groups/{group}/ack", post(ack))
        .route(
            "/v1/groups/{group}/change-invisible",
            post(change_invisible),
        )
        .with_state(requests);
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok((url, server))
}

/// The requests to paths ending in `suffix`, oldest first; the log emptied.
fn take(requests: &Requests, suffix: &str) -> Vec<Value> {
    let mut all = requests.lock().unwrap_or_else(|e| e.into_inner());
    let (taken, kept): (Vec<_>, Vec<_>) = all.drain(..).partition(|(p, _)| p.ends_with(suffix));
    *all = kept;
    taken.into_iter().map(|(_, body)| body).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receive_ack_and_nack() -> anyhow::Result<()> {
    init_tracing();
    let requests = Requests::default();
    let (url, server) = fake_node(Arc::clone(&requests)).await?;

    info!("--- receive: every option goes into the request; a table with the handles");
    let run = run_mqctl(
        &url,
        &[
            "receive",
            "billing",
            "orders",
            "--max",
            "2",
            "--invisible-ms",
            "5000",
            "--wait-ms",
            "100",
            "--tags",
            "A||B",
            "--fifo",
        ],
    )
    .await
    .ok();
    let sent = take(&requests, "billing/orders/receive");
    assert_eq!(
        sent,
        [
            json!({"max_messages": 2, "invisible_ms": 5000, "max_wait_ms": 100, "tags": "A||B", "fifo": true})
        ]
    );
    let rows = run.table();
    assert_eq!(rows.len(), 2, "{}", run.stdout);
    assert_eq!(rows[0]["QUEUE"], "broker-a/0");
    assert_eq!(rows[0]["OFFSET"], "7");
    assert_eq!(rows[0]["RECEIPT_HANDLE"], FIRST);
    assert_eq!(rows[0]["BODY"], "hello");
    assert_eq!(rows[1]["ATTEMPT"], "2");
    assert_eq!(rows[1]["INVISIBLE_UNTIL"], "2023-11-14T22:13:50.000Z");
    assert!(take(&requests, "/ack").is_empty(), "no ack without --ack");

    info!("--- receive --json --ack: the messages as JSON, then one ack of both");
    let run = run_mqctl(&url, &["--json", "receive", "billing", "orders", "--ack"])
        .await
        .ok();
    let printed = run.json();
    assert_eq!(printed["group"], "billing");
    assert_eq!(printed["messages"][1]["receipt_handle"], SECOND);
    assert_eq!(printed["messages"][0]["body"], "hello");
    assert_eq!(
        take(&requests, "billing/ack"),
        [json!({"receipt_handles": [FIRST, SECOND]})]
    );
    assert!(run.stderr.contains("acked 2 of 2"), "{}", run.stderr);
    let defaults = take(&requests, "/receive");
    assert_eq!(
        defaults,
        [json!({"max_messages": 16, "invisible_ms": 30000, "max_wait_ms": 0, "fifo": false})]
    );

    info!("--- ack: each handle's status; exit 1 when one is not OK");
    let run = run_mqctl(&url, &["ack", "billing", FIRST, "gone-1", "bogus-2"]).await;
    assert_eq!(run.code, Some(1), "{run:?}");
    let statuses: Vec<(String, String)> = run
        .table()
        .into_iter()
        .map(|row| (row["RECEIPT_HANDLE"].clone(), row["STATUS"].clone()))
        .collect();
    assert_eq!(
        statuses,
        [
            (FIRST.to_string(), "OK".to_string()),
            ("gone-1".into(), "EXPIRED".into()),
            ("bogus-2".into(), "INVALID".into()),
        ]
    );
    assert!(
        run.stderr
            .starts_with("error: FAILED: 2 of 3 handles not acked"),
        "{run:?}"
    );
    let run = run_mqctl(&url, &["--json", "ack", "billing", SECOND])
        .await
        .ok();
    assert_eq!(run.json()["results"][0]["status"], "OK");
    take(&requests, "/ack");

    info!("--- nack: at once by default; prints the new handle");
    let run = run_mqctl(&url, &["nack", "billing", FIRST]).await.ok();
    assert_eq!(
        take(&requests, "billing/change-invisible"),
        [json!({"receipt_handle": FIRST, "invisible_ms": 0})]
    );
    let rows = run.table();
    assert_eq!(rows[0]["RECEIPT_HANDLE"], format!("{FIRST}'"));
    assert_eq!(rows[0]["INVISIBLE_UNTIL"], "2023-11-14T22:14:20.000Z");
    let run = run_mqctl(
        &url,
        &[
            "--json",
            "nack",
            "billing",
            SECOND,
            "--invisible-ms",
            "60000",
        ],
    )
    .await
    .ok();
    assert_eq!(run.json()["receipt_handle"], format!("{SECOND}'"));
    assert_eq!(
        take(&requests, "/change-invisible"),
        [json!({"receipt_handle": SECOND, "invisible_ms": 60000})]
    );

    info!("--- nack of an expired lease: EXPIRED, exit 1");
    let run = run_mqctl(&url, &["nack", "billing", "gone-3"]).await;
    assert_eq!(run.code, Some(1), "{run:?}");
    assert!(run.stderr.starts_with("error: EXPIRED: "), "{run:?}");

    info!("--- out of the contract's bounds: refused before sending, exit 2");
    take(&requests, "");
    for args in [
        &["nack", "billing", FIRST, "--invisible-ms", "500"][..],
        &["receive", "billing", "orders", "--max", "300"],
        &["receive", "billing", "orders", "--invisible-ms", "999"],
        &["ack", "billing"],
    ] {
        let run = run_mqctl(&url, args).await;
        assert_eq!(run.code, Some(2), "{run:?}");
    }
    assert!(take(&requests, "").is_empty(), "nothing was sent");
    server.abort();
    Ok(())
}
