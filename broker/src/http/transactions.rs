//! Transactions over HTTP (shared/API.md "Transactional messages"): commit and
//! rollback by transaction id — at the leader of the group that stored it, which
//! the id names (its first message's id carries the group's hash) — and the long
//! poll of a producer group's checks.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;

use super::auth::Caller;
use super::error::{ApiError, ErrorCode};
use super::extract::{ApiPath, ApiQuery, WriteRequest};
use super::forward;
use super::groups::BrokerGroupParam;
use crate::service::node::Node;
use crate::service::pull::message_view;
use crate::service::routing::{self, Target};
use crate::service::transactions;
use crate::storage::MessageId;
use crate::topic::validate_name;
use broker_proto::transaction::{
    is_transaction_id, TransactionCheck, TransactionChecksResponse, MAX_CHECK_WAIT_MS,
};

/// `POST /v1/transactions/{transaction_id}/commit`
pub async fn commit(
    State(node): State<Arc<Node>>,
    ApiPath(id): ApiPath<String>,
    caller: Caller,
    request: WriteRequest,
) -> Response {
    resolve(node, id, caller, request, true).await
}

/// `POST /v1/transactions/{transaction_id}/rollback`
pub async fn rollback(
    State(node): State<Arc<Node>>,
    ApiPath(id): ApiPath<String>,
    caller: Caller,
    request: WriteRequest,
) -> Response {
    resolve(node, id, caller, request, false).await
}

async fn resolve(
    node: Arc<Node>,
    id: String,
    caller: Caller,
    request: WriteRequest,
    commit: bool,
) -> Response {
    if !is_transaction_id(&id) {
        return ApiError::bad_request(format!("`{id}` is not a transaction id (32 hex digits)"))
            .into_response();
    }
    let Some(id) = MessageId::parse(&id) else {
        return ApiError::bad_request("not a transaction id").into_response();
    };
    if let Err(e) = request.expect_no_fields("a commit or rollback") {
        return e.into_response();
    }
    match routing::by_id(&node, &id) {
        Some(Target::Local) => {}
        Some(Target::Forward(route)) => {
            return forward::to_group(&node, request, &route, "group").await
        }
        None => {
            return ApiError::new(
                ErrorCode::TransactionNotFound,
                format!("no transaction {id}: the group that stored it is not known here"),
            )
            .into_response()
        }
    }
    forward::at_leader(&node, request, || async {
        let resolution = transactions::resolve(&node, &caller.identity, id, commit).await?;
        Ok(Json(resolution).into_response())
    })
    .await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChecksQuery {
    max_wait_ms: Option<u64>,
    #[allow(dead_code)] // read through BrokerGroupParam
    broker_group: Option<String>,
}

/// `GET /v1/producer-groups/{producer_group}/transaction-checks?max_wait_ms=N`
///
/// The checks of this node's group, or of the one `?broker_group=` names.
pub async fn checks(
    State(node): State<Arc<Node>>,
    ApiPath(producer_group): ApiPath<String>,
    ApiQuery(query): ApiQuery<ChecksQuery>,
    ApiQuery(param): ApiQuery<BrokerGroupParam>,
    caller: Caller,
    request: WriteRequest,
) -> Response {
    if let Err(e) = validate_name("producer_group", &producer_group) {
        return ApiError::bad_request(e).into_response();
    }
    let wait = query.max_wait_ms.unwrap_or(0);
    if wait > MAX_CHECK_WAIT_MS {
        return ApiError::bad_request(format!("max_wait_ms must be at most {MAX_CHECK_WAIT_MS}"))
            .into_response();
    }
    if let Some(group) = param.broker_group.as_deref() {
        match routing::named(&node, group) {
            Ok(Target::Local) => {}
            Ok(Target::Forward(route)) => {
                return forward::to_group(&node, request, &route, "broker_group").await
            }
            Err(e) => return ApiError::from(e).into_response(),
        }
    }
    forward::at_leader(&node, request, || async {
        let checks = transactions::take_checks(
            &node,
            &caller.identity,
            &producer_group,
            Duration::from_millis(wait),
        )
        .await?;
        let checks = checks
            .into_iter()
            .map(|check| TransactionCheck {
                transaction_id: check.id.to_string(),
                topic: check.topic,
                // Shown as they will be in their topic, where they are not yet:
                // the queue offset is the half topic's.
                messages: check
                    .messages
                    .into_iter()
                    .map(|mut half| {
                        transactions::show_in_topic(&mut half);
                        message_view(half)
                    })
                    .collect(),
                check_count: check.check_count,
                broker_group: node.group().to_string(),
            })
            .collect();
        Ok(Json(TransactionChecksResponse { checks }).into_response())
    })
    .await
}
