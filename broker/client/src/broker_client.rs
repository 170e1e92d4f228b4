//! [`BrokerClient`]: one shared HTTP connection pool, the known nodes, and the rules
//! for choosing a node and following the leader.
//!
//! # Which node
//! * **Writes** (send, topic changes, offset commits) go to the remembered leader
//!   first, then to the other nodes in seed order.
//! * **Reads** go where [`ReadPreference`] says: by default the same node as writes.
//!
//! # Following the leader
//! * `NOT_LEADER` (421) naming a leader: the request is sent again there and that node
//!   is remembered as the leader. Without a name, the next known node is tried. At
//!   most [`ClientOptions::max_leader_hops`] such hops per call. A `NOT_LEADER`
//!   answer means the write was not applied, so resending it is always safe.
//! * A connect error: the request was never sent; the next known node is tried and
//!   the failed one stops being the leader.
//! * Anything else — success, a refusal, `UNAVAILABLE`, a timeout or a broken
//!   connection after the request went out — is returned to the caller, who decides
//!   about retrying (see [`super::Producer`] and [`ClientError::is_outcome_unknown`]).
//! * The leader is learned from `GET /ready` when none is known (at most every
//!   200 ms) and every [`ClientOptions::leader_refresh_interval`]: followers forward
//!   writes, so a stale leader costs a hop, not an error, and nothing else reveals it.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use reqwest::{Method, Url};
use serde::de::DeserializeOwned;

use super::endpoint::NodeUrl;
use super::error::{ClientError, Result};
use super::nodes::NodeSet;
use super::options::{ClientOptions, ReadPreference};
use crate::api::ErrorBody;

/// The `User-Agent` when [`ClientOptions::user_agent`] names none.
const DEFAULT_USER_AGENT: &str = concat!("broker-client/", env!("CARGO_PKG_VERSION"));

/// The longest piece of an undecodable body quoted in a [`ClientError::Decode`].
const QUOTED_BODY_CHARS: usize = 200;

/// A client of the broker's HTTP API. Cheap to clone: clones share the connection
/// pool and what was learned about the leader.
#[derive(Clone)]
pub struct BrokerClient {
    inner: Arc<Inner>,
}

struct Inner {
    http: reqwest::Client,
    /// A std mutex: held only to read or update the set, never across an `.await`,
    /// so it cannot block the runtime and needs no async lock.
    nodes: Mutex<NodeSet>,
    options: ClientOptions,
}

/// Whether a request changes state (goes to the leader) or only reads.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(super) enum Target {
    Leader,
    Reader,
}

/// One logical request, sent to one or more nodes.
pub(super) struct Call<'a> {
    pub method: Method,
    pub segments: &'a [&'a str],
    pub query: Vec<(&'static str, String)>,
    /// A JSON body, encoded once and resent as is.
    pub body: Option<Bytes>,
    pub target: Target,
    /// Extra time on top of [`ClientOptions::request_timeout`] (a pull's wait).
    pub extra_timeout: Duration,
    /// The `Accept` header, when not just JSON.
    pub accept: Option<&'static str>,
}

impl<'a> Call<'a> {
    pub fn read(segments: &'a [&'a str]) -> Self {
        Self {
            method: Method::GET,
            segments,
            query: Vec::new(),
            body: None,
            target: Target::Reader,
            extra_timeout: Duration::ZERO,
            accept: None,
        }
    }

    /// A write with a JSON body.
    ///
    /// # Errors
    /// [`ClientError::InvalidArgument`] if `body` cannot be encoded as JSON.
    pub fn write(
        method: Method,
        segments: &'a [&'a str],
        body: Option<&impl serde::Serialize>,
    ) -> Result<Self> {
        let body = body
            .map(|b| serde_json::to_vec(b).map(Bytes::from))
            .transpose()
            .map_err(|e| ClientError::InvalidArgument(format!("cannot encode the body: {e}")))?;
        Ok(Self {
            method,
            segments,
            query: Vec::new(),
            body,
            target: Target::Leader,
            extra_timeout: Duration::ZERO,
            accept: None,
        })
    }
}

/// A 2xx answer.
pub(super) struct Answer {
    pub status: u16,
    pub url: Url,
    /// The `Content-Type` header, when there was one.
    pub content_type: Option<String>,
    pub body: Bytes,
}

impl Answer {
    /// Decodes the JSON body.
    ///
    /// # Errors
    /// [`ClientError::Decode`] if it is not a `T`.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T> {
        serde_json::from_slice(&self.body).map_err(|e| ClientError::Decode {
            status: self.status,
            url: self.url.to_string(),
            reason: format!("{e}; body: {}", quote(&self.body)),
        })
    }
}

fn quote(body: &[u8]) -> String {
    String::from_utf8_lossy(body)
        .chars()
        .take(QUOTED_BODY_CHARS)
        .collect()
}

/// A reqwest builder that speaks to the broker as `options` say: the bearer token
/// on every request (marked sensitive, so it is never logged) and rustls trusting
/// only `options.ca_file` (no built-in roots: a cluster's CA is its own). For
/// other HTTP clients that must speak to a secured cluster the same way; they add
/// their own timeouts.
///
/// # Errors
/// [`ClientError::InvalidArgument`] for a token a header cannot hold or an
/// unreadable CA file, [`ClientError::Transport`] for a CA file that holds no PEM
/// certificate.
pub fn http_builder(options: &ClientOptions) -> Result<reqwest::ClientBuilder> {
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(token) = &options.token {
        let mut value = reqwest::header::HeaderValue::from_str(&format!("Bearer {token}"))
            .map_err(|_| {
                ClientError::InvalidArgument("the token holds characters a header cannot".into())
            })?;
        value.set_sensitive(true);
        headers.insert(reqwest::header::AUTHORIZATION, value);
    }
    let mut builder = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .default_headers(headers);
    if let Some(path) = &options.ca_file {
        let pem = std::fs::read(path).map_err(|e| {
            ClientError::InvalidArgument(format!("CA file {}: {e}", path.display()))
        })?;
        for cert in reqwest::Certificate::from_pem_bundle(&pem)? {
            builder = builder.add_root_certificate(cert);
        }
    }
    Ok(builder)
}

impl BrokerClient {
    /// A client of the cluster reachable at `seed_urls` (node base URLs such as
    /// `http://127.0.0.1:18081`; one is enough, more give failover before the leader
    /// is known).
    ///
    /// # Errors
    /// [`ClientError::InvalidArgument`] without seeds, [`ClientError::InvalidUrl`] for
    /// a URL that is not an `http://` base URL, [`ClientError::Transport`] if the
    /// HTTP client cannot be built.
    pub fn new(seed_urls: Vec<String>, options: ClientOptions) -> Result<Self> {
        if seed_urls.is_empty() {
            return Err(ClientError::InvalidArgument(
                "at least one node URL is required".into(),
            ));
        }
        let seeds = seed_urls
            .iter()
            .map(|url| NodeUrl::parse(url))
            .collect::<Result<Vec<_>>>()?;
        let builder = http_builder(&options)?;
        let http = builder
            .tcp_nodelay(true)
            .connect_timeout(options.connect_timeout)
            .pool_max_idle_per_host(options.pool_max_idle_per_host)
            .pool_idle_timeout(options.pool_idle_timeout)
            .user_agent(
                options
                    .user_agent
                    .clone()
                    .unwrap_or_else(|| DEFAULT_USER_AGENT.to_string()),
            )
            .build()?;
        Ok(Self {
            inner: Arc::new(Inner {
                http,
                nodes: Mutex::new(NodeSet::new(seeds)),
                options,
            }),
        })
    }

    /// The options the client was built with.
    pub fn options(&self) -> &ClientOptions {
        &self.inner.options
    }

    /// Every node the client knows (seeds and learned leaders).
    pub fn nodes(&self) -> Vec<String> {
        self.lock_nodes()
            .nodes()
            .iter()
            .map(|n| n.to_string())
            .collect()
    }

    /// The node the client believes leads (where writes go first).
    pub fn leader(&self) -> Option<String> {
        self.lock_nodes().leader().map(|(url, _)| url.to_string())
    }

    /// Asks the nodes, in write order, for the leader (`GET /ready`) and remembers the
    /// first one named. Returns it, or `None` if no node could name one.
    pub async fn discover_leader(&self) -> Option<String> {
        let order = self.lock_nodes().write_order();
        let timeout = self.inner.options.connect_timeout * 2;
        for node in order {
            let url = node.endpoint(&["ready"], &[]);
            let answer = self.inner.http.get(url).timeout(timeout).send().await;
            let Ok(response) = answer else { continue };
            let leader = response
                .json::<super::endpoints::Readiness>()
                .await
                .ok()
                .and_then(|r| r.leader)
                .and_then(|l| NodeUrl::parse(&l).ok());
            if let Some(leader) = leader {
                self.lock_nodes().set_leader(&leader);
                return Some(leader.to_string());
            }
        }
        None
    }

    fn lock_nodes(&self) -> MutexGuard<'_, NodeSet> {
        // A panic while holding this lock leaves a consistent set (every update is
        // one assignment), so a poisoned lock is still usable.
        self.inner
            .nodes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Sends `call`, following the leader and failing over on connect errors as the
    /// module documentation describes.
    pub(super) async fn execute(&self, call: &Call<'_>) -> Result<Answer> {
        if call.target == Target::Leader {
            let due = self
                .lock_nodes()
                .claim_leader_probe(Instant::now(), self.inner.options.leader_refresh_interval);
            if due {
                self.discover_leader().await;
            }
        }
        let order = {
            let mut nodes = self.lock_nodes();
            match (call.target, self.inner.options.read_preference) {
                (Target::Leader, _) | (Target::Reader, ReadPreference::Sticky) => {
                    nodes.write_order()
                }
                (Target::Reader, ReadPreference::RoundRobin) => nodes.round_robin_order(),
            }
        };
        let mut candidates: VecDeque<NodeUrl> = order.into();
        let mut unreachable: Vec<NodeUrl> = Vec::new();
        let mut hops = 0;
        let mut last_error = None;
        while let Some(node) = candidates.pop_front() {
            if unreachable.contains(&node) {
                continue;
            }
            let error = match self.send_once(&node, call).await {
                Ok(answer) => return Ok(answer),
                Err(error) => error,
            };
            if error.is_connect() {
                self.lock_nodes().forget_leader(&node);
                unreachable.push(node);
                last_error = Some(error);
                continue;
            }
            if !error.is_not_leader() || hops >= self.inner.options.max_leader_hops {
                return Err(error);
            }
            hops += 1;
            let hint = error.leader().and_then(|l| NodeUrl::parse(l).ok());
            match hint {
                Some(leader) if leader != node && !unreachable.contains(&leader) => {
                    self.lock_nodes().set_leader(&leader);
                    candidates.retain(|n| *n != leader);
                    candidates.push_front(leader);
                }
                // No usable hint: this node does not know the leader; another may.
                _ => self.lock_nodes().forget_leader(&node),
            }
            last_error = Some(error);
        }
        Err(last_error.unwrap_or_else(|| {
            ClientError::InvalidArgument("the client knows no node to send to".into())
        }))
    }

    /// Sends `call` to one node.
    async fn send_once(&self, node: &NodeUrl, call: &Call<'_>) -> Result<Answer> {
        let url = node.endpoint(call.segments, &call.query);
        let mut request = self
            .inner
            .http
            .request(call.method.clone(), url.clone())
            .timeout(self.inner.options.request_timeout + call.extra_timeout);
        if let Some(body) = &call.body {
            request = request
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body.clone());
        }
        if let Some(accept) = call.accept {
            request = request.header(reqwest::header::ACCEPT, accept);
        }
        let response = request.send().await?;
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .map(str::to_string);
        let body = response.bytes().await?;
        if (200..300).contains(&status) {
            return Ok(Answer {
                status,
                url,
                content_type,
                body,
            });
        }
        match serde_json::from_slice::<ErrorBody>(&body) {
            Ok(body) => Err(ClientError::Api { status, body }),
            Err(e) => Err(ClientError::Decode {
                status,
                url: url.to_string(),
                reason: format!("not the API's error shape ({e}); body: {}", quote(&body)),
            }),
        }
    }
}

impl std::fmt::Debug for BrokerClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BrokerClient")
            .field("nodes", &self.nodes())
            .field("leader", &self.leader())
            .finish_non_exhaustive()
    }
}
