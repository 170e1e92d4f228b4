//! The router: every public endpoint of shared/API.md and the internal ones.

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use axum::Router;

use super::{consumer_groups, control_plane, data_plane, internal, membership};
use crate::error::{ApiError, ErrorCode};
use crate::metrics::Metrics;
use crate::node::Node;

/// Body limit of internal requests: an AppendEntries carries up to the log store's
/// read cap (or one batch larger than it), a snapshot chunk 4 MiB.
const INTERNAL_BODY_LIMIT: usize = 64 << 20;

/// Counts every answer that is an error (4xx or 5xx) for `/metrics`.
async fn count_rejections(State(node): State<Arc<Node>>, request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    if response.status().is_client_error() || response.status().is_server_error() {
        Metrics::add(&node.metrics.rejected_requests_total, 1);
    }
    response
}

/// Builds the router for a node.
pub fn router(node: Arc<Node>) -> Router {
    let max_body = usize::try_from(node.config.http.max_body_size.0).unwrap_or(usize::MAX);
    let public = Router::new()
        .route(
            "/v1/topics/{topic}/messages",
            post(data_plane::send).get(data_plane::messages_by_key),
        )
        .route(
            "/v1/topics/{topic}/queues/{queue_id}/messages",
            get(data_plane::pull),
        )
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
        .layer(DefaultBodyLimit::max(max_body));
    let internal = Router::new()
        .route("/internal/raft/append", post(internal::append))
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
        .layer(middleware::from_fn_with_state(
            Arc::clone(&node),
            count_rejections,
        ))
        .with_state(node)
}
