//! The control plane: topics, routes, cluster status, health, readiness, metrics.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Extension;
use axum::Json;
use openraft::ServerState;
use serde_json::json;

use std::collections::BTreeMap;

use super::auth::Caller;
use super::connections::ConnectionRegistry;
use super::error::{parse_json, ApiError, ErrorCode};
use super::extract::{ApiPath, ApiQuery, WriteRequest};
use super::forward;
use super::groups::GroupParam;
use crate::api::{
    ClusterResponse, DeletedTopicResponse, ErrorBody, RouteGroupView, RouteResponse, TopicRequest,
    TopicView, TopicsResponse,
};
use crate::auth::Resource;
use crate::error::BrokerError;
use crate::service::control::GroupRoute;
use crate::service::node::{Leadership, Node};
use crate::service::routing::{self, Target};
use crate::service::topics;
use crate::topic::{
    validate_admin_topic, validate_name, TopicConfig, DEFAULT_QUEUE_NUMS, PERM_READ_WRITE,
};

/// `PUT /v1/topics/{topic}`: create or update in every group named by `groups`
/// (default: every known group), each through its own Raft. With `?group=` the
/// request is for that one group (this is how the fan-out reaches each group).
pub async fn put_topic(
    State(node): State<Arc<Node>>,
    ApiPath(topic): ApiPath<String>,
    ApiQuery(param): ApiQuery<GroupParam>,
    request: WriteRequest,
) -> Response {
    let body = (|| -> Result<TopicRequest, ApiError> {
        validate_admin_topic(&topic).map_err(ApiError::bad_request)?;
        let body: TopicRequest = if request.body.iter().all(u8::is_ascii_whitespace) {
            TopicRequest::default()
        } else {
            parse_json(&request.body)?
        };
        // Check the values before any group stores them.
        let probe = TopicConfig {
            name: topic.clone(),
            read_queue_nums: body.read_queue_nums.unwrap_or(DEFAULT_QUEUE_NUMS),
            write_queue_nums: body.write_queue_nums.unwrap_or(DEFAULT_QUEUE_NUMS),
            perm: body.perm.unwrap_or(PERM_READ_WRITE),
        };
        probe.validate().map_err(ApiError::bad_request)?;
        // `groups` is checked here, before the `?group=` branch that does not
        // use it to pick targets: every path refuses what the schema refuses.
        if let Some(groups) = &body.groups {
            if groups.is_empty() {
                return Err(ApiError::bad_request("groups must name at least one group"));
            }
            for group in groups {
                validate_name("broker group", group).map_err(ApiError::bad_request)?;
            }
        }
        Ok(body)
    })();
    let body = match body {
        Ok(body) => body,
        Err(e) => return e.into_response(),
    };
    if let Some(group) = &param.group {
        return match routing::named(&node, group) {
            Ok(Target::Local) => put_topic_here(&node, &topic, &body, request).await,
            Ok(Target::Forward(route)) => forward::to_group(&node, request, &route, "group").await,
            Err(e) => e.into_response(),
        };
    }
    let routes = node.group_routes();
    let targets: Vec<GroupRoute> = match &body.groups {
        None => routes,
        Some(names) => {
            let mut targets = Vec::new();
            for name in names {
                match routes.iter().find(|r| r.group == *name) {
                    Some(route) if !targets.iter().any(|t: &GroupRoute| t.group == *name) => {
                        targets.push(route.clone());
                    }
                    Some(_) => {}
                    None => {
                        return BrokerError::broker_group_not_found(
                            name,
                            routes.iter().map(|r| r.group.as_str()),
                        )
                        .into_response();
                    }
                }
            }
            targets
        }
    };
    let op = TopicOp::Put(&body);
    fan_out(
        &node,
        &topic,
        op,
        request,
        &targets,
        |view: TopicView, done: &[String]| TopicView {
            groups: done.to_vec(),
            ..view
        },
    )
    .await
}

/// A topic change applied to each target group.
#[derive(Copy, Clone)]
enum TopicOp<'a> {
    Put(&'a TopicRequest),
    Delete,
}

impl TopicOp<'_> {
    /// Applies the change to this node's group (through its leader).
    async fn here(self, node: &Node, topic: &str, request: WriteRequest) -> Response {
        match self {
            Self::Put(body) => put_topic_here(node, topic, body, request).await,
            Self::Delete => delete_topic_here(node, topic, request).await,
        }
    }
}

/// Sends `request` to every group of `targets` (`?group=` naming each) and merges
/// the answers; the first failure answers, naming the groups already done.
async fn fan_out<T, F>(
    node: &Node,
    topic: &str,
    op: TopicOp<'_>,
    request: WriteRequest,
    targets: &[GroupRoute],
    merge: F,
) -> Response
where
    T: serde::de::DeserializeOwned + serde::Serialize,
    F: Fn(T, &[String]) -> T,
{
    let mut done: Vec<String> = Vec::new();
    let mut last: Option<T> = None;
    for route in targets {
        let response = if route.is_local() {
            let mut here = request.clone();
            // Should this node forward it to its leader, for this group only.
            here.path_and_query =
                forward::with_param(&request.path_and_query, "group", &route.group);
            op.here(node, topic, here).await
        } else {
            forward::to_group(node, request.clone(), route, "group").await
        };
        let status = response.status();
        let bytes = match axum::body::to_bytes(response.into_body(), 16 << 20).await {
            Ok(bytes) => bytes,
            Err(e) => return ApiError::internal(format!("reading an answer: {e}")).into_response(),
        };
        if !status.is_success() {
            let error: ErrorBody = serde_json::from_slice(&bytes).unwrap_or(ErrorBody {
                code: "UNAVAILABLE".into(),
                message: String::from_utf8_lossy(&bytes).into_owned(),
                leader: None,
            });
            let code = ErrorCode::from_word(&error.code).unwrap_or(ErrorCode::Unavailable);
            let done_note = if done.is_empty() {
                String::new()
            } else {
                format!(" (already done in {}; retrying is safe)", done.join(", "))
            };
            return ApiError::new(
                code,
                format!("group `{}`: {}{done_note}", route.group, error.message),
            )
            .into_response();
        }
        match serde_json::from_slice::<T>(&bytes) {
            Ok(answer) => last = Some(answer),
            Err(e) => {
                return ApiError::internal(format!("group `{}` answered badly: {e}", route.group))
                    .into_response()
            }
        }
        done.push(route.group.clone());
    }
    match last {
        Some(answer) => Json(merge(answer, &done)).into_response(),
        None => ApiError::unavailable("no broker group is known").into_response(),
    }
}

/// Creates or updates the topic in this node's group.
async fn put_topic_here(
    node: &Node,
    topic: &str,
    body: &TopicRequest,
    request: WriteRequest,
) -> Response {
    let change = topics::TopicChange {
        read_queue_nums: body.read_queue_nums,
        write_queue_nums: body.write_queue_nums,
        perm: body.perm,
    };
    let config = match topics::plan_upsert(node, topic, change) {
        Ok(config) => config,
        Err(e) => return e.into_response(),
    };
    forward::at_leader(node, request, || async {
        let config = topics::upsert(node, config).await?;
        Ok(Json(topic_view(&config, vec![node.group().to_string()])).into_response())
    })
    .await
}

fn topic_view(config: &TopicConfig, groups: Vec<String>) -> TopicView {
    TopicView {
        topic: config.name.clone(),
        read_queue_nums: config.read_queue_nums,
        write_queue_nums: config.write_queue_nums,
        perm: config.perm,
        groups,
    }
}

/// Every topic of every live group, merged by name (queue counts of the first
/// group by name that serves it).
fn all_topics(node: &Node) -> BTreeMap<String, TopicView> {
    let mut topics: BTreeMap<String, TopicView> = BTreeMap::new();
    for route in node.group_routes() {
        for config in route.topics.values() {
            topics
                .entry(config.name.clone())
                .or_insert_with(|| topic_view(config, Vec::new()))
                .groups
                .push(route.group.clone());
        }
    }
    topics
}

/// `GET /v1/topics`: the topics the caller may do anything with.
pub async fn list_topics(State(node): State<Arc<Node>>, caller: Caller) -> Json<TopicsResponse> {
    Json(TopicsResponse {
        topics: all_topics(&node)
            .into_values()
            .filter(|topic| caller.allows_any(Resource::Topic(&topic.topic)))
            .collect(),
    })
}

/// `GET /v1/topics/{topic}`
pub async fn get_topic(
    State(node): State<Arc<Node>>,
    ApiPath(topic): ApiPath<String>,
) -> Result<Json<TopicView>, ApiError> {
    all_topics(&node)
        .remove(&topic)
        .map(Json)
        .ok_or_else(|| ApiError::topic_not_found(&topic))
}

/// `DELETE /v1/topics/{topic}`: from every group serving it (or the one `?group=`
/// names).
pub async fn delete_topic(
    State(node): State<Arc<Node>>,
    ApiPath(topic): ApiPath<String>,
    ApiQuery(param): ApiQuery<GroupParam>,
    request: WriteRequest,
) -> Response {
    if let Some(group) = &param.group {
        return match routing::named(&node, group) {
            Ok(Target::Local) => delete_topic_here(&node, &topic, request).await,
            Ok(Target::Forward(route)) => forward::to_group(&node, request, &route, "group").await,
            Err(e) => e.into_response(),
        };
    }
    let targets = match routing::serving(&node, &topic, None) {
        Ok(targets) if targets.is_empty() => {
            return ApiError::topic_not_found(&topic).into_response()
        }
        Ok(targets) => targets,
        Err(e) => return e.into_response(),
    };
    fan_out(
        &node,
        &topic,
        TopicOp::Delete,
        request,
        &targets,
        |answer: DeletedTopicResponse, done: &[String]| DeletedTopicResponse {
            groups: done.to_vec(),
            ..answer
        },
    )
    .await
}

async fn delete_topic_here(node: &Node, topic: &str, request: WriteRequest) -> Response {
    if let Err(e) = node.topic(topic) {
        return e.into_response();
    }
    forward::at_leader(node, request, || async {
        topics::delete(node, topic).await?;
        Ok(Json(DeletedTopicResponse {
            topic: topic.to_string(),
            deleted: true,
            groups: vec![node.group().to_string()],
        })
        .into_response())
    })
    .await
}

/// `GET /v1/routes/{topic}`: every live group serving the topic.
pub async fn route(
    State(node): State<Arc<Node>>,
    ApiPath(topic): ApiPath<String>,
) -> Result<Json<RouteResponse>, ApiError> {
    let groups: Vec<RouteGroupView> = node
        .group_routes()
        .into_iter()
        .filter_map(|route| {
            let config = route.topics.get(&topic)?;
            Some(RouteGroupView {
                group: route.group.clone(),
                leader: route.leader.clone(),
                replicas: route.replicas.clone(),
                read_queue_nums: config.read_queue_nums,
                write_queue_nums: config.write_queue_nums,
                perm: config.perm,
            })
        })
        .collect();
    if groups.is_empty() {
        return Err(ApiError::topic_not_found(&topic));
    }
    Ok(Json(RouteResponse { topic, groups }))
}

/// `GET /v1/cluster`
pub async fn cluster(State(node): State<Arc<Node>>) -> Json<ClusterResponse> {
    Json(ClusterResponse {
        node_id: node.id(),
        group: node.group().to_string(),
        groups: node
            .group_routes()
            .into_iter()
            .map(|route| route.view)
            .collect(),
    })
}

/// `GET /health`: the process is up (always 200, so a liveness probe does not kill
/// a node that is waiting for its disk: it restarts itself, see
/// [`crate::service::health`]). `"status"` is `UP`, or `FAILED` with the `reason` and
/// `since` (Unix ms) once storage failed.
pub async fn health(State(node): State<Arc<Node>>) -> Json<serde_json::Value> {
    match node.health.failure() {
        None => Json(json!({"status": "UP"})),
        Some(failure) => Json(json!({
            "status": "FAILED",
            "reason": failure.message(),
            "since": failure.since_ms,
        })),
    }
}

/// `GET /ready`: a member of a group with a known leader, whose storage works.
pub async fn ready(State(node): State<Arc<Node>>) -> Response {
    if let Some(failure) = node.health.failure() {
        return ApiError::from(failure.to_error()).into_response();
    }
    let metrics = node.raft_metrics();
    let member = metrics
        .membership_config
        .membership()
        .get_node(&node.id())
        .is_some();
    if node.drain.is_draining() {
        return ApiError::unavailable(
            "draining: this node is about to stop and holds no long polls; use another node",
        )
        .into_response();
    }
    if node.leadership() == Leadership::StaleLeader {
        return ApiError::unavailable(
            "this node leads its group but has lost contact with a quorum",
        )
        .into_response();
    }
    match (member, metrics.current_leader) {
        (true, Some(leader)) => (
            StatusCode::OK,
            Json(json!({"status": "READY", "group": node.group(), "leader_id": leader, "leader": node.node_url(&metrics, leader)})),
        )
            .into_response(),
        (false, _) => ApiError::unavailable("this node is not a member of its group yet").into_response(),
        (true, None) => ApiError::unavailable("no leader is known yet").into_response(),
    }
}

/// `GET /metrics`: Prometheus text. Counters and histograms come from
/// [`crate::metrics::Metrics`]; states (Raft, disk, consumer lag) are read here.
pub async fn metrics(
    State(node): State<Arc<Node>>,
    Extension(connections): Extension<Arc<ConnectionRegistry>>,
) -> Response {
    // Directory sizes and the consumer-lag walk touch the file system and every
    // queue: off the reactor.
    let text = match tokio::task::spawn_blocking(move || render_metrics(&node, &connections)).await
    {
        Ok(text) => text,
        Err(e) => return ApiError::internal(format!("rendering metrics: {e}")).into_response(),
    };
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        text,
    )
        .into_response()
}

/// Path of a node's own metrics on the peer link (cluster secret): what
/// [`node_metrics`] fetches from the node it names.
pub const INTERNAL_METRICS_PATH: &str = "/internal/metrics";

/// How long [`node_metrics`] waits for the named node: a refresh of the
/// dashboard asks every node at once and must not hang on a dead one.
const NODE_METRICS_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3);

/// Largest metrics text [`node_metrics`] passes on: a node with the most topics
/// the quotas allow renders a few MiB; anything larger is not a broker's.
const NODE_METRICS_MAX_BYTES: usize = 32 << 20;

/// `GET /v1/cluster/nodes/{node_id}/metrics`: the `/metrics` text of any node
/// this one knows (its group's members and every registered group's), fetched
/// over the peer link. A browser may call only the node that served its page;
/// this is how the dashboard charts every node. Same permission as `/metrics`.
pub async fn node_metrics(
    State(node): State<Arc<Node>>,
    Extension(connections): Extension<Arc<ConnectionRegistry>>,
    ApiPath(node_id): ApiPath<u64>,
) -> Response {
    if node_id == node.id() {
        return metrics(State(node), Extension(connections)).await;
    }
    let url = node
        .group_routes()
        .into_iter()
        .flat_map(|route| route.view.nodes)
        .find(|member| member.id == node_id)
        .map(|member| member.url);
    let Some(url) = url else {
        return ApiError::new(
            ErrorCode::NotFound,
            format!("no node {node_id} in any broker group this node knows (see GET /v1/cluster)"),
        )
        .into_response();
    };
    let unavailable = |why: String| {
        ApiError::unavailable(format!("node {node_id} ({url}): {why}")).into_response()
    };
    let request = node
        .peer_request(reqwest::Method::GET, &url, INTERNAL_METRICS_PATH)
        .timeout(NODE_METRICS_TIMEOUT);
    let mut response = match request.send().await.and_then(|r| r.error_for_status()) {
        Ok(response) => response,
        Err(e) => return unavailable(format!("did not answer its metrics: {e}")),
    };
    let mut text = Vec::new();
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                if text.len() + chunk.len() > NODE_METRICS_MAX_BYTES {
                    return unavailable(format!(
                        "its metrics exceed {NODE_METRICS_MAX_BYTES} bytes"
                    ));
                }
                text.extend_from_slice(&chunk);
            }
            Ok(None) => break,
            Err(e) => return unavailable(format!("its metrics broke off: {e}")),
        }
    }
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        text,
    )
        .into_response()
}

fn render_metrics(node: &Node, connections: &ConnectionRegistry) -> String {
    use crate::metrics::{escape_label, GaugeFamily};
    let raft = node.raft_metrics();
    let (commit_log, consume_queues, index) = node.shared.store.disk_bytes();
    let raft_log = node.raft_log.as_ref().and_then(|log| log.stats().ok());
    let index_of = |log_id: Option<&crate::replication::type_config::LogId>| {
        log_id.map_or(0.0, |l| l.index as f64)
    };
    let mut gauges = vec![
        GaugeFamily {
            name: "broker_info",
            help: "Always 1; labels name this node and its broker group.",
            series: vec![(
                format!(
                    "node_id=\"{}\",broker_group=\"{}\",version=\"{}\"",
                    node.id(),
                    escape_label(node.group()),
                    env!("CARGO_PKG_VERSION")
                ),
                1.0,
            )],
        },
        GaugeFamily::single(
            "broker_raft_term",
            "Current Raft term.",
            raft.current_term as f64,
        ),
        GaugeFamily::single(
            "broker_raft_is_leader",
            "1 if this node leads its group.",
            f64::from(u8::from(raft.state == ServerState::Leader)),
        ),
        GaugeFamily::single(
            "broker_raft_leader_id",
            "Node id of the group's leader as this node knows it (0: none known).",
            raft.current_leader.unwrap_or(0) as f64,
        ),
        GaugeFamily::single(
            "broker_raft_last_log_index",
            "Last Raft log index.",
            raft.last_log_index.unwrap_or(0) as f64,
        ),
        GaugeFamily::single(
            "broker_raft_committed_index",
            "Last committed Raft log index.",
            index_of(raft.local_committed.as_ref()),
        ),
        GaugeFamily::single(
            "broker_raft_applied_index",
            "Last applied Raft log index.",
            index_of(raft.last_applied.as_ref()),
        ),
        GaugeFamily::single(
            "broker_raft_snapshot_index",
            "Last Raft log index covered by the current snapshot.",
            index_of(raft.snapshot.as_ref()),
        ),
        GaugeFamily::single(
            "broker_raft_purged_index",
            "Last Raft log index purged from the log.",
            index_of(raft.purged.as_ref()),
        ),
    ];
    // Per follower, on the leader only (openraft tracks replication there).
    let leader_last = raft.last_log_index.unwrap_or(0);
    let mut matched = GaugeFamily {
        name: "broker_raft_follower_matched_index",
        help: "Last Raft log index a follower is known to hold (leader only).",
        series: Vec::new(),
    };
    let mut lag = GaugeFamily {
        name: "broker_raft_follower_lag_entries",
        help: "Raft log entries a follower is behind the leader's last index (leader only).",
        series: Vec::new(),
    };
    if let Some(replication) = &raft.replication {
        for (id, log_id) in replication {
            if *id == node.id() {
                continue;
            }
            let held = log_id.as_ref().map_or(0, |l| l.index);
            let label = format!("follower=\"{id}\"");
            matched.series.push((label.clone(), held as f64));
            lag.series
                .push((label, leader_last.saturating_sub(held) as f64));
        }
    }
    gauges.push(matched);
    gauges.push(lag);
    let counts = connections.counts();
    gauges.push(GaugeFamily {
        name: "broker_http_connections",
        help: "Open connections by class: client (counted against http.max_connections), peer (presented the cluster secret), probation (accepted over the limit, must show the secret).",
        series: vec![
            ("class=\"client\"".into(), counts.clients as f64),
            ("class=\"peer\"".into(), counts.peers as f64),
            ("class=\"probation\"".into(), counts.probation as f64),
        ],
    });
    gauges.extend([
        GaugeFamily::single(
            "broker_http_connections_evicted",
            "Connections accepted over the client limit and closed (evicted by newer ones or timed out), since start.",
            connections.evicted_total.load(std::sync::atomic::Ordering::Relaxed) as f64,
        ),
        GaugeFamily::single(
            "broker_http_connection_refused_requests",
            "Requests answered 503 because their connection was over the client limit, since start.",
            connections.refused_requests_total.load(std::sync::atomic::Ordering::Relaxed) as f64,
        ),
    ]);
    // Its own statement: a temporary guard inside `extend`'s argument would live
    // through every gauge after it (see `replication::state_lock`).
    let open_transactions = node.shared.state().transactions.open_count() as f64;
    gauges.extend([
        GaugeFamily::single(
            "broker_commit_log_disk_bytes",
            "CommitLog bytes on disk.",
            commit_log as f64,
        ),
        GaugeFamily::single(
            "broker_consume_queue_disk_bytes",
            "ConsumeQueue bytes on disk.",
            consume_queues as f64,
        ),
        GaugeFamily::single(
            "broker_index_disk_bytes",
            "Index bytes on disk.",
            index as f64,
        ),
        GaugeFamily::single(
            "broker_raft_log_disk_bytes",
            "Raft log chunk bytes on disk.",
            raft_log.as_ref().map_or(0.0, |s| s.disk_usage_bytes as f64),
        ),
        GaugeFamily::single(
            "broker_commit_log_max_offset",
            "CommitLog end offset.",
            node.shared.store.max_commit_log_offset().0 as f64,
        ),
        GaugeFamily::single(
            "broker_storage_failed",
            "1 once a storage failure stopped this node (it refuses writes and is not ready until its process restarts), else 0.",
            f64::from(u8::from(node.health.is_failed())),
        ),
        GaugeFamily::single(
            "broker_disk_used_ratio",
            "Used fraction of the filesystem holding the data directory (refreshed every 500 ms; the leader refuses message writes above storage.disk_full_ratio).",
            node.health.disk_used_ratio().unwrap_or(0.0),
        ),
        GaugeFamily::single(
            "broker_held_polls",
            "Long polls held.",
            node.shared.waiters.held(node.config.http.max_held_polls) as f64,
        ),
        GaugeFamily::single(
            "broker_timers_pending",
            "Timer messages stored and not yet moved to their topics (this replica's index).",
            node.shared.timers.pending() as f64,
        ),
        GaugeFamily::single(
            "broker_transactions_open",
            "Transactions stored and not yet committed or rolled back (this replica's state).",
            open_transactions,
        ),
        GaugeFamily::single(
            "broker_timer_log_bytes",
            "Bytes of this replica's timer log on disk (32 per timer, in 8 MiB segments kept until all their timers are delivered).",
            node.shared.timers.disk_bytes() as f64,
        ),
    ]);
    // Consumer lag per queue, for the offsets this node's group keeps.
    let committed: Vec<_> = node
        .shared
        .state()
        .consumer_offsets
        .iter()
        .map(|(key, offset)| (key.clone(), *offset))
        .collect();
    let mut consumer_lag = GaugeFamily {
        name: "broker_consumer_group_lag_messages",
        help: "Messages between a consumer group's committed offset and the queue's end.",
        series: Vec::new(),
    };
    let broker_group = escape_label(node.group());
    for (key, offset) in committed {
        let max = node
            .shared
            .store
            .queue_offsets(&key.topic, key.queue_id)
            .map_or(0, |(_, max)| max.0);
        consumer_lag.series.push((
            format!(
                "consumer_group=\"{}\",topic=\"{}\",broker_group=\"{broker_group}\",queue=\"{}\"",
                escape_label(&key.group),
                escape_label(&key.topic),
                key.queue_id.0
            ),
            max.saturating_sub(offset.0) as f64,
        ));
    }
    gauges.push(consumer_lag);

    let mut text = node.metrics.render(
        &gauges,
        &[(
            "broker_commit_log_flush_duration_seconds",
            "Time to flush (msync) the CommitLog's dirty pages, per background flush.",
            &node.metrics.commit_log_flush_duration,
        )],
    );
    if let Some(stats) = raft_log {
        render_raft_log_fsync(&mut text, &stats);
    }
    text
}

/// The Raft log's fsync latency, as the summary raft-log keeps (quantiles since
/// open, and the running sum and count).
fn render_raft_log_fsync(out: &mut String, stats: &raft_log_store::LogStoreStats) {
    use std::fmt::Write;
    let name = "broker_raft_log_fsync_duration_seconds";
    let _ = writeln!(
        out,
        "# HELP {name} Time of each fsync of the Raft log (group commit: one per batch of appends).\n# TYPE {name} summary"
    );
    for (quantile, micros) in [
        ("0.5", stats.fsync_p50_us),
        ("0.9", stats.fsync_p90_us),
        ("0.99", stats.fsync_p99_us),
    ] {
        let _ = writeln!(
            out,
            "{name}{{quantile=\"{quantile}\"}} {}",
            micros as f64 / 1e6
        );
    }
    let _ = writeln!(out, "{name}_sum {}", stats.fsync_total_us as f64 / 1e6);
    let _ = writeln!(out, "{name}_count {}", stats.fsyncs);
    let name = "broker_raft_log_flush_requests_total";
    let _ = writeln!(
        out,
        "# HELP {name} Appends and vote saves handed to the Raft log's flush thread.\n# TYPE {name} counter\n{name} {}",
        stats.flush_requests
    );
}
