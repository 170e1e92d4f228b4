//! `/v1/users…`: users, their permissions and quotas, and their tokens
//! (shared/API.md "Security"); all need `admin` on `cluster`.
//!
//! The node that takes a request makes the change — a new token and its hash, a
//! revision — and applies the resulting record to every broker group
//! ([`crate::service::users`]). A group that cannot be reached is named in the
//! answer's `pending_groups` and catches up from the others by anti-entropy.
//! Reads answer from this node's own group.

use std::sync::Arc;

use super::auth::Caller;
use super::error::{parse_json, ApiError, ErrorCode};
use super::extract::{ApiPath, WriteRequest};
use crate::api::{
    DeletedUserResponse, QuotasView, UserRequest, UserTokenResponse, UserUpdate, UserView,
    UsersResponse,
};
use crate::auth::token::{self, TokenHash};
use crate::auth::users::{next_revision, Quotas, UserRecord};
use crate::service::node::Node;
use crate::service::users::{apply_everywhere, merge_here, UserRecords};
use crate::storage::now_ms;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

impl From<QuotasView> for Quotas {
    fn from(view: QuotasView) -> Self {
        Self {
            send_messages_per_s: view.send_messages_per_s,
            send_bytes_per_s: view.send_bytes_per_s,
        }
    }
}

impl From<Quotas> for QuotasView {
    fn from(quotas: Quotas) -> Self {
        Self {
            send_messages_per_s: quotas.send_messages_per_s,
            send_bytes_per_s: quotas.send_bytes_per_s,
        }
    }
}

fn view(record: &UserRecord) -> UserView {
    UserView {
        name: record.name.clone(),
        permissions: record.permissions.clone(),
        quotas: record.quotas.into(),
        created: record.created_ms,
        updated: record.updated_ms,
    }
}

/// The next revision for a change made at this node.
fn revision(node: &Node) -> u64 {
    next_revision(now_ms(), node.shared.state().users.max_revision())
}

fn user_not_found(name: &str) -> ApiError {
    ApiError::new(ErrorCode::UserNotFound, format!("no user `{name}`"))
}

/// `POST /v1/users`
pub async fn create(State(node): State<Arc<Node>>, request: WriteRequest) -> Response {
    let body: UserRequest = match parse_json(&request.body) {
        Ok(body) => body,
        Err(e) => return e.into_response(),
    };
    if node.shared.state().users.get(&body.name).is_some() {
        return ApiError::new(
            ErrorCode::Conflict,
            format!(
                "user `{}` exists: PUT /v1/users/{0} changes it, POST /v1/users/{0}/token issues a new token",
                body.name
            ),
        )
        .into_response();
    }
    let token = token::generate();
    let now = now_ms();
    let record = UserRecord {
        name: body.name,
        permissions: body.permissions,
        quotas: body.quotas.into(),
        token_hash: TokenHash::of(&token),
        revision: revision(&node),
        deleted: false,
        created_ms: now,
        updated_ms: now,
    };
    if let Err(reason) = record.validate() {
        return ApiError::bad_request(reason).into_response();
    }
    let name = record.name.clone();
    match apply_everywhere(&node, vec![record]).await {
        Ok((groups, pending_groups)) => (
            StatusCode::CREATED,
            Json(UserTokenResponse {
                name,
                token,
                groups,
                pending_groups,
            }),
        )
            .into_response(),
        Err(e) => e.into_response(),
    }
}

/// `GET /v1/users`
pub async fn list(State(node): State<Arc<Node>>) -> Json<UsersResponse> {
    Json(UsersResponse {
        users: node.shared.state().users.live().map(view).collect(),
    })
}

/// `GET /v1/users/{name}`
pub async fn show(
    State(node): State<Arc<Node>>,
    ApiPath(name): ApiPath<String>,
) -> Result<Json<UserView>, ApiError> {
    node.shared
        .state()
        .users
        .get(&name)
        .map(|record| Json(view(record)))
        .ok_or_else(|| user_not_found(&name))
}

/// The live record of `name` as this node knows it.
fn current(node: &Node, name: &str) -> Result<UserRecord, ApiError> {
    node.shared
        .state()
        .users
        .get(name)
        .cloned()
        .ok_or_else(|| user_not_found(name))
}

/// `PUT /v1/users/{name}`
pub async fn update(
    State(node): State<Arc<Node>>,
    ApiPath(name): ApiPath<String>,
    request: WriteRequest,
) -> Response {
    let result = async {
        let body: UserUpdate = parse_json(&request.body)?;
        let record = UserRecord {
            permissions: body.permissions,
            quotas: body.quotas.into(),
            revision: revision(&node),
            updated_ms: now_ms(),
            ..current(&node, &name)?
        };
        record.validate().map_err(ApiError::bad_request)?;
        apply_everywhere(&node, vec![record.clone()]).await?;
        Ok::<_, ApiError>(Json(view(&record)))
    };
    match result.await {
        Ok(answer) => answer.into_response(),
        Err(e) => e.into_response(),
    }
}

/// `DELETE /v1/users/{name}`
pub async fn delete(State(node): State<Arc<Node>>, ApiPath(name): ApiPath<String>) -> Response {
    let result = async {
        let record = UserRecord {
            deleted: true,
            revision: revision(&node),
            updated_ms: now_ms(),
            ..current(&node, &name)?
        };
        let (groups, pending_groups) = apply_everywhere(&node, vec![record]).await?;
        Ok::<_, ApiError>(Json(DeletedUserResponse {
            name: name.clone(),
            deleted: true,
            groups,
            pending_groups,
        }))
    };
    match result.await {
        Ok(answer) => answer.into_response(),
        Err(e) => e.into_response(),
    }
}

/// `POST /v1/users/{name}/token`
pub async fn rotate_token(
    State(node): State<Arc<Node>>,
    ApiPath(name): ApiPath<String>,
    caller: Caller,
) -> Response {
    let result = async {
        let token = token::generate();
        let record = UserRecord {
            token_hash: TokenHash::of(&token),
            revision: revision(&node),
            updated_ms: now_ms(),
            ..current(&node, &name)?
        };
        let (groups, pending_groups) = apply_everywhere(&node, vec![record]).await?;
        tracing::info!(user = %name, by = %caller.name, "token rotated");
        Ok::<_, ApiError>(Json(UserTokenResponse {
            name: name.clone(),
            token,
            groups,
            pending_groups,
        }))
    };
    match result.await {
        Ok(answer) => answer.into_response(),
        Err(e) => e.into_response(),
    }
}

/// `GET /internal/users`: this group's whole table, tombstones included.
pub async fn internal_table(State(node): State<Arc<Node>>) -> Json<UserRecords> {
    Json(UserRecords {
        records: node.shared.state().users.records().cloned().collect(),
    })
}

/// `POST /internal/users`: merge records here (this node must lead its group;
/// otherwise NOT_LEADER names the leader — an internal request is never
/// forwarded).
pub async fn internal_apply(State(node): State<Arc<Node>>, request: WriteRequest) -> Response {
    let body: UserRecords = match parse_json(&request.body) {
        Ok(body) => body,
        Err(e) => return e.into_response(),
    };
    if !node.is_leader() {
        return ApiError::not_leader(node.leader_url()).into_response();
    }
    match merge_here(&node, body.records).await {
        Ok(()) => Json(serde_json::json!({"group": node.group()})).into_response(),
        Err(e) => e.into_response(),
    }
}
