//! The HTTP client a node calls other nodes with (Raft RPC, forwarded requests,
//! route registrations, joins): trusting only the cluster's CA, and keeping idle
//! connections for less time than any node keeps them open.

use std::time::Duration;

use crate::config::NodeConfig;
use crate::tls::{peer_client_builder, TlsError};

/// A client builder for node-to-node requests, with the settings every such
/// client shares; callers add their own (pool size, timeouts).
///
/// # Errors
/// The CA file (`tls.ca_file`) is unusable.
pub fn builder(config: &NodeConfig) -> Result<reqwest::ClientBuilder, TlsError> {
    Ok(peer_client_builder(config.tls.ca_file.as_deref())?
        .tcp_nodelay(true)
        .connect_timeout(Duration::from_millis(500))
        // Below every node's `http.header_read_timeout`, which closes idle
        // connections: a pooled connection is never reused as it is closed.
        .pool_idle_timeout(pool_idle_timeout(config)))
}

/// How long a node keeps an idle pooled connection to another node: half the
/// header-read timeout (which is also the server's idle timeout), so the pool
/// drops a connection well before the other side may close it.
pub fn pool_idle_timeout(config: &NodeConfig) -> Duration {
    config.http.header_read_timeout.0 / 2
}
