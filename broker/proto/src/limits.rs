//! Protocol limits that are the same on every node (not configuration): what a
//! client may rely on. The per-request list caps are beside their wire types in
//! [`crate::api`].

/// Idempotent producers (`producer_id` + `sequence`, shared/API.md "Send"): a
/// broker group keeps each producer's last [`DEDUP_WINDOW`] results.
/// Sequences remembered per producer: a retry of any of a producer's last this-many
/// messages is recognised and answered with the first result.
pub const DEDUP_WINDOW: usize = 256;
/// Producers remembered at once; when full, new producer ids are refused until one
/// expires (see the module doc).
pub const MAX_PRODUCERS: usize = 10_000;
/// How long a producer's window is kept after its last stored message, in
/// milliseconds of store time.
pub const PRODUCER_TTL_MS: u64 = 60 * 60 * 1000;
