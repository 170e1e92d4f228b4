//! A request id on every answer (`x-request-id`) and in the request's log span.
//!
//! An incoming `x-request-id` is kept when it is short printable ASCII (so a proxy
//! or client can correlate its own logs); otherwise the node makes one. The id is
//! also written into the request's headers, so a write forwarded to the leader
//! carries the same id into the leader's log.

use axum::extract::{MatchedPath, Request};
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument;

/// The header, request and response alike.
pub const REQUEST_ID_HEADER: &str = "x-request-id";
/// Longest incoming id kept; longer ones are replaced.
pub const MAX_REQUEST_ID_LEN: usize = 128;

/// Whether an incoming id is kept: 1..=128 visible ASCII characters.
pub fn acceptable(id: &str) -> bool {
    (1..=MAX_REQUEST_ID_LEN).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_graphic())
}

/// A new id: 16 hex digits, random (ids need to be unique enough to grep for, not
/// secret).
pub fn new_id() -> String {
    format!("{:016x}", rand::random::<u64>())
}

/// Middleware: assigns the id, runs the request inside a span carrying it, sets it
/// on the answer.
pub async fn assign(mut request: Request, next: Next) -> Response {
    let incoming = request
        .headers()
        .get(REQUEST_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|id| acceptable(id))
        .map(str::to_string);
    let id = incoming.unwrap_or_else(new_id);
    let value = HeaderValue::from_str(&id).expect("request ids are visible ASCII");
    request
        .headers_mut()
        .insert(REQUEST_ID_HEADER, value.clone());
    // The route template, not the path: a low-cardinality span field.
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("-", |p| p.as_str())
        .to_string();
    let span = tracing::info_span!(
        "request",
        request_id = %id,
        method = %request.method(),
        route = %route,
    );
    let started = std::time::Instant::now();
    let mut response = next.run(request).instrument(span.clone()).await;
    span.in_scope(|| {
        tracing::debug!(
            status = response.status().as_u16(),
            elapsed_us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX),
            "answered"
        );
    });
    response.headers_mut().insert(REQUEST_ID_HEADER, value);
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn incoming_ids_are_kept_only_when_printable_and_short() {
        assert!(acceptable("abc-123_XYZ"));
        assert!(!acceptable(""));
        assert!(!acceptable("has space"));
        assert!(!acceptable(&"x".repeat(MAX_REQUEST_ID_LEN + 1)));
        assert!(acceptable(&"x".repeat(MAX_REQUEST_ID_LEN)));
        let id = new_id();
        assert_eq!(id.len(), 16);
        assert!(acceptable(&id));
    }
}
