//! Durable append throughput of [`LogStore`]: N concurrent writers, each append one entry,
//! counted when its fsync callback fires.
//!
//! "N writers" means N appends outstanding at all times: one driver task submits appends
//! until N await their `IOFlushed` callback and submits a new one as each completes, which
//! is how openraft's core drives the store when it batches client writes.
//!
//! ```text
//! cargo run --release -p raft-log-store --example log_bench -- --writers 64 --payload 1024 --secs 5
//! cargo run --release -p raft-log-store --example log_bench -- --matrix --secs 3
//! ```
//!
//! `--raft` measures the realistic path instead: a single-node openraft `Raft` on the store
//! with N tasks each looping on `client_write` (a write counts when it is committed and
//! applied, which on one node means: fsync'd by this store).
//!
//! `--matrix` runs writers {1, 64, 512} × payload {256, 1024} B × flush window
//! (`--windows-us`, default 0,100,1000) and prints one table. Each case gets a fresh directory (under
//! `--dir`, default the system temp dir) with production defaults apart from the window.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;
use std::time::Instant;

use anyhow::Context;
use clap::Parser;
use futures::stream::FuturesUnordered;
use futures::StreamExt;
use openraft::entry::RaftEntry;
use openraft::storage::IOFlushed;
use openraft::storage::RaftLogStorage;
use openraft::type_config::alias::LogIdOf;
use openraft::type_config::TypeConfigExt;
use openraft::vote::RaftLeaderIdExt;
use openraft::EntryPayload;
use raft_log_store::LogStore;
use raft_log_store::LogStoreConfig;
use serde::Deserialize;
use serde::Serialize;

/// An opaque message batch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Batch(Vec<u8>);

impl fmt::Display for Batch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Batch({} bytes)", self.0.len())
    }
}

openraft::declare_raft_types!(BenchConfig: D = Batch, R = ());

type Entry = <BenchConfig as openraft::RaftTypeConfig>::Entry;

#[derive(Parser, Debug)]
#[command(about = "Durable appends/s of the raft-log store")]
struct Args {
    /// Appends kept outstanding.
    #[arg(long, default_value_t = 64)]
    writers: usize,
    /// Bytes of payload per entry.
    #[arg(long, default_value_t = 1024)]
    payload: usize,
    /// Seconds to measure each case.
    #[arg(long, default_value_t = 5.0)]
    secs: f64,
    /// raft-log group-commit window, in microseconds (default: the store's default).
    #[arg(long)]
    flush_wait_us: Option<u64>,
    /// Run the whole matrix instead of one case.
    #[arg(long)]
    matrix: bool,
    /// Flush windows of the matrix, in microseconds.
    #[arg(long, value_delimiter = ',', default_value = "0,100,1000")]
    windows_us: Vec<u64>,
    /// Where to create the store directories.
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Drive a real single-node openraft `Raft` with N concurrent `client_write` tasks
    /// instead of raw appends (openraft batches the writes into its own appends).
    #[arg(long)]
    raft: bool,
}

struct CaseResult {
    writers: usize,
    payload: usize,
    window: Duration,
    appends: u64,
    elapsed: Duration,
    p50_us: u64,
    p99_us: u64,
    appends_per_fsync: f64,
}

impl CaseResult {
    fn appends_per_sec(&self) -> f64 {
        self.appends as f64 / self.elapsed.as_secs_f64()
    }

    fn mb_per_sec(&self) -> f64 {
        self.appends_per_sec() * self.payload as f64 / 1_000_000.0
    }
}

fn header() {
    println!(
        "| writers | payload B | flush window | appends/s | MB/s | p50 µs | p99 µs | appends/fsync |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|");
}

fn row(r: &CaseResult) {
    println!(
        "| {} | {} | {:?} | {:.0} | {:.2} | {} | {} | {:.1} |",
        r.writers,
        r.payload,
        r.window,
        r.appends_per_sec(),
        r.mb_per_sec(),
        r.p50_us,
        r.p99_us,
        r.appends_per_fsync
    );
}

async fn run_case(
    base: &std::path::Path,
    writers: usize,
    payload: usize,
    window: Duration,
    duration: Duration,
) -> anyhow::Result<CaseResult> {
    let dir = tempfile::tempdir_in(base)?;
    let mut config = LogStoreConfig::new(dir.path());
    config.flush_batch_wait = window;
    let mut store = LogStore::<BenchConfig>::open(config)?;

    let leader = <BenchConfig as openraft::RaftTypeConfig>::LeaderId::new_committed(1, 1);
    let body = Batch((0..payload).map(|i| i as u8).collect());
    let mut latencies = hdrhistogram::Histogram::<u64>::new(3)?;
    let mut in_flight = FuturesUnordered::new();
    let mut next_index = 0u64;
    let mut appends = 0u64;

    let start = Instant::now();
    let deadline = start + duration;
    loop {
        let now = Instant::now();
        while now < deadline && in_flight.len() < writers {
            let entry = Entry::new(
                LogIdOf::<BenchConfig>::new(leader, next_index),
                EntryPayload::Normal(body.clone()),
            );
            next_index += 1;
            let (tx, rx) = BenchConfig::oneshot();
            let submitted = Instant::now();
            store.append([entry], IOFlushed::signal(tx)).await?;
            in_flight.push(async move { (rx.await, submitted) });
        }
        let Some((result, submitted)) = in_flight.next().await else {
            break;
        };
        result.context("flush callback dropped")??;
        appends += 1;
        latencies.record(submitted.elapsed().as_micros() as u64)?;
    }
    let elapsed = start.elapsed();

    let stats = store.stats()?;
    store.close().await?;
    Ok(CaseResult {
        writers,
        payload,
        window,
        appends,
        elapsed,
        p50_us: latencies.value_at_quantile(0.5),
        p99_us: latencies.value_at_quantile(0.99),
        appends_per_fsync: stats.flush_requests as f64 / stats.fsyncs.max(1) as f64,
    })
}

/// The bench's state machine: counts what it applies, snapshots nothing but that.
#[derive(Default)]
struct CountingStateMachine {
    last_applied: Option<LogIdOf<BenchConfig>>,
    membership: openraft::type_config::alias::StoredMembershipOf<BenchConfig>,
    applied: u64,
}

type SnapshotOf = openraft::type_config::alias::SnapshotOf<BenchConfig, Vec<u8>>;
type SnapshotMetaOf = openraft::type_config::alias::SnapshotMetaOf<BenchConfig>;

impl openraft::RaftSnapshotBuilder<BenchConfig> for CountingStateMachine {
    type SnapshotData = Vec<u8>;

    async fn build_snapshot(&mut self) -> std::io::Result<SnapshotOf> {
        Ok(SnapshotOf {
            meta: SnapshotMetaOf {
                last_log_id: self.last_applied,
                last_membership: self.membership.clone(),
            },
            snapshot: self.applied.to_le_bytes().to_vec(),
        })
    }
}

impl openraft::storage::RaftStateMachine<BenchConfig> for CountingStateMachine {
    type SnapshotData = Vec<u8>;
    type SnapshotBuilder = CountingStateMachine;

    async fn applied_state(
        &mut self,
    ) -> std::io::Result<(
        Option<LogIdOf<BenchConfig>>,
        openraft::type_config::alias::StoredMembershipOf<BenchConfig>,
    )> {
        Ok((self.last_applied, self.membership.clone()))
    }

    async fn apply<Strm>(&mut self, mut entries: Strm) -> std::io::Result<()>
    where
        Strm: futures::Stream<Item = std::io::Result<openraft::storage::EntryResponder<BenchConfig>>>
            + Unpin
            + openraft::OptionalSend,
    {
        use futures::TryStreamExt;
        while let Some((entry, responder)) = entries.try_next().await? {
            if let Some(membership) = entry.get_membership() {
                self.membership =
                    openraft::type_config::alias::StoredMembershipOf::<BenchConfig>::new(
                        Some(entry.log_id()),
                        membership,
                    );
            }
            self.last_applied = Some(entry.log_id());
            self.applied += 1;
            if let Some(responder) = responder {
                responder.send(());
            }
        }
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        CountingStateMachine {
            last_applied: self.last_applied,
            membership: self.membership.clone(),
            applied: self.applied,
        }
    }

    async fn install_snapshot(
        &mut self,
        _meta: &SnapshotMetaOf,
        _snapshot: Vec<u8>,
    ) -> std::io::Result<()> {
        Err(std::io::Error::other(
            "single-node bench: no snapshot to install",
        ))
    }

    async fn get_current_snapshot(&mut self) -> std::io::Result<Option<SnapshotOf>> {
        Ok(None)
    }
}

/// A network to nowhere: a single node never sends an RPC.
struct NoNetwork;

impl openraft::network::RaftNetworkFactory<BenchConfig> for NoNetwork {
    type Network = NoNetwork;

    async fn new_client(&mut self, _target: u64, _node: &openraft::BasicNode) -> NoNetwork {
        NoNetwork
    }
}

fn unreachable_peer() -> openraft::errors::Unreachable<BenchConfig> {
    openraft::errors::Unreachable::from_string("single-node bench has no peers")
}

impl openraft::network::v2::RaftNetworkV2<BenchConfig> for NoNetwork {
    type SnapshotData = Vec<u8>;

    async fn append_entries(
        &mut self,
        _rpc: openraft::raft::AppendEntriesRequest<BenchConfig>,
        _option: openraft::network::RPCOption,
    ) -> Result<
        openraft::raft::AppendEntriesResponse<BenchConfig>,
        openraft::errors::RPCError<BenchConfig>,
    > {
        Err(openraft::errors::RPCError::Unreachable(unreachable_peer()))
    }

    async fn vote(
        &mut self,
        _rpc: openraft::raft::VoteRequest<BenchConfig>,
        _option: openraft::network::RPCOption,
    ) -> Result<openraft::raft::VoteResponse<BenchConfig>, openraft::errors::RPCError<BenchConfig>>
    {
        Err(openraft::errors::RPCError::Unreachable(unreachable_peer()))
    }

    async fn full_snapshot(
        &mut self,
        _vote: openraft::type_config::alias::VoteOf<BenchConfig>,
        _snapshot: SnapshotOf,
        _cancel: impl std::future::Future<Output = openraft::errors::ReplicationClosed>
            + openraft::OptionalSend
            + 'static,
        _option: openraft::network::RPCOption,
    ) -> Result<
        openraft::raft::SnapshotResponse<BenchConfig>,
        openraft::errors::StreamingError<BenchConfig>,
    > {
        Err(unreachable_peer().into())
    }
}

/// N tasks looping on `client_write` against a single-node `Raft` on the store.
async fn run_raft_case(
    base: &std::path::Path,
    writers: usize,
    payload: usize,
    window: Duration,
    duration: Duration,
) -> anyhow::Result<CaseResult> {
    let dir = tempfile::tempdir_in(base)?;
    let mut config = LogStoreConfig::new(dir.path());
    config.flush_batch_wait = window;
    let mut store = LogStore::<BenchConfig>::open(config)?;
    // Kept to read the store's flush counters once `Raft` owns the store.
    let stats_reader = store.get_log_reader().await;

    let raft_config = openraft::Config {
        snapshot_policy: openraft::SnapshotPolicy::Never,
        ..Default::default()
    }
    .validate()?;
    let raft = openraft::Raft::new(
        1,
        std::sync::Arc::new(raft_config),
        NoNetwork,
        store,
        CountingStateMachine::default(),
    )
    .await?;
    raft.initialize(std::collections::BTreeMap::from([(
        1u64,
        openraft::BasicNode::default(),
    )]))
    .await?;
    let wait_until = Instant::now() + Duration::from_secs(10);
    while raft.current_leader().await != Some(1) {
        anyhow::ensure!(Instant::now() < wait_until, "no leader after 10 s");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let body = Batch((0..payload).map(|i| i as u8).collect());
    let start = Instant::now();
    let deadline = start + duration;
    let mut tasks = Vec::with_capacity(writers);
    for _ in 0..writers {
        let raft = raft.clone();
        let body = body.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies = hdrhistogram::Histogram::<u64>::new(3)?;
            let mut writes = 0u64;
            while Instant::now() < deadline {
                let submitted = Instant::now();
                raft.client_write(body.clone()).await?;
                latencies.record(submitted.elapsed().as_micros() as u64)?;
                writes += 1;
            }
            anyhow::Ok((writes, latencies))
        }));
    }
    let mut latencies = hdrhistogram::Histogram::<u64>::new(3)?;
    let mut appends = 0;
    for task in tasks {
        let (writes, task_latencies) = task.await??;
        appends += writes;
        latencies.add(task_latencies)?;
    }
    let elapsed = start.elapsed();
    let stats = stats_reader.stats()?;
    raft.shutdown().await?;
    Ok(CaseResult {
        writers,
        payload,
        window,
        appends,
        elapsed,
        p50_us: latencies.value_at_quantile(0.5),
        p99_us: latencies.value_at_quantile(0.99),
        // Client writes per fsync (openraft packs many into one append).
        appends_per_fsync: appends as f64 / stats.fsyncs.max(1) as f64,
    })
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let base = args.dir.clone().unwrap_or_else(std::env::temp_dir);
    let duration = Duration::from_secs_f64(args.secs);
    let default_window = LogStoreConfig::new("unused").flush_batch_wait;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;

    let cases: Vec<(usize, usize, Duration)> = if args.matrix {
        let mut cases = Vec::new();
        for &window_us in &args.windows_us {
            for payload in [256, 1024] {
                for writers in [1, 64, 512] {
                    cases.push((writers, payload, Duration::from_micros(window_us)));
                }
            }
        }
        cases
    } else {
        let window = args
            .flush_wait_us
            .map_or(default_window, Duration::from_micros);
        vec![(args.writers, args.payload, window)]
    };

    if args.raft {
        println!(
            "single-node openraft client_write (committed = fsync'd + applied), {:?} per case, dir {}",
            duration,
            base.display()
        );
    } else {
        println!(
            "durable appends (one entry per append, counted at its fsync callback), {:?} per case, dir {}",
            duration,
            base.display()
        );
    }
    header();
    for (writers, payload, window) in cases {
        let result = if args.raft {
            runtime.block_on(run_raft_case(&base, writers, payload, window, duration))?
        } else {
            runtime.block_on(run_case(&base, writers, payload, window, duration))?
        };
        row(&result);
    }
    Ok(())
}
