//! The Jepsen-style fault-injection suite: start a real cluster (one network
//! namespace per node, via `scripts/cluster.sh`), run a workload while a nemesis
//! injects faults, heal everything, read every node's copy, check the history,
//! write a report.
//!
//! # Layout
//! * [`history`] — the recorded operations (JSON lines) and their types.
//! * [`cluster`] — cluster.sh as a subprocess, and status calls.
//! * [`workload`] — producers, consumers, offset commits, final reads; in the
//!   receive mode, receivers (leases, acks, nacks) and the dead-letter read; in
//!   the transactions mode, transactional producers, check responders and the
//!   final probe of every transaction's outcome.
//! * [`nemesis`] — the faults and their schedule.
//! * [`checker`] — anomalies in a history.
//! * [`report`] — text, JSON and SVG reports.
//! * [`resources`] — each node's memory, open files and disk over the run.
//!
//! A run's phases: start → workload + nemesis for the duration → stop producers →
//! heal every fault → wait until the group is writable (recovery time) and every
//! node serves the same queue ends (convergence) → consumers drain → final read of
//! every node's copy and committed offsets → check → report.
//!
//! With `--workload receive` the consumers are receivers and the drain is theirs
//! (receive until quiet, ack everything but poison); the committed offsets give
//! way to a read of the group's dead-letter topic on every node.
//!
//! With `--workload transactions` the producers send transactions (commit, roll
//! back or abandon each) and check responders answer the broker's checks; the
//! nodes get short check settings. After the heal the responders keep answering
//! until every node reports no open transaction (the broker rolls back the
//! unanswered ones after their last check), then every known transaction is
//! probed for its outcome; the consumers' drain and the final reads are the pull
//! mode's.

pub mod checker;
pub mod cluster;
pub mod history;
pub mod nemesis;
pub mod report;
pub mod resources;
pub mod tear;
pub mod workload;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use rand::rngs::StdRng;
use rand::SeedableRng;

use checker::{CheckOptions, Verdict, DEFAULT_MAX_DELIVERY_ATTEMPTS};
use cluster::Cluster;
use history::{Body, Kind, Recorder, TxnSettleValue};
use nemesis::{Fault, FaultSet, Nemesis, Schedule};
use report::Report;
use workload::{Load, Mode, ReceiveLoad, Target, TransactionLoad, Workload, TOPIC};

/// Everything a run needs.
#[derive(Clone, Debug)]
pub struct RunOptions {
    pub duration: Duration,
    pub nemesis: FaultSet,
    pub rate: f64,
    pub concurrency: usize,
    pub seed: u64,
    pub out: PathBuf,
    pub nodes: usize,
    pub queues: u32,
    pub broker_bin: PathBuf,
    pub cluster_script: PathBuf,
    /// A `BROKER_FAULT` switch for the nodes (needs a fault-injection build).
    pub fault_switch: Option<String>,
    pub schedule: Schedule,
    /// Secured (cluster.sh's default) or `--insecure`.
    pub security: crate::harness::Security,
    /// Pull consumers or lease-based receivers.
    pub workload: Mode,
    /// The receivers' behaviour (receive mode).
    pub receive: ReceiveLoad,
    /// The check responders and the nodes' check settings (transactions mode).
    pub transactions: TransactionLoad,
    /// `consumer.max_delivery_attempts` for the nodes (`None`: the broker's
    /// default, 16); the checker holds dead letters to it.
    pub max_delivery_attempts: Option<u32>,
    /// More `BROKER_…` settings for every node (smaller CommitLog files and
    /// shorter retention for a soak, say); they come after the run's own, so
    /// they win.
    pub node_env: Vec<(String, String)>,
    /// The lazyfs executable: the nodes' data dirs go on lazyfs mounts
    /// (cluster.sh's CLUSTER_LAZYFS), which the power-loss faults need.
    pub lazyfs: Option<PathBuf>,
}

/// The outcome of a run, for the exit code.
pub struct RunOutcome {
    pub verdict: Verdict,
    pub report: Report,
}

/// Runs one test and writes history.jsonl, report.txt, report.json, timeline.svg,
/// resources.json and resources.svg into `options.out`.
///
/// # Errors
/// Setting up the cluster failed, or the output could not be written. Faults that
/// misbehave and an unhealthy cluster at the end do not fail the run: they make it
/// inconclusive or show as anomalies.
pub async fn run(options: &RunOptions) -> Result<RunOutcome> {
    std::fs::create_dir_all(&options.out)
        .with_context(|| format!("creating {}", options.out.display()))?;
    let out = options.out.canonicalize()?;
    let mut env = vec![(
        "BROKER_BIN".to_string(),
        options.broker_bin.display().to_string(),
    )];
    if options.nemesis.0.contains(&Fault::SnapshotCatchup) {
        // Snapshots every 100 entries keeping 20 behind: a node down for a few
        // seconds under load falls behind the purged log.
        env.push(("BROKER_RAFT_SNAPSHOT_LOGS_SINCE_LAST".into(), "100".into()));
        env.push((
            "BROKER_RAFT_MAX_IN_SNAPSHOT_LOG_TO_KEEP".into(),
            "20".into(),
        ));
    }
    if let Some(attempts) = options.max_delivery_attempts {
        env.push((
            "BROKER_CONSUMER_MAX_DELIVERY_ATTEMPTS".into(),
            attempts.to_string(),
        ));
    }
    if options.workload == Mode::Transactions {
        env.extend(options.transactions.node_env());
    }
    match &options.fault_switch {
        Some(switch) => env.push(("BROKER_FAULT".into(), switch.clone())),
        // A BROKER_FAULT inherited from the caller's shell must not leak in.
        None => env.push(("BROKER_FAULT".into(), String::new())),
    }
    // Likewise CLUSTER_LAZYFS: empty means plain data dirs.
    env.push((
        "CLUSTER_LAZYFS".into(),
        options
            .lazyfs
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_default(),
    ));
    env.extend(options.node_env.iter().cloned());
    let mut notes = Vec::new();
    eprintln!(
        "jepsen: starting a {}-node cluster in {}/cluster",
        options.nodes,
        out.display()
    );
    let cluster = Cluster::start(
        &options.cluster_script,
        &out.join("cluster"),
        options.nodes,
        env,
        options.security,
    )
    .await?;
    if let Some(switch) = &options.fault_switch {
        let active = cluster
            .ids()
            .iter()
            .all(|id| cluster.log_contains(*id, "FAULT INJECTION ACTIVE"));
        if !active {
            bail!(
                "BROKER_FAULT={switch} is not active on every node: build the broker with --features fault-injection"
            );
        }
        notes.push(format!("fault switch {switch} active on every node"));
    }
    if cluster.on_lazyfs() {
        notes.push(
            "data dirs on lazyfs: unsynced writes are lost by the power-loss faults (kill keeps them)"
                .into(),
        );
    } else if options.nemesis.0.iter().any(|f| f.is_power_loss()) {
        bail!("power-loss faults asked for, but the cluster's data dirs are not on lazyfs");
    }
    cluster.create_topic(TOPIC, options.queues).await?;
    let sampler =
        resources::Sampler::start(cluster.dir.join("cluster.json"), resources::SAMPLE_EVERY);

    let recorder = Recorder::create(&out.join("history.jsonl"))?;
    let target = Target {
        nodes: cluster
            .nodes
            .iter()
            .map(|(id, n)| (*id, n.url.clone()))
            .collect(),
        queues: options.queues,
        recorder: recorder.clone(),
        headers: crate::harness::auth_headers(cluster.token.as_deref())?,
    };
    let started = Instant::now();
    eprintln!(
        "jepsen: running {}s of the {} workload with nemesis {}",
        options.duration.as_secs(),
        options.workload,
        options.nemesis.label()
    );
    let mut workload = Workload::start(
        &target,
        Load {
            rate: options.rate,
            producers: options.concurrency,
            seed: options.seed,
            mode: options.workload,
            receive: options.receive,
            transactions: options.transactions,
        },
    );
    let mut nemesis = Nemesis::new(
        &cluster,
        recorder.clone(),
        StdRng::seed_from_u64(options.seed),
    );
    nemesis
        .run(
            &options.nemesis,
            options.schedule,
            started + options.duration,
        )
        .await;
    workload.stop_producers().await;

    eprintln!("jepsen: healing every fault");
    if let Err(e) = nemesis.heal_all().await {
        notes.push(format!("healing failed: {e:#}"));
    }
    let heal_done = Instant::now();
    let writable = wait_writable(&cluster, Duration::from_secs(60)).await;
    match writable {
        Some(t) => notes.push(format!(
            "after the final heal the group took a write in {} ms",
            t.as_millis()
        )),
        None => notes.push("the group took no write within 60 s of the final heal".into()),
    }
    if options.workload == Mode::Transactions {
        // The responders keep answering; unanswered transactions are rolled back
        // after their last check. Thereafter nothing is open, and the probe only
        // learns how each known transaction ended.
        let timeout = options.transactions.longest_open() + Duration::from_secs(60);
        eprintln!(
            "jepsen: waiting up to {} s until no transaction is open",
            timeout.as_secs()
        );
        let settle = wait_transactions_settled(&cluster, timeout).await;
        notes.push(if settle.settled {
            format!(
                "every node reported no open transaction {} ms after the final heal",
                heal_done.elapsed().as_millis()
            )
        } else {
            format!(
                "open transactions per node {} s after the final heal: {:?}",
                settle.waited_ms / 1000,
                settle.open
            )
        });
        recorder.record("final", Kind::Ok, Body::TxnSettle(settle));
        workload.stop_responders().await;
        eprintln!("jepsen: probing every known transaction for its outcome");
        let probed = workload.probe_transactions().await;
        notes.push(format!(
            "the final probe asked about {probed} transaction(s)"
        ));
    }
    let converged = wait_converged(&cluster, Duration::from_secs(90)).await;
    let ends = match &converged {
        Ok(ends) => {
            notes.push(format!(
                "every node served the same queue ends {} ms after the final heal",
                heal_done.elapsed().as_millis()
            ));
            ends.clone()
        }
        Err(e) => {
            notes.push(format!("nodes did not converge: {e:#}"));
            longest_ends(&cluster).await
        }
    };
    match options.workload {
        Mode::Pull | Mode::Transactions => {
            eprintln!("jepsen: draining consumers to {ends:?}");
            let drained = workload.drain(ends, Duration::from_secs(60)).await;
            if !drained {
                notes.push("consumers did not reach the queue ends within 60 s".into());
            }
        }
        Mode::Receive => {
            let quiet = options.receive.drain_quiet();
            eprintln!(
                "jepsen: draining receivers until {} ms without a delivery",
                quiet.as_millis()
            );
            let started = Instant::now();
            let quieted = workload
                .drain_receivers(quiet, Duration::from_secs(180))
                .await;
            if quieted {
                notes.push(format!(
                    "the receivers' drain went quiet after {} ms",
                    started.elapsed().as_millis()
                ));
            } else {
                notes.push(
                    "the receivers still got messages (or errors) 180 s into the drain".into(),
                );
            }
        }
    }
    eprintln!("jepsen: final reads of every node");
    let http = cluster.client(Duration::from_secs(5))?;
    for id in cluster.ids() {
        for queue in 0..options.queues {
            if let Err(e) = workload::final_read(&target, id, queue).await {
                notes.push(format!("{e:#}"));
            }
        }
    }
    match options.workload {
        Mode::Pull | Mode::Transactions => {
            // The consumers' last commits may still be applying on followers: the
            // final offset reads are taken once every node shows the same offsets
            // (or after 30 s, when a node still behind is what the checker must see).
            if let Err(e) = wait_offsets_converged(&cluster, Duration::from_secs(30)).await {
                notes.push(format!("committed offsets did not converge: {e:#}"));
            }
            for id in cluster.ids() {
                workload::read_offsets(&target, &http, "final", id, true).await;
            }
        }
        Mode::Receive => {
            // The drain's last dead letters may still be applying on followers.
            eprintln!("jepsen: reading the dead-letter topic on every node");
            if let Err(e) =
                workload::receive::wait_dlq_converged(&target, Duration::from_secs(30)).await
            {
                notes.push(format!("the dead-letter topic did not converge: {e}"));
            }
            for id in cluster.ids() {
                let read = workload::receive::read_dlq(&target, id).await;
                if let Some(e) = read.error {
                    notes.push(e);
                }
            }
        }
    }
    let ops = recorder.finish()?;

    let mut check = checker::check(
        &ops,
        CheckOptions {
            min_acknowledged: (options.duration.as_secs_f64() * options.rate * 0.2).max(20.0)
                as u64,
            expected_nodes: options.nodes,
            max_delivery_attempts: options
                .max_delivery_attempts
                .unwrap_or(DEFAULT_MAX_DELIVERY_ATTEMPTS),
            retention: deletes_old_files(&options.node_env),
        },
    );
    // A fault this build cannot do is said loudly in the report; when it leaves
    // the nemesis with nothing injected at all, the run is inconclusive.
    if !options.nemesis.0.is_empty() && nemesis.log.injected.is_empty() {
        let mut why = "the nemesis injected no fault".to_string();
        for unavailable in &nemesis.log.unavailable {
            why.push_str(&format!(" ({unavailable})"));
        }
        check.inconclusive_reasons.push(why);
    }
    for e in &nemesis.log.errors {
        notes.push(format!("nemesis: {e}"));
    }
    if !check.inconclusive_reasons.is_empty() && check.verdict == Verdict::Clean {
        check.verdict = Verdict::Inconclusive;
    }
    let mut injected: BTreeMap<&str, usize> = BTreeMap::new();
    for name in &nemesis.log.injected {
        *injected.entry(name.as_str()).or_default() += 1;
    }
    let mut run = BTreeMap::new();
    run.insert("nemesis".into(), options.nemesis.label());
    run.insert("duration_s".into(), options.duration.as_secs().to_string());
    run.insert("rate".into(), options.rate.to_string());
    run.insert("concurrency".into(), options.concurrency.to_string());
    run.insert("workload".into(), options.workload.to_string());
    if options.workload == Mode::Receive {
        let r = &options.receive;
        run.insert(
            "receive".into(),
            format!(
                "{} receivers, leases {}..{} ms, wait {} ms, nack {}, expire {}, extend {}, poison {}, max delivery attempts {}",
                r.receivers,
                r.invisible_ms.0,
                r.invisible_ms.1,
                r.max_wait_ms,
                r.nack_fraction,
                r.expire_fraction,
                r.extend_fraction,
                r.poison_fraction,
                options
                    .max_delivery_attempts
                    .unwrap_or(DEFAULT_MAX_DELIVERY_ATTEMPTS)
            ),
        );
    }
    if options.workload == Mode::Transactions {
        let t = &options.transactions;
        run.insert(
            "transactions".into(),
            format!(
                "{} check responders; nodes' check_after {} ms, check_interval {} ms, max_checks {}; decisions commit 60%, rollback 25%, abandon 15% (checks answer commit 5%, rollback 5%, ignore 5%)",
                t.responders,
                t.check_after.as_millis(),
                t.check_interval.as_millis(),
                t.max_checks
            ),
        );
    }
    run.insert("seed".into(), options.seed.to_string());
    run.insert(
        "lazyfs".into(),
        options
            .lazyfs
            .as_ref()
            .map_or("no".into(), |p| p.display().to_string()),
    );
    run.insert("nodes".into(), options.nodes.to_string());
    run.insert("queues".into(), options.queues.to_string());
    run.insert(
        "broker_bin".into(),
        options.broker_bin.display().to_string(),
    );
    run.insert(
        "fault_switch".into(),
        options
            .fault_switch
            .clone()
            .unwrap_or_else(|| "none".into()),
    );
    run.insert(
        "faults_injected".into(),
        injected
            .iter()
            .map(|(k, v)| format!("{k}×{v}"))
            .collect::<Vec<_>>()
            .join(" "),
    );
    if !nemesis.log.unavailable.is_empty() {
        run.insert("UNAVAILABLE".into(), nemesis.log.unavailable.join("; "));
    }
    if !options.node_env.is_empty() {
        run.insert(
            "node_env".into(),
            options
                .node_env
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(" "),
        );
    }
    let samples = sampler.finish().await;
    let mut report = Report::build(&ops, check, run, notes);
    report.resources = resources::trends(&samples);
    std::fs::write(out.join("resources.json"), serde_json::to_string(&samples)?)?;
    std::fs::write(out.join("resources.svg"), resources::svg(&samples))?;
    std::fs::write(out.join("report.txt"), report.text())?;
    std::fs::write(
        out.join("report.json"),
        serde_json::to_string_pretty(&report)?,
    )?;
    std::fs::write(out.join("timeline.svg"), report.svg())?;
    // Stop the nodes but keep their data and logs for a post-mortem; `clean` is
    // the next run's first step.
    if let Err(e) = cluster.run(&["stop"]).await {
        eprintln!("jepsen: stopping the cluster: {e:#}");
    }
    Ok(RunOutcome {
        verdict: report.verdict,
        report,
    })
}

/// Time until a probe send is acknowledged (stamped, so retries store it once).
async fn wait_writable(cluster: &Cluster, timeout: Duration) -> Option<Duration> {
    let started = Instant::now();
    let ids = cluster.ids();
    let mut attempt = 0usize;
    while started.elapsed() < timeout {
        let id = ids[attempt % ids.len()];
        attempt += 1;
        let Ok(url) = cluster.url(id) else { continue };
        // Queue ids beyond the topic's are refused; a probe goes to its own topic.
        let answer = cluster
            .http
            .post(format!("{url}/v1/topics/jepsen-probe/messages"))
            .json(&serde_json::json!({"messages": [{"body": "probe", "producer_id": "probe", "sequence": 1}]}))
            .send()
            .await;
        if answer.is_ok_and(|r| r.status().is_success()) {
            return Some(started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    None
}

/// Waits until every node reports `broker_transactions_open` 0 twice in a row,
/// or `timeout` passed; answers what the nodes said last.
async fn wait_transactions_settled(cluster: &Cluster, timeout: Duration) -> TxnSettleValue {
    let started = Instant::now();
    let mut zero_before = false;
    loop {
        let mut open = Vec::new();
        for id in cluster.ids() {
            let value = cluster.metric(id, "broker_transactions_open").await.ok();
            open.push((id, value.map(|v| v as u64)));
        }
        let zero = open.iter().all(|(_, n)| *n == Some(0));
        let waited_ms = started.elapsed().as_millis() as u64;
        if (zero && zero_before) || started.elapsed() > timeout {
            return TxnSettleValue {
                settled: zero && zero_before,
                waited_ms,
                open,
            };
        }
        zero_before = zero;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Waits until every node answers the same queue ends twice in a row.
async fn wait_converged(cluster: &Cluster, timeout: Duration) -> Result<BTreeMap<u32, u64>> {
    let deadline = Instant::now() + timeout;
    let mut previous: Option<BTreeMap<u32, u64>> = None;
    loop {
        let ends = cluster.queue_ends(TOPIC).await;
        let answers: Vec<&BTreeMap<u32, u64>> = ends.values().flatten().collect();
        let same = answers.len() == ends.len() && answers.windows(2).all(|pair| pair[0] == pair[1]);
        if same {
            let current = answers.first().map(|a| (*a).clone()).unwrap_or_default();
            if previous.as_ref() == Some(&current) {
                return Ok(current);
            }
            previous = Some(current);
        } else {
            previous = None;
        }
        if Instant::now() > deadline {
            bail!("queue ends per node after {timeout:?}: {ends:?}");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Waits until every node answers the same committed offsets of the test group.
async fn wait_offsets_converged(cluster: &Cluster, timeout: Duration) -> Result<()> {
    #[derive(serde::Deserialize, PartialEq, Debug)]
    struct Entry {
        queue_id: u32,
        offset: u64,
    }
    #[derive(serde::Deserialize)]
    struct Answer {
        offsets: Vec<Entry>,
    }
    let deadline = Instant::now() + timeout;
    loop {
        let mut views = Vec::new();
        for id in cluster.ids() {
            let url = format!(
                "{}/v1/groups/{}/offsets?topic={TOPIC}",
                cluster.url(id)?,
                workload::GROUP
            );
            let answer = async { cluster.http.get(url).send().await?.json::<Answer>().await };
            views.push(answer.await.ok().map(|a| {
                let mut offsets = a.offsets;
                offsets.sort_by_key(|e| e.queue_id);
                offsets
            }));
        }
        if views.iter().all(Option::is_some) && views.windows(2).all(|w| w[0] == w[1]) {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("offsets per node after {timeout:?}: {views:?}");
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// The largest end of every queue over the nodes that answer.
async fn longest_ends(cluster: &Cluster) -> BTreeMap<u32, u64> {
    let mut out: BTreeMap<u32, u64> = BTreeMap::new();
    for ends in cluster.queue_ends(TOPIC).await.into_values().flatten() {
        for (q, end) in ends {
            let e = out.entry(q).or_default();
            *e = (*e).max(end);
        }
    }
    out
}

/// The node settings under which retention may delete CommitLog files within a
/// run: a file reserved time short enough to pass, or a disk high-water ratio
/// low enough to reach (the defaults, 72 h and 75%, do neither).
const RETENTION_SETTINGS: [&str; 2] = [
    "BROKER_STORAGE_FILE_RESERVED_TIME",
    "BROKER_STORAGE_DISK_HIGH_WATER_RATIO",
];

/// Whether `--node-env` lets retention delete acknowledged messages, which the
/// checker then counts as aged out rather than lost.
pub fn deletes_old_files(node_env: &[(String, String)]) -> bool {
    node_env
        .iter()
        .any(|(key, _)| RETENTION_SETTINGS.contains(&key.as_str()))
}
