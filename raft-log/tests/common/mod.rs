//! Shared by the integration tests: a test type config, a minimal in-memory state machine
//! (enough for openraft's conformance suite), entry builders and a temp-dir store opener.

#![allow(dead_code)] // each test binary uses a different subset

use std::fmt;
use std::io;

use futures::Stream;
use futures::TryStreamExt;
use openraft::entry::RaftEntry;
use openraft::storage::EntryResponder;
use openraft::storage::RaftLogStorage;
use openraft::storage::RaftStateMachine;
use openraft::type_config::alias::LogIdOf;
use openraft::type_config::alias::SnapshotMetaOf;
use openraft::type_config::alias::SnapshotOf;
use openraft::type_config::alias::StoredMembershipOf;
use openraft::type_config::alias::VoteOf;
use openraft::type_config::TypeConfigExt;
use openraft::vote::RaftLeaderId;
use openraft::vote::RaftLeaderIdExt;
use openraft::vote::RaftVote;
use openraft::EntryPayload;
use openraft::OptionalSend;
use openraft::RaftSnapshotBuilder;
use raft_log_store::LogStore;
use raft_log_store::LogStoreConfig;
use serde::Deserialize;
use serde::Serialize;

/// The application command of the tests: an opaque body and a tag.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TestCommand {
    pub tag: u64,
    pub body: Vec<u8>,
}

impl fmt::Display for TestCommand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "TestCommand(tag={}, {} bytes)",
            self.tag,
            self.body.len()
        )
    }
}

/// What applying a [`TestCommand`] returns: the number of commands applied so far.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TestResponse(pub u64);

impl fmt::Display for TestResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TestResponse({})", self.0)
    }
}

openraft::declare_raft_types!(
    /// Type config of the tests.
    pub TestConfig:
        D = TestCommand,
        R = TestResponse,
);

pub type Entry = <TestConfig as openraft::RaftTypeConfig>::Entry;
pub type LogId = LogIdOf<TestConfig>;
pub type Vote = VoteOf<TestConfig>;

pub fn log_id(term: u64, node: u64, index: u64) -> LogId {
    type LeaderId = <TestConfig as openraft::RaftTypeConfig>::LeaderId;
    LogId::new(LeaderId::new_committed(term, node), index)
}

pub fn vote(term: u64, node: u64, committed: bool) -> Vote {
    type LeaderId = <TestConfig as openraft::RaftTypeConfig>::LeaderId;
    Vote::from_leader_id(LeaderId::new(term, node), committed)
}

pub fn normal_entry(log_id: LogId, tag: u64, body: Vec<u8>) -> Entry {
    Entry::new(log_id, EntryPayload::Normal(TestCommand { tag, body }))
}

/// Opens a store with [`LogStoreConfig::for_test`] settings in `dir`.
pub fn open_store(dir: &std::path::Path) -> anyhow::Result<LogStore<TestConfig>> {
    Ok(LogStore::open(LogStoreConfig::for_test(dir))?)
}

/// Appends `entries` and waits for the flush callback.
pub async fn append_durably(
    store: &mut LogStore<TestConfig>,
    entries: Vec<Entry>,
) -> anyhow::Result<()> {
    let (tx, rx) = TestConfig::oneshot();
    store
        .append(entries, openraft::storage::IOFlushed::signal(tx))
        .await?;
    rx.await??;
    Ok(())
}

/// The state of [`MemStateMachine`], also the content of its snapshots.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct SmState {
    last_applied: Option<LogId>,
    membership: StoredMembershipOf<TestConfig>,
    applied_commands: u64,
}

/// A minimal in-memory state machine: counts commands, tracks membership, snapshots its
/// whole state with bincode.
#[derive(Debug, Default)]
pub struct MemStateMachine {
    state: SmState,
    snapshot: Option<(SnapshotMetaOf<TestConfig>, Vec<u8>)>,
}

fn encode_state(state: &SmState) -> io::Result<Vec<u8>> {
    bincode::serde::encode_to_vec(state, bincode::config::standard())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// Where a builder leaves the snapshot it built, for `get_current_snapshot`.
type SnapshotSink = std::sync::Arc<std::sync::Mutex<Option<(SnapshotMetaOf<TestConfig>, Vec<u8>)>>>;

/// Builds a snapshot of a copy of the state taken when the builder was created.
pub struct MemSnapshotBuilder {
    state: SmState,
    sink: SnapshotSink,
}

impl RaftSnapshotBuilder<TestConfig> for MemSnapshotBuilder {
    type SnapshotData = Vec<u8>;

    async fn build_snapshot(&mut self) -> io::Result<SnapshotOf<TestConfig, Vec<u8>>> {
        let meta = SnapshotMetaOf::<TestConfig> {
            last_log_id: self.state.last_applied,
            last_membership: self.state.membership.clone(),
        };
        let data = encode_state(&self.state)?;
        *self
            .sink
            .lock()
            .map_err(|_| io::Error::other("snapshot sink poisoned"))? =
            Some((meta.clone(), data.clone()));
        Ok(SnapshotOf::<TestConfig, Vec<u8>> {
            meta,
            snapshot: data,
        })
    }
}

/// [`MemStateMachine`] plus where its builders deposit snapshots.
#[derive(Default)]
pub struct TestStateMachine {
    sm: MemStateMachine,
    built: SnapshotSink,
}

impl TestStateMachine {
    fn take_built(&mut self) -> io::Result<()> {
        let built = self
            .built
            .lock()
            .map_err(|_| io::Error::other("snapshot sink poisoned"))?
            .take();
        if let Some(built) = built {
            self.sm.snapshot = Some(built);
        }
        Ok(())
    }
}

impl RaftStateMachine<TestConfig> for TestStateMachine {
    type SnapshotData = Vec<u8>;
    type SnapshotBuilder = MemSnapshotBuilder;

    async fn applied_state(
        &mut self,
    ) -> io::Result<(Option<LogId>, StoredMembershipOf<TestConfig>)> {
        Ok((self.sm.state.last_applied, self.sm.state.membership.clone()))
    }

    async fn apply<Strm>(&mut self, mut entries: Strm) -> io::Result<()>
    where
        Strm: Stream<Item = io::Result<EntryResponder<TestConfig>>> + Unpin + OptionalSend,
    {
        while let Some((entry, responder)) = entries.try_next().await? {
            let log_id = entry.log_id();
            if let Some(membership) = entry.get_membership() {
                self.sm.state.membership =
                    StoredMembershipOf::<TestConfig>::new(Some(log_id), membership);
            }
            if let EntryPayload::Normal(_) = &entry.payload {
                self.sm.state.applied_commands += 1;
            }
            self.sm.state.last_applied = Some(log_id);
            if let Some(responder) = responder {
                responder.send(TestResponse(self.sm.state.applied_commands));
            }
        }
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        MemSnapshotBuilder {
            state: self.sm.state.clone(),
            sink: self.built.clone(),
        }
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMetaOf<TestConfig>,
        snapshot: Vec<u8>,
    ) -> io::Result<()> {
        let (state, _) =
            bincode::serde::decode_from_slice::<SmState, _>(&snapshot, bincode::config::standard())
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        self.sm.state = state;
        self.sm.snapshot = Some((meta.clone(), snapshot));
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> io::Result<Option<SnapshotOf<TestConfig, Vec<u8>>>> {
        self.take_built()?;
        Ok(self
            .sm
            .snapshot
            .clone()
            .map(|(meta, snapshot)| SnapshotOf::<TestConfig, Vec<u8>> { meta, snapshot }))
    }
}

/// Reads the whole log back through a reader (all entries, in order).
pub async fn read_all(store: &mut LogStore<TestConfig>) -> anyhow::Result<Vec<Entry>> {
    use openraft::RaftLogReader;
    let mut reader = store.get_log_reader().await;
    Ok(reader.try_get_log_entries(..).await?)
}
