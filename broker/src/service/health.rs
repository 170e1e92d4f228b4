//! A node's health: fail-stop after a storage failure, and the disk low-water mark.
//!
//! A write or flush that fails (a full disk, an I/O error) stops the node's Raft
//! for good (openraft turns an I/O error of the log or the state machine into
//! `Fatal`), and the message store refuses writes until it is reopened. Before this
//! module such a node kept answering `/ready` 200 naming itself the leader of its
//! old term, and NOT_LEADER with no leader to every write. Now:
//!
//! * [`watch`] (one task per node) notices either failure within
//!   [`POLL_INTERVAL`] and marks the node [`Health::Failed`] with the reason, once.
//!   A failed node is never a leader (`Node::leadership`), does not register routes,
//!   answers `/ready` and every write with 503 UNAVAILABLE naming the reason, and
//!   sets `broker_storage_failed` to 1. Nothing turns a failed node healthy again
//!   in place: its Raft cannot be restarted, so only a new process recovers it.
//! * [`supervise`] (the broker binary only: an embedded node leaves its process
//!   alone) does what `storage.on_failure` says: `restart` probes the data
//!   directory every second and re-executes the process once it is writable, so
//!   the ordinary start-up recovers (a torn CommitLog tail is truncated, Raft
//!   catches up from the leader) under the same PID; `exit` exits with status 1.
//! * The same task caches the data directory's disk usage ([`NodeHealth::disk_used_ratio`]),
//!   so the send path checks the low-water mark `storage.disk_full_ratio` without
//!   a `statvfs` per request; a leader above it refuses message-storing writes
//!   ([`NodeHealth::check_room`]) and hands its leadership to a follower
//!   ([`hand_off_leadership`]), so the group keeps taking writes while this node's
//!   disk is full, and retention and Raft keep the last part of the disk to work.

use std::ffi::OsString;
use std::io::Write as _;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use tokio::sync::watch as tokio_watch;
use tracing::{error, info, warn};

use crate::config::{NodeConfig, OnStorageFailure};
use crate::error::BrokerError;
use crate::service::node::Node;

/// How often [`watch`] looks at Raft and the store. Detection is this quick; the
/// cost is one copy of Raft's metrics per tick.
pub const POLL_INTERVAL: Duration = Duration::from_millis(250);
/// How often the cached disk usage is refreshed (every other poll): the send path
/// reads the cache, never `statvfs` itself.
const DISK_REFRESH_EVERY_POLLS: u32 = 2;
/// How often [`supervise`] probes a failed node's data directory.
pub const PROBE_INTERVAL: Duration = Duration::from_secs(1);
/// Bytes the probe writes and syncs: enough to need fresh blocks of any
/// filesystem, little enough to cost nothing on a healthy one.
pub const PROBE_BYTES: usize = 1 << 20;
/// The probe's file, in the data directory (removed after each probe).
pub const PROBE_FILE: &str = ".write-probe";
/// A leader over the low-water mark hands its leadership off at most this often:
/// when every node's disk is full, leadership must not bounce between them.
const HAND_OFF_INTERVAL: Duration = Duration::from_secs(5);

/// Whether the node's storage works.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Health {
    Healthy,
    /// Storage failed; the node refuses writes until its process restarts.
    Failed(Failure),
}

/// Why and since when a node is failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    /// What failed, e.g. Raft's fatal error naming the file and the OS error.
    pub reason: String,
    /// Unix milliseconds of the detection.
    pub since_ms: u64,
    /// What happens next (from `storage.on_failure`), for the answers.
    pub next: &'static str,
}

impl Failure {
    /// The message of every 503 a failed node answers.
    pub fn message(&self) -> String {
        format!("storage failed: {}; {}", self.reason, self.next)
    }

    pub fn to_error(&self) -> BrokerError {
        BrokerError::StorageFailed {
            reason: self.reason.clone(),
            next: self.next,
        }
    }
}

/// A node's health and its cached disk usage, shared by the HTTP handlers and the
/// tasks of this module.
pub struct NodeHealth {
    state: tokio_watch::Sender<Health>,
    /// `f64` bits of the used fraction of the data directory's filesystem, as of
    /// the last refresh (`NaN` bits: unknown, never refuses).
    disk_used_ratio_bits: AtomicU64,
    disk_full_ratio: f64,
    next: &'static str,
    /// When this node last handed off leadership for a full disk.
    last_hand_off: Mutex<Option<Instant>>,
}

impl NodeHealth {
    /// A healthy node's health, with the disk usage of `config.data_dir` read once.
    pub fn new(config: &NodeConfig) -> Self {
        // A probe cut short by a crash leaves its file: it is only ever ballast.
        let _ = std::fs::remove_file(config.data_dir.join(PROBE_FILE));
        let health = Self {
            state: tokio_watch::Sender::new(Health::Healthy),
            disk_used_ratio_bits: AtomicU64::new(f64::NAN.to_bits()),
            disk_full_ratio: config.storage.disk_full_ratio(),
            next: match config.storage.on_failure {
                OnStorageFailure::Restart => {
                    "the node restarts itself once its data directory is writable"
                }
                OnStorageFailure::Exit => "the node exits for its supervisor to restart it",
            },
            last_hand_off: Mutex::new(None),
        };
        health.refresh_disk(&config.data_dir);
        health
    }

    /// The failure, if the node failed.
    pub fn failure(&self) -> Option<Failure> {
        match &*self.state.borrow() {
            Health::Healthy => None,
            Health::Failed(failure) => Some(failure.clone()),
        }
    }

    pub fn is_failed(&self) -> bool {
        matches!(&*self.state.borrow(), Health::Failed(_))
    }

    /// Marks the node failed (the first reason stays) and logs it once.
    pub fn fail(&self, reason: String) {
        let next = self.next;
        self.state.send_if_modified(|health| match health {
            Health::Failed(_) => false,
            Health::Healthy => {
                error!(%reason, "storage failed: this node refuses writes and is not ready; {next}");
                *health = Health::Failed(Failure {
                    reason,
                    since_ms: crate::storage::now_ms(),
                    next,
                });
                true
            }
        });
    }

    /// Changes of health, for [`supervise`].
    pub fn subscribe(&self) -> tokio_watch::Receiver<Health> {
        self.state.subscribe()
    }

    /// The used fraction of the data directory's filesystem at the last refresh
    /// (`None` before one succeeded).
    pub fn disk_used_ratio(&self) -> Option<f64> {
        let ratio = f64::from_bits(self.disk_used_ratio_bits.load(Ordering::Relaxed));
        (!ratio.is_nan()).then_some(ratio)
    }

    /// Whether the disk is above `storage.disk_full_ratio`.
    pub fn disk_over_mark(&self) -> bool {
        self.disk_used_ratio()
            .is_some_and(|ratio| ratio > self.disk_full_ratio)
    }

    /// Reads the disk usage of `dir` again. A failed `statvfs` keeps the last
    /// reading: the low-water mark is a guard, not a reason to refuse writes.
    pub fn refresh_disk(&self, dir: &Path) {
        match disk_used_ratio(dir) {
            Ok(ratio) => self
                .disk_used_ratio_bits
                .store(ratio.to_bits(), Ordering::Relaxed),
            Err(e) => warn!(dir = %dir.display(), error = %e, "reading disk usage failed"),
        }
    }

    /// Whether a write that stores messages may be proposed: the node is not
    /// failed and its disk is not above the low-water mark.
    ///
    /// # Errors
    /// [`BrokerError::StorageFailed`] naming the failure, or
    /// [`BrokerError::DiskFull`] with the disk usage and the mark.
    pub fn check_room(&self) -> Result<(), BrokerError> {
        if let Some(failure) = self.failure() {
            return Err(failure.to_error());
        }
        let percent = |ratio: f64| (ratio * 100.0).round() as u32;
        match self.disk_used_ratio() {
            Some(ratio) if ratio > self.disk_full_ratio => Err(BrokerError::DiskFull {
                used_percent: percent(ratio),
                limit_percent: percent(self.disk_full_ratio),
            }),
            _ => Ok(()),
        }
    }
}

/// The used fraction of the filesystem holding `dir`, counting blocks reserved
/// for root as used (as `df` does, and as retention's high-water mark does).
///
/// # Errors
/// `statvfs` failed.
pub fn disk_used_ratio(dir: &Path) -> std::io::Result<f64> {
    let (used, total) = crate::storage::retention::disk_usage(dir)?;
    if total == 0 {
        return Ok(0.0);
    }
    Ok(used as f64 / total as f64)
}

/// Watches the node until it is dropped: marks it failed when its Raft stopped
/// or its store failed, refreshes the cached disk usage, and hands leadership
/// off while the disk is above the low-water mark.
pub async fn watch(node: Weak<Node>) {
    let mut ticker = tokio::time::interval(POLL_INTERVAL);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut polls = 0u32;
    loop {
        ticker.tick().await;
        // Only a weak reference across the wait: the node must be droppable.
        let Some(node) = node.upgrade() else {
            return;
        };
        polls = polls.wrapping_add(1);
        if polls.is_multiple_of(DISK_REFRESH_EVERY_POLLS) {
            let dir = node.config.data_dir.clone();
            let health = Arc::clone(&node.health);
            // statvfs can block on a sick filesystem: off the reactor.
            let _ = tokio::task::spawn_blocking(move || health.refresh_disk(&dir)).await;
        }
        if node.health.is_failed() {
            continue;
        }
        if let Some(reason) = storage_failure(&node) {
            node.health.fail(reason);
            continue;
        }
        if node.health.disk_over_mark() {
            hand_off_leadership(&node).await;
        }
    }
}

/// Why the node's storage counts as failed, if it does.
fn storage_failure(node: &Node) -> Option<String> {
    match &node.raft_metrics().running_state {
        // A shutdown asked for (SIGTERM, `server::stop`) is no failure.
        Ok(()) | Err(openraft::errors::Fatal::Stopped) => {}
        Err(fatal) => return Some(format!("Raft stopped: {fatal}")),
    }
    if node.shared.store.is_failed() {
        return Some(
            "the message store refuses writes after a write or flush failed half-way".into(),
        );
    }
    None
}

/// While this node leads with its disk above the low-water mark, asks the most
/// caught-up follower to take over (at most every [`HAND_OFF_INTERVAL`]): the
/// leader refuses sends then, and without a hand-off the group would refuse them
/// for as long as this disk stays full, although the followers may have room.
async fn hand_off_leadership(node: &Node) {
    if !node.is_leader() {
        return;
    }
    {
        let mut last = node
            .health
            .last_hand_off
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if last.is_some_and(|at| at.elapsed() < HAND_OFF_INTERVAL) {
            return;
        }
        *last = Some(Instant::now());
    }
    let metrics = node.raft_metrics();
    let voters: Vec<_> = metrics.membership_config.membership().voter_ids().collect();
    let best = metrics.replication.as_ref().and_then(|replication| {
        replication
            .iter()
            .filter(|(id, matched)| **id != node.id() && voters.contains(id) && matched.is_some())
            .max_by_key(|(_, matched)| matched.as_ref().map(|l| l.index))
            .map(|(id, _)| *id)
    });
    let Some(to) = best else {
        return;
    };
    warn!(
        to,
        disk_used_ratio = node.health.disk_used_ratio(),
        "disk above storage.disk_full_ratio: handing leadership to node {to}"
    );
    if let Err(e) = node.raft.trigger().transfer_leader(to).await {
        warn!(error = %e, "leadership hand-off failed");
    }
}

/// Does what `storage.on_failure` says once the node failed. For the process
/// that runs the node (the broker binary), never for an embedded one: it exits or
/// replaces the whole process. Returns only if the node is dropped first.
pub async fn supervise(node: Arc<Node>) {
    let mut health = node.health.subscribe();
    if health.wait_for(|h| *h != Health::Healthy).await.is_err() {
        return;
    }
    match node.config.storage.on_failure {
        OnStorageFailure::Exit => {
            error!("storage.on_failure = \"exit\": exiting with status 1 for the supervisor to restart the node");
            // As after a crash: nothing is flushed or marked clean on the way out
            // (the store is failed), and the next start recovers a torn tail.
            std::process::exit(1);
        }
        OnStorageFailure::Restart => {}
    }
    let dir = node.config.data_dir.clone();
    let mut probes = 0u64;
    loop {
        tokio::time::sleep(PROBE_INTERVAL).await;
        probes += 1;
        let probe_dir = dir.clone();
        match tokio::task::spawn_blocking(move || probe_writable(&probe_dir)).await {
            Ok(Ok(())) => break,
            Ok(Err(why)) => {
                // Once a minute is enough to say why it waits.
                if probes % 60 == 1 {
                    info!(%why, "data directory not usable yet; probing every second");
                }
            }
            Err(e) => warn!(error = %e, "the write probe panicked"),
        }
    }
    info!("data directory is writable again: re-executing the process to recover");
    let e = reexec();
    error!(error = %e, "re-executing the process failed: exiting with status 1 instead");
    std::process::exit(1);
}

/// Whether `dir` can take writes again: 1 MiB can be written and synced there.
/// Not the low-water mark: a follower does not refuse replicated writes, and an
/// operator who freed some space expects the node back, not waiting for 90%.
///
/// # Errors
/// Why not, in words.
pub fn probe_writable(dir: &Path) -> Result<(), String> {
    use std::os::unix::fs::OpenOptionsExt;
    let path = dir.join(PROBE_FILE);
    let written = (|| {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
            .open(&path)?;
        file.write_all(&vec![0x5a; PROBE_BYTES])?;
        file.sync_data()
    })();
    // Removed whatever happened: a partial probe must not eat the space it tests.
    let removed = std::fs::remove_file(&path);
    written.map_err(|e| format!("writing {}: {e}", path.display()))?;
    removed.map_err(|e| format!("removing {}: {e}", path.display()))
}

/// Replaces this process with a new run of the same binary, arguments and
/// environment. Every file and socket of the process is opened close-on-exec
/// (Rust's default), so the store's lock and the listener are released, and the
/// new run binds again (the listener sets `SO_REUSEADDR`, so connections left in
/// TIME_WAIT do not stop it). Returns only on failure.
fn reexec() -> std::io::Error {
    use std::os::unix::process::CommandExt;
    let exe = match std::env::current_exe() {
        Ok(exe) => exe,
        Err(e) => return e,
    };
    let mut args = std::env::args_os();
    let arg0: OsString = args.next().unwrap_or_else(|| exe.clone().into_os_string());
    std::process::Command::new(&exe)
        .arg0(arg0)
        .args(args)
        .exec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_writable_directory_passes_the_probe_and_keeps_no_file() {
        let dir = tempfile::tempdir().expect("temp dir");
        probe_writable(dir.path()).expect("a fresh temp dir is writable");
        assert!(!dir.path().join(PROBE_FILE).exists());
    }

    #[test]
    fn a_missing_directory_fails_the_probe() {
        let dir = tempfile::tempdir().expect("temp dir");
        let why = probe_writable(&dir.path().join("gone")).expect_err("no directory");
        assert!(why.contains("writing"), "{why}");
    }

    #[test]
    fn the_first_failure_stays() {
        let dir = tempfile::tempdir().expect("temp dir");
        let config = NodeConfig::for_test(dir.path(), 1, "127.0.0.1:1".parse().expect("addr"));
        let health = NodeHealth::new(&config);
        assert!(health.check_room().is_ok());
        health.fail("first".into());
        health.fail("second".into());
        let failure = health.failure().expect("failed");
        assert_eq!(failure.reason, "first");
        let error = health.check_room().expect_err("a failed node has no room");
        assert!(
            matches!(error, BrokerError::StorageFailed { .. }),
            "{error:?}"
        );
        assert!(
            error.to_string().contains("storage failed: first"),
            "{error}"
        );
    }
}
