//! The router: the route table of every public endpoint of shared/API.md (each
//! with its OpenAPI description and required permission beside its handler), the
//! internal ones behind the cluster secret, and the layers around them.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::Method;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put, MethodRouter};
use axum::{Extension, Router};

use super::auth::{authorize, Access};
use super::connections::ConnectionRegistry;
use super::error::{ApiError, ErrorCode};
use super::openapi::{op, q, Kind, Operation, BROKER_GROUP_Q, GROUP_Q};
use super::{
    consumer_group_list, consumer_groups, control_plane, dashboard, data_plane, internal,
    membership, openapi, receive, request_id, transactions, users,
};
use crate::auth::Action::{Admin, Pub, Sub};
use crate::service::node::Node;

/// The send route (its latency goes to `broker_send_duration_seconds`).
const SEND_ROUTE: &str = "/v1/topics/{topic}/messages";
/// The pull route (its latency goes to `broker_pull_duration_seconds`).
const PULL_ROUTE: &str = "/v1/topics/{topic}/queues/{queue_id}/messages";

/// Body limit of internal requests: an AppendEntries carries up to the log store's
/// read cap (or one batch larger than it), a snapshot chunk 4 MiB.
const INTERNAL_BODY_LIMIT: usize = 64 << 20;

/// One public endpoint: what it is (for the OpenAPI document and the permission
/// check) and its handler.
pub struct Route {
    pub op: Operation,
    pub handler: MethodRouter<Arc<Node>>,
}

fn route(op: Operation, handler: MethodRouter<Arc<Node>>) -> Route {
    Route { op, handler }
}

/// Every public endpoint. A new one is a new entry here: its description, its
/// permission and its handler, in one place.
pub fn public_routes() -> Vec<Route> {
    vec![
        route(
            op("post", SEND_ROUTE, "messages", "Send a batch of messages (atomic)", Access::Topic(Pub))
                .query(const { &[GROUP_Q] })
                .body("SendRequest")
                .answers("SendResponse"),
            post(data_plane::send),
        ),
        route(
            op("get", SEND_ROUTE, "messages", "Query messages by key in a time range", Access::Topic(Sub))
                .query(const { &[
                    q("key", Kind::NonEmpty, "the message key"),
                    q("begin", Kind::Unsigned, "from this store time (ms), default 0"),
                    q("end", Kind::Unsigned, "to this store time (ms), default now"),
                    q("max", Kind::Count, "most messages answered, 1..=1024"),
                ] })
                .required(&["key"])
                .answers("MessagesResponse"),
            get(data_plane::messages_by_key),
        ),
        route(
            op(
                "get",
                PULL_ROUTE,
                "messages",
                "Pull from a queue, with long polling and a tag filter; `Accept: application/vnd.broker.pull-v1` answers the compact binary form",
                Access::Topic(Sub),
            )
            .query(const { &[
                q("offset", Kind::Unsigned, "queue offset to read from"),
                q("max_messages", Kind::Count, "1..=1024, default 32"),
                q("max_wait_ms", Kind::WaitMs, "long polling: hold up to this long (max 30000)"),
                q("tags", Kind::TagFilter, "`*` or `TagA||TagB`"),
                GROUP_Q,
            ] })
            .required(&["offset"])
            .answers("PullResponse")
            .or_binary(broker_proto::pull_binary::MEDIA_TYPE),
            get(data_plane::pull),
        ),
        route(
            op(
                "get",
                "/v1/topics/{topic}/queues/{queue_id}/stream",
                "messages",
                "Stream a queue as server-sent events until the client closes it; resume with Last-Event-ID",
                Access::Topic(Sub),
            )
            .query(const { &[
                q("offset", Kind::Unsigned, "queue offset to start at; required unless a Last-Event-ID header (which wins) names the last event seen"),
                q("tags", Kind::TagFilter, "`*` or `TagA||TagB`"),
                GROUP_Q,
            ] })
            .text("text/event-stream"),
            get(super::stream::pull_stream),
        ),
        route(
            op("get", "/v1/topics/{topic}/queues", "topics", "Queues of a topic with min and max offsets", Access::TopicAny)
                .query(const { &[GROUP_Q] })
                .answers("QueuesResponse"),
            get(data_plane::queues),
        ),
        route(
            op(
                "get",
                "/v1/topics/{topic}/queues/{queue_id}/offset",
                "topics",
                "First queue offset stored at or after a time",
                Access::Topic(Sub),
            )
            .query(const { &[q("timestamp", Kind::Unsigned, "Unix ms"), GROUP_Q] })
            .required(&["timestamp"])
            .answers("OffsetResponse"),
            get(data_plane::offset_by_time),
        ),
        route(
            // The topic is known once the message is found: the handler checks
            // `sub` on it.
            op("get", "/v1/messages/{msg_id}", "messages", "One message by id", Access::Authenticated)
                .answers("Message"),
            get(data_plane::message_by_id),
        ),
        route(
            op(
                "put",
                "/v1/groups/{group}/offsets/{topic}/{queue_id}",
                "groups",
                "Commit a consumer offset (force: reset, needs admin on the group)",
                Access::Group(Sub),
            )
            .query(const { &[BROKER_GROUP_Q] })
            .body("CommitOffsetRequest")
            .answers("CommitOffsetResponse"),
            put(data_plane::commit_offset),
        ),
        route(
            op("get", "/v1/groups/{group}/offsets", "groups", "A consumer group's offsets with lag", Access::Group(Sub))
                .query(const {
                    &[
                        q("topic", Kind::Name, "only this topic"),
                        BROKER_GROUP_Q,
                        q(
                            "stale",
                            Kind::Flag,
                            "answer from the nodes' own copies (also when cut off from their leader); by default every commit acknowledged before the request began is seen",
                        ),
                    ]
                })
                .answers("GroupOffsetsResponse"),
            get(data_plane::group_offsets),
        ),
        route(
            op(
                "post",
                "/v1/groups/{group}/heartbeat",
                "groups",
                "Register a member; answers its queue assignment",
                Access::Group(Sub),
            )
            .query(const { &[BROKER_GROUP_Q] })
            .body("HeartbeatRequest")
            .answers("HeartbeatResponse"),
            post(consumer_groups::heartbeat),
        ),
        route(
            op(
                "post",
                "/v1/groups/{group}/retry",
                "groups",
                "Give a message back: redelivered through %RETRY%{group} after a delay, or to %DLQ%{group}",
                Access::Group(Sub),
            )
            .query(const { &[BROKER_GROUP_Q] })
            .body("RetryRequest")
            .answers("RetryResponse"),
            post(consumer_groups::give_back),
        ),
        route(
            op(
                "post",
                "/v1/groups/{group}/topics/{topic}/receive",
                "groups",
                "Receive messages leased to the group until invisible_until (receive and ack), with long polling",
                Access::Group(Sub),
            )
            .query(const { &[BROKER_GROUP_Q] })
            .body("ReceiveRequest")
            .answers("ReceiveResponse"),
            post(receive::receive),
        ),
        route(
            op(
                "post",
                "/v1/groups/{group}/ack",
                "groups",
                "Ack received messages by their receipt handles: a status per handle",
                Access::Group(Sub),
            )
            .query(const { &[BROKER_GROUP_Q] })
            .body("AckRequest")
            .answers("AckResponse"),
            post(receive::ack),
        ),
        route(
            op(
                "post",
                "/v1/groups/{group}/change-invisible",
                "groups",
                "Change a received message's lease (0: give it back now); answers the new handle",
                Access::Group(Sub),
            )
            .body("ChangeInvisibleRequest")
            .answers("ChangeInvisibleResponse"),
            post(receive::change_invisible),
        ),
        route(
            op(
                "post",
                "/v1/groups/{group}/offsets/reset",
                "groups",
                "Move a group's offsets of a topic to the first message stored at or after a time",
                Access::Group(Admin),
            )
            .query(const { &[BROKER_GROUP_Q] })
            .body("ResetOffsetsRequest")
            .answers("GroupOffsetsResponse"),
            post(consumer_groups::reset_offsets),
        ),
        route(
            op(
                "get",
                "/v1/groups",
                "groups",
                "Consumer groups with committed offsets, their topics and lag (those the caller may see)",
                Access::Authenticated,
            )
            .query(const { &[BROKER_GROUP_Q] })
            .answers("ConsumerGroupsResponse"),
            get(consumer_group_list::list_groups),
        ),
        route(
            op("put", "/v1/topics/{topic}", "topics", "Create or update a topic", Access::Topic(Admin))
                .query(const { &[GROUP_Q] })
                .body("TopicRequest")
                .answers("Topic"),
            put(control_plane::put_topic),
        ),
        route(
            op("get", "/v1/topics/{topic}", "topics", "One topic", Access::TopicAny).answers("Topic"),
            get(control_plane::get_topic),
        ),
        route(
            op(
                "delete",
                "/v1/topics/{topic}",
                "topics",
                "Delete a topic from every group serving it",
                Access::Topic(Admin),
            )
            .query(const { &[GROUP_Q] })
            .answers("DeletedTopic"),
            delete(control_plane::delete_topic),
        ),
        route(
            op("get", "/v1/topics", "topics", "Every topic the caller may see, of every group", Access::Authenticated)
                .answers("TopicsResponse"),
            get(control_plane::list_topics),
        ),
        route(
            op("get", "/v1/routes/{topic}", "cluster", "Every group serving a topic", Access::TopicAny)
                .answers("RouteResponse"),
            get(control_plane::route),
        ),
        route(
            op(
                "get",
                "/v1/cluster",
                "cluster",
                "Every known group with its nodes' roles, indexes and lag",
                Access::Cluster,
            )
            .answers("ClusterResponse"),
            get(control_plane::cluster),
        ),
        route(
            op(
                "post",
                "/v1/cluster/groups/{group}/nodes",
                "cluster",
                "Start adding a node (learner, catch-up, voter); answers 202 with the join",
                Access::Cluster,
            )
            .body("AddNodeRequest")
            .answers("Join")
            // 202 while the join goes on; 200 for a node that is a voter already.
            .statuses(&["200", "202"]),
            post(membership::add_node),
        ),
        route(
            op(
                "get",
                "/v1/cluster/groups/{group}/nodes/{node_id}",
                "cluster",
                "A node's join: its state, or why it failed",
                Access::Cluster,
            )
            .answers("Join"),
            get(membership::join_status),
        ),
        route(
            op(
                "delete",
                "/v1/cluster/groups/{group}/nodes/{node_id}",
                "cluster",
                "Remove a node from its group",
                Access::Cluster,
            ),
            delete(membership::remove_node),
        ),
        route(
            op(
                "post",
                "/v1/cluster/groups/{group}/transfer-leader",
                "cluster",
                "Hand leadership to a voter",
                Access::Cluster,
            )
            .body("TransferLeaderRequest"),
            post(membership::transfer_leader),
        ),
        route(
            op(
                "post",
                "/v1/cluster/groups/{group}/finalize-upgrade",
                "cluster",
                "After a rolling upgrade: the group uses what the new build adds (queue claims); every voter must run it, and no older build can join after",
                Access::Cluster,
            )
            .answers("FinalizeUpgradeResponse"),
            post(membership::finalize_upgrade),
        ),
        route(
            op(
                "post",
                "/v1/node/drain",
                "cluster",
                "Drain the answering node before a planned stop: readiness off, held long polls answered, leadership handed over (SIGTERM does the same, then stops)",
                Access::Cluster,
            )
            .answers("DrainResponse"),
            post(membership::drain),
        ),
        route(
            op(
                "post",
                "/v1/transactions/{transaction_id}/commit",
                "transactions",
                "Commit a transaction: its messages become visible, once (a repeat answers the same; after a rollback 409)",
                Access::Authenticated,
            )
            .answers("TransactionResolution"),
            post(transactions::commit),
        ),
        route(
            op(
                "post",
                "/v1/transactions/{transaction_id}/rollback",
                "transactions",
                "Roll back a transaction: its messages are discarded (a repeat answers the same; after a commit 409)",
                Access::Authenticated,
            )
            .answers("TransactionResolution"),
            post(transactions::rollback),
        ),
        route(
            op(
                "get",
                "/v1/producer-groups/{producer_group}/transaction-checks",
                "transactions",
                "Open transactions of the producer group to resolve (on topics the caller may pub), with long polling",
                Access::Authenticated,
            )
            .query(const {
                &[
                    q("max_wait_ms", Kind::WaitMs, "long polling: hold up to this long (max 30000)"),
                    BROKER_GROUP_Q,
                ]
            })
            .answers("TransactionChecksResponse"),
            get(transactions::checks),
        ),
        route(
            op("post", "/v1/users", "users", "Create a user; answers its token (shown only here)", Access::Cluster)
                .body("UserRequest")
                .answers("UserToken")
                .statuses(&["201"]),
            post(users::create),
        ),
        route(
            op("get", "/v1/users", "users", "Every user (permissions and quotas, never tokens)", Access::Cluster)
                .answers("UsersResponse"),
            get(users::list),
        ),
        route(
            op("get", "/v1/users/{name}", "users", "One user", Access::Cluster).answers("User"),
            get(users::show),
        ),
        route(
            op("put", "/v1/users/{name}", "users", "Replace a user's permissions and quotas", Access::Cluster)
                .body("UserUpdate")
                .answers("User"),
            put(users::update),
        ),
        route(
            op("delete", "/v1/users/{name}", "users", "Delete a user: its token stops working", Access::Cluster)
                .answers("DeletedUser"),
            delete(users::delete),
        ),
        route(
            op(
                "post",
                "/v1/users/{name}/token",
                "users",
                "Issue a new token for a user; the old one stops working",
                Access::Cluster,
            )
            .answers("UserToken"),
            post(users::rotate_token),
        ),
        route(
            op("get", "/health", "operations", "The process is up", Access::Public),
            get(control_plane::health),
        ),
        route(
            op("get", "/ready", "operations", "A member of a group with a known leader", Access::Public),
            get(control_plane::ready),
        ),
        route(
            op("get", "/metrics", "operations", "Prometheus text format", Access::Cluster).text("text/plain"),
            get(control_plane::metrics),
        ),
        // The dashboard charts every node through /v1/cluster/nodes/{id}/metrics.
        route(
            op(
                "get",
                "/v1/cluster/nodes/{node_id}/metrics",
                "operations",
                "Any node's Prometheus text, fetched by this node over the peer link",
                Access::Cluster,
            )
            .text("text/plain"),
            get(control_plane::node_metrics),
        ),
        route(
            op("get", "/openapi.json", "operations", "This document", Access::Authenticated),
            get(openapi_json),
        ),
        route(
            op("get", "/", "operations", "The dashboard page", Access::Public).text("text/html"),
            get(dashboard::index),
        ),
        route(
            op(
                "get",
                "/dashboard/{file}",
                "operations",
                "The dashboard's script and style sheet",
                Access::Public,
            )
            .text("text/plain"),
            get(dashboard::asset),
        ),
    ]
}

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
pub fn router(node: Arc<Node>) -> Router {
    let connections = ConnectionRegistry::new(node.config.http.max_connections);
    router_with_connections(node, connections)
}

/// [`router`], reporting on `/metrics` the connections `connections` counts (the
/// registry the node's listener serves with: see `connections::serve`).
pub fn router_with_connections(node: Arc<Node>, connections: Arc<ConnectionRegistry>) -> Router {
    let max_body = usize::try_from(node.config.http.max_body_size.0).unwrap_or(usize::MAX);
    let mut public = Router::new();
    for Route { op, handler } in public_routes() {
        // The last layer added runs first: who is calling, then what they send.
        let checked = handler
            .route_layer(middleware::from_fn(super::extract::require_json_body))
            .route_layer(middleware::from_fn_with_state(
                (Arc::clone(&node), op.access),
                authorize,
            ));
        public = public.route(op.path, checked);
    }
    let public = public.layer(DefaultBodyLimit::max(max_body));
    let internal = Router::new()
        .route("/internal/raft/append", post(internal::append))
        .route(
            crate::replication::append_stream::PATH,
            get(internal::append_stream),
        )
        .route("/internal/raft/vote", post(internal::vote))
        .route(
            crate::service::node::READ_INDEX_PATH,
            get(internal::read_index),
        )
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
            crate::service::control::registrar::REGISTER_PATH,
            post(internal::register_routes),
        )
        .route(internal::FORGET_HINTS_PATH, post(internal::forget_hints))
        .route(
            control_plane::INTERNAL_METRICS_PATH,
            get(control_plane::metrics),
        )
        .route(
            crate::service::users::INTERNAL_USERS_PATH,
            get(users::internal_table).post(users::internal_apply),
        )
        .route_layer(middleware::from_fn_with_state(
            Arc::clone(&node),
            internal::require_secret,
        ))
        // Before the secret: a peer of a version this node cannot talk to is told
        // so even when the secret is right.
        .route_layer(middleware::from_fn(internal::speak_protocol))
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
        .layer(Extension(connections))
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
