//! `run`: opens storage, starts Raft, serves HTTP until `shutdown` resolves, then
//! stops everything in order. Owns every task it starts.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;

use crate::http::connections::ConnectionRegistry;
use tokio::net::TcpListener;
use tracing::{info, warn};

use crate::config::NodeConfig;
use crate::replication::network::Network;
use crate::replication::snapshot::SnapshotFiles;
use crate::replication::state_machine::BrokerStateMachine;
use crate::replication::type_config::{Raft, TypeConfig};
use crate::service::node::Node;
use crate::storage::MessageStore;

/// Runs a node on `listener` until `shutdown` resolves.
///
/// # Errors
/// Storage that cannot be opened or recovered, an invalid Raft configuration, or a
/// failure of the HTTP server.
pub async fn run(
    config: NodeConfig,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    run_as(config, listener, shutdown, Process::Embedded).await
}

/// Who owns the process a node runs in: what may happen after its storage failed.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Process {
    /// A node inside another program (tests, tools): it stays failed, answering
    /// 503, and leaves the process alone.
    Embedded,
    /// The node is the process (the broker binary): it restarts or exits as
    /// `storage.on_failure` says (see [`crate::service::health::supervise`]).
    Owned,
}

/// [`run`], saying whether the node owns its process.
///
/// # Errors
/// As [`run`].
pub async fn run_as(
    config: NodeConfig,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
    process: Process,
) -> anyhow::Result<()> {
    // Certificates are checked before anything starts.
    let options = serve_options(&config)?;
    if config.security.insecure {
        warn!(
            "INSECURE: client authentication is off (--insecure): anyone who can reach {} can read, write and reconfigure this cluster",
            config.listen
        );
        if config.cluster_secret.is_none() {
            warn!("INSECURE: no cluster secret: any process that reaches this port can act as a node of the cluster");
        }
    }
    let node = start(config).await?;
    let connections = ConnectionRegistry::new(node.config.http.max_connections);
    let app = crate::http::router_with_connections(Arc::clone(&node), Arc::clone(&connections));
    info!(
        node_id = node.id(),
        group = node.group(),
        url = %node.config.advertise_url,
        "serving HTTP on {}",
        listener.local_addr()?
    );
    let leader_log = tokio::spawn(log_leadership(Arc::clone(&node)));
    let registrar = tokio::spawn(crate::service::control::registrar::run(Arc::clone(&node)));
    let supervisor = (process == Process::Owned)
        .then(|| tokio::spawn(crate::service::health::supervise(Arc::clone(&node))));
    // A stop drains first (readiness off, held polls answered, leadership handed
    // over) while connections are still served: see `service::drain`.
    let draining = Arc::clone(&node);
    let shutdown = async move {
        shutdown.await;
        let report = crate::service::drain::drain(&draining).await;
        info!(?report, "drained; stopping");
    };
    let served = crate::http::connections::serve(listener, app, options, connections, shutdown)
        .await
        .context("HTTP server");
    leader_log.abort();
    registrar.abort();
    if let Some(supervisor) = supervisor {
        supervisor.abort();
    }
    stop(node).await;
    served
}

/// How connections are served: TLS from `tls.*`, limits from `http.*`.
fn serve_options(config: &NodeConfig) -> anyhow::Result<crate::http::connections::ServeOptions> {
    let tls = match (&config.tls.cert_file, &config.tls.key_file) {
        (Some(cert), Some(key)) => Some(crate::tls::acceptor(cert, key)?),
        _ => None,
    };
    Ok(crate::http::connections::ServeOptions {
        tls,
        header_read_timeout: config.http.header_read_timeout.0,
        max_header_bytes: usize::try_from(config.http.max_header_size.0).unwrap_or(usize::MAX),
    })
}

/// Opens storage and starts Raft; bootstraps the group if this node is the one to.
///
/// # Errors
/// As [`run`].
pub async fn start(config: NodeConfig) -> anyhow::Result<Arc<Node>> {
    let store_config = config.store_config();
    let (store, report) = tokio::task::spawn_blocking(move || MessageStore::open(store_config))
        .await?
        .context("opening the message store")?;
    info!(
        commit_log_end = store.max_commit_log_offset().0,
        truncated_bytes = report.commit_log.truncated_bytes,
        redispatched = report.records_redispatched,
        clean_shutdown = report.clean_shutdown,
        "message store open"
    );
    // Flush times go to /metrics from the first flush after recovery on.
    let metrics = Arc::new(crate::metrics::Metrics::default());
    let observed = Arc::clone(&metrics);
    store.on_commit_log_flush(move |elapsed| observed.commit_log_flush_duration.observe(elapsed));
    let store = Arc::new(store);
    let snapshots = SnapshotFiles::open(&config.data_dir.join("snapshot"))
        .context("opening the snapshot directory")?;
    let max_held = config.http.max_held_polls;
    let sm_store = Arc::clone(&store);
    let state_machine = tokio::task::spawn_blocking(move || {
        BrokerStateMachine::open(sm_store, snapshots, max_held)
    })
    .await?
    .context("recovering the state machine")?;
    #[cfg(feature = "fault-injection")]
    let state_machine = {
        let mut state_machine = state_machine;
        state_machine.set_apply_lag(crate::faults::apply_lag());
        state_machine
    };
    let shared = state_machine.shared();
    let log_config = config.log_store_config();
    #[cfg(feature = "fault-injection")]
    let log_config = crate::faults::adjust_log_store(log_config);
    let mut log_store = tokio::task::spawn_blocking(move || {
        raft_log_store::LogStore::<TypeConfig>::open(log_config)
    })
    .await?
    .context("opening the Raft log")?;
    let log_reader = {
        use openraft::storage::RaftLogStorage;
        log_store.get_log_reader().await
    };
    let network = Network::new(&config, Arc::clone(&shared))?;
    let raft_config = Arc::new(
        config
            .openraft_config()
            .validate()
            .context("Raft configuration")?,
    );
    let raft = Raft::new(
        config.node_id,
        raft_config,
        network,
        log_store,
        state_machine,
    )
    .await
    .context("starting Raft")?;
    let mut node = Node::new(config, raft, shared, metrics)?;
    node.raft_log = Some(log_reader);
    let node = Arc::new(node);
    bootstrap(&node).await?;
    // Part of the node wherever it is embedded; ends when the node is dropped.
    tokio::spawn(crate::service::consumer::scheduler::run(Arc::downgrade(
        &node,
    )));
    tokio::spawn(crate::service::consumer::timer_delivery::run(
        Arc::downgrade(&node),
    ));
    tokio::spawn(crate::service::transactions::run_checks(Arc::downgrade(
        &node,
    )));
    tokio::spawn(crate::service::health::watch(Arc::downgrade(&node)));
    Ok(node)
}

/// The node with the smallest id among the configured peers initializes a group that
/// has never been initialized. Others wait to be replicated to.
async fn bootstrap(node: &Arc<Node>) -> anyhow::Result<()> {
    let members = node.config.members()?;
    let Some(first) = members.keys().next() else {
        info!("no peers configured: waiting to be added to a group");
        return Ok(());
    };
    if *first != node.id() {
        return Ok(());
    }
    if node.raft.is_initialized().await? {
        return Ok(());
    }
    info!(members = ?members.keys().collect::<Vec<_>>(), "bootstrapping the group");
    match node.raft.initialize(members).await {
        // A fresh group: it starts with every feature of this build.
        Ok(()) => crate::service::consumer::claims::enable_at_bootstrap(node),
        // Another incarnation of the cluster already initialized it: fine.
        Err(e) => warn!(error = %e, "initialize refused"),
    }
    Ok(())
}

/// Logs every change of leader or term, for operators reading the log.
async fn log_leadership(node: Arc<Node>) {
    use openraft::type_config::async_runtime::WatchReceiver;
    let mut metrics = node.raft.metrics();
    let mut last = (None, 0);
    loop {
        let now = {
            let m = metrics.borrow_watched();
            (m.current_leader, m.current_term)
        };
        if now != last {
            match now.0 {
                Some(leader) => info!(leader, term = now.1, "group leader is node {leader}"),
                None => warn!(term = now.1, "group has no leader"),
            }
            last = now;
        }
        if metrics.changed().await.is_err() {
            return;
        }
    }
}

/// Stops Raft, then flushes the store and marks its shutdown clean (unless its
/// storage failed: then the next start recovers as after a crash).
pub async fn stop(node: Arc<Node>) {
    if let Err(e) = tokio::time::timeout(Duration::from_secs(10), node.raft.shutdown()).await {
        warn!(error = %e, "raft did not shut down in time");
    }
    if node.health.is_failed() {
        // A write failed half-way: the next start must recover as after a crash,
        // so the store is not flushed and marked clean now.
        warn!("storage failed earlier: stopping without a clean shutdown mark");
        return;
    }
    let store = Arc::clone(&node.shared.store);
    match tokio::task::spawn_blocking(move || store.shutdown()).await {
        Ok(Ok(())) => info!("stopped cleanly"),
        Ok(Err(e)) => warn!(error = %e, "final store flush failed"),
        Err(e) => warn!(error = %e, "final store flush panicked"),
    }
}
