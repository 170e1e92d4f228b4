//! The user table: who may call the API, with which permissions and quotas.
//!
//! It is replicated state, like topics: every broker group's state machine holds
//! a copy (in `GroupState`), so any node authorizes a request locally and a
//! request forwarded to another group is checked again where it runs. A change is
//! made at one node and applied to every group (`Command::PutUsers`); the copies
//! converge by **last writer wins per user**: every record carries a `revision`
//! (the time of the change, in 1/4096 ms, above every revision its maker had
//! seen), a group keeps the record with the highest revision, and a deleted user
//! stays as a tombstone so an older change arriving late cannot bring it back.
//! Group leaders compare their tables' digests through route registration and
//! pull what they miss from each other (`control::registrar`), so a group that
//! was unreachable during a change, or joins later, catches up.
//!
//! Apply must decide the same on every replica: the limits here are constants.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::acl::{validate_permissions, Permission};
use super::token::TokenHash;
use crate::topic::validate_name;

/// Most user records (tombstones included) a table keeps. Beyond it the oldest
/// tombstones go; a new user is refused once only live users remain.
pub const MAX_USERS: usize = 10_000;
/// Most records one change (or one anti-entropy pull) carries.
pub const MAX_RECORDS_PER_CHANGE: usize = 1_000;

/// Per-user limits on sends, enforced by each group's leader (token buckets with
/// one second of burst). `None`: unlimited.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quotas {
    pub send_messages_per_s: Option<u64>,
    pub send_bytes_per_s: Option<u64>,
}

/// One user as replicated.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserRecord {
    pub name: String,
    pub permissions: Vec<Permission>,
    pub quotas: Quotas,
    /// SHA-256 of the user's current token; the token itself is never stored.
    pub token_hash: TokenHash,
    /// Last-writer-wins stamp (see the module doc).
    pub revision: u64,
    /// A deleted user: its token no longer works, and the name may be created
    /// again (with a higher revision).
    pub deleted: bool,
    pub created_ms: u64,
    pub updated_ms: u64,
}

impl UserRecord {
    /// Checks the name and the permissions.
    ///
    /// # Errors
    /// A description of the first problem.
    pub fn validate(&self) -> Result<(), String> {
        validate_name("user", &self.name)?;
        validate_permissions(&self.permissions)?;
        for (what, value) in [
            ("send_messages_per_s", self.quotas.send_messages_per_s),
            ("send_bytes_per_s", self.quotas.send_bytes_per_s),
        ] {
            if value == Some(0) {
                return Err(format!(
                    "quota {what} must be positive (leave it out for no limit)"
                ));
            }
        }
        Ok(())
    }
}

/// What a merge did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MergeOutcome {
    /// Records that replaced an older one or were new.
    pub applied: usize,
    /// New users refused because the table is full of live users.
    pub refused_full: usize,
}

/// Every table change (and every decoded table) gets a fresh version, so a cache
/// built from one table is never taken for another's.
static VERSIONS: AtomicU64 = AtomicU64::new(1);

/// The replicated user table.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct UserTable {
    users: BTreeMap<String, UserRecord>,
    /// Derived: changes with every change of the table (see [`VERSIONS`]).
    #[serde(skip)]
    version: u64,
}

impl UserTable {
    /// Merges records, keeping per name the one with the highest revision.
    /// Invalid records are skipped (they were checked before they were proposed;
    /// this is defence against a bad peer or a bug, decided the same everywhere).
    pub fn merge(&mut self, records: &[UserRecord]) -> MergeOutcome {
        let mut outcome = MergeOutcome::default();
        for record in records.iter().take(MAX_RECORDS_PER_CHANGE) {
            if record.validate().is_err() {
                continue;
            }
            match self.users.get(&record.name) {
                Some(current) if current.revision >= record.revision => continue,
                Some(_) => {}
                None => {
                    if self.users.len() >= MAX_USERS && !self.drop_oldest_tombstone() {
                        outcome.refused_full += 1;
                        continue;
                    }
                }
            }
            self.users.insert(record.name.clone(), record.clone());
            outcome.applied += 1;
        }
        if outcome.applied > 0 {
            self.refresh_version();
        }
        outcome
    }

    fn drop_oldest_tombstone(&mut self) -> bool {
        let oldest = self
            .users
            .values()
            .filter(|u| u.deleted)
            .min_by_key(|u| (u.updated_ms, u.revision))
            .map(|u| u.name.clone());
        match oldest {
            Some(name) => self.users.remove(&name).is_some(),
            None => false,
        }
    }

    /// Gives the table a fresh version (after decoding it).
    pub fn refresh_version(&mut self) {
        self.version = VERSIONS.fetch_add(1, Ordering::Relaxed);
    }

    pub fn version(&self) -> u64 {
        self.version
    }

    /// A live (not deleted) user.
    pub fn get(&self, name: &str) -> Option<&UserRecord> {
        self.users.get(name).filter(|u| !u.deleted)
    }

    /// A user's record, tombstone or not (for revisions).
    pub fn record(&self, name: &str) -> Option<&UserRecord> {
        self.users.get(name)
    }

    /// Live users, by name.
    pub fn live(&self) -> impl Iterator<Item = &UserRecord> {
        self.users.values().filter(|u| !u.deleted)
    }

    /// Every record, tombstones included (for anti-entropy).
    pub fn records(&self) -> impl Iterator<Item = &UserRecord> {
        self.users.values()
    }

    /// The highest revision in the table.
    pub fn max_revision(&self) -> u64 {
        self.users.values().map(|u| u.revision).max().unwrap_or(0)
    }

    /// A digest of (name, revision) of every record: equal digests, equal tables.
    pub fn digest(&self) -> String {
        let mut hasher = Sha256::new();
        for user in self.users.values() {
            hasher.update(user.name.as_bytes());
            hasher.update([0]);
            hasher.update(user.revision.to_le_bytes());
        }
        hasher
            .finalize()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    /// Records this table holds newer than `other`'s (what `other` lacks).
    pub fn newer_than<'a>(&'a self, other: &'a UserTable) -> impl Iterator<Item = &'a UserRecord> {
        self.users.values().filter(move |mine| {
            other
                .users
                .get(&mine.name)
                .is_none_or(|theirs| theirs.revision < mine.revision)
        })
    }

    pub fn len(&self) -> usize {
        self.users.len()
    }

    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }
}

/// A revision for a change made now by a node whose table's highest revision is
/// `seen`: later than anything it has seen, and ordered by time across nodes
/// (4096 per millisecond).
pub fn next_revision(now_ms: u64, seen: u64) -> u64 {
    (now_ms << 12).max(seen + 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::acl::{Action, ResourcePattern};

    fn user(name: &str, revision: u64, deleted: bool) -> UserRecord {
        UserRecord {
            name: name.into(),
            permissions: vec![Permission {
                resource: ResourcePattern::Cluster,
                actions: vec![Action::Sub],
            }],
            quotas: Quotas::default(),
            token_hash: TokenHash::of(&format!("{name}-{revision}")),
            revision,
            deleted,
            created_ms: revision,
            updated_ms: revision,
        }
    }

    #[test]
    fn the_highest_revision_wins_in_any_order() {
        let changes = [user("a", 1, false), user("a", 3, false), user("a", 2, true)];
        let mut forward = UserTable::default();
        forward.merge(&changes);
        let mut backward = UserTable::default();
        for change in changes.iter().rev() {
            backward.merge(std::slice::from_ref(change));
        }
        assert_eq!(forward.record("a"), backward.record("a"));
        assert_eq!(forward.record("a").map(|u| u.revision), Some(3));
        assert_eq!(forward.digest(), backward.digest());
        // A tombstone keeps an older change from reviving the user.
        let mut table = UserTable::default();
        table.merge(&[user("b", 5, true)]);
        assert_eq!(table.merge(&[user("b", 4, false)]).applied, 0);
        assert!(table.get("b").is_none());
    }

    #[test]
    fn versions_change_with_every_change_only() {
        let mut table = UserTable::default();
        table.merge(&[user("a", 1, false)]);
        let v = table.version();
        table.merge(&[user("a", 1, false)]);
        assert_eq!(table.version(), v, "nothing changed");
        table.merge(&[user("a", 2, false)]);
        assert_ne!(table.version(), v);
    }

    #[test]
    fn a_full_table_drops_tombstones_then_refuses_new_users() {
        let mut table = UserTable::default();
        let records: Vec<_> = (0..MAX_USERS)
            .map(|i| user(&format!("u{i}"), 10 + i as u64, i < 2))
            .collect();
        for chunk in records.chunks(MAX_RECORDS_PER_CHANGE) {
            table.merge(chunk);
        }
        assert_eq!(table.len(), MAX_USERS);
        assert_eq!(table.merge(&[user("new1", 1, false)]).applied, 1);
        assert!(table.record("u0").is_none(), "the oldest tombstone went");
        assert_eq!(table.merge(&[user("new2", 1, false)]).applied, 1);
        let outcome = table.merge(&[user("new3", 1, false)]);
        assert_eq!(
            outcome,
            MergeOutcome {
                applied: 0,
                refused_full: 1
            }
        );
        // Existing users can still change.
        assert_eq!(table.merge(&[user("u5", 99_999, false)]).applied, 1);
    }

    #[test]
    fn invalid_records_are_skipped_and_anti_entropy_finds_what_is_missing() {
        let mut bad = user("bad name", 1, false);
        let mut table = UserTable::default();
        assert_eq!(table.merge(std::slice::from_ref(&bad)).applied, 0);
        bad.name = "ok".into();
        bad.quotas.send_messages_per_s = Some(0);
        assert_eq!(table.merge(&[bad]).applied, 0);
        let mut a = UserTable::default();
        a.merge(&[user("x", 2, false), user("y", 1, false)]);
        let mut b = UserTable::default();
        b.merge(&[user("x", 1, false), user("z", 1, false)]);
        let missing: Vec<_> = a.newer_than(&b).map(|u| u.name.clone()).collect();
        assert_eq!(missing, ["x", "y"]);
        assert!(next_revision(1, 0) > 0 && next_revision(1, 1 << 20) == (1 << 20) + 1);
    }
}
