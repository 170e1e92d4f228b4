//! The broker's openraft type configuration.
//!
//! The leader id is openraft's "standard" one: a committed leader id is just the
//! term, so a log id is (term, index) — exactly what every CommitLog record stores
//! ([`crate::storage::RaftLogRef`]).

use super::command::{Command, CommandResponse};
use crate::storage::RaftLogRef;

// What a node is, as configuration names it and Raft membership records it.
pub use crate::config::{NodeId, NodeInfo};

openraft::declare_raft_types!(
    /// Types of the broker group's Raft.
    pub TypeConfig:
        D = Command,
        R = CommandResponse,
        NodeId = u64,
        Node = NodeInfo,
        Term = u64,
        LeaderId = openraft::impls::leader_id_std::LeaderId<u64, u64>,
        Entry = openraft::Entry<<Self::LeaderId as openraft::vote::RaftLeaderId>::Committed, Self::Payload>,
        AsyncRuntime = openraft::impls::TokioRuntime,
);

/// A log id: (term, index).
pub type LogId = openraft::type_config::alias::LogIdOf<TypeConfig>;
/// The Raft handle of this node.
pub type Raft = openraft::Raft<TypeConfig, super::state_machine::BrokerStateMachine>;
/// Membership as stored with the log id that introduced it.
pub type StoredMembership = openraft::type_config::alias::StoredMembershipOf<TypeConfig>;
/// A cluster membership.
pub type Membership = openraft::Membership<NodeId, NodeInfo>;
/// A log entry.
pub type Entry = openraft::type_config::alias::EntryOf<TypeConfig>;
/// Snapshot metadata.
pub type SnapshotMeta = openraft::type_config::alias::SnapshotMetaOf<TypeConfig>;
/// A vote.
pub type Vote = openraft::type_config::alias::VoteOf<TypeConfig>;
/// A snapshot with the broker's snapshot data.
pub type Snapshot =
    openraft::type_config::alias::SnapshotOf<TypeConfig, super::snapshot::CommitLogSnapshot>;

/// Converts a log id to the reference stamped on CommitLog records.
pub fn log_ref(log_id: &LogId) -> RaftLogRef {
    RaftLogRef {
        term: log_id.leader_id.term,
        index: log_id.index,
    }
}

/// Converts a CommitLog record's reference back to a log id.
pub fn log_id_of(reference: RaftLogRef) -> LogId {
    LogId::new_term_index(reference.term, reference.index)
}
