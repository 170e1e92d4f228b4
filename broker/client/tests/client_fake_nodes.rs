//! The client's leader following and the producer's retries against scripted fake
//! nodes (small axum servers), so each rule is exercised exactly: a `NOT_LEADER`
//! redirect is followed and remembered, a retried batch carries the same sequences,
//! and a refusal is not retried.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use axum::{Json, Router};
use broker_client::api::{ErrorBody, MessageInput, SendRequest, SendResponse, SendResultView};
use broker_client::{BrokerClient, ClientOptions, Producer, ProducerOptions};
use tracing::info;

/// What a fake node answers to each request, in order (the last one repeats), and
/// what it received.
#[derive(Default)]
struct Script {
    answers: Vec<(u16, serde_json::Value)>,
    hits: AtomicUsize,
    bodies: Mutex<Vec<String>>,
}

async fn scripted(State(script): State<Arc<Script>>, uri: Uri, body: String) -> Response {
    if uri.path() == "/ready" {
        // The client's leader probe: "no leader known", outside the script.
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(error("UNAVAILABLE", None)),
        )
            .into_response();
    }
    let n = script.hits.fetch_add(1, Ordering::SeqCst);
    script
        .bodies
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(body);
    let (status, answer) = script.answers[n.min(script.answers.len() - 1)].clone();
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (status, Json(answer)).into_response()
}

/// Serves `script` on an ephemeral loopback port; returns its base URL.
async fn fake_node(script: Arc<Script>) -> anyhow::Result<(String, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    // Producers ask for the topic's route first; this node knows none, so they
    // leave the placement to it (the scripted answers are for the sends).
    let app = Router::new()
        .route(
            "/v1/routes/{topic}",
            axum::routing::get(|| async {
                (
                    axum::http::StatusCode::NOT_FOUND,
                    axum::Json(error("TOPIC_NOT_FOUND", None)),
                )
            }),
        )
        .fallback(any(scripted))
        .with_state(script);
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok((url, server))
}

fn error(code: &str, leader: Option<&str>) -> serde_json::Value {
    serde_json::to_value(ErrorBody {
        code: code.into(),
        message: "scripted".into(),
        leader: leader.map(str::to_string),
    })
    .unwrap_or_default()
}

fn sent(count: usize) -> serde_json::Value {
    let result = SendResultView {
        msg_id: "00".repeat(16),
        topic: "t".into(),
        queue_id: 0,
        queue_offset: 0,
        commit_log_offset: 0,
        store_timestamp: 0,
        deliver_timestamp: None,
    };
    serde_json::to_value(SendResponse {
        results: vec![result; count],
        group: "broker-a".into(),
        transaction_id: None,
    })
    .unwrap_or_default()
}

fn text(body: &str) -> MessageInput {
    MessageInput {
        body: Some(body.into()),
        ..MessageInput::default()
    }
}

fn no_probe() -> ClientOptions {
    // No periodic leader refresh: the tests count requests exactly.
    ClientOptions {
        leader_refresh_interval: None,
        ..ClientOptions::default()
    }
}

/// A follower's `NOT_LEADER` with the leader's URL: the client resends there,
/// remembers it, and sends the next write straight to it.
#[tokio::test]
async fn not_leader_redirects_are_followed_and_remembered() -> anyhow::Result<()> {
    let leader_script = Arc::new(Script {
        answers: vec![(200, sent(1))],
        ..Script::default()
    });
    let (leader_url, leader) = fake_node(Arc::clone(&leader_script)).await?;
    let follower_script = Arc::new(Script {
        answers: vec![(421, error("NOT_LEADER", Some(&leader_url)))],
        ..Script::default()
    });
    let (follower_url, follower) = fake_node(Arc::clone(&follower_script)).await?;
    let client = BrokerClient::new(vec![follower_url.clone()], no_probe())?;

    info!("--- the first write: refused by the follower, resent to the leader");
    let request = SendRequest {
        messages: vec![text("a")],
        transaction: None,
    };
    client.send("t", &request).await?;
    assert_eq!(client.leader().as_deref(), Some(leader_url.as_str()));
    assert_eq!(follower_script.hits.load(Ordering::SeqCst), 1);
    assert_eq!(leader_script.hits.load(Ordering::SeqCst), 1);

    info!("--- the second write goes straight to the leader");
    client.send("t", &request).await?;
    assert_eq!(follower_script.hits.load(Ordering::SeqCst), 1);
    assert_eq!(leader_script.hits.load(Ordering::SeqCst), 2);
    assert_eq!(client.nodes(), [follower_url, leader_url]);
    leader.abort();
    follower.abort();
    Ok(())
}

/// Two nodes that name each other as leader: the client stops after
/// `max_leader_hops` and returns the retryable `NOT_LEADER`.
#[tokio::test]
async fn redirect_loops_are_bounded() -> anyhow::Result<()> {
    let (first_url, scripts, servers) = looped_pair().await?;
    let client = BrokerClient::new(vec![first_url], no_probe())?;
    let error = client
        .send(
            "t",
            &SendRequest {
                messages: vec![text("a")],
                transaction: None,
            },
        )
        .await
        .expect_err("nobody accepts the write");
    assert!(error.is_not_leader() && error.is_retryable(), "{error}");
    assert!(!error.is_outcome_unknown());
    // The first try and 3 hops: 4 requests over the two nodes.
    let hits = scripts.0.hits.load(Ordering::SeqCst) + scripts.1.hits.load(Ordering::SeqCst);
    assert_eq!(hits, 4);
    servers.0.abort();
    servers.1.abort();
    Ok(())
}

type Pair<T> = (T, T);

/// Two fake nodes, each answering `NOT_LEADER` naming the other. A node's script must
/// name the other's URL, so the second node's port is reserved first.
async fn looped_pair(
) -> anyhow::Result<(String, Pair<Arc<Script>>, Pair<tokio::task::JoinHandle<()>>)> {
    let first = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let second = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let first_url = format!("http://{}", first.local_addr()?);
    let second_url = format!("http://{}", second.local_addr()?);
    let scripts = (
        Arc::new(Script {
            answers: vec![(421, error("NOT_LEADER", Some(&second_url)))],
            ..Script::default()
        }),
        Arc::new(Script {
            answers: vec![(421, error("NOT_LEADER", Some(&first_url)))],
            ..Script::default()
        }),
    );
    let serve = |listener: tokio::net::TcpListener, script: Arc<Script>| {
        // Producers ask for the topic's route first; this node knows none, so they
        // leave the placement to it (the scripted answers are for the sends).
        let app = Router::new()
            .route(
                "/v1/routes/{topic}",
                axum::routing::get(|| async {
                    (
                        axum::http::StatusCode::NOT_FOUND,
                        axum::Json(error("TOPIC_NOT_FOUND", None)),
                    )
                }),
            )
            .fallback(any(scripted))
            .with_state(script);
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        })
    };
    let servers = (
        serve(first, Arc::clone(&scripts.0)),
        serve(second, Arc::clone(&scripts.1)),
    );
    Ok((first_url, scripts, servers))
}

/// `UNAVAILABLE` twice, then success: the producer retries (default 2 retries) with
/// the very same producer_id and sequences; a later batch gets the next sequences.
#[tokio::test]
async fn producer_retries_resend_the_same_sequences() -> anyhow::Result<()> {
    let script = Arc::new(Script {
        answers: vec![
            (503, error("UNAVAILABLE", None)),
            (503, error("UNAVAILABLE", None)),
            (200, sent(2)),
        ],
        ..Script::default()
    });
    let (url, server) = fake_node(Arc::clone(&script)).await?;
    let client = BrokerClient::new(vec![url], no_probe())?;
    let producer = Producer::new(
        client,
        ProducerOptions {
            backoff_initial: std::time::Duration::from_millis(1),
            ..ProducerOptions::default()
        },
    );
    producer
        .send_messages("t", vec![text("a"), text("b")])
        .await?;
    producer
        .send_messages("t", vec![text("c"), text("d")])
        .await?;
    let bodies = script
        .bodies
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    assert_eq!(bodies.len(), 4, "three attempts, then the second batch");
    let sent: Vec<SendRequest> = bodies
        .iter()
        .map(|b| serde_json::from_str(b))
        .collect::<Result<_, _>>()?;
    let stamps = |r: &SendRequest| -> Vec<(Option<String>, Option<u64>)> {
        r.messages
            .iter()
            .map(|m| (m.producer_id.clone(), m.sequence))
            .collect()
    };
    let id = Some(producer.producer_id().to_string());
    assert_eq!(
        stamps(&sent[0]),
        [(id.clone(), Some(0)), (id.clone(), Some(1))]
    );
    assert_eq!(stamps(&sent[1]), stamps(&sent[0]));
    assert_eq!(stamps(&sent[2]), stamps(&sent[0]));
    assert_eq!(stamps(&sent[3]), [(id.clone(), Some(2)), (id, Some(3))]);
    assert_eq!(producer.stats().retries, 2);
    server.abort();
    Ok(())
}

/// A refusal (`BAD_REQUEST`) is final: sent once, not retried.
#[tokio::test]
async fn refusals_are_not_retried() -> anyhow::Result<()> {
    let script = Arc::new(Script {
        answers: vec![(400, error("BAD_REQUEST", None))],
        ..Script::default()
    });
    let (url, server) = fake_node(Arc::clone(&script)).await?;
    let producer = Producer::new(
        BrokerClient::new(vec![url], no_probe())?,
        ProducerOptions::default(),
    );
    let error = producer
        .send_messages("t", vec![text("a")])
        .await
        .expect_err("refused");
    assert_eq!(error.code(), Some("BAD_REQUEST"));
    assert_eq!(script.hits.load(Ordering::SeqCst), 1);
    assert_eq!(producer.stats().batches_failed, 1);
    server.abort();
    Ok(())
}
