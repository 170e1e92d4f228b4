//! openraft's storage conformance suite (`openraft::testing::log::Suite`) on the
//! broker's real pair: the raft-log [`LogStore`] with the broker's `TypeConfig`,
//! and [`BrokerStateMachine`] over a real message store (each case in a fresh
//! directory). The suite proposes blank and membership entries only, so this
//! checks what openraft relies on — applied log ids, memberships kept through
//! apply, initial state after restart, snapshot metadata — on the state machine
//! that writes every applied entry into the CommitLog; the broker's own commands
//! are `state_machine`'s unit tests and the cluster tests.
//!
//! Every case of `Suite::test_all` runs but one: `transfer_snapshot` hands the
//! leader's snapshot object to a second state machine's `install_snapshot`. The
//! broker's snapshot object names a CommitLog range of the node that built it; its
//! bytes travel separately (`/internal/raft/snapshot/offer|chunk|install`, staged
//! before openraft installs), so a snapshot built on one store cannot be installed
//! on another by handing the object over, and `install` refuses it ("local snapshot
//! covers the commit log up to N but it ends at 0"). Transfers are covered by the
//! cluster tests with the real transport (`cluster-tests/tests/snapshot_catch_up.rs`).

use std::sync::Arc;

use broker::replication::snapshot::SnapshotFiles;
use broker::replication::state_machine::BrokerStateMachine;
use broker::replication::type_config::TypeConfig;
use broker::storage::{MessageStore, StoreConfig};
use openraft::testing::log::{StoreBuilder, Suite};
use openraft::type_config::TypeConfigExt;
use openraft::StorageError;
use raft_log_store::{LogStore, LogStoreConfig};
use tempfile::TempDir;

struct Builder;

fn storage_error(e: impl std::error::Error + 'static) -> StorageError<TypeConfig> {
    StorageError::read(TypeConfig::err_from_error(&e))
}

impl StoreBuilder<TypeConfig, LogStore<TypeConfig>, BrokerStateMachine, TempDir> for Builder {
    async fn build(
        &self,
    ) -> Result<(TempDir, LogStore<TypeConfig>, BrokerStateMachine), StorageError<TypeConfig>> {
        let dir = tempfile::tempdir().map_err(storage_error)?;
        let mut store_config = StoreConfig::for_test(dir.path().join("store"));
        // Nothing in these cases is old enough or large enough to retain; a nearly
        // full shared disk must not delete files under them either.
        store_config.file_reserved_ms = u64::MAX;
        store_config.disk_high_water_ratio = 1.0;
        let (store, _) = MessageStore::open(store_config).map_err(storage_error)?;
        let snapshots = SnapshotFiles::open(&dir.path().join("snapshot")).map_err(storage_error)?;
        let state_machine =
            BrokerStateMachine::open(Arc::new(store), snapshots, 16).map_err(storage_error)?;
        let log = LogStore::open(LogStoreConfig::for_test(dir.path().join("raft-log")))
            .map_err(storage_error)?;
        Ok((dir, log, state_machine))
    }
}

type BrokerSuite = Suite<TypeConfig, LogStore<TypeConfig>, BrokerStateMachine, Builder, TempDir>;

/// One suite case on a fresh pair; a failed assertion inside panics.
async fn run<F, Fut>(name: &str, case: F) -> Result<(), StorageError<TypeConfig>>
where
    F: FnOnce(LogStore<TypeConfig>, BrokerStateMachine) -> Fut,
    Fut: std::future::Future<Output = Result<(), std::io::Error>>,
{
    let (_dir, log, state_machine) = Builder.build().await?;
    case(log, state_machine).await.map_err(|e| {
        eprintln!("suite case {name} failed: {e}");
        storage_error(e)
    })
}

/// Every case of `Suite::test_all` but `transfer_snapshot` (see the module
/// documentation), in its order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openraft_storage_suite_on_the_broker_state_machine() -> Result<(), StorageError<TypeConfig>>
{
    run(
        "last_membership_in_log_initial",
        BrokerSuite::last_membership_in_log_initial,
    )
    .await?;
    run(
        "last_membership_in_log",
        BrokerSuite::last_membership_in_log,
    )
    .await?;
    run(
        "last_membership_in_log_multi_step",
        BrokerSuite::last_membership_in_log_multi_step,
    )
    .await?;
    run(
        "get_membership_initial",
        BrokerSuite::get_membership_initial,
    )
    .await?;
    run(
        "get_membership_from_log_and_empty_sm",
        BrokerSuite::get_membership_from_log_and_empty_sm,
    )
    .await?;
    run(
        "get_membership_from_empty_log_and_sm",
        BrokerSuite::get_membership_from_empty_log_and_sm,
    )
    .await?;
    run(
        "get_membership_from_log_le_sm_last_applied",
        BrokerSuite::get_membership_from_log_le_sm_last_applied,
    )
    .await?;
    run(
        "get_membership_from_log_gt_sm_last_applied_1",
        BrokerSuite::get_membership_from_log_gt_sm_last_applied_1,
    )
    .await?;
    run(
        "get_membership_from_log_gt_sm_last_applied_2",
        BrokerSuite::get_membership_from_log_gt_sm_last_applied_2,
    )
    .await?;
    run(
        "get_initial_state_without_init",
        BrokerSuite::get_initial_state_without_init,
    )
    .await?;
    run(
        "get_initial_state_membership_from_empty_log_and_sm",
        BrokerSuite::get_initial_state_membership_from_empty_log_and_sm,
    )
    .await?;
    run(
        "get_initial_state_membership_from_sm_inlog_is_smaller",
        BrokerSuite::get_initial_state_membership_from_sm_inlog_is_smaller,
    )
    .await?;
    run(
        "get_initial_state_membership_from_log_insm_is_smaller",
        BrokerSuite::get_initial_state_membership_from_log_insm_is_smaller,
    )
    .await?;
    run(
        "get_initial_state_with_state",
        BrokerSuite::get_initial_state_with_state,
    )
    .await?;
    run(
        "get_initial_state_last_log_gt_sm",
        BrokerSuite::get_initial_state_last_log_gt_sm,
    )
    .await?;
    run(
        "get_initial_state_last_log_lt_sm",
        BrokerSuite::get_initial_state_last_log_lt_sm,
    )
    .await?;
    run(
        "get_initial_state_inverted_log_order",
        BrokerSuite::get_initial_state_inverted_log_order,
    )
    .await?;
    run(
        "get_initial_state_conflict_at_same_index",
        BrokerSuite::get_initial_state_conflict_at_same_index,
    )
    .await?;
    run(
        "get_initial_state_log_ids",
        BrokerSuite::get_initial_state_log_ids,
    )
    .await?;
    run(
        "get_initial_state_re_apply_committed",
        BrokerSuite::get_initial_state_re_apply_committed,
    )
    .await?;
    run("save_vote", BrokerSuite::save_vote).await?;
    run("get_log_entries", BrokerSuite::get_log_entries).await?;
    run(
        "limited_get_log_entries",
        BrokerSuite::limited_get_log_entries,
    )
    .await?;
    run("leader_bounded_stream", BrokerSuite::leader_bounded_stream).await?;
    run("entries_stream", BrokerSuite::entries_stream).await?;
    run("try_get_log_entry", BrokerSuite::try_get_log_entry).await?;
    run(
        "log_reader_reads_new_entries",
        BrokerSuite::log_reader_reads_new_entries,
    )
    .await?;
    run("initial_logs", BrokerSuite::initial_logs).await?;
    run("get_log_state", BrokerSuite::get_log_state).await?;
    run("get_log_id", BrokerSuite::get_log_id).await?;
    run("last_id_in_log", BrokerSuite::last_id_in_log).await?;
    run("last_applied_state", BrokerSuite::last_applied_state).await?;
    run("purge_logs_upto_0", BrokerSuite::purge_logs_upto_0).await?;
    run("purge_logs_upto_5", BrokerSuite::purge_logs_upto_5).await?;
    run("purge_logs_upto_20", BrokerSuite::purge_logs_upto_20).await?;
    run("delete_logs_after_11", BrokerSuite::delete_logs_after_11).await?;
    run("delete_logs_after_5", BrokerSuite::delete_logs_after_5).await?;
    run("delete_logs_after_0", BrokerSuite::delete_logs_after_0).await?;
    run(
        "delete_logs_after_none",
        BrokerSuite::delete_logs_after_none,
    )
    .await?;
    run("append_to_log", BrokerSuite::append_to_log).await?;
    run("snapshot_meta", BrokerSuite::snapshot_meta).await?;
    run(
        "snapshot_meta_optional",
        BrokerSuite::snapshot_meta_optional,
    )
    .await?;
    run("apply_single", BrokerSuite::apply_single).await?;
    run("apply_multiple", BrokerSuite::apply_multiple).await?;
    Ok(())
}
