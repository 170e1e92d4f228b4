//! Internal endpoints: Raft RPC from peers and snapshot transfer, bincode bodies,
//! behind the cluster secret when one is configured.

use std::future::Future;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::connections::Connection;
use super::error::{ApiError, ErrorCode};
use super::extract::ApiQuery;
use crate::auth::cluster_secret::SECRET_HEADER;
use crate::peer_protocol;
use crate::replication::append_stream;
use crate::replication::network::{InstallRequest, SnapshotOffer};
use crate::replication::snapshot::CommitLogSnapshot;
use crate::service::control::routes::RegistrationAck;
use crate::service::control::Registration;
use crate::service::node::Node;
use crate::storage::CommitLogOffset;

/// Speaks the internal protocol (see `peer_protocol`): refuses a peer more than
/// one version apart with 409 CONFLICT naming both versions, and states this
/// node's version on every answer, so the leader learns what each voter speaks.
pub async fn speak_protocol(request: Request, next: Next) -> Response {
    let checked = peer_protocol::of_headers(request.headers()).and_then(|version| {
        peer_protocol::compatible(version)?;
        Ok(version)
    });
    let mut response = match checked {
        Ok(_) => next.run(request).await,
        Err(refusal) => {
            tracing::warn!(path = %request.uri().path(), "{refusal}");
            ApiError::new(ErrorCode::Conflict, refusal).into_response()
        }
    };
    response.headers_mut().insert(
        peer_protocol::HEADER,
        axum::http::HeaderValue::from(peer_protocol::VERSION),
    );
    response
}

/// Rejects internal requests without the cluster secret (open only on a node
/// started `--insecure` without one). A connection that presents it is a peer's:
/// it stops counting against the client connection limit.
pub async fn require_secret(
    State(node): State<Arc<Node>>,
    request: Request,
    next: Next,
) -> Response {
    if let Some(secret) = &node.secret {
        let given = request.headers().get(SECRET_HEADER).map(|v| v.as_bytes());
        if !given.is_some_and(|given| secret.matches(given)) {
            return ApiError::unauthorized("missing or wrong cluster secret").into_response();
        }
    }
    if let Some(connection) = request.extensions().get::<Arc<Connection>>() {
        connection.promote_to_peer();
    }
    next.run(request).await
}

/// `GET /internal/raft/read-index`: this leader's read index, for a follower's
/// linearizable read (`Node::linearize`).
pub async fn read_index(State(node): State<Arc<Node>>) -> Response {
    answer(node.read_index().await.map_err(|e| e.to_string()))
}

/// Encodes an internal answer: bincode `Result<T, String>`.
fn answer<T: Serialize>(result: Result<T, String>) -> Response {
    match bincode::serde::encode_to_vec(&result, bincode::config::standard()) {
        Ok(bytes) => (
            [(axum::http::header::CONTENT_TYPE, "application/octet-stream")],
            bytes,
        )
            .into_response(),
        Err(e) => ApiError::internal(format!("encoding an internal answer: {e}")).into_response(),
    }
}

/// Decodes a bincode request, calls `handle`, and encodes its result.
async fn rpc<Req, Resp, E, F, Fut>(body: Bytes, handle: F) -> Response
where
    Req: DeserializeOwned,
    Resp: Serialize,
    E: std::fmt::Display,
    F: FnOnce(Req) -> Fut,
    Fut: Future<Output = Result<Resp, E>>,
{
    match bincode::serde::decode_from_slice::<Req, _>(&body, bincode::config::standard()) {
        Ok((request, _)) => answer(handle(request).await.map_err(|e| e.to_string())),
        Err(e) => {
            ApiError::bad_request(format!("undecodable internal request: {e}")).into_response()
        }
    }
}

pub async fn append(State(node): State<Arc<Node>>, body: Bytes) -> Response {
    rpc(body, |request| node.raft.append_entries(request)).await
}

pub async fn vote(State(node): State<Arc<Node>>, body: Bytes) -> Response {
    rpc(body, |request| node.raft.vote(request)).await
}

pub async fn pre_vote(State(node): State<Arc<Node>>, body: Bytes) -> Response {
    rpc(body, |request| node.raft.pre_vote(request)).await
}

pub async fn transfer_leader(State(node): State<Arc<Node>>, body: Bytes) -> Response {
    rpc(body, |request| node.raft.handle_transfer_leader(request)).await
}

/// `GET /internal/raft/append-stream`: upgrades the connection to a pipelined
/// append stream (see [`crate::replication::append_stream`]) and serves it in a task
/// of its own.
pub async fn append_stream(State(node): State<Arc<Node>>, mut request: Request) -> Response {
    use axum::http::header::{CONNECTION, UPGRADE};
    let headers = request.headers();
    let asked = headers.get(UPGRADE).map(|v| v.as_bytes());
    let upgrading = headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|token| token.trim().eq_ignore_ascii_case("upgrade"));
    if !upgrading
        || !asked.is_some_and(|v| v.eq_ignore_ascii_case(append_stream::PROTOCOL.as_bytes()))
    {
        return ApiError::bad_request(format!(
            "an append stream needs `Connection: upgrade` and `Upgrade: {}`",
            append_stream::PROTOCOL
        ))
        .into_response();
    }
    let upgrade = hyper::upgrade::on(&mut request);
    let raft = node.raft.clone();
    let metrics = Arc::clone(&node.metrics);
    tokio::spawn(async move {
        match upgrade.await {
            Ok(upgraded) => append_stream::serve(raft, metrics, TokioIo::new(upgraded)).await,
            Err(e) => tracing::warn!("append stream: the upgrade failed: {e}"),
        }
    });
    Response::builder()
        .status(axum::http::StatusCode::SWITCHING_PROTOCOLS)
        .header(CONNECTION, "upgrade")
        .header(UPGRADE, append_stream::PROTOCOL)
        .body(axum::body::Body::empty())
        .unwrap_or_else(|e| ApiError::internal(format!("building a 101: {e}")).into_response())
}

/// `GET /internal/raft/snapshot/offer`: what this follower has.
pub async fn snapshot_offer(State(node): State<Arc<Node>>) -> Response {
    answer::<SnapshotOffer>(Ok(SnapshotOffer {
        commit_log_end: node.shared.store.max_commit_log_offset(),
        commit_log_file_size_bytes: node.shared.store.config().commit_log_file_size_bytes,
    }))
}

#[derive(Deserialize)]
pub struct ChunkQuery {
    start: u64,
    from: u64,
    reset: bool,
    first: bool,
}

/// `POST /internal/raft/snapshot/chunk`: stage CommitLog bytes from the leader.
pub async fn snapshot_chunk(
    State(node): State<Arc<Node>>,
    ApiQuery(query): ApiQuery<ChunkQuery>,
    body: Bytes,
) -> Response {
    let node = Arc::clone(&node);
    let result = tokio::task::spawn_blocking(move || -> std::io::Result<()> {
        let files = &node.shared.snapshots;
        if query.first {
            files.begin_receive(CommitLogOffset(query.start), query.reset)?;
        }
        if !body.is_empty() {
            files.receive_chunk(CommitLogOffset(query.from), &body)?;
        }
        Ok(())
    })
    .await;
    match result {
        Ok(result) => answer(result.map_err(|e| e.to_string())),
        Err(e) => answer::<()>(Err(e.to_string())),
    }
}

/// `POST /internal/raft/snapshot/install`: install the staged snapshot.
pub async fn snapshot_install(State(node): State<Arc<Node>>, body: Bytes) -> Response {
    rpc(body, |request: InstallRequest| async move {
        let staged = node
            .shared
            .snapshots
            .staged_until(request.commit_log_end)
            .map_err(|e| e.to_string())?;
        let snapshot = openraft::Snapshot {
            meta: request.meta,
            snapshot: CommitLogSnapshot {
                commit_log_end: request.commit_log_end,
                state: Arc::new(request.state),
                staged: Some(staged),
            },
        };
        node.raft
            .install_full_snapshot(request.vote, snapshot)
            .await
            .map_err(|e| e.to_string())
    })
    .await
}

/// `POST /internal/routes/register`: another group's leader registers its routes.
/// Path of the internal endpoint telling a coordinator a group's offsets of a
/// topic were reset.
pub const FORGET_HINTS_PATH: &str = "/internal/groups/{group}/forget-hints";

/// Body of [`FORGET_HINTS_PATH`].
#[derive(Debug, Serialize, Deserialize)]
pub struct ForgetHints {
    pub topic: String,
}

/// `POST /internal/groups/{group}/forget-hints` `{"topic": "t"}`: the consumer
/// group's offsets of the topic were reset; drop the hand-off offsets this node's
/// coordinator remembers for them.
pub async fn forget_hints(
    State(node): State<Arc<Node>>,
    super::extract::ApiPath(group): super::extract::ApiPath<String>,
    body: Bytes,
) -> Result<axum::Json<serde_json::Value>, ApiError> {
    let request: ForgetHints = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("malformed request: {e}")))?;
    node.coordinator.forget_hints(&group, &request.topic);
    Ok(axum::Json(
        serde_json::json!({"group": group, "topic": request.topic}),
    ))
}

pub async fn register_routes(
    State(node): State<Arc<Node>>,
    body: Bytes,
) -> Result<axum::Json<RegistrationAck>, ApiError> {
    let registration: Registration = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("malformed registration: {e}")))?;
    let accepted = node
        .routes
        .register(registration)
        .map_err(|e| ApiError::bad_request(format!("invalid registration: {e}")))?;
    let mut known_nodes = node.routes.known_nodes();
    known_nodes.push(node.config.node_info().url);
    Ok(axum::Json(RegistrationAck {
        accepted,
        known_nodes,
    }))
}
