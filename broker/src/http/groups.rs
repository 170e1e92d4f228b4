//! A request's broker group on the wire: the query parameters that name it, and
//! fetching an answer from a node of another group. Which group a request goes to
//! is decided by [`crate::service::routing`].

use serde::de::DeserializeOwned;
use serde::Deserialize;

use super::auth::Caller;
use super::error::{ApiError, ErrorCode};
use super::extract::FORWARDED_HEADER;
use crate::service::control::GroupRoute;
use crate::service::node::Node;

/// The `group` query parameter of topic paths.
#[derive(Deserialize, Default)]
pub struct GroupParam {
    pub group: Option<String>,
}

/// The `broker_group` query parameter of consumer-group paths.
#[derive(Deserialize, Default)]
pub struct BrokerGroupParam {
    pub broker_group: Option<String>,
}

/// GETs `path_and_query` (which names the group) from a node of `route` on the
/// caller's behalf (its token goes along and is checked there) and decodes the
/// answer; an API error answer is passed through.
pub async fn fetch<T: DeserializeOwned>(
    node: &Node,
    caller: &Caller,
    route: &GroupRoute,
    path_and_query: &str,
) -> Result<T, ApiError> {
    let mut last = None;
    for url in route.urls() {
        let mut request = node
            .peer_request(reqwest::Method::GET, &url, path_and_query)
            .header(FORWARDED_HEADER, node.config.node_info().url);
        if let Some(authorization) = &caller.authorization {
            request = request.header(axum::http::header::AUTHORIZATION, authorization);
        }
        let answer = request
            .timeout(std::time::Duration::from_secs(5))
            .send()
            .await;
        match answer {
            Ok(response) if response.status().is_success() => {
                return response.json::<T>().await.map_err(|e| {
                    ApiError::unavailable(format!("group `{}` answered badly: {e}", route.group))
                });
            }
            Ok(response) => {
                let status = response.status().as_u16();
                let body: crate::api::ErrorBody = response.json().await.map_err(|e| {
                    ApiError::unavailable(format!("group `{}` answered badly: {e}", route.group))
                })?;
                let code = ErrorCode::from_word(&body.code).unwrap_or(if status < 500 {
                    ErrorCode::BadRequest
                } else {
                    ErrorCode::Unavailable
                });
                return Err(ApiError::new(
                    code,
                    format!("group `{}`: {}", route.group, body.message),
                ));
            }
            Err(e) => last = Some(format!("{url}: {e}")),
        }
    }
    Err(ApiError::unavailable(format!(
        "no node of group `{}` answered ({})",
        route.group,
        last.unwrap_or_else(|| "no node known".into())
    )))
}

/// Percent-encodes a path segment or query value (names may hold `%`, keys any
/// character).
pub use crate::topic::percent_encoded as encode;
