//! JSON request bodies must be JSON objects: every endpoint taking one (send, offset
//! commit, topic create/update) refuses a JSON array with BAD_REQUEST, rather than
//! reading the array positionally into the request's fields (serde's default for
//! structs, which shared/API.md does not describe).

use crate::common;

use axum::http::{Method, StatusCode};
use common::http::{assert_error, TestNode};
use serde_json::json;
use tracing::info;

/// The object forms pass (the control), the array forms of the same requests are
/// BAD_REQUEST with the error shape and change nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_arrays_are_not_request_objects() {
    let node = TestNode::start().await;
    info!("--- the object forms pass");
    node.create_topic(
        "t",
        json!({"read_queue_nums": 2, "write_queue_nums": 2, "perm": 6}),
    )
    .await;
    node.send_ok("t", vec![json!({"body": "x", "queue_id": 0})])
        .await;
    let (status, body) = node
        .request(
            Method::PUT,
            "/v1/groups/g/offsets/t/0",
            Some(json!({"offset": 0})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");

    let mut accepted = Vec::new();
    for (case, method, uri, body) in [
        (
            "topic config as an array",
            Method::PUT,
            "/v1/topics/t",
            json!([8, 8, 6]),
        ),
        (
            "empty array as a topic config",
            Method::PUT,
            "/v1/topics/u",
            json!([]),
        ),
        (
            "send request as an array",
            Method::POST,
            "/v1/topics/t/messages",
            json!([[["y"]]]),
        ),
        (
            "message as an array",
            Method::POST,
            "/v1/topics/t/messages",
            json!({"messages": [["y"]]}),
        ),
        (
            "commit as an array",
            Method::PUT,
            "/v1/groups/g/offsets/t/0",
            json!([1]),
        ),
    ] {
        info!("--- {case}");
        let (status, answer) = node.request(method, uri, Some(body)).await;
        if status == StatusCode::BAD_REQUEST {
            assert_error((status, answer), StatusCode::BAD_REQUEST, "BAD_REQUEST");
        } else {
            accepted.push(format!("{case}: {status} {answer}"));
        }
    }
    assert!(
        accepted.is_empty(),
        "array bodies were not refused:\n{}",
        accepted.join("\n")
    );
    node.stop().await;
}
