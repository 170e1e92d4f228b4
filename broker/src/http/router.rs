//! The router: every public endpoint of shared/API.md and the internal ones.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::Method;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use axum::Router;

use super::{
    consumer_group_list, consumer_groups, control_plane, dashboard, data_plane, internal,
    membership, openapi, request_id,
};
use crate::error::{ApiError, ErrorCode};
use crate::node::Node;

/// The send route (its latency goes to `broker_send_duration_seconds`).
const SEND_ROUTE: &str = "/v1/topics/{topic}/messages";
/// The pull route (its latency goes to `broker_pull_duration_seconds`).
const PULL_ROUTE: &str = "/v1/topics/{topic}/queues/{queue_id}/messages";

/// Body limit of internal requests: an AppendEntries carries up to the log store's
/// read cap (or one batch larger than it), a snapshot chunk 4 MiB.
const INTERNAL_BODY_LIMIT: usize = 64 << 20;

/// For `/metrics`: counts every answer that is an error (4xx or 5xx) by its code,
/// and times sends and pulls.
async fn observe(State(node): State<Arc<Node>>, request: Request, next: Next) -> Response {
    let timed = match (
        request.method(),
        request
            .extensions()
            .get::<MatchedPath>()
            .map(MatchedPath::as_str),
    ) {
        (&Method::POST, Some(SEND_ROUTE)) => Some(&node.metrics.send_duration),
        (&Method::GET, Some(PULL_ROUTE)) => Some(&node.metrics.pull_duration),
        _ => None,
    };
    let started = Instant::now();
    let response = next.run(request).await;
    if let Some(histogram) = timed {
        histogram.observe(started.elapsed());
    }
    if response.status().is_client_error() || response.status().is_server_error() {
        node.metrics
            .record_rejection(response.extensions().get::<ErrorCode>().copied());
    }
    response
}

/// Builds the router for a node.
///
/// Every public route must also be listed in `openapi::OPERATIONS` (one line;
/// see the top of `openapi.rs`): `broker/tests/http_openapi.rs` fails otherwise.
pub fn router(node: Arc<Node>) -> Router {
    let max_body = usize::try_from(node.config.http.max_body_size.0).unwrap_or(usize::MAX);
    let public = Router::new()
        .route(
            SEND_ROUTE,
            post(data_plane::send).get(data_plane::messages_by_key),
        )
        .route(PULL_ROUTE, get(data_plane::pull))
        .route("/v1/topics/{topic}/queues", get(data_plane::queues))
        .route(
            "/v1/topics/{topic}/queues/{queue_id}/offset",
            get(data_plane::offset_by_time),
        )
        .route("/v1/messages/{msg_id}", get(data_plane::message_by_id))
        .route(
            "/v1/groups/{group}/offsets/{topic}/{queue_id}",
            put(data_plane::commit_offset),
        )
        .route("/v1/groups/{group}/offsets", get(data_plane::group_offsets))
        .route(
            "/v1/groups/{group}/heartbeat",
            post(consumer_groups::heartbeat),
        )
        .route("/v1/groups/{group}/retry", post(consumer_groups::give_back))
        .route(
            "/v1/groups/{group}/offsets/reset",
            post(consumer_groups::reset_offsets),
        )
        .route(
            "/v1/topics/{topic}",
            put(control_plane::put_topic)
                .get(control_plane::get_topic)
                .delete(control_plane::delete_topic),
        )
        .route("/v1/topics", get(control_plane::list_topics))
        .route("/v1/routes/{topic}", get(control_plane::route))
        .route("/v1/cluster", get(control_plane::cluster))
        .route(
            "/v1/cluster/groups/{group}/nodes",
            post(membership::add_node),
        )
        .route(
            "/v1/cluster/groups/{group}/nodes/{node_id}",
            delete(membership::remove_node),
        )
        .route(
            "/v1/cluster/groups/{group}/transfer-leader",
            post(membership::transfer_leader),
        )
        .route("/health", get(control_plane::health))
        .route("/ready", get(control_plane::ready))
        .route("/metrics", get(control_plane::metrics))
        .route("/v1/groups", get(consumer_group_list::list_groups))
        .route("/openapi.json", get(openapi_json))
        .route("/", get(dashboard::index))
        .route("/dashboard/{file}", get(dashboard::asset))
        .layer(DefaultBodyLimit::max(max_body));
    let internal = Router::new()
        .route("/internal/raft/append", post(internal::append))
        .route(
            crate::raft::append_stream::PATH,
            get(internal::append_stream),
        )
        .route("/internal/raft/vote", post(internal::vote))
        .route("/internal/raft/pre-vote", post(internal::pre_vote))
        .route(
            "/internal/raft/transfer-leader",
            post(internal::transfer_leader),
        )
        .route(
            "/internal/raft/snapshot/offer",
            get(internal::snapshot_offer),
        )
        .route(
            "/internal/raft/snapshot/chunk",
            post(internal::snapshot_chunk),
        )
        .route(
            "/internal/raft/snapshot/install",
            post(internal::snapshot_install),
        )
        .route(
            crate::control::registrar::REGISTER_PATH,
            post(internal::register_routes),
        )
        .route(internal::FORGET_HINTS_PATH, post(internal::forget_hints))
        .route_layer(middleware::from_fn_with_state(
            Arc::clone(&node),
            internal::require_secret,
        ))
        .layer(DefaultBodyLimit::max(INTERNAL_BODY_LIMIT));
    public
        .merge(internal)
        .fallback(|| async {
            ApiError::new(ErrorCode::NotFound, "no such endpoint").into_response()
        })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                ErrorCode::MethodNotAllowed,
                "this endpoint does not take that method",
            )
            .into_response()
        })
        .layer(middleware::from_fn_with_state(Arc::clone(&node), observe))
        // Outermost: everything above runs inside the request's span.
        .layer(middleware::from_fn(request_id::assign))
        .with_state(node)
}

/// `GET /openapi.json`
async fn openapi_json() -> Response {
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        openapi::document_json(),
    )
        .into_response()
}
