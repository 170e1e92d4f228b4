//! Client authentication and authorization on a real single-node broker (shared/API.md
//! "Security"): every public route but `/health`, `/ready` and the dashboard's files
//! refuses a caller without a valid token and changes nothing; a user's permissions
//! decide what it may do; deleted and rotated tokens stop working at once; quotas
//! answer 429 and store nothing; forwarding headers from clients are not trusted.

use crate::common;

use axum::body::Body;
use axum::http::{Method, StatusCode};
use broker::auth::cluster_secret::SECRET_HEADER;
use broker::config::TEST_CLUSTER_SECRET;
use broker::http::auth::Access;
use broker::storage::MessageId;
use common::http::{assert_error, Answer, TestNode};
use serde_json::{json, Value};
use tracing::info;

/// A concrete URI for a route template.
fn instantiate(path: &str) -> String {
    path.split('/')
        .map(|segment| match segment {
            "{queue_id}" | "{node_id}" => "1".to_string(),
            "{topic}" => "orders".to_string(),
            "{group}" => "billing".to_string(),
            "{name}" => "someone".to_string(),
            "{msg_id}" => "0".repeat(32),
            "{file}" => "app.js".to_string(),
            s => s.to_string(),
        })
        .collect::<Vec<_>>()
        .join("/")
}

fn json_of(answer: &Answer) -> (StatusCode, Value) {
    (answer.status, answer.json())
}

/// A body every POST/PUT route would act on if it were let through.
fn plausible_body(method: &str, path: &str) -> String {
    let body = match (method, path) {
        (_, "/v1/topics/{topic}/messages") => json!({"messages": [{"body": "x"}]}),
        (_, "/v1/cluster/groups/{group}/nodes") => {
            json!({"node_id": 99, "address": "http://127.0.0.1:1"})
        }
        (_, "/v1/cluster/groups/{group}/transfer-leader") => json!({"to": 1}),
        (_, "/v1/users") => json!({"name": "intruder", "permissions": []}),
        (_, "/v1/groups/{group}/offsets/{topic}/{queue_id}") => json!({"offset": 0}),
        _ => json!({}),
    };
    body.to_string()
}

/// The finding: anonymous membership changes, topic deletion, offset resets and
/// leader transfers all worked. Now every route declared non-public answers 401
/// UNAUTHORIZED in the error shape (with `WWW-Authenticate: Bearer`) without a
/// token, with a garbage one and with a malformed header, and nothing changes:
/// the topic, its message, the membership and the user table are as they were.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_but_health_ready_and_the_dashboard_needs_a_token() {
    let node = TestNode::start().await;
    node.create_topic(
        "orders",
        json!({"read_queue_nums": 2, "write_queue_nums": 2}),
    )
    .await;
    node.send_ok("orders", vec![json!({"body": "kept", "queue_id": 1})])
        .await;
    let routes = broker::http::router::public_routes();
    let mut public = Vec::new();
    for route in &routes {
        let op = &route.op;
        let uri = instantiate(op.path);
        let method = Method::from_bytes(op.method.to_uppercase().as_bytes()).expect("a method");
        if op.access == Access::Public {
            public.push(op.path);
            let answer = node
                .call_anonymous(method.clone(), &uri, Body::empty(), &[])
                .await;
            assert!(
                answer.status.is_success(),
                "{} {uri} is public: {}",
                op.method,
                answer.status
            );
            continue;
        }
        let body = plausible_body(op.method, op.path);
        for (what, authorization) in [
            ("no token", None),
            (
                "a garbage token",
                Some("Bearer mq_not-a-real-token-at-all-0000000000"),
            ),
            ("a malformed header", Some("Basic dXNlcjpwYXNz")),
            ("an empty bearer", Some("Bearer ")),
        ] {
            info!("--- {} {uri} with {what}", op.method);
            let mut headers = vec![("content-type", "application/json")];
            if let Some(value) = authorization {
                headers.push(("authorization", value));
            }
            let answer = node
                .call_anonymous(method.clone(), &uri, body.clone(), &headers)
                .await;
            assert_error(json_of(&answer), StatusCode::UNAUTHORIZED, "UNAUTHORIZED");
            assert_eq!(
                answer
                    .headers
                    .get("www-authenticate")
                    .and_then(|v| v.to_str().ok()),
                Some("Bearer"),
                "{} {uri}",
                op.method
            );
        }
    }
    public.sort_unstable();
    assert_eq!(public, ["/", "/dashboard/{file}", "/health", "/ready"]);

    info!("--- nothing changed");
    let (status, queues) = node.get("/v1/topics/orders/queues").await;
    assert_eq!(status, StatusCode::OK, "{queues}");
    assert_eq!(queues["queues"][1]["max_offset"], 1, "{queues}");
    assert_eq!(queues["queues"][0]["max_offset"], 0, "{queues}");
    let (_, users) = node.get("/v1/users").await;
    assert_eq!(users["users"], json!([]), "{users}");
    let (_, cluster) = node.get("/v1/cluster").await;
    let nodes = &cluster["groups"][0]["nodes"];
    assert_eq!(nodes.as_array().map(Vec::len), Some(1), "{cluster}");
    assert!(node.node.is_leader());
    node.stop().await;
}

/// Creates a user through the API; answers its token.
async fn create_user(node: &TestNode, user: Value) -> String {
    let (status, body) = node.request(Method::POST, "/v1/users", Some(user)).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    body["token"]
        .as_str()
        .unwrap_or_else(|| panic!("a token in {body}"))
        .to_string()
}

/// A call as `token` with a JSON body.
async fn as_user(node: &TestNode, token: &str, method: Method, uri: &str, body: Value) -> Answer {
    let authorization = format!("Bearer {token}");
    node.call(
        method,
        uri,
        body.to_string(),
        &[
            ("content-type", "application/json"),
            ("authorization", &authorization),
        ],
    )
    .await
}

/// A user with `pub` on `topic:orders` sends to `orders` and nothing else: other
/// topics, pulls, topic changes, membership, leader transfer, `/v1/users`,
/// `/v1/cluster` and `/metrics` answer 403 NO_PERMISSION and change nothing.
/// Prefix patterns and `sub` on a group work as API.md says.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pub_only_user_sends_to_its_topic_and_nothing_else() {
    let node = TestNode::start().await;
    for topic in ["orders", "payments", "logs-a"] {
        node.create_topic(topic, json!({"read_queue_nums": 1, "write_queue_nums": 1}))
            .await;
    }
    let producer = create_user(
        &node,
        json!({"name": "orders-svc", "permissions": [{"resource": "topic:orders", "actions": ["pub"]}]}),
    )
    .await;
    assert!(producer.starts_with("mq_"), "{producer}");

    info!("--- allowed: send to orders");
    let sent = as_user(
        &node,
        &producer,
        Method::POST,
        "/v1/topics/orders/messages",
        json!({"messages": [{"body": "o1"}]}),
    )
    .await;
    assert_eq!(sent.status, StatusCode::OK, "{}", sent.text());

    let forbidden: [(Method, &str, Value); 11] = [
        (
            Method::POST,
            "/v1/topics/payments/messages",
            json!({"messages": [{"body": "p"}]}),
        ),
        (
            Method::GET,
            "/v1/topics/orders/queues/0/messages?offset=0",
            Value::Null,
        ),
        (
            Method::PUT,
            "/v1/topics/orders",
            json!({"read_queue_nums": 8}),
        ),
        (Method::DELETE, "/v1/topics/orders", Value::Null),
        (Method::PUT, "/v1/topics/brand-new", json!({})),
        (
            Method::POST,
            "/v1/cluster/groups/broker-a/nodes",
            json!({"node_id": 9, "address": "http://127.0.0.1:1"}),
        ),
        (
            Method::DELETE,
            "/v1/cluster/groups/broker-a/nodes/1",
            Value::Null,
        ),
        (
            Method::POST,
            "/v1/cluster/groups/broker-a/transfer-leader",
            json!({"to": 1}),
        ),
        (
            Method::POST,
            "/v1/users",
            json!({"name": "escalated", "permissions": [{"resource": "cluster", "actions": ["admin"]}]}),
        ),
        (Method::GET, "/v1/cluster", Value::Null),
        (Method::GET, "/metrics", Value::Null),
    ];
    for (method, uri, body) in forbidden {
        info!("--- forbidden: {method} {uri}");
        let answer = as_user(&node, &producer, method.clone(), uri, body).await;
        assert_error(json_of(&answer), StatusCode::FORBIDDEN, "NO_PERMISSION");
    }
    info!("--- nothing of it happened");
    let (_, payments) = node.get("/v1/topics/payments/queues").await;
    assert_eq!(payments["queues"][0]["max_offset"], 0, "{payments}");
    let (_, orders) = node.get("/v1/topics/orders").await;
    assert_eq!(orders["read_queue_nums"], 1, "{orders}");
    let (status, _) = node.get("/v1/topics/brand-new").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (_, users) = node.get("/v1/users").await;
    assert_eq!(users["users"].as_array().map(Vec::len), Some(1), "{users}");

    info!("--- listings show only what the caller may see");
    let answer = as_user(&node, &producer, Method::GET, "/v1/topics", Value::Null).await;
    let names: Vec<String> = answer.json()["topics"]
        .as_array()
        .expect("topics")
        .iter()
        .map(|t| t["topic"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(names, ["orders"]);

    info!("--- a consumer: sub on logs-* and on group:billing");
    let consumer = create_user(
        &node,
        json!({"name": "reader", "permissions": [
            {"resource": "topic:logs-*", "actions": ["sub"]},
            {"resource": "group:billing", "actions": ["sub"]}]}),
    )
    .await;
    node.send_ok("logs-a", vec![json!({"body": "l1"})]).await;
    let pulled = as_user(
        &node,
        &consumer,
        Method::GET,
        "/v1/topics/logs-a/queues/0/messages?offset=0",
        Value::Null,
    )
    .await;
    assert_eq!(pulled.status, StatusCode::OK, "{}", pulled.text());
    assert_eq!(pulled.json()["messages"][0]["body"], "l1");
    let commit = as_user(
        &node,
        &consumer,
        Method::PUT,
        "/v1/groups/billing/offsets/logs-a/0",
        json!({"offset": 1}),
    )
    .await;
    assert_eq!(commit.status, StatusCode::OK, "{}", commit.text());
    for (method, uri, body) in [
        (
            Method::PUT,
            "/v1/groups/billing/offsets/logs-a/0",
            json!({"offset": 0, "force": true}),
        ),
        (
            Method::PUT,
            "/v1/groups/other/offsets/logs-a/0",
            json!({"offset": 1}),
        ),
        (
            Method::PUT,
            "/v1/groups/billing/offsets/orders/0",
            json!({"offset": 0}),
        ),
        (
            Method::POST,
            "/v1/groups/billing/offsets/reset",
            json!({"topic": "logs-a", "timestamp": 0}),
        ),
        (
            Method::POST,
            "/v1/groups/billing/heartbeat",
            json!({"client_id": "c1", "topics": ["orders"]}),
        ),
        (
            Method::POST,
            "/v1/topics/logs-a/messages",
            json!({"messages": [{"body": "x"}]}),
        ),
    ] {
        info!("--- the consumer may not: {method} {uri}");
        let answer = as_user(&node, &consumer, method, uri, body).await;
        assert_error(json_of(&answer), StatusCode::FORBIDDEN, "NO_PERMISSION");
    }
    let (_, offsets) = node.get("/v1/groups/billing/offsets?topic=logs-a").await;
    assert_eq!(
        offsets["offsets"][0]["offset"], 1,
        "the forced reset did not happen: {offsets}"
    );
    node.stop().await;
}

/// A deleted user's token and a rotated-away token stop working at once; the new
/// token works; the user list never shows tokens or their hashes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleted_and_rotated_tokens_stop_working() {
    let node = TestNode::start().await;
    node.create_topic("t", json!({})).await;
    let user = json!({"name": "u1", "permissions": [{"resource": "topic:t", "actions": ["pub", "sub"]}],
                      "quotas": {"send_messages_per_s": 1000}});
    let old = create_user(&node, user.clone()).await;
    let queues = |token: String| {
        let node = &node;
        async move {
            as_user(
                node,
                &token,
                Method::GET,
                "/v1/topics/t/queues",
                Value::Null,
            )
            .await
            .status
        }
    };
    assert_eq!(queues(old.clone()).await, StatusCode::OK);
    let (status, again) = node.request(Method::POST, "/v1/users", Some(user)).await;
    assert_error((status, again), StatusCode::CONFLICT, "CONFLICT");

    info!("--- rotate");
    let (status, rotated) = node.request(Method::POST, "/v1/users/u1/token", None).await;
    assert_eq!(status, StatusCode::OK, "{rotated}");
    let new = rotated["token"].as_str().expect("a token").to_string();
    assert_ne!(new, old);
    let refused = as_user(&node, &old, Method::GET, "/v1/topics/t/queues", Value::Null).await;
    assert_error(json_of(&refused), StatusCode::UNAUTHORIZED, "UNAUTHORIZED");
    assert_eq!(queues(new.clone()).await, StatusCode::OK);

    info!("--- the listing shows permissions and quotas, never a token");
    let (_, shown) = node.get("/v1/users/u1").await;
    assert_eq!(shown["quotas"]["send_messages_per_s"], 1000, "{shown}");
    assert_eq!(shown["permissions"][0]["resource"], "topic:t", "{shown}");
    let listing = node.get("/v1/users").await.1.to_string();
    assert!(
        !listing.contains(&new) && !listing.contains("token"),
        "{listing}"
    );

    info!("--- update replaces the permissions");
    let (status, updated) = node
        .request(
            Method::PUT,
            "/v1/users/u1",
            Some(json!({"permissions": [{"resource": "topic:t", "actions": ["sub"]}]})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{updated}");
    let send = as_user(
        &node,
        &new,
        Method::POST,
        "/v1/topics/t/messages",
        json!({"messages": [{"body": "x"}]}),
    )
    .await;
    assert_error(json_of(&send), StatusCode::FORBIDDEN, "NO_PERMISSION");

    info!("--- delete");
    let (status, deleted) = node.request(Method::DELETE, "/v1/users/u1", None).await;
    assert_eq!(status, StatusCode::OK, "{deleted}");
    let refused = as_user(&node, &new, Method::GET, "/v1/topics/t/queues", Value::Null).await;
    assert_error(json_of(&refused), StatusCode::UNAUTHORIZED, "UNAUTHORIZED");
    assert_error(
        node.get("/v1/users/u1").await,
        StatusCode::NOT_FOUND,
        "USER_NOT_FOUND",
    );

    info!("--- bad user requests are 400 and create nothing");
    for bad in [
        json!({"name": "no spaces"}),
        json!({"name": "x", "permissions": [{"resource": "queue:x", "actions": ["pub"]}]}),
        json!({"name": "x", "permissions": [{"resource": "topic:x", "actions": ["fly"]}]}),
        json!({"name": "x", "permissions": [{"resource": "topic:x", "actions": []}]}),
        json!({"name": "x", "quotas": {"send_messages_per_s": 0}}),
        json!({"name": "x", "extra": 1}),
    ] {
        assert_error(
            node.request(Method::POST, "/v1/users", Some(bad)).await,
            StatusCode::BAD_REQUEST,
            "BAD_REQUEST",
        );
    }
    let (_, users) = node.get("/v1/users").await;
    assert_eq!(users["users"], json!([]), "{users}");
    node.stop().await;
}

/// A quota of 5 messages/s: a fast sender gets 429 RATE_LIMITED with a
/// `Retry-After`, and none of the refused requests' messages is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_send_quota_answers_429_and_stores_nothing_refused() {
    let node = TestNode::start().await;
    node.create_topic("q", json!({"read_queue_nums": 1, "write_queue_nums": 1}))
        .await;
    let token = create_user(
        &node,
        json!({"name": "slow", "permissions": [{"resource": "topic:q", "actions": ["pub"]}],
               "quotas": {"send_messages_per_s": 5}}),
    )
    .await;
    let (mut accepted, mut refused) = (0u64, 0u64);
    let started = std::time::Instant::now();
    for i in 0..40 {
        let answer = as_user(
            &node,
            &token,
            Method::POST,
            "/v1/topics/q/messages",
            json!({"messages": [{"body": format!("m{i}")}]}),
        )
        .await;
        match answer.status {
            StatusCode::OK => accepted += 1,
            StatusCode::TOO_MANY_REQUESTS => {
                refused += 1;
                let retry_after: u64 = answer
                    .headers
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse().ok())
                    .expect("a Retry-After in seconds");
                assert!((1..=2).contains(&retry_after), "{retry_after}");
                assert_error(
                    json_of(&answer),
                    StatusCode::TOO_MANY_REQUESTS,
                    "RATE_LIMITED",
                );
            }
            other => panic!("unexpected {other}: {}", answer.text()),
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    info!(
        accepted,
        refused, elapsed, "a fast sender against 5 messages/s"
    );
    // One second of burst, then 5 per second of the time the loop took.
    let most = 5 + (5.0 * elapsed).ceil() as u64;
    assert!(accepted >= 5, "the burst passes: {accepted}");
    assert!(
        accepted <= most,
        "{accepted} accepted in {elapsed:.2} s (at most {most})"
    );
    assert_eq!(accepted + refused, 40);
    let (_, queues) = node.get("/v1/topics/q/queues").await;
    assert_eq!(
        queues["queues"][0]["max_offset"], accepted,
        "only accepted requests are stored: {queues}"
    );
    info!("--- a batch larger than a second of quota can never pass: 400");
    let batch: Vec<Value> = (0..6).map(|i| json!({"body": format!("b{i}")})).collect();
    let answer = as_user(
        &node,
        &token,
        Method::POST,
        "/v1/topics/q/messages",
        json!({"messages": batch}),
    )
    .await;
    assert_error(json_of(&answer), StatusCode::BAD_REQUEST, "BAD_REQUEST");
    node.stop().await;
}

/// `x-broker-forwarded-for` sets a message's born host only beside the cluster
/// secret: a client cannot forge it (nor make a node treat its request as already
/// forwarded).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarding_headers_from_clients_are_ignored() {
    let node = TestNode::start().await;
    node.create_topic("f", json!({"read_queue_nums": 1, "write_queue_nums": 1}))
        .await;
    let send = |headers: Vec<(&'static str, &'static str)>| {
        let node = &node;
        async move {
            let mut all = vec![("content-type", "application/json")];
            all.extend(headers);
            let answer = node
                .call(
                    Method::POST,
                    "/v1/topics/f/messages",
                    json!({"messages": [{"body": "x"}]}).to_string(),
                    &all,
                )
                .await;
            assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
            let id = answer.json()["results"][0]["msg_id"]
                .as_str()
                .expect("an id")
                .to_string();
            let id = MessageId::parse(&id).expect("a message id");
            node.node
                .shared
                .store
                .message_by_id(&id)
                .expect("stored")
                .born_host
        }
    };
    let forged = send(vec![("x-broker-forwarded-for", "6.6.6.6:66")]).await;
    assert_ne!(forged, "6.6.6.6:66", "a client set its own born host");
    let real = send(vec![
        ("x-broker-forwarded-for", "6.6.6.6:66"),
        (SECRET_HEADER, TEST_CLUSTER_SECRET),
    ])
    .await;
    assert_eq!(real, "6.6.6.6:66", "a peer's forwarded header is taken");
    node.stop().await;
}

/// Request bodies must be JSON: a form or `text/plain` POST (what a web page can
/// make a browser send without a CORS preflight) is 415 in the error shape and
/// stores nothing; no answer carries CORS headers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_json_bodies_and_no_cors() {
    let node = TestNode::start().await;
    node.create_topic("c", json!({"read_queue_nums": 1, "write_queue_nums": 1}))
        .await;
    let body = json!({"messages": [{"body": "x"}]}).to_string();
    for content_type in [
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
        Some("multipart/form-data; boundary=x"),
        None,
    ] {
        let headers: Vec<(&str, &str)> = content_type
            .map(|ct| ("content-type", ct))
            .into_iter()
            .chain([("origin", "https://evil.example")])
            .collect();
        let answer = node
            .call(
                Method::POST,
                "/v1/topics/c/messages",
                body.clone(),
                &headers,
            )
            .await;
        assert_error(
            json_of(&answer),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "UNSUPPORTED_MEDIA_TYPE",
        );
        assert!(
            !answer
                .headers
                .keys()
                .any(|k| k.as_str().starts_with("access-control-")),
            "{:?}",
            answer.headers
        );
    }
    let ok = node
        .call(
            Method::POST,
            "/v1/topics/c/messages",
            body,
            &[("content-type", "application/json; charset=utf-8")],
        )
        .await;
    assert_eq!(ok.status, StatusCode::OK, "{}", ok.text());
    let (_, queues) = node.get("/v1/topics/c/queues").await;
    assert_eq!(queues["queues"][0]["max_offset"], 1, "{queues}");
    node.stop().await;
}

/// A node started `--insecure` serves every route without a token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_insecure_node_needs_no_token() {
    let node = TestNode::start_with(|config| {
        config.security.insecure = true;
        config.bootstrap_token = None;
    })
    .await;
    for uri in ["/v1/topics", "/v1/cluster", "/metrics", "/v1/users"] {
        let answer = node
            .call_anonymous(Method::GET, uri, Body::empty(), &[])
            .await;
        assert_eq!(answer.status, StatusCode::OK, "{uri}");
    }
    node.stop().await;
}
