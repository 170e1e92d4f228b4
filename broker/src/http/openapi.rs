//! The OpenAPI 3.0 document of the public API, served at `GET /openapi.json`.
//!
//! It is built from the route table (`router::public_routes`: each route's
//! [`Operation`] beside its handler) and from the schemas in [`schemas`], so the
//! document lists exactly what the router serves, with each route's required
//! permission (`x-permission`) and the bearer scheme.
//!
//! **Describing a route** is its [`Operation`] in the table:
//!
//! ```text
//! op("post", "/v1/groups/{group}/retry", "groups", "Give a message back for redelivery",
//!    Access::Group(Action::Sub))
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

use super::auth::Access;

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
    /// Schema of the success answer (JSON), when `content_type` is JSON.
    pub answer: &'static str,
    /// The success statuses the operation answers with that body ("200" unless
    /// set: a creation answers "201", an operation that goes on "202").
    pub statuses: &'static [&'static str],
    pub content_type: &'static str,
    /// What the caller needs (checked by `http::auth::authorize`).
    pub access: Access,
}

/// An operation answering an `Object`, with no query and no body; refine it with
/// the builder methods.
pub const fn op(
    method: &'static str,
    path: &'static str,
    tag: &'static str,
    summary: &'static str,
    access: Access,
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
        statuses: &["200"],
        content_type: "application/json",
        access,
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
    pub const fn statuses(self, statuses: &'static [&'static str]) -> Self {
        Self { statuses, ..self }
    }
    pub const fn text(self, content_type: &'static str) -> Self {
        Self {
            content_type,
            ..self
        }
    }
}

/// The `group` query parameter of topic paths.
pub const GROUP_Q: Query = q(
    "group",
    "string",
    "broker group to use (default: this node's group, or the only one serving the topic)",
);
/// The `broker_group` query parameter of consumer-group paths.
pub const BROKER_GROUP_Q: Query = q(
    "broker_group",
    "string",
    "answer for this broker group only (default: merge every group)",
);

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
            "default": {
                "description": "An error in the API's one error shape",
                "content": {"application/json": {"schema": schema_ref("Error")}},
            },
        },
    });
    for status in op.statuses {
        value["responses"][*status] = ok.clone();
    }
    if let Some(body) = op.body {
        value["requestBody"] = json!({
            "required": true,
            "content": {"application/json": {"schema": schema_ref(body)}},
        });
    }
    value["x-permission"] = json!(op.access.describe());
    if op.access == Access::Public {
        // Overrides the document-wide bearer requirement.
        value["security"] = json!([]);
    } else {
        value["responses"]["401"] = json!({
            "description": "No token, or an unknown or revoked one",
            "content": {"application/json": {"schema": schema_ref("Error")}},
        });
        value["responses"]["403"] = json!({
            "description": "The token lacks the permission (see x-permission)",
            "content": {"application/json": {"schema": schema_ref("Error")}},
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

/// Every public operation, in the router's order.
pub fn operations() -> Vec<Operation> {
    super::router::public_routes()
        .into_iter()
        .map(|route| route.op)
        .collect()
}

/// The whole document.
pub fn document() -> Value {
    let mut paths = Map::new();
    for op in &operations() {
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
        "security": [{"bearer": []}],
        "components": {
            "schemas": schemas(),
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "A user's token (POST /v1/users answers it once), or the cluster's bootstrap admin token (`scripts/cluster.sh token`).",
                },
            },
        },
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
        "Join": object(&["group", "node_id", "address", "state"],
            json!({"group": string, "node_id": int, "address": string,
                   "state": {"type": "string", "enum": ["ADDING_LEARNER", "CATCHING_UP", "PROMOTING", "REMOVING_LEARNER", "DONE", "FAILED"]},
                   "message": nullable_string, "started_ms": nullable_int, "finished_ms": nullable_int})),
        "Permission": object(&["resource", "actions"], json!({
            "resource": {"type": "string", "description": "`cluster`, `topic:NAME` or `group:NAME`; NAME may end with `*`"},
            "actions": {"type": "array", "items": {"type": "string", "enum": ["pub", "sub", "admin"]}},
        })),
        "Quotas": object(&[], json!({
            "send_messages_per_s": {"type": "integer", "format": "int64", "minimum": 1},
            "send_bytes_per_s": {"type": "integer", "format": "int64", "minimum": 1},
        })),
        "UserRequest": object(&["name"], json!({"name": string, "permissions": array_of("Permission"),
            "quotas": schema_ref("Quotas")})),
        "UserUpdate": object(&[], json!({"permissions": array_of("Permission"), "quotas": schema_ref("Quotas")})),
        "UserToken": object(&["name", "token", "groups", "pending_groups"],
            json!({"name": string, "token": string, "groups": strings, "pending_groups": strings})),
        "User": object(&["name", "permissions", "quotas", "created", "updated"],
            json!({"name": string, "permissions": array_of("Permission"), "quotas": schema_ref("Quotas"),
                   "created": int, "updated": int})),
        "UsersResponse": object(&["users"], json!({"users": array_of("User")})),
        "DeletedUser": object(&["name", "deleted", "groups", "pending_groups"],
            json!({"name": string, "deleted": {"type": "boolean"}, "groups": strings, "pending_groups": strings})),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_operation_is_unique_and_names_known_schemas() {
        let schemas = schemas();
        let mut seen = std::collections::BTreeSet::new();
        for op in &operations() {
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
