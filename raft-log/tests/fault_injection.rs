//! The `fault-injection` feature's `fault_skip_fsync` switch: appends are acknowledged
//! without an fsync of their own. Compiled only with `--features fault-injection`; the
//! fault-injection suite relies on this switch to prove it detects lost writes.
#![cfg(feature = "fault-injection")]

mod common;

use common::append_durably;
use common::log_id;
use common::normal_entry;
use common::read_all;
use common::TestConfig;
use raft_log_store::LogStore;
use raft_log_store::LogStoreConfig;

async fn fsyncs_for_100_appends(skip: bool) -> anyhow::Result<(u64, u64)> {
    let dir = tempfile::tempdir()?;
    let mut config = LogStoreConfig::for_test(dir.path());
    config.fault_skip_fsync = skip;
    let mut store = LogStore::<TestConfig>::open(config)?;
    let before = store.stats()?.fsyncs;
    for i in 0..100 {
        append_durably(
            &mut store,
            vec![normal_entry(log_id(1, 1, i), i, vec![7; 16])],
        )
        .await?;
    }
    let stats = store.stats()?;
    assert_eq!(
        read_all(&mut store).await?.len(),
        100,
        "entries are still written and readable"
    );
    Ok((stats.fsyncs - before, stats.flush_requests))
}

/// With the switch on, 100 acknowledged appends cost no fsync; with it off, each one does
/// (they are sequential here, so none can share one).
#[tokio::test]
async fn skip_fsync_acknowledges_without_fsync() -> anyhow::Result<()> {
    let (fsyncs, requests) = fsyncs_for_100_appends(true).await?;
    assert!(requests >= 100, "{requests} flush requests");
    assert_eq!(fsyncs, 0, "no fsync with fault_skip_fsync");

    let (fsyncs, _) = fsyncs_for_100_appends(false).await?;
    assert!(
        fsyncs >= 100,
        "one fsync per sequential append, got {fsyncs}"
    );
    Ok(())
}
