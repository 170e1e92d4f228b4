//! The version of the internal protocol nodes speak to each other (Raft RPC,
//! append streams, snapshots, route registrations, forwarded reads).
//!
//! Every node-to-node request carries [`HEADER`] with the sender's
//! [`VERSION`], and every answer of an `/internal/` endpoint carries the
//! answering node's. A request without the header comes from a build before
//! versions existed: version 1.
//!
//! # What a version promises
//! A node talks to peers one version older or newer ([`compatible`]): that is
//! what a rolling upgrade or downgrade, one node at a time, needs. A peer further
//! apart is refused at every internal endpoint with 400 `PROTOCOL_MISMATCH` and a
//! message naming both versions — skip a version and the cluster says so instead
//! of failing to decode.
//!
//! Within that window a newer node must not send what an older one cannot
//! decode. The leader learns each voter's version from its answers
//! ([`PeerVersions`]) and proposes a command new in version N only once every
//! voter speaks N (see `replication::claims`).
//!
//! | version | adds |
//! |---|---|
//! | 1 | (no header) everything up to transactions and timers |
//! | 2 | this header; the queue-claims table (`Command::Claims`, group state format 6) |

use std::collections::HashMap;
use std::sync::Mutex;

use axum::http::HeaderMap;

/// The header holding the sender's (or answerer's) protocol version.
pub const HEADER: &str = "x-broker-protocol";

/// This build's protocol version.
pub const VERSION: u32 = 2;

/// What a request or answer without [`HEADER`] speaks.
pub const UNVERSIONED: u32 = 1;

/// The version a peer's headers state ([`UNVERSIONED`] without the header).
///
/// # Errors
/// A header that is not a positive integer.
pub fn of_headers(headers: &HeaderMap) -> Result<u32, String> {
    version_of(headers.get(HEADER).map(|v| v.as_bytes()))
}

/// As [`of_headers`], from an answer's headers (reqwest's header map).
pub fn of_answer(headers: &reqwest::header::HeaderMap) -> Result<u32, String> {
    version_of(headers.get(HEADER).map(|v| v.as_bytes()))
}

fn version_of(value: Option<&[u8]>) -> Result<u32, String> {
    let Some(value) = value else {
        return Ok(UNVERSIONED);
    };
    std::str::from_utf8(value)
        .ok()
        .and_then(|v| v.trim().parse::<u32>().ok())
        .filter(|v| *v >= 1)
        .ok_or_else(|| {
            format!(
                "header {HEADER}: `{}` is not a protocol version (a positive integer)",
                String::from_utf8_lossy(value)
            )
        })
}

/// Whether this node talks to a peer of `version`.
///
/// # Errors
/// The peer is more than one version apart, with a message for the operator.
pub fn compatible(version: u32) -> Result<(), String> {
    if version.abs_diff(VERSION) <= 1 {
        return Ok(());
    }
    let advice = if version > VERSION {
        "upgrade this node first: upgrades go one version at a time"
    } else {
        "upgrade that node first: upgrades go one version at a time"
    };
    Err(format!(
        "internal protocol mismatch: the peer speaks version {version}, this node speaks {VERSION} and talks to versions {} to {}; {advice}",
        VERSION.saturating_sub(1).max(1),
        VERSION + 1
    ))
}

/// The protocol versions of the group's peers, as their answers stated them.
#[derive(Default)]
pub struct PeerVersions {
    versions: Mutex<HashMap<u64, u32>>,
}

impl PeerVersions {
    /// Records what node `id` answered with.
    pub fn record(&self, id: u64, version: u32) {
        self.versions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, version);
    }

    /// The version node `id` last answered with, if it answered yet.
    pub fn of(&self, id: u64) -> Option<u32> {
        self.versions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&id)
            .copied()
    }

    /// The first of `peers` not known to speak at least `version` (not answered
    /// yet, or older), with what it speaks; `None` when all do.
    pub fn first_below(
        &self,
        peers: impl IntoIterator<Item = u64>,
        version: u32,
    ) -> Option<(u64, Option<u32>)> {
        let versions = self.versions.lock().unwrap_or_else(|p| p.into_inner());
        peers
            .into_iter()
            .map(|id| (id, versions.get(&id).copied()))
            .find(|(_, v)| v.is_none_or(|v| v < version))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_header_is_version_one_and_garbage_is_refused() {
        let mut headers = HeaderMap::new();
        assert_eq!(of_headers(&headers), Ok(UNVERSIONED));
        headers.insert(HEADER, "2".parse().expect("a valid header value"));
        assert_eq!(of_headers(&headers), Ok(2));
        headers.insert(HEADER, "two".parse().expect("a valid header value"));
        assert!(of_headers(&headers).expect_err("refused").contains("two"));
        headers.insert(HEADER, "0".parse().expect("a valid header value"));
        assert!(of_headers(&headers).is_err());
    }

    #[test]
    fn neighbours_talk_and_a_skipped_version_is_named() {
        assert!(compatible(VERSION).is_ok());
        assert!(compatible(VERSION - 1).is_ok());
        assert!(compatible(VERSION + 1).is_ok());
        let refusal = compatible(VERSION + 2).expect_err("refused");
        assert!(
            refusal.contains(&format!("version {}", VERSION + 2)),
            "{refusal}"
        );
        assert!(refusal.contains("one version at a time"), "{refusal}");
    }

    #[test]
    fn first_below_names_unknown_and_older_peers() {
        let versions = PeerVersions::default();
        assert_eq!(versions.first_below([2, 3], 2), Some((2, None)));
        versions.record(2, 2);
        versions.record(3, 1);
        assert_eq!(versions.first_below([2, 3], 2), Some((3, Some(1))));
        versions.record(3, 2);
        assert_eq!(versions.first_below([2, 3], 2), None);
    }
}
