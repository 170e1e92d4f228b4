//! Bearer tokens: 256 random bits, shown to their owner once, stored only as a
//! SHA-256 hash.
//!
//! A token is `mq_` followed by 43 characters of unpadded base64url. SHA-256 (not
//! a slow password hash) is the right tool for a uniformly random 256-bit secret:
//! there is nothing to brute-force, and every request hashes the token it brings.

use base64::Engine;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Prefix of every token the broker issues (so a leaked one is recognisable by
/// secret scanners).
pub const TOKEN_PREFIX: &str = "mq_";
/// Random bytes in a token.
const TOKEN_BYTES: usize = 32;
/// Longest `Authorization` value considered (anything longer is not a token).
pub const MAX_TOKEN_CHARS: usize = 512;

/// A freshly issued token.
pub fn generate() -> String {
    let mut bytes = [0u8; TOKEN_BYTES];
    rand::rng().fill_bytes(&mut bytes);
    format!(
        "{TOKEN_PREFIX}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    )
}

/// The SHA-256 of a token's text: what the user table keeps.
#[derive(Copy, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TokenHash(pub [u8; 32]);

impl TokenHash {
    pub fn of(token: &str) -> Self {
        Self(Sha256::digest(token.as_bytes()).into())
    }
}

impl std::fmt::Debug for TokenHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // A prefix is enough to tell hashes apart in a debug print.
        write!(
            f,
            "TokenHash({:02x}{:02x}{:02x}{:02x}…)",
            self.0[0], self.0[1], self.0[2], self.0[3]
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_random_prefixed_and_hash_stably() {
        let a = generate();
        let b = generate();
        assert_ne!(a, b);
        assert!(a.starts_with(TOKEN_PREFIX));
        assert_eq!(a.len(), TOKEN_PREFIX.len() + 43);
        assert_eq!(TokenHash::of(&a), TokenHash::of(&a));
        assert_ne!(TokenHash::of(&a), TokenHash::of(&b));
    }
}
