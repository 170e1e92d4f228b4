//! The OpenAPI 3.0 document of the public API, served at `GET /openapi.json`.
//!
//! It is built from [`OPERATIONS`], one line per (method, path), and from the
//! schemas in [`schemas`]. `broker/tests/http_openapi.rs` reads the paths out of
//! the real router and the methods each one answers, and fails when the router
//! and [`OPERATIONS`] differ in either direction: a route added to
//! `router.rs` without its line here (or a line without its route) fails CI.
//!
//! **Adding a route to the document** is one line in [`OPERATIONS`]:
//!
//! ```text
//! op("post", "/v1/groups/{group}/retry", "groups", "Give a message back for redelivery")
//!     .body("RetryRequest").answers("Object"),
//! ```
//!
//! Path parameters come from the `{…}` segments (`queue_id`, `node_id` are
//! integers, the rest strings); `.query(&[q("name", "integer", "what it is")])`
//! lists query parameters; `.body(S)` / `.answers(S)` name a schema in
//! [`schemas`] (`"Object"` is any JSON object when a precise one is not written
//! yet); `.text("text/plain")` answers something other than JSON.

use std::sync::OnceLock;

use serde_json::{json, Map, Value};

/// A query parameter: name, schema type, description; optional unless listed in
/// [`Operation::required`].
#[derive(Clone, Copy, Debug)]
pub struct Query {
    pub name: &'static str,
    pub kind: &'static str,
    pub description: &'static str,
}

/// Shorthand for a [`Query`].
pub const fn q(name: &'static str, kind: &'static str, description: &'static str) -> Query {
    Query {
        name,
        kind,
        description,
    }
}

/// One operation of the public API.
#[derive(Clone, Copy, Debug)]
pub struct Operation {
    /// Lower case: `get`, `post`, `put`, `delete`.
    pub method: &'static str,
    /// axum's template: `/v1/topics/{topic}`.
    pub path: &'static str,
    pub tag: &'static str,
    pub summary: &'static str,
    pub query: &'static [Query],
    /// Query parameters that are required.
    pub required: &'static [&'static str],
    /// Schema of the JSON request body.
    pub body: Option<&'static str>,
    /// Schema of the 200 answer (JSON), when `content_type` is JSON.
    pub answer: &'static str,
    pub content_type: &'static str,
}

/// An operation answering an `Object`, with no query and no body; refine it with
/// the builder methods.
pub const fn op(
    method: &'static str,
    path: &'static str,
    tag: &'static str,
    summary: &'static str,
) -> Operation {
    Operation {
        method,
        path,
        tag,
        summary,
        query: &[],
        required: &[],
        body: None,
        answer: "Object",
        content_type: "application/json",
    }
}

impl Operation {
    pub const fn query(self, query: &'static [Query]) -> Self {
        Self { query, ..self }
    }
    pub const fn required(self, required: &'static [&'static str]) -> Self {
        Self { required, ..self }
    }
    pub const fn body(self, schema: &'static str) -> Self {
        Self {
            body: Some(schema),
            ..self
        }
    }
    pub const fn answers(self, schema: &'static str) -> Self {
        Self {
            answer: schema,
            ..self
        }
    }
    pub const fn text(self, content_type: &'static str) -> Self {
        Self {
            content_type,
            ..self
        }
    }
}

const GROUP_Q: Query = q(
    "group",
    "string",
    "broker group to use (default: this node's group, or the only one serving the topic)",
);
const BROKER_GROUP_Q: Query = q(
    "broker_group",
    "string",
    "answer for this broker group only (default: merge every group)",
);

/// Every public operation. Keep in the router's order.
pub const OPERATIONS: &[Operation] = &[
    op(
        "post",
        "/v1/topics/{topic}/messages",
        "messages",
        "Send a batch of messages (atomic)",
    )
    .query(&[GROUP_Q])
    .body("SendRequest")
    .answers("SendResponse"),
    op(
        "get",
        "/v1/topics/{topic}/messages",
        "messages",
        "Query messages by key in a time range",
    )
    .query(&[
        q("key", "string", "the message key"),
        q("begin", "integer", "from this store time (ms), default 0"),
        q("end", "integer", "to this store time (ms), default now"),
        q("max", "integer", "most messages answered"),
    ])
    .required(&["key"])
    .answers("MessagesResponse"),
    op(
        "get",
        "/v1/topics/{topic}/queues/{queue_id}/messages",
        "messages",
        "Pull from a queue, with long polling and a tag filter",
    )
    .query(&[
        q("offset", "integer", "queue offset to read from"),
        q("max_messages", "integer", "1..=1024, default 32"),
        q(
            "max_wait_ms",
            "integer",
            "long polling: hold up to this long (max 30000)",
        ),
        q("tags", "string", "`*` or `TagA||TagB`"),
        GROUP_Q,
    ])
    .required(&["offset"])
    .answers("PullResponse"),
    op(
        "get",
        "/v1/topics/{topic}/queues",
        "topics",
        "Queues of a topic with min and max offsets",
    )
    .answers("QueuesResponse"),
    op(
        "get",
        "/v1/topics/{topic}/queues/{queue_id}/offset",
        "topics",
        "First queue offset stored at or after a time",
    )
    .query(&[q("timestamp", "integer", "Unix ms"), GROUP_Q])
    .required(&["timestamp"])
    .answers("OffsetResponse"),
    op(
        "get",
        "/v1/messages/{msg_id}",
        "messages",
        "One message by id",
    )
    .answers("Message"),
    op(
        "put",
        "/v1/groups/{group}/offsets/{topic}/{queue_id}",
        "groups",
        "Commit a consumer offset (force: reset)",
    )
    .query(&[BROKER_GROUP_Q])
    .body("CommitOffsetRequest")
    .answers("CommitOffsetResponse"),
    op(
        "get",
        "/v1/groups/{group}/offsets",
        "groups",
        "A consumer group's offsets with lag",
    )
    .query(&[q("topic", "string", "only this topic"), BROKER_GROUP_Q])
    .answers("GroupOffsetsResponse"),
    op(
        "post",
        "/v1/groups/{group}/heartbeat",
        "groups",
        "Register a member; answers its queue assignment",
    )
    .query(&[BROKER_GROUP_Q])
    .body("HeartbeatRequest")
    .answers("HeartbeatResponse"),
    op(
        "post",
        "/v1/groups/{group}/retry",
        "groups",
        "Give a message back: redelivered through %RETRY%{group} after a delay, or to %DLQ%{group}",
    )
    .query(&[BROKER_GROUP_Q])
    .body("RetryRequest")
    .answers("RetryResponse"),
    op(
        "post",
        "/v1/groups/{group}/offsets/reset",
        "groups",
        "Move a group's offsets of a topic to the first message stored at or after a time",
    )
    .query(&[BROKER_GROUP_Q])
    .body("ResetOffsetsRequest")
    .answers("GroupOffsetsResponse"),
    op(
        "get",
        "/v1/groups",
        "groups",
        "Consumer groups with committed offsets, their topics and lag",
    )
    .query(&[BROKER_GROUP_Q])
    .answers("ConsumerGroupsResponse"),
    op(
        "put",
        "/v1/topics/{topic}",
        "topics",
        "Create or update a topic",
    )
    .query(&[GROUP_Q])
    .body("TopicRequest")
    .answers("Topic"),
    op("get", "/v1/topics/{topic}", "topics", "One topic").answers("Topic"),
    op(
        "delete",
        "/v1/topics/{topic}",
        "topics",
        "Delete a topic from every group serving it",
    )
    .query(&[GROUP_Q])
    .answers("DeletedTopic"),
    op("get", "/v1/topics", "topics", "Every topic of every group").answers("TopicsResponse"),
    op(
        "get",
        "/v1/routes/{topic}",
        "cluster",
        "Every group serving a topic",
    )
    .answers("RouteResponse"),
    op(
        "get",
        "/v1/cluster",
        "cluster",
        "Every known group with its nodes' roles, indexes and lag",
    )
    .answers("ClusterResponse"),
    op(
        "post",
        "/v1/cluster/groups/{group}/nodes",
        "cluster",
        "Add a node (learner, catch-up, voter)",
    )
    .body("AddNodeRequest"),
    op(
        "delete",
        "/v1/cluster/groups/{group}/nodes/{node_id}",
        "cluster",
        "Remove a node from its group",
    ),
    op(
        "post",
        "/v1/cluster/groups/{group}/transfer-leader",
        "cluster",
        "Hand leadership to a voter",
    )
    .body("TransferLeaderRequest"),
    op("get", "/health", "operations", "The process is up"),
    op(
        "get",
        "/ready",
        "operations",
        "A member of a group with a known leader",
    ),
    op("get", "/metrics", "operations", "Prometheus text format").text("text/plain"),
    op("get", "/openapi.json", "operations", "This document"),
    op("get", "/", "operations", "The dashboard page").text("text/html"),
    op(
        "get",
        "/dashboard/{file}",
        "operations",
        "The dashboard's script and style sheet",
    )
    .text("text/plain"),
];

/// Schema type of a path parameter.
fn path_param_kind(name: &str) -> &'static str {
    match name {
        "queue_id" | "node_id" => "integer",
        _ => "string",
    }
}

fn param(name: &str, location: &str, kind: &str, required: bool, description: &str) -> Value {
    json!({
        "name": name,
        "in": location,
        "required": required,
        "description": description,
        "schema": {"type": kind},
    })
}

fn schema_ref(name: &str) -> Value {
    json!({"$ref": format!("#/components/schemas/{name}")})
}

fn operation(op: &Operation) -> Value {
    let mut parameters: Vec<Value> = op
        .path
        .split('/')
        .filter_map(|segment| segment.strip_prefix('{')?.strip_suffix('}'))
        .map(|name| param(name, "path", path_param_kind(name), true, ""))
        .collect();
    parameters.extend(op.query.iter().map(|query| {
        param(
            query.name,
            "query",
            query.kind,
            op.required.contains(&query.name),
            query.description,
        )
    }));
    let ok = if op.content_type == "application/json" {
        json!({"description": "OK", "content": {"application/json": {"schema": schema_ref(op.answer)}}})
    } else {
        json!({"description": "OK", "content": {op.content_type: {"schema": {"type": "string"}}}})
    };
    let mut value = json!({
        "tags": [op.tag],
        "summary": op.summary,
        "operationId": operation_id(op),
        "parameters": parameters,
        "responses": {
            "200": ok,
            "default": {
                "description": "An error in the API's one error shape",
                "content": {"application/json": {"schema": schema_ref("Error")}},
            },
        },
    });
    if let Some(body) = op.body {
        value["requestBody"] = json!({
            "required": true,
            "content": {"application/json": {"schema": schema_ref(body)}},
        });
    }
    value
}

/// `post /v1/topics/{topic}/messages` → `post_v1_topics_topic_messages`.
fn operation_id(op: &Operation) -> String {
    let mut id = op.method.to_string();
    for part in op.path.split(|c: char| !c.is_ascii_alphanumeric()) {
        if !part.is_empty() {
            id.push('_');
            id.push_str(part);
        }
    }
    if op.path == "/" {
        id.push_str("_dashboard");
    }
    id
}

/// The whole document.
pub fn document() -> Value {
    let mut paths = Map::new();
    for op in OPERATIONS {
        let entry = paths
            .entry(op.path.to_string())
            .or_insert_with(|| Value::Object(Map::new()));
        entry[op.method] = operation(op);
    }
    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "broker",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "A Raft-replicated RocketMQ-style message broker. Every node answers every endpoint. Times are Unix milliseconds.",
        },
        "paths": paths,
        "components": {"schemas": schemas()},
    })
}

/// The document rendered once.
pub fn document_json() -> &'static str {
    static DOC: OnceLock<String> = OnceLock::new();
    DOC.get_or_init(|| document().to_string())
}

fn object(required: &[&str], properties: Value) -> Value {
    // OpenAPI 3.0 wants `required` non-empty when present.
    if required.is_empty() {
        json!({"type": "object", "properties": properties})
    } else {
        json!({"type": "object", "required": required, "properties": properties})
    }
}

fn array_of(schema: &str) -> Value {
    json!({"type": "array", "items": schema_ref(schema)})
}

/// The schemas the operations name (the shapes of `crate::api`).
pub fn schemas() -> Value {
    let int = json!({"type": "integer", "format": "int64", "minimum": 0});
    let int32 = json!({"type": "integer", "format": "int32", "minimum": 0});
    let string = json!({"type": "string"});
    let nullable_string = json!({"type": "string", "nullable": true});
    let nullable_int = json!({"type": "integer", "format": "int64", "nullable": true});
    let strings = json!({"type": "array", "items": {"type": "string"}});
    let properties = json!({"type": "object", "additionalProperties": {"type": "string"}});
    json!({
        "Object": {"type": "object"},
        "Error": object(&["code", "message", "leader"], json!({
            "code": {"type": "string", "enum": crate::error::ErrorCode::ALL.iter().map(|c| c.word()).collect::<Vec<_>>()},
            "message": string,
            "leader": nullable_string,
        })),
        "MessageInput": object(&[], json!({
            "body": string, "body_base64": string, "tags": string, "keys": strings,
            "properties": properties, "queue_id": int32, "sharding_key": string,
            "delay_level": int32, "producer_id": string, "sequence": int,
        })),
        "SendRequest": object(&["messages"], json!({"messages": array_of("MessageInput")})),
        "SendResult": object(
            &["msg_id", "topic", "queue_id", "queue_offset", "commit_log_offset", "store_timestamp"],
            json!({"msg_id": string, "topic": string, "queue_id": int32, "queue_offset": int,
                   "commit_log_offset": int, "store_timestamp": int}),
        ),
        "SendResponse": object(&["results", "group"], json!({"results": array_of("SendResult"), "group": string})),
        "Message": object(
            &["msg_id", "topic", "queue_id", "queue_offset", "commit_log_offset", "keys",
              "properties", "born_timestamp", "store_timestamp", "reconsume_times"],
            json!({"msg_id": string, "topic": string, "queue_id": int32, "queue_offset": int,
                   "commit_log_offset": int, "body": string, "body_base64": string,
                   "tags": string, "keys": strings, "properties": properties,
                   "born_timestamp": int, "store_timestamp": int, "reconsume_times": int32,
                   "producer_id": string, "sequence": int, "deliver_timestamp": int}),
        ),
        "MessagesResponse": object(&["messages"], json!({"messages": array_of("Message")})),
        "PullResponse": object(
            &["status", "next_offset", "min_offset", "max_offset", "messages"],
            json!({"status": {"type": "string", "enum": ["FOUND", "NO_NEW_MSG", "NO_MATCHED_MSG", "OFFSET_TOO_SMALL", "OFFSET_OVERFLOW"]},
                   "next_offset": int, "min_offset": int, "max_offset": int,
                   "messages": array_of("Message")}),
        ),
        "Queue": object(&["group", "queue_id", "min_offset", "max_offset"],
            json!({"group": string, "queue_id": int32, "min_offset": int, "max_offset": int})),
        "QueuesResponse": object(&["topic", "queues"], json!({"topic": string, "queues": array_of("Queue")})),
        "OffsetResponse": object(&["offset"], json!({"offset": int})),
        "CommitOffsetRequest": object(&["offset"], json!({"offset": int, "force": {"type": "boolean"}})),
        "CommitOffsetResponse": object(&["group", "topic", "queue_id", "offset"],
            json!({"group": string, "topic": string, "queue_id": int32, "offset": int})),
        "GroupOffset": object(&["group", "topic", "queue_id", "offset", "max_offset", "lag"],
            json!({"group": string, "topic": string, "queue_id": int32, "offset": int, "max_offset": int, "lag": int})),
        "GroupOffsetsResponse": object(&["group", "offsets"], json!({"group": string, "offsets": array_of("GroupOffset")})),
        "OwnedQueue": object(&["topic", "group", "queue_id"],
            json!({"topic": string, "group": string, "queue_id": int32, "offset": int})),
        "HeartbeatRequest": object(&["client_id", "topics"],
            json!({"client_id": string, "topics": strings, "owned": array_of("OwnedQueue")})),
        "Assignment": object(&["topic", "group", "queue_id"],
            json!({"topic": string, "group": string, "queue_id": int32, "offset": int})),
        "HeartbeatResponse": object(&["members", "assignments"],
            json!({"members": strings, "assignments": array_of("Assignment")})),
        "RetryRequest": object(&["topic", "queue_id", "queue_offset"],
            json!({"topic": string, "queue_id": int32, "queue_offset": int,
                   "delay_level": {"type": "integer", "format": "int32"}})),
        "RetryResponse": object(&["msg_id", "topic", "reconsume_times", "dead_letter", "broker_group"],
            json!({"msg_id": string, "topic": string, "reconsume_times": int32,
                   "deliver_timestamp": int, "dead_letter": {"type": "boolean"}, "broker_group": string})),
        "ResetOffsetsRequest": object(&["topic", "timestamp"], json!({"topic": string, "timestamp": int})),
        "ConsumerGroup": object(&["group", "topics", "broker_groups", "queues", "lag"],
            json!({"group": string, "topics": strings, "broker_groups": strings, "queues": int, "lag": int})),
        "ConsumerGroupsResponse": object(&["groups"], json!({"groups": array_of("ConsumerGroup")})),
        "TopicRequest": object(&[], json!({"read_queue_nums": int32, "write_queue_nums": int32,
            "perm": {"type": "integer", "enum": [2, 4, 6]}, "groups": strings})),
        "Topic": object(&["topic", "read_queue_nums", "write_queue_nums", "perm", "groups"],
            json!({"topic": string, "read_queue_nums": int32, "write_queue_nums": int32, "perm": int32, "groups": strings})),
        "TopicsResponse": object(&["topics"], json!({"topics": array_of("Topic")})),
        "DeletedTopic": object(&["topic", "deleted", "groups"],
            json!({"topic": string, "deleted": {"type": "boolean"}, "groups": strings})),
        "RouteGroup": object(&["group", "leader", "replicas", "read_queue_nums", "write_queue_nums", "perm"],
            json!({"group": string, "leader": nullable_string, "replicas": strings,
                   "read_queue_nums": int32, "write_queue_nums": int32, "perm": int32})),
        "RouteResponse": object(&["topic", "groups"], json!({"topic": string, "groups": array_of("RouteGroup")})),
        "Node": object(&["id", "url", "role"],
            json!({"id": int, "url": string, "role": string, "term": nullable_int,
                   "last_log_index": nullable_int, "applied_index": nullable_int,
                   "reachable": {"type": "boolean", "nullable": true}, "lag": nullable_int})),
        "Group": object(&["group", "leader_id", "leader", "term", "nodes", "registration_age_ms"],
            json!({"group": string, "leader_id": nullable_int, "leader": nullable_string, "term": int,
                   "nodes": array_of("Node"), "registration_age_ms": nullable_int})),
        "ClusterResponse": object(&["node_id", "group", "groups"],
            json!({"node_id": int, "group": string, "groups": array_of("Group")})),
        "AddNodeRequest": object(&["node_id", "address"], json!({"node_id": int, "address": string})),
        "TransferLeaderRequest": object(&["to"], json!({"to": int})),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_operation_is_unique_and_names_known_schemas() {
        let schemas = schemas();
        let mut seen = std::collections::BTreeSet::new();
        for op in OPERATIONS {
            assert!(
                seen.insert((op.method, op.path)),
                "{} {} listed twice",
                op.method,
                op.path
            );
            for name in op.body.into_iter().chain([op.answer]) {
                assert!(schemas.get(name).is_some(), "{}: no schema {name}", op.path);
            }
            for name in op.required {
                assert!(
                    op.query.iter().any(|query| query.name == *name),
                    "{} {}: required `{name}` is not a query parameter",
                    op.method,
                    op.path
                );
            }
        }
    }

    #[test]
    fn every_schema_reference_resolves() {
        let doc = document();
        let text = doc.to_string();
        for (i, _) in text.match_indices("#/components/schemas/") {
            let rest = &text[i + "#/components/schemas/".len()..];
            let name = &rest[..rest.find('"').expect("a reference ends")];
            assert!(
                doc["components"]["schemas"].get(name).is_some(),
                "dangling reference to {name}"
            );
        }
    }
}
