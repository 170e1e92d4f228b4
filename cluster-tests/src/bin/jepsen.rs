//! `jepsen`: run a Jepsen-style fault-injection test against a real local cluster
//! (`scripts/cluster.sh`), or re-check a recorded history. See the README's
//! "Fault testing" section; `scripts/jepsen.sh` wraps this binary.
//!
//! Three workloads: `--workload pull` (the default: pull consumers committing
//! offsets), `--workload receive` (lease-based receivers that ack, nack and
//! let leases expire, with poison messages that must reach the dead-letter topic)
//! and `--workload transactions` (transactional messages committed, rolled back
//! or abandoned, with check responders; pull consumers as in `pull`).
//!
//! Exit status: 0 clean, 1 anomalies found, 2 inconclusive (too little work, or a
//! fault that could not be injected), 3 the run itself failed.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use cluster_tests::harness::Security;
use cluster_tests::jepsen::checker::{self, CheckOptions, Verdict, DEFAULT_MAX_DELIVERY_ATTEMPTS};
use cluster_tests::jepsen::history;
use cluster_tests::jepsen::nemesis::{FaultSet, Schedule};
use cluster_tests::jepsen::report::Report;
use cluster_tests::jepsen::workload::{Mode, ReceiveLoad, TransactionLoad};
use cluster_tests::jepsen::{run, RunOptions};

#[derive(Parser, Debug)]
#[command(
    about = "Jepsen-style fault-injection test of a local broker cluster",
    after_help = "Workloads:\n  \
        pull     one consumer per queue pulls from any node and commits offsets (default)\n  \
        receive  receivers take leases (receive), ack most messages, nack some\n           \
        (change-invisible 0), let some leases expire; poison messages are always\n           \
        nacked and must reach %DLQ%{group}; after the final heal a drain acks\n           \
        everything and the dead-letter topic is read on every node.\n  \
        transactions  producers send transactions of 1-3 messages and commit (60%),\n           \
        roll back (25%) or abandon (15%) them; check responders answer the\n           \
        broker's transaction checks by a rule the messages carry (commit,\n           \
        rollback, or ignore: the broker then rolls back after the last check);\n           \
        pull consumers as in `pull`; --rate is transactions per second.\n\n\
        Example: jepsen --workload receive --duration 5m --nemesis mixed --lease-time 2s..5s\n\
        Example: jepsen --workload transactions --duration 5m --nemesis kill,partition-leader\n\
        Example: jepsen --lazyfs --duration 90s --nemesis power-loss-all,power-loss-leader"
)]
struct Args {
    /// How long the workload and the nemesis run, e.g. 300s, 5m.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    duration: Duration,
    /// Faults: comma-separated kill, pause, partition-leader, partition-halves,
    /// partition-bridge, partition-oneway, snapshot-catchup, torn-tail, membership,
    /// and with --lazyfs power-loss-leader, power-loss-follower,
    /// power-loss-minority, power-loss-all; or mixed (all of them: the power
    /// losses only with --lazyfs), or none.
    #[arg(long, default_value = "mixed")]
    nemesis: String,
    /// Put the nodes' data dirs on lazyfs mounts (cluster.sh's CLUSTER_LAZYFS), so
    /// that the power-loss faults can drop what was not fsync'd. The value is the
    /// lazyfs executable (cargo build --release -p lazyfs).
    #[arg(long, value_name = "LAZYFS_BIN", num_args = 0..=1,
          default_missing_value = "target/release/lazyfs")]
    lazyfs: Option<PathBuf>,
    /// Sends per second over all producers.
    #[arg(long, default_value_t = 50.0)]
    rate: f64,
    /// Concurrent producers (half of them stamp producer_id/sequence).
    #[arg(long, default_value_t = 6)]
    concurrency: usize,
    /// Seed of the fault schedule and the workload's choices.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Output directory: history.jsonl, report.txt, report.json, timeline.svg and
    /// the cluster (DIR/cluster, node logs and data kept for a post-mortem).
    #[arg(long, default_value = "jepsen-out")]
    out: PathBuf,
    /// Broker executable the nodes run.
    #[arg(long, default_value = "target/release/broker")]
    broker_bin: PathBuf,
    /// scripts/cluster.sh of this repository.
    #[arg(long, default_value = "scripts/cluster.sh")]
    cluster_script: PathBuf,
    /// Nodes in the group.
    #[arg(long, default_value_t = 3)]
    nodes: usize,
    /// Queues of the test topic.
    #[arg(long, default_value_t = 4)]
    queues: u32,
    /// A broker fault switch (BROKER_FAULT: ack-before-commit, skip-fsync,
    /// ignore-dedup); needs a broker built with --features fault-injection.
    #[arg(long)]
    fault: Option<String>,
    /// Shortest and longest fault, e.g. 5s..12s.
    #[arg(long, default_value = "5s..12s", value_parser = parse_range)]
    fault_time: (Duration, Duration),
    /// Shortest and longest quiet period between faults.
    #[arg(long, default_value = "4s..8s", value_parser = parse_range)]
    quiet_time: (Duration, Duration),
    /// Only check an existing history file (no cluster) and print the report.
    #[arg(long, value_name = "HISTORY")]
    check: Option<PathBuf>,
    /// Start the cluster with `cluster.sh start --insecure` (no cluster secret, no
    /// client tokens) instead of secured, its default.
    #[arg(long)]
    insecure: bool,
    /// How the topic is written and consumed: pull (consumers pull and commit
    /// offsets), receive (lease-based receive/ack/nack with a dead-letter topic)
    /// or transactions (transactional messages, check responders, pull consumers).
    #[arg(long, default_value_t = Mode::Pull)]
    workload: Mode,
    /// Receive workload: concurrent receivers.
    #[arg(long, default_value_t = ReceiveLoad::default().receivers)]
    receivers: usize,
    /// Receive workload: shortest and longest lease a receive asks for
    /// (invisible_ms, at least 1s); short leases make expiries happen.
    #[arg(long, default_value = "2s..5s", value_parser = parse_lease_range)]
    lease_time: (Duration, Duration),
    /// Receive workload: how long a receive waits for messages (long polling).
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    receive_wait: Duration,
    /// Receive workload: fraction of delivered messages nacked (change-invisible 0).
    #[arg(long, default_value_t = ReceiveLoad::default().nack_fraction, value_parser = parse_fraction)]
    nack_fraction: f64,
    /// Receive workload: fraction of delivered messages left unacked until their
    /// lease expires.
    #[arg(long, default_value_t = ReceiveLoad::default().expire_fraction, value_parser = parse_fraction)]
    expire_fraction: f64,
    /// Receive workload: fraction of delivered messages whose lease is renewed
    /// (change-invisible) before the ack.
    #[arg(long, default_value_t = ReceiveLoad::default().extend_fraction, value_parser = parse_fraction)]
    extend_fraction: f64,
    /// Receive workload: fraction of sends that are poison messages (always
    /// nacked, so they must end in the dead-letter topic).
    #[arg(long, default_value_t = ReceiveLoad::default().poison_fraction, value_parser = parse_fraction)]
    poison_fraction: f64,
    /// The nodes' consumer.max_delivery_attempts (passed to them as
    /// BROKER_CONSUMER_MAX_DELIVERY_ATTEMPTS), and what the checker holds dead
    /// letters to; without it the broker's default, 16. Also applies to --check.
    #[arg(long)]
    max_delivery_attempts: Option<u32>,
    /// A setting for every node, as the broker's environment variable
    /// (repeatable), e.g. --node-env BROKER_STORAGE_FILE_RESERVED_TIME=5m.
    /// A file reserved time or disk high-water ratio among them tells the
    /// checker that retention may delete acknowledged messages (counted as aged
    /// out, not lost); give it with --check too for such a run's history.
    #[arg(long, value_name = "BROKER_KEY=VALUE", value_parser = parse_node_env)]
    node_env: Vec<(String, String)>,
    /// Transactions workload: concurrent check responders.
    #[arg(long, default_value_t = TransactionLoad::default().responders)]
    responders: usize,
    /// Transactions workload: the nodes' transaction.check_after (an open
    /// transaction is first offered to the checks this long after it was stored).
    #[arg(long, default_value = "2s", value_parser = parse_check_duration)]
    txn_check_after: Duration,
    /// Transactions workload: the nodes' transaction.check_interval.
    #[arg(long, default_value = "1s", value_parser = parse_check_duration)]
    txn_check_interval: Duration,
    /// Transactions workload: the nodes' transaction.max_checks (offers before
    /// the broker rolls an unanswered transaction back).
    #[arg(long, default_value_t = TransactionLoad::default().max_checks,
          value_parser = clap::value_parser!(u32).range(1..=1000))]
    txn_max_checks: u32,
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    let (number, unit) = text
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .map_or((text, "s"), |i| text.split_at(i));
    let value: f64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a duration like 90s or 5m"))?;
    let seconds = match unit {
        "ms" => value / 1000.0,
        "s" => value,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        _ => return Err(format!("`{text}`: unit must be ms, s, m or h")),
    };
    Ok(Duration::from_secs_f64(seconds))
}

/// Most `--node-env` settings.
const MAX_NODE_ENV: usize = 32;

fn parse_node_env(text: &str) -> Result<(String, String), String> {
    let (key, value) = text
        .split_once('=')
        .ok_or_else(|| format!("`{text}` is not KEY=VALUE"))?;
    let valid_key = key.strip_prefix("BROKER_").is_some_and(|rest| {
        !rest.is_empty()
            && rest
                .chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
    });
    if !valid_key {
        return Err(format!(
            "`{key}` is not a broker setting (BROKER_ and capitals, digits, _)"
        ));
    }
    if key == "BROKER_FAULT" {
        return Err("use --fault for BROKER_FAULT".into());
    }
    Ok((key.to_string(), value.to_string()))
}

fn parse_range(text: &str) -> Result<(Duration, Duration), String> {
    let (low, high) = text
        .split_once("..")
        .ok_or_else(|| format!("`{text}` is not a range like 5s..12s"))?;
    let (low, high) = (parse_duration(low)?, parse_duration(high)?);
    if low > high {
        return Err(format!("`{text}`: the first bound is above the second"));
    }
    Ok((low, high))
}

fn parse_lease_range(text: &str) -> Result<(Duration, Duration), String> {
    let (low, high) = parse_range(text)?;
    if low < Duration::from_secs(1) || high > Duration::from_secs(12 * 3600) {
        return Err(format!("`{text}`: a lease is 1s ..= 12h"));
    }
    Ok((low, high))
}

fn parse_check_duration(text: &str) -> Result<Duration, String> {
    let duration = parse_duration(text)?;
    if duration < Duration::from_millis(100) {
        return Err(format!("`{text}`: the broker takes at least 100ms"));
    }
    Ok(duration)
}

fn parse_fraction(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(value) if (0.0..=1.0).contains(&value) => Ok(value),
        _ => Err(format!("`{text}` is not a fraction between 0 and 1")),
    }
}

fn exit_code(verdict: Verdict) -> ExitCode {
    match verdict {
        Verdict::Clean => ExitCode::SUCCESS,
        Verdict::Anomalies => ExitCode::from(1),
        Verdict::Inconclusive => ExitCode::from(2),
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    let max_delivery_attempts = args
        .max_delivery_attempts
        .unwrap_or(DEFAULT_MAX_DELIVERY_ATTEMPTS);
    if let Some(path) = &args.check {
        return match history::load(path) {
            Ok(ops) => {
                let options = CheckOptions {
                    max_delivery_attempts,
                    retention: cluster_tests::jepsen::deletes_old_files(&args.node_env),
                    ..CheckOptions::default()
                };
                let check = checker::check(&ops, options);
                let report = Report::build(&ops, check, Default::default(), Vec::new());
                print!("{}", report.text());
                exit_code(report.verdict)
            }
            Err(e) => {
                eprintln!("jepsen: {e:#}");
                ExitCode::from(3)
            }
        };
    }
    if args.nack_fraction + args.expire_fraction + args.extend_fraction > 1.0 {
        eprintln!("jepsen: --nack-fraction, --expire-fraction and --extend-fraction add up to more than 1");
        return ExitCode::from(3);
    }
    let nemesis = match FaultSet::parse(&args.nemesis, args.lazyfs.is_some()) {
        Ok(nemesis) => nemesis,
        Err(e) => {
            eprintln!("jepsen: --nemesis: {e}");
            return ExitCode::from(3);
        }
    };
    if args.node_env.len() > MAX_NODE_ENV {
        eprintln!("jepsen: at most {MAX_NODE_ENV} --node-env settings");
        return ExitCode::from(3);
    }
    let millis = |d: Duration| d.as_millis() as u64;
    let options = RunOptions {
        duration: args.duration,
        nemesis,
        rate: args.rate,
        concurrency: args.concurrency.max(1),
        seed: args.seed,
        out: args.out,
        nodes: args.nodes,
        queues: args.queues.max(1),
        broker_bin: args.broker_bin,
        cluster_script: args.cluster_script,
        fault_switch: args.fault,
        schedule: Schedule {
            fault_ms: (millis(args.fault_time.0), millis(args.fault_time.1)),
            quiet_ms: (millis(args.quiet_time.0), millis(args.quiet_time.1)),
        },
        security: if args.insecure {
            Security::Insecure
        } else {
            Security::Secured
        },
        workload: args.workload,
        receive: ReceiveLoad {
            receivers: args.receivers.max(1),
            invisible_ms: (millis(args.lease_time.0), millis(args.lease_time.1)),
            max_wait_ms: millis(args.receive_wait),
            nack_fraction: args.nack_fraction,
            expire_fraction: args.expire_fraction,
            extend_fraction: args.extend_fraction,
            poison_fraction: args.poison_fraction,
        },
        max_delivery_attempts: args.max_delivery_attempts,
        node_env: args.node_env,
        lazyfs: args.lazyfs,
        transactions: TransactionLoad {
            responders: args.responders.max(1),
            check_after: args.txn_check_after,
            check_interval: args.txn_check_interval,
            max_checks: args.txn_max_checks,
        },
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("jepsen: cannot start the async runtime: {e}");
            return ExitCode::from(3);
        }
    };
    match runtime.block_on(run(&options)) {
        Ok(outcome) => {
            print!("{}", outcome.report.text());
            println!(
                "report: {}/report.txt, report.json, timeline.svg, resources.svg, history.jsonl",
                options.out.display()
            );
            exit_code(outcome.verdict)
        }
        Err(e) => {
            eprintln!("jepsen: the run failed: {e:#}");
            ExitCode::from(3)
        }
    }
}
