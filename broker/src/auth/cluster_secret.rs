//! The node-to-node credential: the cluster secret, presented in
//! [`SECRET_HEADER`] on every `/internal/` request and on requests one node
//! forwards to another.
//!
//! It is compared in constant time over SHA-256 digests (so neither the content
//! nor the length of a wrong guess shows in the timing), and it is only ever sent
//! to nodes this node has reason to trust: members of its own group, the
//! configured peers and seeds, and nodes named by registrations that themselves
//! carried the secret (see `Node::peer_request`).

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::config::Secret;

/// Header carrying the cluster secret.
pub const SECRET_HEADER: &str = "x-cluster-secret";

/// The cluster secret of this node, ready to check and to send.
#[derive(Clone)]
pub struct ClusterSecret {
    value: Secret,
    digest: [u8; 32],
}

impl ClusterSecret {
    pub fn new(value: &Secret) -> Self {
        Self {
            value: value.clone(),
            digest: Sha256::digest(value.expose().as_bytes()).into(),
        }
    }

    /// Whether `presented` (a header value) is the secret.
    pub fn matches(&self, presented: &[u8]) -> bool {
        let digest: [u8; 32] = Sha256::digest(presented).into();
        bool::from(digest.ct_eq(&self.digest))
    }

    /// The value to send in [`SECRET_HEADER`].
    pub fn header_value(&self) -> &str {
        self.value.expose()
    }
}

impl std::fmt::Debug for ClusterSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClusterSecret(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_only_the_secret() {
        let secret = ClusterSecret::new(&Secret::new("s3cret-s3cret-s3cret"));
        assert!(secret.matches(b"s3cret-s3cret-s3cret"));
        assert!(!secret.matches(b"s3cret-s3cret-s3cre"));
        assert!(!secret.matches(b"s3cret-s3cret-s3cret "));
        assert!(!secret.matches(b""));
        assert!(!format!("{secret:?}").contains("s3cret"));
    }
}
