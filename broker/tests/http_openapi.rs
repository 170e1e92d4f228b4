//! `GET /openapi.json` matches the router: every public route the router serves
//! (path and method) is in the document, and every operation of the document is
//! served. The routes are read out of the real router, not out of the table the
//! document is built from: the paths from axum's `Debug` rendering of the
//! router, the methods from the `Allow` header of a `PATCH` to each path (the API
//! has no PATCH, so axum answers 405 listing what the path takes). A route added
//! to `router.rs` without its line in `broker::http::openapi::OPERATIONS` fails
//! here.
//!
//! Real answers are also checked against the document's schemas (required fields
//! present, no field the schema does not list), so the schemas cannot drift from
//! the wire types either. `scripts/testing/dashboard-browser.sh` validates the
//! served document with `openapi-spec-validator`.

use crate::common;

use std::collections::BTreeSet;

use axum::body::Body;
use axum::http::{header, Method, StatusCode};
use common::http::TestNode;
use serde_json::{json, Value};
use tracing::info;

/// Paths of the router's main path router, from its `Debug` text
/// (`paths: {RouteId(1): "/v1/…", …}`).
fn router_paths(router: &axum::Router) -> BTreeSet<String> {
    let text = format!("{router:?}");
    let start = text.find("paths: {").expect(
        "axum's Router Debug lists `paths: {…}`; if its format changed, update this parser",
    );
    // `RouteId(1): "/v1/…", RouteId(2): "/…"}`: paths hold braces themselves, so
    // walk the entries rather than looking for the closing one.
    let mut rest = &text[start + "paths: {".len()..];
    let mut paths = BTreeSet::new();
    while let Some(after) = rest.strip_prefix("RouteId(") {
        let open = after.find("): \"").expect("`RouteId(n): \"path\"`") + "): \"".len();
        let path = &after[open..];
        let close = path.find('"').expect("a quoted path ends");
        paths.insert(path[..close].to_string());
        rest = &path[close + 1..];
        match rest.strip_prefix(", ") {
            Some(next) => rest = next,
            None => break,
        }
    }
    assert!(
        paths.len() >= 20 && paths.contains("/v1/topics"),
        "the parser found the router's paths: {paths:?}"
    );
    paths
}

/// A concrete URI for a path template.
fn instantiate(path: &str) -> String {
    path.split('/')
        .map(|segment| match segment {
            "{queue_id}" | "{node_id}" => "1".to_string(),
            s if s.starts_with('{') => "probe".to_string(),
            s => s.to_string(),
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// (method, path) of every public route the router serves.
async fn served_operations(node: &TestNode) -> BTreeSet<(String, String)> {
    let mut operations = BTreeSet::new();
    for path in router_paths(&node.router) {
        if path.starts_with("/internal/") {
            // Node-to-node Raft RPC and route registration: not the public API.
            continue;
        }
        let answer = node
            .call(Method::PATCH, &instantiate(&path), Body::empty(), &[])
            .await;
        assert_eq!(
            answer.status,
            StatusCode::METHOD_NOT_ALLOWED,
            "PATCH {path}: the API has no PATCH route"
        );
        let allow = answer
            .headers
            .get(header::ALLOW)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_else(|| panic!("405 for {path} lists the allowed methods"));
        for method in allow.split(',').map(str::trim) {
            // axum answers HEAD wherever it answers GET.
            if method != "HEAD" {
                operations.insert((method.to_ascii_lowercase(), path.clone()));
            }
        }
    }
    operations
}

fn documented_operations(doc: &Value) -> BTreeSet<(String, String)> {
    let paths = doc["paths"].as_object().expect("paths is an object");
    paths
        .iter()
        .flat_map(|(path, item)| {
            item.as_object()
                .expect("a path item is an object")
                .keys()
                .map(move |method| (method.clone(), path.clone()))
        })
        .collect()
}

/// The router and the document name the same (method, path) pairs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_is_documented_and_every_operation_is_served() {
    let node = TestNode::start().await;
    let answer = node
        .call(Method::GET, "/openapi.json", Body::empty(), &[])
        .await;
    assert_eq!(answer.status, StatusCode::OK);
    let doc = answer.json();
    assert_eq!(doc["openapi"], "3.0.3");
    assert_eq!(doc, broker::http::openapi::document());

    let served = served_operations(&node).await;
    let documented = documented_operations(&doc);
    info!(
        served = served.len(),
        documented = documented.len(),
        "--- compare"
    );
    let undocumented: Vec<_> = served.difference(&documented).collect();
    let unserved: Vec<_> = documented.difference(&served).collect();
    assert!(
        undocumented.is_empty(),
        "routes missing from the OpenAPI document — add one line each to \
         broker::http::openapi::OPERATIONS: {undocumented:?}"
    );
    assert!(
        unserved.is_empty(),
        "operations in the OpenAPI document that the router does not serve: {unserved:?}"
    );
    node.stop().await;
}

/// Checks `value` against `schema` (the subset the document uses: `$ref`,
/// `type`, `required`, `properties`, `items`, `nullable`, `enum`), with no field
/// beyond `properties` on objects that list them. Returns the first mismatch.
fn check(doc: &Value, schema: &Value, value: &Value, at: &str) -> Result<(), String> {
    if let Some(reference) = schema["$ref"].as_str() {
        let name = reference.trim_start_matches("#/components/schemas/");
        return check(doc, &doc["components"]["schemas"][name], value, at);
    }
    if value.is_null() {
        return if schema["nullable"] == true {
            Ok(())
        } else {
            Err(format!("{at}: null where the schema does not allow it"))
        };
    }
    if let Some(options) = schema["enum"].as_array() {
        if !options.contains(value) {
            return Err(format!("{at}: {value} is not one of {options:?}"));
        }
    }
    match schema["type"].as_str() {
        Some("object") => {
            let object = value
                .as_object()
                .ok_or_else(|| format!("{at}: not an object: {value}"))?;
            for name in schema["required"].as_array().into_iter().flatten() {
                let name = name.as_str().unwrap_or_default();
                if !object.contains_key(name) {
                    return Err(format!("{at}: required `{name}` missing in {value}"));
                }
            }
            if let Some(properties) = schema["properties"].as_object() {
                for (name, field) in object {
                    let field_schema = properties
                        .get(name)
                        .ok_or_else(|| format!("{at}: field `{name}` is not in the schema"))?;
                    check(doc, field_schema, field, &format!("{at}.{name}"))?;
                }
            }
            Ok(())
        }
        Some("array") => {
            let items = value
                .as_array()
                .ok_or_else(|| format!("{at}: not an array: {value}"))?;
            for (i, item) in items.iter().enumerate() {
                check(doc, &schema["items"], item, &format!("{at}[{i}]"))?;
            }
            Ok(())
        }
        Some("integer") if !value.is_u64() && !value.is_i64() => {
            Err(format!("{at}: not an integer: {value}"))
        }
        Some("string") if !value.is_string() => Err(format!("{at}: not a string: {value}")),
        Some("boolean") if !value.is_boolean() => Err(format!("{at}: not a boolean: {value}")),
        _ => Ok(()),
    }
}

/// The success schema of an operation (its first 2xx answer: every success status
/// of an operation shares one body).
fn answer_schema<'a>(doc: &'a Value, method: &str, path: &str) -> &'a Value {
    let responses = doc["paths"][path][method]["responses"]
        .as_object()
        .unwrap_or_else(|| panic!("{method} {path} has responses"));
    let success = responses
        .iter()
        .find(|(status, _)| status.starts_with('2'))
        .unwrap_or_else(|| panic!("{method} {path} documents a success"))
        .1;
    let schema = &success["content"]["application/json"]["schema"];
    assert!(schema.is_object(), "{method} {path} answers JSON");
    schema
}

/// Real answers of every JSON operation that can be called on one node fit the
/// document's schemas, and so does an error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_answers_fit_the_documented_schemas() {
    let node = TestNode::start().await;
    let doc = broker::http::openapi::document();
    info!("--- a topic, a keyed message, a committed offset, a heartbeat");
    let sent = node
        .send_ok(
            "shapes",
            vec![json!({"body": "x", "keys": ["k1"], "tags": "T", "properties": {"a": "b"}, "queue_id": 0})],
        )
        .await;
    let msg_id = sent["results"][0]["msg_id"]
        .as_str()
        .expect("a msg_id")
        .to_string();
    let calls: Vec<(Method, String, Option<Value>, &str, &str)> = vec![
        (
            Method::PUT,
            "/v1/topics/shapes".into(),
            Some(json!({"read_queue_nums": 4, "write_queue_nums": 4})),
            "put",
            "/v1/topics/{topic}",
        ),
        (
            Method::POST,
            "/v1/topics/shapes/messages".into(),
            Some(json!({"messages": [{"body": "y", "queue_id": 1}]})),
            "post",
            "/v1/topics/{topic}/messages",
        ),
        (
            Method::GET,
            "/v1/topics/shapes/queues/0/messages?offset=0".into(),
            None,
            "get",
            "/v1/topics/{topic}/queues/{queue_id}/messages",
        ),
        (
            Method::GET,
            "/v1/topics/shapes/messages?key=k1".into(),
            None,
            "get",
            "/v1/topics/{topic}/messages",
        ),
        (
            Method::GET,
            "/v1/topics/shapes/queues".into(),
            None,
            "get",
            "/v1/topics/{topic}/queues",
        ),
        (
            Method::GET,
            "/v1/topics/shapes/queues/0/offset?timestamp=0".into(),
            None,
            "get",
            "/v1/topics/{topic}/queues/{queue_id}/offset",
        ),
        (
            Method::GET,
            format!("/v1/messages/{msg_id}"),
            None,
            "get",
            "/v1/messages/{msg_id}",
        ),
        (
            Method::PUT,
            "/v1/groups/g1/offsets/shapes/0".into(),
            Some(json!({"offset": 1})),
            "put",
            "/v1/groups/{group}/offsets/{topic}/{queue_id}",
        ),
        (
            Method::GET,
            "/v1/groups/g1/offsets".into(),
            None,
            "get",
            "/v1/groups/{group}/offsets",
        ),
        (Method::GET, "/v1/groups".into(), None, "get", "/v1/groups"),
        (
            Method::POST,
            "/v1/groups/g1/heartbeat".into(),
            Some(json!({"client_id": "c1", "topics": ["shapes"]})),
            "post",
            "/v1/groups/{group}/heartbeat",
        ),
        (
            Method::POST,
            "/v1/groups/g1/retry".into(),
            Some(json!({"topic": "shapes", "queue_id": 0, "queue_offset": 0})),
            "post",
            "/v1/groups/{group}/retry",
        ),
        (
            Method::POST,
            "/v1/groups/g1/retry".into(),
            Some(json!({"topic": "shapes", "queue_id": 0, "queue_offset": 0, "delay_level": -1})),
            "post",
            "/v1/groups/{group}/retry",
        ),
        (
            Method::POST,
            "/v1/groups/g1/offsets/reset".into(),
            Some(json!({"topic": "shapes", "timestamp": 0})),
            "post",
            "/v1/groups/{group}/offsets/reset",
        ),
        (
            Method::GET,
            "/v1/topics/shapes".into(),
            None,
            "get",
            "/v1/topics/{topic}",
        ),
        (Method::GET, "/v1/topics".into(), None, "get", "/v1/topics"),
        (
            Method::GET,
            "/v1/routes/shapes".into(),
            None,
            "get",
            "/v1/routes/{topic}",
        ),
        (
            Method::GET,
            "/v1/cluster".into(),
            None,
            "get",
            "/v1/cluster",
        ),
        (
            Method::DELETE,
            "/v1/topics/shapes".into(),
            None,
            "delete",
            "/v1/topics/{topic}",
        ),
    ];
    for (method, uri, body, doc_method, doc_path) in calls {
        let (status, answer) = node.request(method, &uri, body).await;
        assert_eq!(status, StatusCode::OK, "{uri}: {answer}");
        if let Err(e) = check(
            &doc,
            answer_schema(&doc, doc_method, doc_path),
            &answer,
            "answer",
        ) {
            panic!("{doc_method} {uri} does not fit its documented schema: {e}");
        }
    }
    info!("--- an error answer fits `Error`");
    let (status, answer) = node.get("/v1/topics/gone/queues").await;
    assert!(!status.is_success());
    let schema = &doc["paths"]["/v1/topics/{topic}/queues"]["get"]["responses"]["default"]
        ["content"]["application/json"]["schema"];
    check(&doc, schema, &answer, "error").expect("the error fits `Error`");

    info!("--- the checker itself rejects a missing field and an extra one");
    let topic_schema = json!({"$ref": "#/components/schemas/Topic"});
    let good =
        json!({"topic": "t", "read_queue_nums": 1, "write_queue_nums": 1, "perm": 6, "groups": []});
    check(&doc, &topic_schema, &good, "t").expect("a whole topic fits");
    let mut missing = good.clone();
    missing.as_object_mut().map(|o| o.remove("perm"));
    assert!(check(&doc, &topic_schema, &missing, "t").is_err());
    let mut extra = good;
    extra["surprise"] = json!(1);
    assert!(check(&doc, &topic_schema, &extra, "t").is_err());
    node.stop().await;
}
