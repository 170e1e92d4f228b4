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
//! Path parameters come from the `{…}` segments (their schemas by name:
//! `queue_id`, `node_id` are integers, `topic`, `group`, `name` names, `msg_id`
//! 32 hex digits); `.query(&[q("name", Kind::Unsigned, "what it is")])` lists
//! query parameters, each [`Kind`] with the server's constraints; `.body(S)` /
//! `.answers(S)` name a schema in [`schemas`] (`"Object"` is any JSON object when a precise one is not written
//! yet); `.text("text/plain")` answers something other than JSON.

use std::sync::OnceLock;

use serde_json::{json, Map, Value};

use super::auth::Access;
use crate::api;
use broker_proto::delay::DelayLevels;

/// A query parameter: name, [`Kind`] of value, description; optional unless
/// listed in [`Operation::required`].
#[derive(Clone, Copy, Debug)]
pub struct Query {
    pub name: &'static str,
    pub kind: Kind,
    pub description: &'static str,
}

/// What a parameter holds, with the constraints the server enforces, so that a
/// request valid under the document is one the server takes (and one it refuses
/// is invalid under it): `scripts/testing/api-fuzz.sh` holds the two to that.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A non-empty text.
    NonEmpty,
    /// An unsigned 64-bit number (offsets, times).
    Unsigned,
    /// A topic, consumer group, broker group or user name.
    Name,
    /// How many messages to answer: 1..=1024.
    Count,
    /// A long poll's hold: 0..=30000 ms.
    WaitMs,
    /// A pull's tag filter: `*` or tags joined by `||`.
    TagFilter,
}

/// Shorthand for a [`Query`].
pub const fn q(name: &'static str, kind: Kind, description: &'static str) -> Query {
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
    Kind::Name,
    "broker group to use (default: this node's group, or the only one serving the topic)",
);
/// The `broker_group` query parameter of consumer-group paths.
pub const BROKER_GROUP_Q: Query = q(
    "broker_group",
    Kind::Name,
    "answer for this broker group only (default: merge every group)",
);

/// The pattern of names (shared/API.md "Errors"; `broker_proto::topic::validate_name`).
pub const NAME_PATTERN: &str = "^[A-Za-z0-9_%|-]{1,127}$";
/// A message id: 32 hex digits.
pub const MESSAGE_ID_PATTERN: &str = "^[0-9A-Fa-f]{32}$";
/// A message's tags: no `||`, which separates a filter's tags.
pub const TAGS_PATTERN: &str = "^([^|]|[|][^|])*[|]?$";
/// The characters `str::trim` takes off (Unicode White_Space), for a regex class.
const WHITE_SPACE: &str =
    "\t\n\u{b}\u{c}\r \u{85}\u{a0}\u{1680}\u{2000}-\u{200a}\u{2028}\u{2029}\u{202f}\u{205f}\u{3000}";

/// What `TagFilter::parse` takes: blank, `*`, or tags joined by `||`, none of them
/// blank once trimmed. Splitting is left to right, so a tag never holds `||`, may
/// start with `|` (`A|||B` is `A` and `|B`), and only the last may end with one.
pub fn tag_filter_pattern() -> String {
    let ws = WHITE_SPACE;
    // A piece is units: a character other than `|`, or `|` before one.
    let unit = "(?:[^|]|[|][^|])";
    // A unit that makes a piece non-blank.
    let solid = format!("(?:[^|{ws}]|[|][^|])");
    let piece = format!("{unit}*{solid}{unit}*");
    let last = format!("(?:{piece}[|]?|{unit}*[|])");
    format!("^[{ws}]*(?:(?:{piece}[|][|])*{last})?[{ws}]*$")
}

/// A permission's resource (`broker_proto::acl::ResourcePattern`).
pub const RESOURCE_PATTERN: &str = "^(cluster|(topic|group):([A-Za-z0-9_%|-]{1,127}[*]?|[*]))$";

/// The schema of a value of `kind`.
pub fn kind_schema(kind: Kind) -> Value {
    match kind {
        Kind::NonEmpty => json!({"type": "string", "minLength": 1}),
        Kind::Unsigned => json!({"type": "integer", "minimum": 0, "maximum": u64::MAX}),
        Kind::Name => json!({"type": "string", "pattern": NAME_PATTERN}),
        Kind::Count => {
            json!({"type": "integer", "minimum": 1, "maximum": super::data_plane::MAX_PULL_MESSAGES})
        }
        Kind::WaitMs => {
            json!({"type": "integer", "minimum": 0, "maximum": super::data_plane::MAX_WAIT_MS})
        }
        // At most 64 tags: not expressible here.
        Kind::TagFilter => json!({"type": "string", "pattern": tag_filter_pattern()}),
    }
}

/// The schema of a path parameter, by its name.
fn path_param_schema(name: &str) -> Value {
    match name {
        "queue_id" => json!({"type": "integer", "minimum": 0, "maximum": u32::MAX}),
        "node_id" => json!({"type": "integer", "format": "int64", "minimum": 1}),
        "msg_id" => json!({"type": "string", "pattern": MESSAGE_ID_PATTERN}),
        "topic" | "group" | "name" => kind_schema(Kind::Name),
        _ => kind_schema(Kind::NonEmpty),
    }
}

fn param(name: &str, location: &str, schema: Value, required: bool, description: &str) -> Value {
    json!({
        "name": name,
        "in": location,
        "required": required,
        "description": description,
        "schema": schema,
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
        .map(|name| param(name, "path", path_param_schema(name), true, ""))
        .collect();
    parameters.extend(op.query.iter().map(|query| {
        param(
            query.name,
            "query",
            kind_schema(query.kind),
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

/// A request body's object: the server refuses fields it does not know.
fn request(required: &[&str], properties: Value) -> Value {
    let mut schema = object(required, properties);
    schema["additionalProperties"] = json!(false);
    schema
}

fn array_of(schema: &str) -> Value {
    json!({"type": "array", "items": schema_ref(schema)})
}

/// The schemas the operations name (the shapes of `crate::api`).
pub fn schemas() -> Value {
    // Unsigned 64- and 32-bit numbers, as the server reads them.
    let int = json!({"type": "integer", "minimum": 0, "maximum": u64::MAX});
    let int32 = json!({"type": "integer", "minimum": 0, "maximum": u32::MAX});
    let string = json!({"type": "string"});
    let nullable_string = json!({"type": "string", "nullable": true});
    let nullable_int = json!({"type": "integer", "format": "int64", "nullable": true});
    let strings = json!({"type": "array", "items": {"type": "string"}});
    let properties = json!({"type": "object", "additionalProperties": {"type": "string"}});
    // What requests carry, with the server's limits (broker_proto::api's table).
    // Limits a node's configuration sets (batch size, delay levels) are given at
    // their defaults.
    let name = kind_schema(Kind::Name);
    let names = |max: usize| json!({"type": "array", "items": name, "maxItems": max});
    let short = json!({"type": "string", "maxLength": api::MAX_SHORT_TEXT});
    let short_non_empty =
        json!({"type": "string", "minLength": 1, "maxLength": api::MAX_SHORT_TEXT});
    let queue_nums = json!({"type": "integer", "minimum": 1,
        "maximum": broker_proto::topic::MAX_QUEUE_NUMS});
    let permissions = json!({"type": "array", "items": schema_ref("Permission"),
        "maxItems": broker_proto::acl::MAX_PERMISSIONS});
    let delay_level = json!({"type": "integer", "minimum": 0,
        "maximum": DelayLevels::default().max_level()});
    json!({
        "Object": {"type": "object"},
        "Error": object(&["code", "message", "leader"], json!({
            "code": {"type": "string", "enum": crate::error::ErrorCode::ALL.iter().map(|c| c.word()).collect::<Vec<_>>()},
            "message": string,
            "leader": nullable_string,
        })),
        "MessageInput": {
            "type": "object",
            "properties": {
                "body": string,
                "body_base64": {"type": "string", "format": "byte"},
                "tags": {"type": "string", "maxLength": api::MAX_SHORT_TEXT, "pattern": TAGS_PATTERN},
                "keys": {"type": "array", "items": short_non_empty, "maxItems": api::MAX_KEYS},
                "properties": {"type": "object", "maxProperties": api::MAX_PROPERTIES,
                    "additionalProperties": {"type": "string", "maxLength": u16::MAX}},
                "queue_id": int32,
                "sharding_key": short,
                "delay_level": delay_level,
                "producer_id": short_non_empty,
                "sequence": int,
            },
            "additionalProperties": false,
            // `body` or `body_base64`; `producer_id` and `sequence` together or not at all.
            "allOf": [
                {"oneOf": [{"required": ["body"]}, {"required": ["body_base64"]}]},
                {"oneOf": [
                    {"required": ["producer_id", "sequence"]},
                    {"not": {"anyOf": [{"required": ["producer_id"]}, {"required": ["sequence"]}]}},
                ]},
            ],
        },
        "SendRequest": request(&["messages"], json!({"messages": {
            "type": "array", "items": schema_ref("MessageInput"), "minItems": 1,
            "maxItems": crate::config::HttpSection::default().max_batch_messages,
        }})),
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
        "CommitOffsetRequest": request(&["offset"], json!({"offset": int, "force": {"type": "boolean"}})),
        "CommitOffsetResponse": object(&["group", "topic", "queue_id", "offset"],
            json!({"group": string, "topic": string, "queue_id": int32, "offset": int})),
        "GroupOffset": object(&["group", "topic", "queue_id", "offset", "max_offset", "lag"],
            json!({"group": string, "topic": string, "queue_id": int32, "offset": int, "max_offset": int, "lag": int})),
        "GroupOffsetsResponse": object(&["group", "offsets"], json!({"group": string, "offsets": array_of("GroupOffset")})),
        "OwnedQueue": request(&["topic", "group", "queue_id"],
            json!({"topic": name, "group": name, "queue_id": int32, "offset": int})),
        "HeartbeatRequest": request(&["client_id", "topics"],
            json!({"client_id": name, "topics": names(api::MAX_HEARTBEAT_TOPICS),
                   "owned": {"type": "array", "items": schema_ref("OwnedQueue"), "maxItems": api::MAX_OWNED_QUEUES}})),
        "Assignment": object(&["topic", "group", "queue_id"],
            json!({"topic": string, "group": string, "queue_id": int32, "offset": int})),
        "HeartbeatResponse": object(&["members", "assignments"],
            json!({"members": strings, "assignments": array_of("Assignment")})),
        "RetryRequest": request(&["topic", "queue_id", "queue_offset"],
            json!({"topic": name, "queue_id": int32, "queue_offset": int,
                   // Negative: straight to the dead-letter topic.
                   "delay_level": {"type": "integer", "format": "int32",
                       "maximum": DelayLevels::default().max_level()}})),
        "RetryResponse": object(&["msg_id", "topic", "reconsume_times", "dead_letter", "broker_group"],
            json!({"msg_id": string, "topic": string, "reconsume_times": int32,
                   "deliver_timestamp": int, "dead_letter": {"type": "boolean"}, "broker_group": string})),
        "ResetOffsetsRequest": request(&["topic", "timestamp"], json!({"topic": name, "timestamp": int})),
        "ConsumerGroup": object(&["group", "topics", "broker_groups", "queues", "lag"],
            json!({"group": string, "topics": strings, "broker_groups": strings, "queues": int, "lag": int})),
        "ConsumerGroupsResponse": object(&["groups"], json!({"groups": array_of("ConsumerGroup")})),
        "TopicRequest": request(&[], json!({"read_queue_nums": queue_nums, "write_queue_nums": queue_nums,
            "perm": {"type": "integer", "enum": [2, 4, 6]},
            "groups": {"type": "array", "items": name, "minItems": 1, "maxItems": api::MAX_TOPIC_GROUPS}})),
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
        "AddNodeRequest": request(&["node_id", "address"], json!({"node_id": int, "address": string})),
        "TransferLeaderRequest": request(&["to"], json!({"to": int})),
        "Join": object(&["group", "node_id", "address", "state"],
            json!({"group": string, "node_id": int, "address": string,
                   "state": {"type": "string", "enum": ["ADDING_LEARNER", "CATCHING_UP", "PROMOTING", "REMOVING_LEARNER", "DONE", "FAILED"]},
                   "message": nullable_string, "started_ms": nullable_int, "finished_ms": nullable_int})),
        "Permission": request(&["resource", "actions"], json!({
            "resource": {"type": "string", "pattern": RESOURCE_PATTERN,
                "description": "`cluster`, `topic:NAME` or `group:NAME`; NAME may end with `*`"},
            "actions": {"type": "array", "items": {"type": "string", "enum": ["pub", "sub", "admin"]},
                "minItems": 1, "maxItems": 3, "uniqueItems": true},
        })),
        "Quotas": request(&[], json!({
            "send_messages_per_s": {"type": "integer", "minimum": 1, "maximum": u64::MAX, "nullable": true,
                "description": "absent or null: no limit"},
            "send_bytes_per_s": {"type": "integer", "minimum": 1, "maximum": u64::MAX, "nullable": true,
                "description": "absent or null: no limit"},
        })),
        "UserRequest": request(&["name"], json!({"name": name, "permissions": permissions,
            "quotas": schema_ref("Quotas")})),
        "UserUpdate": request(&[], json!({"permissions": permissions, "quotas": schema_ref("Quotas")})),
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

    /// Every string over `alphabet` of at most `max_len` characters.
    fn strings(alphabet: &[char], max_len: usize) -> Vec<String> {
        let mut all = vec![String::new()];
        let mut last = vec![String::new()];
        for _ in 0..max_len {
            last = last
                .iter()
                .flat_map(|s| alphabet.iter().map(move |c| format!("{s}{c}")))
                .collect();
            all.extend(last.iter().cloned());
        }
        all
    }

    /// The document's patterns take exactly what the server takes — checked on
    /// every short string over alphabets of the characters that matter (a client
    /// generated from the document, or a fuzzer like schemathesis, relies on both
    /// directions).
    #[test]
    fn the_patterns_accept_exactly_what_the_server_accepts() {
        let filter = regex::Regex::new(&tag_filter_pattern()).expect("filter pattern");
        // `\u{1c}` is whitespace to Python's `str.isspace`, not to `str::trim`.
        for text in strings(&['|', 'A', ' ', '*', '\u{85}', '\u{1c}', '\u{3000}'], 6) {
            assert_eq!(
                filter.is_match(&text),
                crate::storage::TagFilter::parse(&text).is_ok(),
                "tag filter {text:?}"
            );
        }
        let name = regex::Regex::new(NAME_PATTERN).expect("name pattern");
        let mut names = strings(&['a', 'Z', '0', '_', '%', '|', '-', '.', ' ', '*', 'é'], 3);
        names.extend(["x".repeat(127), "x".repeat(128), "ab\n".into()]);
        for text in &names {
            assert_eq!(
                name.is_match(text),
                broker_proto::topic::validate_name("topic", text).is_ok(),
                "name {text:?}"
            );
        }
        let resource = regex::Regex::new(RESOURCE_PATTERN).expect("resource pattern");
        for prefix in ["", "cluster", "topic:", "group:", "user:"] {
            for rest in strings(&['a', '*', '|', ':', '.'], 3) {
                let text = format!("{prefix}{rest}");
                assert_eq!(
                    resource.is_match(&text),
                    broker_proto::acl::ResourcePattern::try_from(text.clone()).is_ok(),
                    "resource {text:?}"
                );
            }
        }
        let tags = regex::Regex::new(TAGS_PATTERN).expect("tags pattern");
        for text in strings(&['|', 'A', ' '], 6) {
            assert_eq!(tags.is_match(&text), !text.contains("||"), "tags {text:?}");
        }
        let id = regex::Regex::new(MESSAGE_ID_PATTERN).expect("id pattern");
        let good = "0123456789abcdefABCDEF0123456789";
        for text in [
            good.to_string(),
            good[1..].to_string(),
            format!("{good}0"),
            format!("+{}", &good[1..]),
            format!("g{}", &good[1..]),
        ] {
            assert_eq!(
                id.is_match(&text),
                crate::storage::MessageId::parse(&text).is_some(),
                "message id {text:?}"
            );
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
