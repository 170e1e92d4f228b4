//! Consumer-group heartbeats: members register with the group's coordinator and
//! learn their queues (see [`crate::consumer::coordinator`]).

use std::sync::Arc;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::error::parse_json;
use super::extract::{ApiPath, ApiQuery, WriteRequest};
use super::forward;
use super::groups::{self, BrokerGroupParam, Target};
use crate::api::HeartbeatRequest;
use crate::consumer::coordinator::QueueRef;
use crate::error::ApiError;
use crate::node::Node;
use crate::producer::group_hash;
use crate::topic::validate_name;

/// Most topics one member may subscribe to in a heartbeat.
const MAX_TOPICS: usize = 256;

/// `POST /v1/groups/{group}/heartbeat` `{"client_id": "c-1", "topics": ["t"],
/// "owned": [...]}`: registers the member with the coordinator — the leader of the
/// broker group picked by hashing the consumer group over the live broker groups
/// (`?broker_group=` names it when forwarded) — and answers the members and this
/// member's queues.
pub async fn heartbeat(
    State(node): State<Arc<Node>>,
    ApiPath(group): ApiPath<String>,
    ApiQuery(param): ApiQuery<BrokerGroupParam>,
    mut request: WriteRequest,
) -> Response {
    let body = (|| -> Result<HeartbeatRequest, ApiError> {
        validate_name("group", &group).map_err(ApiError::bad_request)?;
        let body: HeartbeatRequest = parse_json(&request.body)?;
        validate_name("client_id", &body.client_id).map_err(ApiError::bad_request)?;
        if body.topics.len() > MAX_TOPICS {
            return Err(ApiError::bad_request(format!(
                "at most {MAX_TOPICS} topics per member"
            )));
        }
        for topic in body
            .topics
            .iter()
            .chain(body.owned.iter().map(|q| &q.topic))
        {
            validate_name("topic", topic).map_err(ApiError::bad_request)?;
        }
        Ok(body)
    })();
    let body = match body {
        Ok(body) => body,
        Err(e) => return e.into_response(),
    };
    let target = match param.broker_group.as_deref() {
        Some(name) => groups::named(&node, name),
        None => {
            let routes = node.group_routes();
            let pick = group_hash(&group) as usize % routes.len().max(1);
            match routes.get(pick) {
                Some(route) if route.is_local() => Ok(Target::Local),
                Some(route) => Ok(Target::Remote(Box::new(route.clone()))),
                None => Ok(Target::Local),
            }
        }
    };
    match target {
        Err(e) => e.into_response(),
        Ok(Target::Remote(route)) => {
            forward::to_group(&node, request, &route, "broker_group").await
        }
        Ok(Target::Local) if !node.is_leader() => {
            // The leader must coordinate for this group whatever its own routes say.
            request.path_and_query =
                forward::with_param(&request.path_and_query, "broker_group", node.group());
            forward::to_leader(&node, request, None).await
        }
        Ok(Target::Local) => {
            let routes = node.group_routes();
            let queues_of = |topic: &str| -> Vec<QueueRef> {
                routes
                    .iter()
                    .filter_map(|route| route.topics.get(topic).map(|c| (route, c)))
                    .filter(|(_, config)| config.readable())
                    .flat_map(|(route, config)| {
                        (0..config.read_queue_nums).map(|queue_id| QueueRef {
                            topic: topic.to_string(),
                            group: route.group.clone(),
                            queue_id,
                        })
                    })
                    .collect()
            };
            let term = node.raft_metrics().current_term;
            let answer = node.coordinator.heartbeat(
                &group,
                term,
                node.config.control.member_expiry.0,
                &body,
                &queues_of,
            );
            Json(answer).into_response()
        }
    }
}
