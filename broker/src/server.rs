//! `run`: opens storage, starts Raft, serves HTTP until `shutdown` resolves, then
//! stops everything in order. Owns every task it starts.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::serve::ListenerExt;
use tokio::net::TcpListener;
use tracing::{info, warn};

use crate::config::NodeConfig;
use crate::node::Node;
use crate::raft::network::Network;
use crate::raft::snapshot::SnapshotFiles;
use crate::raft::state_machine::BrokerStateMachine;
use crate::raft::type_config::{Raft, TypeConfig};
use crate::storage::MessageStore;

/// Idle time before the first TCP keepalive probe on an accepted connection.
const TCP_KEEPALIVE_IDLE: Duration = Duration::from_secs(10);
/// Time between unanswered probes.
const TCP_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(2);
/// How long sent data may stay unacknowledged before the connection is dropped;
/// it also caps the keepalive probing (about 30 s in all).
const TCP_USER_TIMEOUT: Duration = Duration::from_secs(30);

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
    let node = start(config).await?;
    let app = crate::http::router(Arc::clone(&node));
    info!(
        node_id = node.id(),
        group = node.group(),
        url = %node.config.advertise_url,
        "serving HTTP on {}",
        listener.local_addr()?
    );
    let leader_log = tokio::spawn(log_leadership(Arc::clone(&node)));
    let registrar = tokio::spawn(crate::control::registrar::run(Arc::clone(&node)));
    // Small answers (acks, Raft RPC replies) must not wait for Nagle's algorithm;
    // axum leaves it on. A peer that vanished without a FIN (a partition, a
    // power cut) must not hold a connection for long: a follower's append
    // stream waits for its leader's next request indefinitely otherwise.
    // Keepalive probes find an idle dead peer; TCP_USER_TIMEOUT one that stopped
    // acknowledging data we sent (probes do not run while data is unacked).
    let listener = listener.tap_io(|stream| {
        if let Err(e) = stream.set_nodelay(true) {
            warn!(error = %e, "cannot set TCP_NODELAY");
        }
        let socket = socket2::SockRef::from(&*stream);
        let keepalive = socket2::TcpKeepalive::new()
            .with_time(TCP_KEEPALIVE_IDLE)
            .with_interval(TCP_KEEPALIVE_INTERVAL);
        if let Err(e) = socket.set_tcp_keepalive(&keepalive) {
            warn!(error = %e, "cannot set TCP keepalive");
        }
        if let Err(e) = socket.set_tcp_user_timeout(Some(TCP_USER_TIMEOUT)) {
            warn!(error = %e, "cannot set TCP_USER_TIMEOUT");
        }
    });
    let served = axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await
    .context("HTTP server");
    leader_log.abort();
    registrar.abort();
    stop(node).await;
    served
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
    let shared = state_machine.shared();
    let log_config = config.log_store_config();
    let mut log_store = tokio::task::spawn_blocking(move || {
        raft_log_store::LogStore::<TypeConfig>::open(log_config)
    })
    .await?
    .context("opening the Raft log")?;
    let log_reader = {
        use openraft::storage::RaftLogStorage;
        log_store.get_log_reader().await
    };
    let network = Network::new(
        config.node_id,
        config.cluster_secret.clone(),
        Arc::clone(&shared),
    )?;
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
    let mut node = Node::new(config, raft, shared)?;
    node.raft_log = Some(log_reader);
    let node = Arc::new(node);
    bootstrap(&node).await?;
    // Part of the node wherever it is embedded; ends when the node is dropped.
    tokio::spawn(crate::consumer::scheduler::run(Arc::downgrade(&node)));
    Ok(node)
}

/// The node with the smallest id among the configured peers initializes a group that
/// has never been initialized. Others wait to be replicated to.
async fn bootstrap(node: &Node) -> anyhow::Result<()> {
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
    if let Err(e) = node.raft.initialize(members).await {
        // Another incarnation of the cluster already initialized it: fine.
        warn!(error = %e, "initialize refused");
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

/// Stops Raft, then flushes the store and marks its shutdown clean.
pub async fn stop(node: Arc<Node>) {
    if let Err(e) = tokio::time::timeout(Duration::from_secs(10), node.raft.shutdown()).await {
        warn!(error = %e, "raft did not shut down in time");
    }
    let store = Arc::clone(&node.shared.store);
    match tokio::task::spawn_blocking(move || store.shutdown()).await {
        Ok(Ok(())) => info!("stopped cleanly"),
        Ok(Err(e)) => warn!(error = %e, "final store flush failed"),
        Err(e) => warn!(error = %e, "final store flush panicked"),
    }
}
