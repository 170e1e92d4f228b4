//! [`ClientOptions`]: timeouts, connection pool and leader-following limits.

use std::path::PathBuf;
use std::time::Duration;

/// Which node reads go to.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub enum ReadPreference {
    /// The node writes go to (the remembered leader), falling over to the others on
    /// connect errors. Successive reads see offsets that never go backwards, which a
    /// consumer needs: a lagging follower could answer `OFFSET_OVERFLOW` for an
    /// offset the previous node just handed out.
    #[default]
    Sticky,
    /// Spread reads over every known node in turn (any replica serves what it has
    /// applied). For independent reads only: see [`ReadPreference::Sticky`].
    RoundRobin,
}

/// How a [`super::BrokerClient`] talks to the cluster.
#[derive(Clone)]
pub struct ClientOptions {
    /// Limit on establishing one TCP connection.
    pub connect_timeout: Duration,
    /// Limit on one request, from sending to the end of the answer. A pull adds its
    /// `max_wait_ms` to this. Keep it above the broker's `http.write_timeout` (10 s
    /// by default) so the broker's own `UNAVAILABLE` arrives before the client gives
    /// up with an outcome-unknown timeout.
    pub request_timeout: Duration,
    /// How many `NOT_LEADER` redirects one call follows.
    pub max_leader_hops: usize,
    /// Re-ask a node for the leader when the remembered one is older than this
    /// (writes a follower forwards work, but cost a hop). `None`: only when unknown.
    pub leader_refresh_interval: Option<Duration>,
    /// Where reads go.
    pub read_preference: ReadPreference,
    /// Idle keep-alive connections kept per node.
    pub pool_max_idle_per_host: usize,
    /// How long an idle keep-alive connection is kept. Keep it below the
    /// broker's `http.header_read_timeout` (10 s by default), after which the
    /// broker closes idle connections.
    pub pool_idle_timeout: Duration,
    /// The bearer token sent on every request (`mqctl --token`, `MQ_TOKEN`); a
    /// secured cluster answers 401 without one.
    pub token: Option<String>,
    /// A PEM CA certificate to trust for `https://` nodes (`scripts/cluster.sh
    /// start --tls` writes `DIR/tls/ca.pem`). Without it `https://` URLs fail:
    /// the client trusts no built-in roots.
    pub ca_file: Option<PathBuf>,
    /// The `User-Agent` of every request; `None` sends `broker-client/<version>`.
    /// Tools name themselves (`mqctl/<version>`) so that a proxy's log or a
    /// packet capture tells them apart from applications.
    pub user_agent: Option<String>,
    /// Ask pulls for the compact binary answer (`Accept:
    /// application/vnd.broker.pull-v1`, `broker_proto::pull_binary`): the same
    /// messages, cheaper to write and to read than JSON. A broker that does not
    /// know it answers JSON, which the client reads as well.
    pub binary_pulls: bool,
}

impl Default for ClientOptions {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(1),
            request_timeout: Duration::from_secs(15),
            max_leader_hops: 3,
            leader_refresh_interval: Some(Duration::from_secs(10)),
            read_preference: ReadPreference::Sticky,
            pool_max_idle_per_host: 1024,
            pool_idle_timeout: Duration::from_secs(5),
            token: None,
            ca_file: None,
            user_agent: None,
            binary_pulls: true,
        }
    }
}

impl std::fmt::Debug for ClientOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientOptions")
            .field("connect_timeout", &self.connect_timeout)
            .field("request_timeout", &self.request_timeout)
            .field("max_leader_hops", &self.max_leader_hops)
            .field("leader_refresh_interval", &self.leader_refresh_interval)
            .field("read_preference", &self.read_preference)
            .field("pool_max_idle_per_host", &self.pool_max_idle_per_host)
            .field("pool_idle_timeout", &self.pool_idle_timeout)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("ca_file", &self.ca_file)
            .field("user_agent", &self.user_agent)
            .field("binary_pulls", &self.binary_pulls)
            .finish()
    }
}
