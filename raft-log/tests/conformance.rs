//! openraft's own log-storage conformance suite, run in full against [`LogStore`].
//!
//! Every case of `Suite::test_all` gets a fresh store in a fresh temp dir (with
//! `for_test` settings: 64 KiB chunks, a 128 KiB cache, 16 KiB bounded reads) and the
//! minimal in-memory state machine of `common`. The suite checks the trait contracts
//! (log state after purge/truncate, bounded reads returning at least one entry, reads of
//! new entries through an existing reader, vote round trip, committed id, initial state
//! recovery with re-apply); durability across crashes is `crash.rs`'s business.

mod common;

use common::TestConfig;
use common::TestStateMachine;
use openraft::testing::log::StoreBuilder;
use openraft::testing::log::Suite;
use openraft::type_config::TypeConfigExt;
use openraft::StorageError;
use raft_log_store::LogStore;
use raft_log_store::LogStoreConfig;
use tempfile::TempDir;

struct Builder;

impl StoreBuilder<TestConfig, LogStore<TestConfig>, TestStateMachine, TempDir> for Builder {
    async fn build(
        &self,
    ) -> Result<(TempDir, LogStore<TestConfig>, TestStateMachine), StorageError<TestConfig>> {
        let dir =
            tempfile::tempdir().map_err(|e| StorageError::read(TestConfig::err_from_error(&e)))?;
        let store = LogStore::open(LogStoreConfig::for_test(dir.path()))
            .map_err(|e| StorageError::read(TestConfig::err_from_error(&e)))?;
        Ok((dir, store, TestStateMachine::default()))
    }
}

/// The whole suite must pass: any failed assertion inside panics, any storage error is
/// returned.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openraft_log_storage_suite() -> Result<(), StorageError<TestConfig>> {
    Suite::test_all(Builder).await
}
