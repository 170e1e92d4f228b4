//! Extractors that reject with the API's error shape instead of axum's plain text.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, Method};
use bytes::Bytes;
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// Path parameters; a bad one is BAD_REQUEST.
pub struct ApiPath<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|p| Self(p.0))
            .map_err(ApiError::from)
    }
}

/// Query parameters; a bad one is BAD_REQUEST.
pub struct ApiQuery<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|q| Self(q.0))
            .map_err(ApiError::from)
    }
}

/// A request kept whole — method, path, headers and raw body — so it can be parsed
/// here or forwarded to another node unchanged.
#[derive(Clone)]
pub struct WriteRequest {
    pub method: Method,
    pub path_and_query: String,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// The client's address (the original client's, when forwarded).
    pub born_host: String,
}

/// Header a forwarding node sets: the loop guard, and the original client address.
pub const FORWARDED_HEADER: &str = "x-broker-forwarded-for";

impl<S: Send + Sync> FromRequest<S> for WriteRequest {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let (parts, body) = request.into_parts();
        let born_host = parts
            .headers
            .get(FORWARDED_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
            .or_else(|| {
                parts
                    .extensions
                    .get::<ConnectInfo<SocketAddr>>()
                    .map(|info| info.0.to_string())
            })
            .unwrap_or_else(|| "unknown".into());
        let path_and_query = parts.uri.path_and_query().map_or_else(
            || parts.uri.path().to_string(),
            |pq| pq.as_str().to_string(),
        );
        let method = parts.method.clone();
        let headers = parts.headers.clone();
        let body = Bytes::from_request(Request::from_parts(parts, body), state).await?;
        Ok(Self {
            method,
            path_and_query,
            headers,
            body,
            born_host,
        })
    }
}

impl WriteRequest {
    /// Whether another node already forwarded this request here.
    pub fn was_forwarded(&self) -> bool {
        self.headers.contains_key(FORWARDED_HEADER)
    }
}
