//! The OpenAPI schemas that the wire types' `#[derive(utoipa::ToSchema)]`
//! attributes cannot say, each built from the protocol's own constants and named
//! by a field's `#[schema(schema_with = …)]` (feature `openapi`).
//!
//! utoipa's attributes take literals only, so a pattern or limit that is a
//! constant here is written through one of these functions rather than copied
//! into an attribute; the few literal limits in attributes are held equal to
//! their constants by the server's `http::openapi` tests.

use utoipa::openapi::{Array, ArrayBuilder, Object, ObjectBuilder, SchemaType};
use utoipa::ToSchema;

use crate::acl::{Action, RESOURCE_PATTERN};
use crate::api::{
    MAX_HEARTBEAT_TOPICS, MAX_PROPERTIES, MAX_SHORT_TEXT, MAX_TOPIC_GROUPS, PULL_STATUSES,
    TAGS_PATTERN,
};
use crate::error_code::ErrorCode;
use crate::receive::{ACK_STATUSES, MAX_ACK_HANDLES, MAX_RECEIPT_HANDLE_LEN};
use crate::topic::{NAME_PATTERN, PERM_READ, PERM_READ_WRITE, PERM_WRITE};

fn string() -> ObjectBuilder {
    ObjectBuilder::new().schema_type(SchemaType::String)
}

/// A topic, consumer group, broker group, client or user name
/// ([`crate::topic::validate_name`]).
pub fn name() -> Object {
    string().pattern(Some(NAME_PATTERN)).build()
}

/// The topics of a heartbeat.
pub fn heartbeat_topics() -> Array {
    ArrayBuilder::new()
        .items(name())
        .max_items(Some(MAX_HEARTBEAT_TOPICS))
        .build()
}

/// A topic's broker groups, when given: at least one.
pub fn topic_groups() -> Array {
    ArrayBuilder::new()
        .items(name())
        .min_items(Some(1))
        .max_items(Some(MAX_TOPIC_GROUPS))
        .build()
}

/// A message's tags.
pub fn tags() -> Object {
    string()
        .max_length(Some(MAX_SHORT_TEXT))
        .pattern(Some(TAGS_PATTERN))
        .build()
}

/// A message's properties. (`max_properties` is not a field attribute in utoipa
/// 4, and a map field's attributes go to its values.)
pub fn message_properties() -> Object {
    ObjectBuilder::new()
        .max_properties(Some(MAX_PROPERTIES))
        // A value is stored with a 16-bit length.
        .additional_properties(Some(string().max_length(Some(usize::from(u16::MAX)))))
        .build()
}

/// A topic's permission bits: write, read, or both.
pub fn perm() -> Object {
    ObjectBuilder::new()
        .schema_type(SchemaType::Integer)
        .enum_values(Some([PERM_WRITE, PERM_READ, PERM_READ_WRITE]))
        .build()
}

/// An error answer's `code`.
pub fn error_code() -> Object {
    string()
        .enum_values(Some(ErrorCode::ALL.map(ErrorCode::word)))
        .build()
}

/// A pull answer's `status`.
pub fn pull_status() -> Object {
    string().enum_values(Some(PULL_STATUSES)).build()
}

/// A permission's actions: [`crate::acl::validate_permissions`] refuses an empty
/// list and a repeated action, so one to all three of them.
pub fn actions() -> Array {
    ArrayBuilder::new()
        .items(Action::schema().1)
        .min_items(Some(1))
        .max_items(Some(3))
        .unique_items(true)
        .build()
}

/// A permission's resource ([`crate::acl::ResourcePattern`], a string on the wire).
pub fn resource() -> Object {
    string()
        .pattern(Some(RESOURCE_PATTERN))
        .description(Some(
            "`cluster`, `topic:NAME` or `group:NAME`; NAME may end with `*`",
        ))
        .build()
}

/// The receipt handles of an ack: 1..=[`MAX_ACK_HANDLES`].
pub fn receipt_handles() -> Array {
    ArrayBuilder::new()
        .items(
            string()
                .min_length(Some(1))
                .max_length(Some(MAX_RECEIPT_HANDLE_LEN)),
        )
        .min_items(Some(1))
        .max_items(Some(MAX_ACK_HANDLES))
        .build()
}

/// An ack result's `status`.
pub fn ack_status() -> Object {
    string().enum_values(Some(ACK_STATUSES)).build()
}
