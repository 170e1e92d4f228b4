//! The internal endpoints (`/internal/raft/*`) through the router of a real single-node
//! broker: the cluster secret guards every one of them when configured, a request
//! with the right secret reaches the bincode decoder, and a real Raft RPC is answered.

use crate::common;

use axum::body::Body;
use axum::http::{header, Method, StatusCode};
use broker::auth::cluster_secret::SECRET_HEADER;
use broker::replication::network::SnapshotOffer;
use broker::replication::type_config::{TypeConfig, Vote};
use common::http::{assert_error, Answer, TestNode};
use openraft::raft::{VoteRequest, VoteResponse};
use tracing::info;

const SECRET: &str = "s3cret-of-the-cluster";

/// Every internal route with the method it takes.
const INTERNAL_ROUTES: [(&str, &str); 13] = [
    ("POST", "/internal/routes/register"),
    ("GET", "/internal/users"),
    ("POST", "/internal/users"),
    ("POST", "/internal/groups/g/forget-hints"),
    ("GET", "/internal/raft/append-stream"),
    ("POST", "/internal/raft/append"),
    ("POST", "/internal/raft/vote"),
    ("POST", "/internal/raft/pre-vote"),
    ("GET", "/internal/raft/read-index"),
    ("POST", "/internal/raft/transfer-leader"),
    ("GET", "/internal/raft/snapshot/offer"),
    ("POST", "/internal/raft/snapshot/chunk"),
    ("POST", "/internal/raft/snapshot/install"),
];

/// The routes whose body is a bincode request.
const BINCODE_ROUTES: [&str; 5] = [
    "/internal/raft/append",
    "/internal/raft/vote",
    "/internal/raft/pre-vote",
    "/internal/raft/transfer-leader",
    "/internal/raft/snapshot/install",
];

/// Bytes no bincode request decodes from.
const GARBAGE: &[u8] = &[0xFF; 7];

fn method(name: &str) -> Method {
    Method::from_bytes(name.as_bytes()).expect("a valid method")
}

/// The JSON of an error answer, for [`assert_error`].
fn json(answer: &Answer) -> (StatusCode, serde_json::Value) {
    (answer.status, answer.json())
}

/// Encodes a Raft RPC as the network layer does.
fn bincode_body<T: serde::Serialize>(value: &T) -> Vec<u8> {
    bincode::serde::encode_to_vec(value, bincode::config::standard()).expect("encodable")
}

/// With a cluster secret configured, every internal route answers UNAUTHORIZED (401,
/// with the error shape) to a request without the secret header, with a wrong one,
/// with a prefix of the right one and with the right one plus a suffix; the public
/// API needs no secret.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn internal_routes_require_the_cluster_secret() {
    let node = TestNode::start_with(|config| {
        config.cluster_secret = Some(broker::config::Secret::new(SECRET))
    })
    .await;
    let longer = format!("{SECRET}x");
    let wrong_secrets: [Option<&str>; 5] = [
        None,
        Some("wrong"),
        Some(&SECRET[..SECRET.len() - 1]),
        Some(longer.as_str()),
        Some(""),
    ];
    for (name, uri) in INTERNAL_ROUTES {
        for secret in wrong_secrets {
            info!("--- {name} {uri} with secret {secret:?}");
            let headers: Vec<(&str, &str)> =
                secret.map(|s| (SECRET_HEADER, s)).into_iter().collect();
            let answer = node
                .call(method(name), uri, GARBAGE.to_vec(), &headers)
                .await;
            assert_error(json(&answer), StatusCode::UNAUTHORIZED, "UNAUTHORIZED");
        }
    }

    info!("--- the public API needs no secret");
    let (status, body) = node.get("/health").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    node.stop().await;
}

/// With the right secret, a request passes the check and reaches the decoder: garbage
/// bytes are BAD_REQUEST (400, the error shape) on every bincode route, and a snapshot
/// chunk without its query parameters too. A real (stale) VoteRequest is answered 200
/// with a bincode `Ok(VoteResponse)` refusing the vote, and the node stays leader; the
/// snapshot offer is answered with this node's CommitLog end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn right_secret_reaches_the_rpc_handlers() {
    let node = TestNode::start_with(|config| {
        config.cluster_secret = Some(broker::config::Secret::new(SECRET))
    })
    .await;
    let auth = [(SECRET_HEADER, SECRET)];
    for uri in BINCODE_ROUTES {
        info!("--- garbage to {uri} with the right secret");
        let answer = node.call(Method::POST, uri, GARBAGE.to_vec(), &auth).await;
        assert_error(json(&answer), StatusCode::BAD_REQUEST, "BAD_REQUEST");
    }
    info!("--- a snapshot chunk without its query parameters");
    let answer = node
        .call(
            Method::POST,
            "/internal/raft/snapshot/chunk",
            Body::empty(),
            &auth,
        )
        .await;
    assert_error(json(&answer), StatusCode::BAD_REQUEST, "BAD_REQUEST");

    info!("--- a stale vote request (term 0 from node 2)");
    let request = VoteRequest::<TypeConfig>::new(Vote::new(0, 2), None);
    let answer = node
        .call(
            Method::POST,
            "/internal/raft/vote",
            bincode_body(&request),
            &auth,
        )
        .await;
    assert_eq!(
        answer.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&answer.body)
    );
    assert_eq!(
        answer
            .headers
            .get(header::CONTENT_TYPE)
            .map(|v| v.as_bytes()),
        Some(&b"application/octet-stream"[..])
    );
    let (response, _): (Result<VoteResponse<TypeConfig>, String>, usize) =
        bincode::serde::decode_from_slice(&answer.body, bincode::config::standard())
            .expect("a bincode vote answer");
    let response = response.expect("the vote was handled");
    assert!(
        !response.vote_granted,
        "a stale vote is refused: {response:?}"
    );
    assert!(node.node.is_leader(), "the node is still the leader");

    info!("--- the snapshot offer");
    let answer = node
        .call(
            Method::GET,
            "/internal/raft/snapshot/offer",
            Body::empty(),
            &auth,
        )
        .await;
    assert_eq!(answer.status, StatusCode::OK);
    let (offer, _): (Result<SnapshotOffer, String>, usize) =
        bincode::serde::decode_from_slice(&answer.body, bincode::config::standard())
            .expect("a bincode snapshot offer");
    let offer = offer.expect("the offer was made");
    assert_eq!(
        offer.commit_log_end,
        node.node.shared.store.max_commit_log_offset(),
        "{offer:?}"
    );
    node.stop().await;
}

/// The internal protocol version (issue 22): every internal answer states this
/// node's; a peer one version apart (or a build before versions, without the
/// header) is served; a peer two versions apart is refused on every internal
/// route with 409 CONFLICT naming both versions and what to do; a header that is
/// no version is refused too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_too_many_versions_apart_are_refused_with_both_versions() {
    use broker::peer_protocol::{HEADER, VERSION};
    let node = TestNode::start_with(|config| {
        config.cluster_secret = Some(broker::config::Secret::new(SECRET))
    })
    .await;
    let request = VoteRequest::<TypeConfig>::new(Vote::new(0, 2), None);
    for version in [None, Some(VERSION - 1), Some(VERSION), Some(VERSION + 1)] {
        info!("--- a vote from a peer of version {version:?}");
        let text = version.map(|v| v.to_string());
        let mut headers = vec![(SECRET_HEADER, SECRET)];
        headers.extend(text.as_deref().map(|v| (HEADER, v)));
        let answer = node
            .call(
                Method::POST,
                "/internal/raft/vote",
                bincode_body(&request),
                &headers,
            )
            .await;
        assert_eq!(answer.status, StatusCode::OK, "version {version:?}");
        assert_eq!(
            answer.headers.get(HEADER).map(|v| v.as_bytes()),
            Some(VERSION.to_string().as_bytes()),
            "the answer states this node's version"
        );
    }
    let skipped = (VERSION + 2).to_string();
    for (name, uri) in INTERNAL_ROUTES {
        let answer = node
            .call(
                method(name),
                uri,
                GARBAGE.to_vec(),
                &[(SECRET_HEADER, SECRET), (HEADER, &skipped)],
            )
            .await;
        let (status, body) = json(&answer);
        assert_error((status, body.clone()), StatusCode::CONFLICT, "CONFLICT");
        let message = body["message"].as_str().unwrap_or_default();
        assert!(
            message.contains(&format!("version {skipped}"))
                && message.contains(&format!("speaks {VERSION}"))
                && message.contains("one version at a time"),
            "{name} {uri}: {message}"
        );
    }
    let answer = node
        .call(
            Method::POST,
            "/internal/raft/vote",
            bincode_body(&request),
            &[(SECRET_HEADER, SECRET), (HEADER, "latest")],
        )
        .await;
    assert_error(json(&answer), StatusCode::CONFLICT, "CONFLICT");
    node.stop().await;
}

/// A node started `--insecure` without a secret takes internal requests without
/// the header (garbage reaches the decoder: BAD_REQUEST, not UNAUTHORIZED).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_insecure_node_without_a_secret_needs_no_header() {
    let node = TestNode::start_with(|config| {
        config.security.insecure = true;
        config.cluster_secret = None;
    })
    .await;
    for uri in BINCODE_ROUTES {
        info!("--- garbage to {uri}, no secret anywhere");
        let answer = node.call(Method::POST, uri, GARBAGE.to_vec(), &[]).await;
        assert_error(json(&answer), StatusCode::BAD_REQUEST, "BAD_REQUEST");
    }
    node.stop().await;
}

/// The finding: a registration with a forged term (2^63) and an outside leader
/// URL made sends to a new topic go to that URL. Now a registration is checked
/// whole even when it carries the secret: it answers 400 and the node serves no
/// route of it, nor learns its nodes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_registrations_are_refused() {
    let node = TestNode::start().await;
    let auth = [
        (SECRET_HEADER, broker::config::TEST_CLUSTER_SECRET),
        ("content-type", "application/json"),
    ];
    let forged = serde_json::json!({
        "group": "evil", "term": 1u64 << 63, "leader_id": 9,
        "leader_url": "http://203.0.113.9:80",
        "replicas": ["http://203.0.113.9:80"],
        "topics": [{"name": "new-topic", "read_queue_nums": 4, "write_queue_nums": 4, "perm": 6}],
        "view": {"group": "evil", "leader_id": 9, "leader": "http://203.0.113.9:80", "term": 1,
                 "nodes": [], "registration_age_ms": null},
        "known_nodes": ["http://203.0.113.10:80"],
    });
    let answer = node
        .call(
            Method::POST,
            "/internal/routes/register",
            forged.to_string(),
            &auth,
        )
        .await;
    assert_error(json(&answer), StatusCode::BAD_REQUEST, "BAD_REQUEST");
    assert!(node.node.routes.remote_groups().is_empty());
    assert!(!node.node.routes.is_known("http://203.0.113.10:80"));
    assert!(!node.node.may_receive_secret("http://203.0.113.9:80"));
    node.stop().await;
}
