//! Query strings through the router of a real single-node broker: a parameter whose
//! percent-decoded bytes are not UTF-8 (`tags=%FF`) is BAD_REQUEST in the API's
//! error shape on every route that reads its query, never silently replaced by
//! U+FFFD and answered 200.

use crate::common;

use axum::http::StatusCode;
use common::http::{assert_error, TestNode};
use serde_json::json;
use tracing::info;

/// Each route that takes query parameters answers 400 BAD_REQUEST to a value (or a
/// name) that decodes to invalid UTF-8 — a lone `%FF`, a truncated sequence, an
/// overlong encoding — and the message names the query. Valid multi-byte UTF-8
/// (`%C3%A9`, "é") and `+` for a space still pass.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_utf8_in_a_query_is_bad_request() {
    let node = TestNode::start().await;
    node.send_ok(
        "q8",
        vec![json!({"body": "one", "tags": "TagA", "keys": ["k"]})],
    )
    .await;

    for uri in [
        "/v1/topics/q8/queues/0/messages?offset=0&tags=%FF",
        "/v1/topics/q8/queues/0/messages?offset=0&tags=Tag%C3",
        "/v1/topics/q8/queues/0/messages?offset=0&tags=%C0%AF",
        "/v1/topics/q8/queues/0/messages?offset=0&%FF=1",
        "/v1/topics/q8/messages?key=%FF",
        "/v1/groups/g/offsets?topic=q8%FE",
        "/v1/topics/q8/queues/0/offset?timestamp=0&x=%80",
    ] {
        info!("--- {uri}");
        let (status, body) = node.get(uri).await;
        assert_error(
            (status, body.clone()),
            StatusCode::BAD_REQUEST,
            "BAD_REQUEST",
        );
        let message = body["message"].as_str().unwrap_or_default();
        assert!(
            message.contains("UTF-8"),
            "the message says what is wrong: {body}"
        );
    }

    info!("--- valid multi-byte UTF-8 and `+` still pass");
    for uri in [
        "/v1/topics/q8/queues/0/messages?offset=0&tags=%C3%A9",
        "/v1/topics/q8/queues/0/messages?offset=0&tags=Tag+A",
        "/v1/topics/q8/messages?key=k",
    ] {
        let (status, body) = node.get(uri).await;
        assert_eq!(status, StatusCode::OK, "{uri}: {body}");
    }
    node.stop().await;
}
