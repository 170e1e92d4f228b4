//! Which permission each route needs ([`Access`], declared beside the route in
//! `router.rs`), and checking it before the handler runs ([`authorize`]).
//!
//! Every public route names its [`Access`]; the router wraps each route's handler
//! in [`authorize`] with it, so a route cannot be added without one. The check
//! resolves the bearer token (`auth::identity`) and tests what the path names;
//! what only the body names (a heartbeat's topics, a retry's topic, a message
//! found by id) the handler checks with the [`Caller`] this layer hands it.
//!
//! A request forwarded from another node carries its caller's `Authorization`
//! header and is checked again here, where it runs: forwarding never adds rights.

use std::sync::Arc;

use axum::extract::{FromRequestParts, RawPathParams, Request, State};
use axum::http::request::Parts;
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::error::ApiError;
use crate::auth::{Action, Identity, Resource};
use crate::service::node::Node;

/// What a route requires of its caller.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Access {
    /// Nothing: `/health`, `/ready`, the dashboard's static files.
    Public,
    /// Any valid token; the handler checks or filters by what it finds.
    Authenticated,
    /// The action on the topic `{topic}` of the path.
    Topic(Action),
    /// Any action on the topic `{topic}` (its configuration, routes and queues).
    TopicAny,
    /// The action on the consumer group `{group}` of the path, and on the topic
    /// `{topic}` where the path names one too.
    Group(Action),
    /// `admin` on `cluster`.
    Cluster,
}

impl Access {
    /// How the OpenAPI document names it (`x-permission`).
    pub fn describe(self) -> &'static str {
        match self {
            Self::Public => "none",
            Self::Authenticated => "any valid token (the answer is limited to what it may see)",
            Self::Topic(Action::Pub) => "pub on topic:{topic}",
            Self::Topic(Action::Sub) => "sub on topic:{topic}",
            Self::Topic(Action::Admin) => "admin on topic:{topic}",
            Self::TopicAny => "any action on topic:{topic}",
            Self::Group(Action::Pub) => "pub on group:{group}",
            Self::Group(Action::Sub) => "sub on group:{group} (and on topic:{topic} where named)",
            Self::Group(Action::Admin) => "admin on group:{group}",
            Self::Cluster => "admin on cluster",
        }
    }

    /// Checks `caller` against what the path names.
    fn check(self, caller: &Identity, params: &RawPathParams) -> Result<(), ApiError> {
        let param = |name: &str| {
            params
                .iter()
                .find(|(key, _)| *key == name)
                .map(|(_, value)| value)
        };
        let named = |name: &str| {
            param(name).ok_or_else(|| {
                ApiError::internal(format!(
                    "the route's permission needs a `{{{name}}}` path parameter"
                ))
            })
        };
        match self {
            Self::Public | Self::Authenticated => Ok(()),
            Self::Topic(action) => Ok(caller.require(action, Resource::Topic(named("topic")?))?),
            Self::TopicAny => {
                let topic = named("topic")?;
                if caller.allows_any(Resource::Topic(topic)) {
                    Ok(())
                } else {
                    Err(ApiError::no_permission(format!(
                        "user `{}` has no permission on `topic:{topic}`",
                        caller.name
                    )))
                }
            }
            Self::Group(action) => {
                caller.require(action, Resource::Group(named("group")?))?;
                match param("topic") {
                    Some(topic) => Ok(caller.require(action, Resource::Topic(topic))?),
                    None => Ok(()),
                }
            }
            Self::Cluster => Ok(caller.require(Action::Admin, Resource::Cluster)?),
        }
    }
}

/// The authenticated caller of a request, for handlers.
#[derive(Clone)]
pub struct Caller {
    pub identity: Arc<Identity>,
    /// The request's `Authorization` header, passed on when this node asks
    /// another on the caller's behalf.
    pub authorization: Option<HeaderValue>,
}

impl std::ops::Deref for Caller {
    type Target = Identity;

    fn deref(&self) -> &Identity {
        &self.identity
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        parts.extensions.get::<Caller>().cloned().ok_or_else(|| {
            // A handler asked for its caller on a route declared `Public`: a bug.
            ApiError::internal("this route does not authenticate its caller")
        })
    }
}

/// The middleware every public route runs in, with the route's [`Access`].
pub async fn authorize(
    State((node, access)): State<(Arc<Node>, Access)>,
    params: RawPathParams,
    mut request: Request,
    next: Next,
) -> Response {
    if access == Access::Public {
        return next.run(request).await;
    }
    let authorization = request
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .cloned();
    let identity = {
        let state = node.shared.state();
        node.auth.authenticate(authorization.as_ref(), &state.users)
    };
    // Failures are counted as `broker_rejected_requests_total{code="UNAUTHORIZED"}`.
    let identity = match identity {
        Ok(identity) => identity,
        Err(e) => return e.into_response(),
    };
    if let Err(e) = access.check(&identity, &params) {
        return e.into_response();
    }
    request.extensions_mut().insert(Caller {
        identity,
        authorization,
    });
    next.run(request).await
}
