//! The OpenAPI 3.0 document of the public API, served at `GET /openapi.json`.
//!
//! It is built from the route table (`router::public_routes`: each route's
//! [`Operation`] beside its handler) and from the schemas in [`schemas`], so the
//! document lists exactly what the router serves, with each route's required
//! permission (`x-permission`) and the bearer scheme. The schemas are derived from
//! the wire types in `broker_proto` (`#[derive(utoipa::ToSchema)]` behind its
//! `openapi` feature, with the server's constraints as `#[schema(…)]` attributes),
//! so they cannot drift from what the handlers read and write.
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
//! `.answers(S)` name a schema in [`schemas`] by its document name (`"Object"` is
//! any JSON object when a precise one is not written yet); `.text("text/plain")`
//! answers something other than JSON.
//!
//! **Describing a body** is its wire type in `broker_proto`: derive
//! `utoipa::ToSchema` (with `schema(as = Name)` when the document names it
//! differently), put the server's limits on its fields, and list it in
//! [`schemas`].

use std::collections::BTreeMap;
use std::sync::OnceLock;

use serde_json::{json, Map, Value};
use utoipa::ToSchema;

use super::auth::Access;
use broker_proto::acl::Permission;
use broker_proto::api;
use broker_proto::delay::DelayLevels;
use broker_proto::receive;
use broker_proto::topic::NAME_PATTERN;
use broker_proto::transaction;

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
    /// `true` or `false`.
    Flag,
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
    /// Another form of the success answer, which a request gets by naming this
    /// media type in `Accept` (a pull's binary form).
    pub alternative: Option<&'static str>,
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
        alternative: None,
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
    /// The success answer also comes as `media_type` (binary) when `Accept` asks.
    pub const fn or_binary(self, media_type: &'static str) -> Self {
        Self {
            alternative: Some(media_type),
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

/// A message id: 32 hex digits.
pub const MESSAGE_ID_PATTERN: &str = "^[0-9A-Fa-f]{32}$";
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
        Kind::Flag => json!({"type": "boolean"}),
    }
}

/// The schema of a path parameter, by its name.
fn path_param_schema(name: &str) -> Value {
    match name {
        "queue_id" => json!({"type": "integer", "minimum": 0, "maximum": u32::MAX}),
        "node_id" => json!({"type": "integer", "format": "int64", "minimum": 1}),
        // A transaction id is its first message's id.
        "msg_id" | "transaction_id" => json!({"type": "string", "pattern": MESSAGE_ID_PATTERN}),
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
    let mut ok = if op.content_type == "application/json" {
        json!({"description": "OK", "content": {"application/json": {"schema": schema_ref(op.answer)}}})
    } else {
        json!({"description": "OK", "content": {op.content_type: {"schema": {"type": "string"}}}})
    };
    if let Some(media_type) = op.alternative {
        ok["content"][media_type] = json!({"schema": {"type": "string", "format": "binary"}});
    }
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

/// Component schemas by document name, as they are added.
#[derive(Default)]
struct Components {
    schemas: Map<String, Value>,
    /// Rust type name → document name. utoipa 4 derives a reference to a field's
    /// type from the type's Rust name (`Vec<MessageView>` → `MessageView`), not
    /// from its `schema(as = Message)`, so references are renamed once all are in.
    names: BTreeMap<&'static str, &'static str>,
}

impl Components {
    fn add<T: ToSchema<'static>>(&mut self) -> &mut Self {
        let (name, schema) = T::schema();
        let rust = std::any::type_name::<T>();
        let rust = rust.rsplit("::").next().unwrap_or(rust);
        self.names.insert(rust, name);
        let schema = serde_json::to_value(schema).expect("utoipa's schemas serialize to JSON");
        self.schemas.insert(name.to_string(), schema);
        self
    }
}

/// The schemas the operations name: the derived schemas of `broker_proto`'s wire
/// types, under their document names, with the few things attributes cannot say
/// patched in below; and `"Object"`, any JSON object.
pub fn schemas() -> Value {
    let mut components = Components::default();
    components
        .add::<api::ErrorBody>()
        .add::<api::MessageInput>()
        .add::<api::SendRequest>()
        .add::<api::SendResultView>()
        .add::<api::SendResponse>()
        .add::<api::MessageView>()
        .add::<api::MessagesResponse>()
        .add::<api::PullResponse>()
        .add::<api::QueueView>()
        .add::<api::QueuesResponse>()
        .add::<api::OffsetResponse>()
        .add::<api::CommitOffsetRequest>()
        .add::<api::CommitOffsetResponse>()
        .add::<api::GroupOffsetView>()
        .add::<api::GroupOffsetsResponse>()
        .add::<api::OwnedQueue>()
        .add::<api::HeartbeatRequest>()
        .add::<api::Assignment>()
        .add::<api::HeartbeatResponse>()
        .add::<api::RetryRequest>()
        .add::<api::RetryResponse>()
        .add::<api::ResetOffsetsRequest>()
        .add::<api::ConsumerGroupView>()
        .add::<api::ConsumerGroupsResponse>()
        .add::<api::TopicRequest>()
        .add::<api::TopicView>()
        .add::<api::TopicsResponse>()
        .add::<api::DeletedTopicResponse>()
        .add::<api::RouteGroupView>()
        .add::<api::RouteResponse>()
        .add::<api::NodeView>()
        .add::<api::GroupView>()
        .add::<api::ClusterResponse>()
        .add::<api::AddNodeRequest>()
        .add::<api::TransferLeaderRequest>()
        .add::<api::DrainResponse>()
        .add::<api::FinalizeUpgradeResponse>()
        .add::<api::JoinView>()
        .add::<Permission>()
        .add::<api::QuotasView>()
        .add::<api::UserRequest>()
        .add::<api::UserUpdate>()
        .add::<api::UserTokenResponse>()
        .add::<api::UserView>()
        .add::<api::UsersResponse>()
        .add::<api::DeletedUserResponse>()
        .add::<receive::ReceiveRequest>()
        .add::<receive::ReceivedMessage>()
        .add::<receive::ReceiveResponse>()
        .add::<receive::AckRequest>()
        .add::<receive::AckResult>()
        .add::<receive::AckResponse>()
        .add::<receive::ChangeInvisibleRequest>()
        .add::<receive::ChangeInvisibleResponse>()
        .add::<transaction::TransactionInput>()
        .add::<transaction::TransactionResolution>()
        .add::<transaction::TransactionCheck>()
        .add::<transaction::TransactionChecksResponse>();
    let Components { schemas, names } = components;
    let mut schemas = Value::Object(schemas);
    for_each_schema(&mut schemas, &mut |schema| {
        rename_reference(schema, &names);
        exact_integer_bounds(schema);
    });

    // What the attributes cannot say. A node's configuration sets the batch size
    // and the delay levels: the document gives their defaults.
    let max_level = DelayLevels::default().max_level();
    property(&mut schemas, "SendRequest", "messages").insert(
        "maxItems".into(),
        json!(crate::config::HttpSection::default().max_batch_messages),
    );
    property(&mut schemas, "MessageInput", "delay_level")
        .insert("maximum".into(), json!(max_level));
    // Negative: straight to the dead-letter topic (so no minimum).
    property(&mut schemas, "RetryRequest", "delay_level")
        .insert("maximum".into(), json!(max_level));
    // `body` or `body_base64`; `producer_id` and `sequence` together or not at all
    // (utoipa 4 has no attribute for a struct's `allOf`).
    // A delay level (above 0) or a timer (`deliver_at` or `delay_ms`), not two.
    let delayed =
        json!({"required": ["delay_level"], "properties": {"delay_level": {"minimum": 1}}});
    schemas["MessageInput"]["allOf"] = json!([
        {"oneOf": [{"required": ["body"]}, {"required": ["body_base64"]}]},
        {"oneOf": [
            {"required": ["producer_id", "sequence"]},
            {"not": {"anyOf": [{"required": ["producer_id"]}, {"required": ["sequence"]}]}},
        ]},
        {"not": {"required": ["deliver_at", "delay_ms"]}},
        {"not": {"allOf": [
            delayed.clone(),
            {"anyOf": [{"required": ["deliver_at"]}, {"required": ["delay_ms"]}]},
        ]}},
    ]);
    // The configured default; `deliver_at` is bounded by the clock (now + the
    // same), which a schema cannot say.
    property(&mut schemas, "MessageInput", "delay_ms").insert(
        "maximum".into(),
        json!(crate::service::producer::DEFAULT_MAX_DELAY_MS),
    );
    // A transaction's messages carry no idempotency stamp, delay or timer.
    schemas["SendRequest"]["oneOf"] = json!([
        {"not": {"required": ["transaction"]}},
        {
            "required": ["transaction"],
            "properties": {"messages": {"items": {"not": {"anyOf": [
                {"required": ["producer_id"]},
                {"required": ["sequence"]},
                {"required": ["deliver_at"]},
                {"required": ["delay_ms"]},
                delayed,
            ]}}}},
        },
    ]);
    // A lease change is 0 (give the message back now) or a lease's length.
    let invisible = property(&mut schemas, "ChangeInvisibleRequest", "invisible_ms");
    invisible.remove("maximum");
    invisible.insert(
        "anyOf".into(),
        json!([
            {"maximum": 0},
            {"minimum": receive::MIN_INVISIBLE_MS, "maximum": receive::MAX_INVISIBLE_MS},
        ]),
    );
    schemas["Object"] = json!({"type": "object"});
    schemas
}

/// The schema of property `field` of component `schema`.
///
/// # Panics
/// When the wire type has no such field (the module's tests build every schema).
fn property<'a>(schemas: &'a mut Value, schema: &str, field: &str) -> &'a mut Map<String, Value> {
    schemas
        .get_mut(schema)
        .and_then(|schema| schema.get_mut("properties"))
        .and_then(|properties| properties.get_mut(field))
        .and_then(Value::as_object_mut)
        .unwrap_or_else(|| panic!("schema {schema} has no property {field}"))
}

/// Calls `f` on every schema object in `value`, innermost first.
fn for_each_schema(value: &mut Value, f: &mut impl FnMut(&mut Map<String, Value>)) {
    match value {
        Value::Object(map) => {
            for inner in map.values_mut() {
                for_each_schema(inner, f);
            }
            f(map);
        }
        Value::Array(items) => items.iter_mut().for_each(|item| for_each_schema(item, f)),
        _ => {}
    }
}

/// `#/components/schemas/MessageView` → `#/components/schemas/Message`.
fn rename_reference(schema: &mut Map<String, Value>, names: &BTreeMap<&str, &str>) {
    const PREFIX: &str = "#/components/schemas/";
    if let Some(Value::String(reference)) = schema.get_mut("$ref") {
        if let Some(name) = reference
            .strip_prefix(PREFIX)
            .and_then(|rust| names.get(rust))
        {
            *reference = format!("{PREFIX}{name}");
        }
    }
}

/// An unsigned integer's upper bound, as the server reads it.
///
/// utoipa names an unsigned field's Rust type by a format (`uint32`, `uint64`:
/// its `non_strict_integers`) that OpenAPI 3.0 does not define, so neither a client
/// nor a fuzzer reads it as a bound; and it keeps bounds as `f64`, which cannot
/// hold `u64::MAX`, so the bound is written here, as a JSON integer, in place of
/// the format. (utoipa adds the `minimum: 0` itself.)
fn exact_integer_bounds(schema: &mut Map<String, Value>) {
    if schema.get("type").and_then(Value::as_str) != Some("integer") {
        return;
    }
    let max = match schema.get("format").and_then(Value::as_str) {
        Some("uint8") => u64::from(u8::MAX),
        Some("uint16") => u64::from(u16::MAX),
        Some("uint32") => u64::from(u32::MAX),
        Some("uint64") => u64::MAX,
        _ => return,
    };
    schema.remove("format");
    schema.entry("maximum").or_insert(json!(max));
}

#[cfg(test)]
mod tests {
    use super::*;
    use broker_proto::acl::RESOURCE_PATTERN;
    use broker_proto::api::TAGS_PATTERN;

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

    /// The limits written as literals in `broker_proto`'s `#[schema(…)]` attributes
    /// (utoipa's attributes take no constants) are the protocol's constants, and
    /// the patched ones are the configuration's defaults.
    #[test]
    fn the_schemas_carry_the_protocol_limits() {
        let schemas = schemas();
        let property = |schema: &str, field: &str| schemas[schema]["properties"][field].clone();
        let input = |field: &str| property("MessageInput", field);
        assert_eq!(input("keys")["maxItems"], json!(api::MAX_KEYS));
        for short in [
            input("keys")["items"].clone(),
            input("tags"),
            input("sharding_key"),
            input("producer_id"),
        ] {
            assert_eq!(short["maxLength"], json!(api::MAX_SHORT_TEXT), "{short}");
        }
        assert_eq!(
            input("properties")["maxProperties"],
            json!(api::MAX_PROPERTIES)
        );
        assert_eq!(
            property("HeartbeatRequest", "owned")["maxItems"],
            json!(api::MAX_OWNED_QUEUES)
        );
        assert_eq!(
            property("HeartbeatRequest", "topics")["maxItems"],
            json!(api::MAX_HEARTBEAT_TOPICS)
        );
        assert_eq!(
            property("TopicRequest", "groups")["maxItems"],
            json!(api::MAX_TOPIC_GROUPS)
        );
        for schema in ["UserRequest", "UserUpdate"] {
            assert_eq!(
                property(schema, "permissions")["maxItems"],
                json!(broker_proto::acl::MAX_PERMISSIONS),
                "{schema}"
            );
        }
        for field in ["read_queue_nums", "write_queue_nums"] {
            let nums = property("TopicRequest", field);
            assert_eq!(nums["minimum"], json!(1), "{field}");
            assert_eq!(
                nums["maximum"],
                json!(broker_proto::topic::MAX_QUEUE_NUMS),
                "{field}"
            );
        }
        assert_eq!(
            property("SendRequest", "messages")["maxItems"],
            json!(crate::config::HttpSection::default().max_batch_messages)
        );
        let max_level = json!(DelayLevels::default().max_level());
        assert_eq!(input("delay_level")["maximum"], max_level);
        assert_eq!(
            property("RetryRequest", "delay_level")["maximum"],
            max_level
        );
        let receive_field = |field| property("ReceiveRequest", field);
        assert_eq!(receive_field("max_messages")["minimum"], json!(1));
        assert_eq!(
            receive_field("max_messages")["maximum"],
            json!(receive::MAX_RECEIVE_MESSAGES)
        );
        assert_eq!(
            receive_field("invisible_ms")["minimum"],
            json!(receive::MIN_INVISIBLE_MS)
        );
        assert_eq!(
            receive_field("invisible_ms")["maximum"],
            json!(receive::MAX_INVISIBLE_MS)
        );
        assert_eq!(
            receive_field("max_wait_ms")["maximum"],
            json!(receive::MAX_RECEIVE_WAIT_MS)
        );
        assert_eq!(
            property("AckRequest", "receipt_handles")["maxItems"],
            json!(receive::MAX_ACK_HANDLES)
        );
        assert_eq!(
            property("ChangeInvisibleRequest", "receipt_handle")["maxLength"],
            json!(receive::MAX_RECEIPT_HANDLE_LEN)
        );
        // Unsigned numbers span their Rust type, exactly.
        assert_eq!(input("sequence")["maximum"], json!(u64::MAX));
        assert_eq!(input("queue_id")["maximum"], json!(u32::MAX));
    }

    /// OpenAPI 3.0, not 3.1: a nullable value says `nullable: true`, a type is one
    /// word, and no format is left that 3.0 does not define for integers.
    #[test]
    fn the_schemas_are_openapi_3_0() {
        let mut schemas = schemas();
        let mut nullable = 0;
        for_each_schema(&mut schemas, &mut |schema| {
            if let Some(kind) = schema.get("type") {
                // A property named `type` holds a schema (an object), not a word.
                assert!(kind.is_string() || kind.is_object(), "type {kind}");
            }
            if schema.get("type").and_then(Value::as_str) == Some("integer") {
                let format = schema.get("format").and_then(Value::as_str);
                assert!(
                    matches!(format, None | Some("int32" | "int64")),
                    "integer format {format:?}"
                );
            }
            nullable += usize::from(schema.get("nullable") == Some(&json!(true)));
        });
        assert!(nullable > 0, "nullable fields say `nullable: true`");
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
