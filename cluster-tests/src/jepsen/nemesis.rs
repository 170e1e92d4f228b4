//! The nemesis: real faults on the cluster, one at a time, with quiet periods.
//!
//! Each fault is recorded as an `invoke` (injected) and an `ok` (healed) event of
//! the process `nemesis`. Faults go through `scripts/cluster.sh` (signals to the
//! node process, iptables rules inside the node namespaces, power loss on lazyfs)
//! or straight to a stopped node's files (torn tails). [`Nemesis::heal_all`] undoes
//! whatever is still in force before the final phase.
//!
//! Power loss needs the cluster's data dirs on lazyfs (`cluster.sh` with
//! `CLUSTER_LAZYFS`, the tool's `--lazyfs`): `kill` keeps whatever a node wrote
//! without fsync (the page cache outlives a process), a power loss drops it, so
//! only a power loss tests that an acknowledged write was fsync'd on a quorum.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use rand::rngs::StdRng;
use rand::seq::{IndexedRandom, SliceRandom};
use rand::Rng;

use super::cluster::Cluster;
use super::history::{Body, Kind, NemesisValue, Recorder};
use super::tear::{tear_commit_log, CommitLogTear};

/// raft-log's record tag of a state (checkpoint) record, big-endian: every chunk
/// file starts with one.
const RAFT_LOG_STATE_TAG: [u8; 4] = [0, 0, 0, 5];
/// The longest record prefix the torn-tail nemesis appends: one byte short of the
/// smallest state record (tag 4, version 1, four absent options 4, absent user
/// data 1, checksum 8 = 18 bytes), so it is never a whole record.
const MAX_RAFT_LOG_PREFIX: usize = 17;

/// One kind of fault.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Fault {
    /// kill -9 a node (the leader half the time), restart it later.
    Kill,
    /// SIGSTOP a node (the leader half the time), SIGCONT it later.
    Pause,
    /// Cut the leader off from every other node.
    PartitionLeader,
    /// A random minority | majority split.
    PartitionHalves,
    /// Two halves that both still see one bridge node.
    PartitionBridge,
    /// Packets dropped in one direction only, between the leader and the rest.
    PartitionOneway,
    /// A follower kept down until the leader purged its log past it; it must
    /// catch up by snapshot.
    SnapshotCatchup,
    /// A stopped node's newest CommitLog file and Raft log chunk get a torn tail.
    TornTail,
    /// Remove a follower from the group under load and add it back.
    Membership,
    /// Power loss (kill -9, then every byte not fsync'd is lost) of the leader.
    PowerLossLeader,
    /// Power loss of one follower.
    PowerLossFollower,
    /// Power loss of a random minority of the nodes at once.
    PowerLossMinority,
    /// Power loss of every node at once.
    PowerLossAll,
}

impl Fault {
    pub const ALL: [Fault; 9] = [
        Fault::Kill,
        Fault::Pause,
        Fault::PartitionLeader,
        Fault::PartitionHalves,
        Fault::PartitionBridge,
        Fault::PartitionOneway,
        Fault::SnapshotCatchup,
        Fault::TornTail,
        Fault::Membership,
    ];

    /// The power-loss faults: only on a cluster whose data dirs are on lazyfs.
    pub const POWER_LOSS: [Fault; 4] = [
        Fault::PowerLossLeader,
        Fault::PowerLossFollower,
        Fault::PowerLossMinority,
        Fault::PowerLossAll,
    ];

    pub fn is_power_loss(self) -> bool {
        Self::POWER_LOSS.contains(&self)
    }

    pub fn name(self) -> &'static str {
        match self {
            Fault::Kill => "kill",
            Fault::Pause => "pause",
            Fault::PartitionLeader => "partition-leader",
            Fault::PartitionHalves => "partition-halves",
            Fault::PartitionBridge => "partition-bridge",
            Fault::PartitionOneway => "partition-oneway",
            Fault::SnapshotCatchup => "snapshot-catchup",
            Fault::TornTail => "torn-tail",
            Fault::Membership => "membership",
            Fault::PowerLossLeader => "power-loss-leader",
            Fault::PowerLossFollower => "power-loss-follower",
            Fault::PowerLossMinority => "power-loss-minority",
            Fault::PowerLossAll => "power-loss-all",
        }
    }
}

/// A set of faults, parsed from `kill,pause,…`, `mixed` or `none`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FaultSet(pub BTreeSet<Fault>);

impl FaultSet {
    /// Parses `kill,pause,…`, `mixed` (every fault: [`Fault::ALL`], and the power
    /// losses when `lazyfs`) or `none`. A power-loss fault named without `lazyfs`
    /// is an error.
    ///
    /// # Errors
    /// An unknown name, or a power loss on a cluster that cannot have one.
    pub fn parse(text: &str, lazyfs: bool) -> Result<Self, String> {
        let mut set = BTreeSet::new();
        for word in text.split(',').map(str::trim).filter(|w| !w.is_empty()) {
            match word {
                "mixed" | "all" => {
                    set.extend(Fault::ALL);
                    if lazyfs {
                        set.extend(Fault::POWER_LOSS);
                    }
                }
                "none" => {}
                _ => {
                    let fault = Fault::ALL
                        .into_iter()
                        .chain(Fault::POWER_LOSS)
                        .find(|f| f.name() == word)
                        .ok_or_else(|| {
                            let names: Vec<&str> = Fault::ALL
                                .iter()
                                .chain(&Fault::POWER_LOSS)
                                .map(|f| f.name())
                                .collect();
                            format!(
                                "unknown nemesis `{word}` (known: {}, mixed, none)",
                                names.join(", ")
                            )
                        })?;
                    if fault.is_power_loss() && !lazyfs {
                        return Err(format!(
                            "nemesis `{word}` needs the nodes' data on lazyfs: add --lazyfs (scripts/jepsen.sh builds it)"
                        ));
                    }
                    set.insert(fault);
                }
            }
        }
        Ok(FaultSet(set))
    }

    pub fn label(&self) -> String {
        let classic: BTreeSet<Fault> = Fault::ALL.into_iter().collect();
        let every: BTreeSet<Fault> = Fault::ALL.into_iter().chain(Fault::POWER_LOSS).collect();
        if self.0 == classic {
            return "mixed".into();
        }
        if self.0 == every {
            return "mixed+power-loss".into();
        }
        if self.0.is_empty() {
            return "none".into();
        }
        self.0
            .iter()
            .map(|f| f.name())
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// Timing of the fault schedule.
#[derive(Clone, Copy, Debug)]
pub struct Schedule {
    /// A fault lasts this long (random in the range), except snapshot catch-up,
    /// which lasts until the leader purged past the stopped node.
    pub fault_ms: (u64, u64),
    /// Quiet time between faults.
    pub quiet_ms: (u64, u64),
}

impl Default for Schedule {
    fn default() -> Self {
        Self {
            fault_ms: (5_000, 12_000),
            quiet_ms: (4_000, 8_000),
        }
    }
}

/// What the nemesis did, for the report.
#[derive(Clone, Debug, Default)]
pub struct NemesisLog {
    pub injected: Vec<String>,
    /// Faults asked for that this build or cluster cannot do, with why.
    pub unavailable: Vec<String>,
    /// Faults that could not be injected or healed as planned.
    pub errors: Vec<String>,
}

/// Injects faults into a cluster.
pub struct Nemesis<'a> {
    cluster: &'a Cluster,
    recorder: Recorder,
    rng: StdRng,
    pub log: NemesisLog,
    /// Nodes killed and not yet restarted; paused and not yet resumed.
    down: BTreeSet<u64>,
    paused: BTreeSet<u64>,
    /// A node removed from the group and not yet added back.
    removed: Option<u64>,
    partitioned: bool,
}

/// Log entries the leader must purge beyond the stopped node's last known index
/// before snapshot catch-up restarts it (see `snapshot_catchup`).
const PURGE_MARGIN: u64 = 150;

/// Group of the cluster (cluster.sh starts one group for the suite).
const GROUP: &str = "broker-a";

impl<'a> Nemesis<'a> {
    pub fn new(cluster: &'a Cluster, recorder: Recorder, rng: StdRng) -> Self {
        Self {
            cluster,
            recorder,
            rng,
            log: NemesisLog::default(),
            down: BTreeSet::new(),
            paused: BTreeSet::new(),
            removed: None,
            partitioned: false,
        }
    }

    fn record(&self, kind: Kind, fault: Fault, detail: &str, nodes: &[u64]) {
        self.recorder.record(
            "nemesis",
            kind,
            Body::Nemesis(NemesisValue {
                fault: fault.name().into(),
                detail: detail.into(),
                nodes: nodes.to_vec(),
            }),
        );
    }

    fn pick(&mut self, range: (u64, u64)) -> Duration {
        Duration::from_millis(self.rng.random_range(range.0..=range.1.max(range.0)))
    }

    /// Runs faults from `set` until `until`, with quiet periods in between.
    pub async fn run(&mut self, set: &FaultSet, schedule: Schedule, until: Instant) {
        let faults: Vec<Fault> = set.0.iter().copied().collect();
        if faults.is_empty() {
            tokio::time::sleep_until(until.into()).await;
            return;
        }
        let mut unavailable: BTreeSet<Fault> = BTreeSet::new();
        loop {
            let quiet = self.pick(schedule.quiet_ms);
            if Instant::now() + quiet + Duration::from_millis(schedule.fault_ms.0) >= until {
                break;
            }
            tokio::time::sleep(quiet).await;
            let choices: Vec<Fault> = faults
                .iter()
                .copied()
                .filter(|f| !unavailable.contains(f))
                .collect();
            let Some(fault) = choices.choose(&mut self.rng).copied() else {
                break;
            };
            let hold = self.pick(schedule.fault_ms);
            match self.inject(fault, hold, until).await {
                Ok(true) => {}
                Ok(false) => {
                    unavailable.insert(fault);
                }
                Err(e) => {
                    let message = format!("{}: {e:#}", fault.name());
                    eprintln!("jepsen: nemesis error: {message}");
                    self.log.errors.push(message);
                    // Leave nothing half-done before the next fault.
                    if let Err(e) = self.heal_all().await {
                        self.log.errors.push(format!("healing after it: {e:#}"));
                    }
                }
            }
        }
        if Instant::now() < until {
            tokio::time::sleep_until(until.into()).await;
        }
    }

    /// Injects one fault, holds it, heals it. Ok(false): unavailable on this build.
    async fn inject(&mut self, fault: Fault, hold: Duration, until: Instant) -> Result<bool> {
        let ids = self.cluster.ids();
        let leader = self.cluster.leader().await;
        match fault {
            Fault::Kill | Fault::Pause => {
                let node = self.victim(leader, &ids);
                let (verb, undo) = if fault == Fault::Kill {
                    ("kill", "restart")
                } else {
                    ("pause", "resume")
                };
                let detail = format!("{verb} node {node}{}", leader_note(leader, node));
                self.record(Kind::Invoke, fault, &detail, &[node]);
                let injected = Instant::now();
                self.cluster.run(&[verb, &node.to_string()]).await?;
                if fault == Fault::Kill {
                    self.down.insert(node);
                } else {
                    self.paused.insert(node);
                }
                let failover = self.hold(leader, injected, hold).await;
                self.cluster.run(&[undo, &node.to_string()]).await?;
                self.down.remove(&node);
                self.paused.remove(&node);
                self.record(
                    Kind::Ok,
                    fault,
                    &format!("{undo} node {node}{failover}"),
                    &[node],
                );
            }
            Fault::PartitionLeader
            | Fault::PartitionHalves
            | Fault::PartitionBridge
            | Fault::PartitionOneway => {
                let specs = self.partition_specs(fault, leader, &ids);
                let detail = format!("partition {}", specs.join(" + "));
                self.record(Kind::Invoke, fault, &detail, &[]);
                let injected = Instant::now();
                self.partitioned = true;
                for spec in &specs {
                    self.cluster.run(&["partition", spec]).await?;
                }
                let failover = self.hold(leader, injected, hold).await;
                self.cluster.run(&["heal"]).await?;
                self.partitioned = false;
                self.record(Kind::Ok, fault, &format!("heal{failover}"), &[]);
            }
            Fault::TornTail => {
                let node = self.victim(leader, &ids);
                self.record(
                    Kind::Invoke,
                    fault,
                    &format!("kill node {node}{}", leader_note(leader, node)),
                    &[node],
                );
                let injected = Instant::now();
                self.cluster.run(&["kill", &node.to_string()]).await?;
                self.down.insert(node);
                // Failover is watched while the node is down, before the tear,
                // whose file work would otherwise count as failover time.
                let failover = self
                    .hold(leader, injected, hold.min(Duration::from_secs(4)))
                    .await;
                let torn = self.tear(node).await?;
                tokio::time::sleep(hold.saturating_sub(injected.elapsed())).await;
                self.cluster.run(&["restart", &node.to_string()]).await?;
                self.down.remove(&node);
                self.record(
                    Kind::Ok,
                    fault,
                    &format!("restart node {node} after {torn}{failover}"),
                    &[node],
                );
                self.wait_caught_up(node, Duration::from_secs(60)).await?;
            }
            Fault::PowerLossLeader
            | Fault::PowerLossFollower
            | Fault::PowerLossMinority
            | Fault::PowerLossAll => self.power_loss(fault, leader, &ids, hold).await?,
            Fault::SnapshotCatchup => self.snapshot_catchup(leader, &ids, until).await?,
            Fault::Membership => return self.membership(leader, &ids, hold).await,
        }
        self.log.injected.push(fault.name().into());
        Ok(true)
    }

    /// Holds a fault for `hold`, watching for another leader than `old`; says
    /// after how long one was agreed on (the failover time), for the heal event.
    async fn hold(&self, old: Option<u64>, injected: Instant, hold: Duration) -> String {
        let started = injected;
        let end = Instant::now() + hold;
        let mut seen = None;
        while Instant::now() < end {
            if seen.is_none() {
                if let Some(new) = self.cluster.leader().await.filter(|l| Some(*l) != old) {
                    seen = Some((new, started.elapsed()));
                }
            }
            tokio::time::sleep(Duration::from_millis(100).min(end - Instant::now().min(end))).await;
        }
        match (old, seen) {
            (_, Some((new, after))) => {
                format!(
                    "; failover: leader {new} agreed {} ms after the fault",
                    after.as_millis()
                )
            }
            (Some(old), None) => format!("; leader {old} kept"),
            (None, None) => String::new(),
        }
    }

    /// The leader half the time, else any node.
    fn victim(&mut self, leader: Option<u64>, ids: &[u64]) -> u64 {
        match leader {
            Some(leader) if self.rng.random_bool(0.5) => leader,
            _ => *ids.choose(&mut self.rng).unwrap_or(&1),
        }
    }

    fn partition_specs(&mut self, fault: Fault, leader: Option<u64>, ids: &[u64]) -> Vec<String> {
        let join = |v: &[u64]| v.iter().map(u64::to_string).collect::<Vec<_>>().join(",");
        let mut shuffled = ids.to_vec();
        shuffled.shuffle(&mut self.rng);
        let isolated = leader.unwrap_or(shuffled[0]);
        let others: Vec<u64> = ids.iter().copied().filter(|i| *i != isolated).collect();
        match fault {
            Fault::PartitionLeader => vec![format!("{isolated}|{}", join(&others))],
            Fault::PartitionHalves => {
                let minority = (ids.len() - 1) / 2;
                let (small, large) = shuffled.split_at(minority.max(1));
                vec![format!("{}|{}", join(small), join(large))]
            }
            Fault::PartitionBridge => {
                // The bridge (shuffled[0]) is in no rule, so it sees both halves.
                let rest = &shuffled[1..];
                let (a, b) = rest.split_at(rest.len() / 2);
                vec![format!("{}|{}", join(a), join(b))]
            }
            _ => {
                if self.rng.random_bool(0.5) {
                    vec![format!("{isolated}>{}", join(&others))]
                } else {
                    vec![format!("{}>{isolated}", join(&others))]
                }
            }
        }
    }

    /// Tears the tails of a stopped node's newest CommitLog file (only past its
    /// checkpoint: see [`tear_commit_log`]) and Raft log chunk.
    async fn tear(&mut self, node: u64) -> Result<String> {
        // Random choices here; the file work (scanning a CommitLog file of up to a
        // GiB) runs on a blocking thread so it does not stall the workload's tasks.
        let store_dir = self.cluster.data_dir(node).map(|d| d.join("store"));
        let raft_log = self.cluster.newest_file(node, "raft-log", ".wal");
        let commit_log_cut = self.rng.random_range(1..=48u64);
        let partial_record = self.rng.random_bool(0.5);
        let raft_log_prefix = self.rng.random_range(1..=MAX_RAFT_LOG_PREFIX);
        let raft_log_zeroes = self.rng.random_range(1..=4096usize);
        let work = move || -> Result<String> {
            let mut done = Vec::new();
            if let Some(dir) = store_dir {
                match tear_commit_log(&dir, commit_log_cut)? {
                    CommitLogTear::Empty => {}
                    tear => done.push(tear.to_string()),
                }
            }
            if let Some(file) = raft_log {
                // Only what a crash can leave: bytes written after the last fsync. Every
                // whole record may have been fsync'd and acknowledged (a vote, an
                // entry), so none is cut; the tear adds a record that never finished.
                let len = std::fs::metadata(&file)?.len();
                let mut start = [0u8; MAX_RAFT_LOG_PREFIX];
                if len > 64 {
                    std::fs::File::open(&file)?.read_exact(&mut start)?;
                }
                if partial_record && start.starts_with(&RAFT_LOG_STATE_TAG) {
                    // The next record cut short mid-write: a chunk begins with a state
                    // record, never shorter than 18 bytes, so at most 17 of its first
                    // bytes are a record whose end never landed (not a whole record).
                    let prefix = &start[..raft_log_prefix];
                    let mut f = std::fs::OpenOptions::new().append(true).open(&file)?;
                    f.write_all(prefix)?;
                    f.sync_all()?;
                    done.push(format!(
                        "appended a record cut short after {raft_log_prefix} bytes to {}",
                        file.display()
                    ));
                } else {
                    // Zeroes past the end: ext4 data=writeback's size-before-data.
                    let mut f = std::fs::OpenOptions::new().append(true).open(&file)?;
                    f.write_all(&vec![0u8; raft_log_zeroes])?;
                    f.sync_all()?;
                    done.push(format!(
                        "appended {raft_log_zeroes} zero bytes to {}",
                        file.display()
                    ));
                }
            }
            if done.is_empty() {
                bail!("node {node} has no CommitLog or Raft log file to tear");
            }
            Ok(done.join("; "))
        };
        tokio::task::spawn_blocking(work).await?
    }

    /// Power loss of the nodes `fault` picks: they are killed, lose every byte
    /// they had not fsync'd, stay down for `hold` and restart from what survived.
    async fn power_loss(
        &mut self,
        fault: Fault,
        leader: Option<u64>,
        ids: &[u64],
        hold: Duration,
    ) -> Result<()> {
        if !self.cluster.on_lazyfs() {
            bail!("the cluster's data dirs are not on lazyfs (start it with --lazyfs)");
        }
        let mut nodes = self.power_loss_victims(fault, leader, ids);
        nodes.sort_unstable();
        let list = nodes
            .iter()
            .map(u64::to_string)
            .collect::<Vec<_>>()
            .join(",");
        let with_leader = match leader {
            Some(l) if nodes.contains(&l) => format!(" (leader {l} among them)"),
            Some(_) => String::new(),
            None => " (no agreed leader)".into(),
        };
        self.record(
            Kind::Invoke,
            fault,
            &format!("power loss on node(s) {list}{with_leader}"),
            &nodes,
        );
        let injected = Instant::now();
        let output = self.cluster.run(&["power-loss", &list]).await;
        // Whatever cluster.sh managed, the nodes may be down: heal_all restarts them.
        self.down.extend(nodes.iter().copied());
        let output = output?;
        let dropped = dropped_summary(&output);
        let failover = if nodes.len() == ids.len() {
            tokio::time::sleep(hold).await;
            String::new()
        } else {
            self.hold(leader, injected, hold).await
        };
        for node in &nodes {
            self.cluster.run(&["restart", &node.to_string()]).await?;
            self.down.remove(node);
        }
        self.record(
            Kind::Ok,
            fault,
            &format!("restart node(s) {list} after the power loss ({dropped}){failover}"),
            &nodes,
        );
        for node in &nodes {
            self.wait_caught_up(*node, Duration::from_secs(60)).await?;
        }
        Ok(())
    }

    fn power_loss_victims(&mut self, fault: Fault, leader: Option<u64>, ids: &[u64]) -> Vec<u64> {
        let followers: Vec<u64> = ids.iter().copied().filter(|i| Some(*i) != leader).collect();
        let any = || *ids.first().unwrap_or(&1);
        match fault {
            Fault::PowerLossLeader => vec![leader.unwrap_or_else(any)],
            Fault::PowerLossFollower => {
                vec![followers.choose(&mut self.rng).copied().unwrap_or_else(any)]
            }
            Fault::PowerLossMinority => {
                let mut shuffled = ids.to_vec();
                shuffled.shuffle(&mut self.rng);
                shuffled.truncate(((ids.len() - 1) / 2).max(1));
                shuffled
            }
            _ => ids.to_vec(),
        }
    }

    async fn snapshot_catchup(
        &mut self,
        leader: Option<u64>,
        ids: &[u64],
        until: Instant,
    ) -> Result<()> {
        let Some(leader) = leader else {
            bail!("no leader to purge its log");
        };
        let followers: Vec<u64> = ids.iter().copied().filter(|i| *i != leader).collect();
        let node = *followers.choose(&mut self.rng).unwrap_or(&leader);
        let behind = self
            .cluster
            .raft_indexes()
            .await
            .get(&node)
            .and_then(|(last, _)| *last)
            .unwrap_or(0);
        self.record(
            Kind::Invoke,
            Fault::SnapshotCatchup,
            &format!("kill node {node} (last log index {behind}); wait for leader {leader} to purge past it"),
            &[node],
        );
        self.cluster.run(&["kill", &node.to_string()]).await?;
        self.down.insert(node);
        let started = Instant::now();
        let deadline = (started + Duration::from_secs(120)).min(until);
        let mut purged = 0.0;
        while Instant::now() < deadline {
            // Whoever leads now: the leader may have changed meanwhile.
            let current = self.cluster.leader().await.unwrap_or(leader);
            purged = self
                .cluster
                .metric(current, "broker_raft_purged_index")
                .await
                .unwrap_or(0.0);
            // The index was read a moment before the kill, and the node kept
            // appending meanwhile: a margin makes sure the purge passed it.
            if purged > (behind + PURGE_MARGIN) as f64 {
                break;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        let installs_before = self.cluster.log_count(node, "installed snapshot");
        self.cluster.run(&["restart", &node.to_string()]).await?;
        self.down.remove(&node);
        let purged_past = purged > (behind + PURGE_MARGIN) as f64;
        self.record(
            Kind::Ok,
            Fault::SnapshotCatchup,
            &format!(
                "restart node {node} after {:.1}s; leader purged index {purged}{}",
                started.elapsed().as_secs_f64(),
                if purged_past {
                    ""
                } else {
                    " (NOT past it: not enough writes)"
                }
            ),
            &[node],
        );
        if !purged_past {
            self.log.errors.push(format!(
                "snapshot-catchup: the leader did not purge past node {node} (index {behind}) in time; raise --rate"
            ));
        }
        self.wait_caught_up(node, Duration::from_secs(90)).await?;
        if purged_past {
            // The node may serve the installed data a moment before it logs the
            // install: give the log line a few seconds.
            let deadline = Instant::now() + Duration::from_secs(10);
            let mut installs = self.cluster.log_count(node, "installed snapshot");
            while installs <= installs_before && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(200)).await;
                installs = self.cluster.log_count(node, "installed snapshot");
            }
            if installs <= installs_before {
                self.log.errors.push(format!(
                    "snapshot-catchup: node {node} caught up but its log shows no snapshot installed after this restart ({installs} in all)"
                ));
            }
        }
        Ok(())
    }

    /// Removes a follower and adds it back; Ok(false) when the API is missing.
    async fn membership(
        &mut self,
        leader: Option<u64>,
        ids: &[u64],
        hold: Duration,
    ) -> Result<bool> {
        let Some(leader) = leader else {
            bail!("no leader to change membership");
        };
        let followers: Vec<u64> = ids.iter().copied().filter(|i| *i != leader).collect();
        let node = *followers.choose(&mut self.rng).unwrap_or(&leader);
        let base = self.cluster.url(leader)?.to_string();
        self.record(
            Kind::Invoke,
            Fault::Membership,
            &format!("remove node {node} from {GROUP}"),
            &[node],
        );
        let answer = self
            .cluster
            .http
            .delete(format!("{base}/v1/cluster/groups/{GROUP}/nodes/{node}"))
            .timeout(Duration::from_secs(30))
            .send()
            .await?;
        let status = answer.status();
        let text = answer.text().await.unwrap_or_default();
        if status.as_u16() == 405 || (status.as_u16() == 404 && text.contains("\"NOT_FOUND\"")) {
            let why = format!(
                "membership nemesis unavailable on this build: DELETE /v1/cluster/groups/{GROUP}/nodes/{{id}} answered {status}"
            );
            eprintln!("jepsen: {why}");
            self.record(Kind::Fail, Fault::Membership, &why, &[]);
            self.log.unavailable.push(why);
            return Ok(false);
        }
        if !status.is_success() {
            self.record(
                Kind::Fail,
                Fault::Membership,
                &format!("remove: {status} {text}"),
                &[],
            );
            bail!("removing node {node}: {status} {text}");
        }
        self.removed = Some(node);
        tokio::time::sleep(hold).await;
        self.add_back(node).await?;
        self.record(
            Kind::Ok,
            Fault::Membership,
            &format!("added node {node} back"),
            &[node],
        );
        self.wait_caught_up(node, Duration::from_secs(60)).await?;
        self.log.injected.push(Fault::Membership.name().into());
        Ok(true)
    }

    async fn add_back(&mut self, node: u64) -> Result<()> {
        let url = self.cluster.url(node)?.to_string();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let leader = self.cluster.leader().await;
            if let Some(leader) = leader {
                let answer = self
                    .cluster
                    .http
                    .post(format!(
                        "{}/v1/cluster/groups/{GROUP}/nodes",
                        self.cluster.url(leader)?
                    ))
                    .timeout(Duration::from_secs(30))
                    .json(&serde_json::json!({"node_id": node, "address": url}))
                    .send()
                    .await;
                // The add answers at once (202) with the join; it is done once
                // the node is a voter.
                if let Ok(answer) = answer {
                    if answer.status().is_success()
                        && self.join_done(leader, node, deadline).await?
                    {
                        self.removed = None;
                        return Ok(());
                    }
                }
            }
            if Instant::now() > deadline {
                bail!("could not add node {node} back within 60 s");
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    /// Follows `node`'s join on `leader` until it ends or `deadline` passes:
    /// whether it ended a voter (`false` when it failed or cannot be read: the
    /// caller adds it again).
    async fn join_done(&self, leader: u64, node: u64, deadline: Instant) -> Result<bool> {
        let url = format!(
            "{}/v1/cluster/groups/{GROUP}/nodes/{node}",
            self.cluster.url(leader)?
        );
        while Instant::now() < deadline {
            let answer = self
                .cluster
                .http
                .get(&url)
                .timeout(Duration::from_secs(5))
                .send()
                .await;
            let join = match answer {
                Ok(answer) => answer.json::<broker_proto::api::JoinView>().await.ok(),
                Err(_) => None,
            };
            match join.map(|j| j.state) {
                Some(broker_proto::api::JoinState::Done) => return Ok(true),
                Some(broker_proto::api::JoinState::Failed) | None => return Ok(false),
                Some(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
        Ok(false)
    }

    /// Waits until `node` serves the same queue ends as the leader.
    async fn wait_caught_up(&self, node: u64, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(leader) = self.cluster.leader().await {
                let ends = self.cluster.queue_ends(super::workload::TOPIC).await;
                let (Some(Some(mine)), Some(Some(theirs))) = (ends.get(&node), ends.get(&leader))
                else {
                    if Instant::now() > deadline {
                        bail!("node {node} did not answer within {timeout:?} of its restart");
                    }
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue;
                };
                // The leader keeps moving under load; being within a few messages of
                // it means the node replicates again.
                let behind: u64 = theirs
                    .iter()
                    .map(|(q, max)| max.saturating_sub(mine.get(q).copied().unwrap_or(0)))
                    .sum();
                if behind <= 50 {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                bail!("node {node} did not catch up within {timeout:?}");
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// Undoes every fault still in force: partitions, pauses, dead nodes, removals.
    ///
    /// # Errors
    /// A cluster.sh command failed.
    pub async fn heal_all(&mut self) -> Result<()> {
        self.cluster.run(&["heal"]).await?;
        self.partitioned = false;
        for node in std::mem::take(&mut self.paused) {
            self.cluster.run(&["resume", &node.to_string()]).await?;
        }
        for node in std::mem::take(&mut self.down) {
            self.cluster.run(&["restart", &node.to_string()]).await?;
        }
        if let Some(node) = self.removed {
            self.add_back(node).await?;
        }
        Ok(())
    }
}

fn leader_note(leader: Option<u64>, node: u64) -> &'static str {
    if leader == Some(node) {
        " (the leader)"
    } else {
        ""
    }
}

/// What `cluster.sh power-loss` says it dropped ("node 2: dropped 4096 unsynced
/// bytes in 3 files" per node), summed: "dropped 4096 unsynced bytes (node 2: 4096)".
fn dropped_summary(output: &str) -> String {
    let mut total = 0u64;
    let mut per_node = Vec::new();
    for line in output.lines() {
        let Some((node, rest)) = line.split_once(": dropped ") else {
            continue;
        };
        let bytes: u64 = rest
            .split(' ')
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        total += bytes;
        per_node.push(format!("{node}: {bytes}"));
    }
    if per_node.is_empty() {
        return format!("cluster.sh said: {}", output.trim());
    }
    format!("dropped {total} unsynced bytes; {}", per_node.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mixed_has_the_power_losses_only_on_lazyfs() {
        let plain = FaultSet::parse("mixed", false).expect("parse");
        assert_eq!(plain.0.len(), Fault::ALL.len());
        assert!(!plain.0.iter().any(|f| f.is_power_loss()));
        assert_eq!(plain.label(), "mixed");
        let lazy = FaultSet::parse("mixed", true).expect("parse");
        assert_eq!(lazy.0.len(), Fault::ALL.len() + Fault::POWER_LOSS.len());
        assert_eq!(lazy.label(), "mixed+power-loss");
    }

    #[test]
    fn power_loss_faults_by_name() {
        let set = FaultSet::parse("power-loss-all, kill,power-loss-leader", true).expect("parse");
        assert_eq!(
            set.0.iter().copied().collect::<Vec<_>>(),
            [Fault::Kill, Fault::PowerLossLeader, Fault::PowerLossAll]
        );
        assert_eq!(set.label(), "kill,power-loss-leader,power-loss-all");
        let refused = FaultSet::parse("kill,power-loss-follower", false).expect_err("no lazyfs");
        assert!(refused.contains("--lazyfs"), "{refused}");
        assert!(FaultSet::parse("power-loss-everything", true).is_err());
        assert!(FaultSet::parse("none", false).expect("parse").0.is_empty());
    }

    #[test]
    fn dropped_bytes_are_summed_from_cluster_sh_output() {
        let output = "node 1: dropped 100 unsynced bytes in 2 files\nnode 3: dropped 21 unsynced bytes in 1 files\n";
        assert_eq!(
            dropped_summary(output),
            "dropped 121 unsynced bytes; node 1: 100, node 3: 21"
        );
        assert_eq!(
            dropped_summary("node 2: no lazyfs running (already powered off)\n"),
            "cluster.sh said: node 2: no lazyfs running (already powered off)"
        );
    }
}
