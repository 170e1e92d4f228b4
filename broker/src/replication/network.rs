//! Node-to-node Raft RPC: bincode 2 bodies over HTTP POSTs to `/internal/raft/*`.
//!
//! One `reqwest` client (one keep-alive connection pool) serves every peer, so
//! connections persist across RPCs. A replication stream of more than one
//! request runs pipelined over its own upgraded connection; see
//! [`super::append_stream`]. A connect failure is reported as
//! `Unreachable` (openraft backs off); a node never builds a client to itself.
//! Snapshots stream only the CommitLog bytes the follower lacks; see
//! [`super::snapshot`].

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::future::FutureExt;
use futures::stream::{Stream, StreamExt};
use openraft::base::{BoxFuture, BoxStream};
use openraft::errors::{NetworkError, RPCError, ReplicationClosed, StreamingError, Unreachable};
use openraft::network::stream_append_sequential;
use openraft::network::{RPCOption, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, TransferLeaderRequest,
    TransferLeaderResponse, VoteRequest, VoteResponse,
};
use openraft::RaftNetworkV2;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::append_stream;
use super::snapshot::CommitLogSnapshot;
use super::state_machine::GroupShared;
use super::type_config::{NodeId, NodeInfo, Snapshot, SnapshotMeta, TypeConfig, Vote};
use crate::storage::CommitLogOffset;

use crate::auth::cluster_secret::SECRET_HEADER;
use crate::peer_protocol;
/// Bytes per snapshot chunk request.
pub const SNAPSHOT_CHUNK_BYTES: u64 = 4 << 20;

/// What a follower tells a leader before a snapshot transfer.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SnapshotOffer {
    pub commit_log_end: CommitLogOffset,
    pub commit_log_file_size_bytes: u64,
}

/// The last request of a snapshot transfer.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct InstallRequest {
    pub vote: Vote,
    pub meta: SnapshotMeta,
    pub commit_log_end: CommitLogOffset,
    #[serde(with = "serde_bytes")]
    pub state: Vec<u8>,
}

/// Builds RPC clients to peers.
#[derive(Clone)]
pub struct Network {
    self_id: NodeId,
    http: reqwest::Client,
    secret: Option<Arc<str>>,
    shared: Arc<GroupShared>,
}

impl Network {
    /// # Errors
    /// The CA file (`tls.ca_file`) is unusable or the HTTP client could not be
    /// built.
    pub fn new(
        config: &crate::config::NodeConfig,
        shared: Arc<GroupShared>,
    ) -> anyhow::Result<Self> {
        let http = crate::peer_client::builder(config)?
            .pool_max_idle_per_host(8)
            .build()?;
        Ok(Self {
            self_id: config.node_id,
            http,
            secret: config
                .cluster_secret
                .as_ref()
                .map(|secret| Arc::from(secret.expose())),
            shared,
        })
    }
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = PeerClient;

    async fn new_client(&mut self, target: NodeId, node: &NodeInfo) -> PeerClient {
        PeerClient {
            is_self: target == self.self_id,
            target,
            url: node.url.trim_end_matches('/').to_string(),
            http: self.http.clone(),
            secret: self.secret.clone(),
            shared: Arc::clone(&self.shared),
            append_stream_refused: None,
        }
    }
}

/// RPCs to one peer.
pub struct PeerClient {
    /// openraft should never ask for it, but a client to ourselves must never dial.
    is_self: bool,
    target: NodeId,
    url: String,
    http: reqwest::Client,
    secret: Option<Arc<str>>,
    shared: Arc<GroupShared>,
    /// When the peer last refused an append stream (an older version, during a
    /// rolling upgrade): until [`APPEND_STREAM_RETRY`] later, replicate in
    /// lockstep on pooled connections instead.
    append_stream_refused: Option<std::time::Instant>,
}

/// How long a peer that refused an append stream is replicated to in lockstep
/// before the next try.
const APPEND_STREAM_RETRY: Duration = Duration::from_secs(60);

/// Why an RPC failed, before mapping to openraft's error types.
#[derive(Debug, thiserror::Error)]
pub(super) enum CallError {
    #[error("cannot reach {0}")]
    Unreachable(String),
    /// The peer runs a version without append streams.
    #[error("the peer serves no append stream")]
    NoAppendStream,
    #[error("{0}")]
    Network(String),
}

impl CallError {
    pub(super) fn into_rpc(self) -> RPCError<TypeConfig> {
        match self {
            Self::Unreachable(_) => RPCError::Unreachable(Unreachable::new(&self)),
            Self::Network(_) | Self::NoAppendStream => RPCError::Network(NetworkError::new(&self)),
        }
    }

    fn into_streaming(self) -> StreamingError<TypeConfig> {
        match self {
            Self::Unreachable(_) => StreamingError::Unreachable(Unreachable::new(&self)),
            Self::Network(_) | Self::NoAppendStream => {
                StreamingError::Network(NetworkError::new(&self))
            }
        }
    }
}

fn classify(url: &str, e: &reqwest::Error) -> CallError {
    if e.is_connect() || e.is_timeout() {
        CallError::Unreachable(format!("{url}: {e}"))
    } else {
        CallError::Network(format!("{url}: {e}"))
    }
}

impl PeerClient {
    fn request(
        &self,
        method: reqwest::Method,
        path: &str,
        timeout: Duration,
    ) -> Result<reqwest::RequestBuilder, CallError> {
        if self.is_self {
            return Err(CallError::Unreachable(format!(
                "refusing to send an RPC to this node itself ({})",
                self.target
            )));
        }
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.url))
            .timeout(timeout);
        if let Some(secret) = &self.secret {
            request = request.header(SECRET_HEADER, secret.as_ref());
        }
        Ok(request.header(peer_protocol::HEADER, peer_protocol::VERSION))
    }

    /// Notes the protocol version the peer answered with (see `peer_protocol`):
    /// the leader proposes what is new in a version only once every voter speaks
    /// it.
    fn note_version(&self, response: &reqwest::Response) {
        if let Ok(version) = peer_protocol::of_answer(response.headers()) {
            self.shared.peer_versions.record(self.target, version);
        }
    }

    /// POSTs a bincode body and decodes a bincode `Result<Resp, String>` answer.
    async fn call<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        path: &str,
        body: &Req,
        timeout: Duration,
    ) -> Result<Resp, CallError> {
        let body = bincode::serde::encode_to_vec(body, bincode::config::standard())
            .map_err(|e| CallError::Network(format!("encoding a request: {e}")))?;
        let response = self
            .request(reqwest::Method::POST, path, timeout)?
            .header("content-type", "application/octet-stream")
            .body(body)
            .send()
            .await
            .map_err(|e| classify(&self.url, &e))?;
        self.note_version(&response);
        decode_answer(&self.url, response).await
    }

    /// Opens an append stream: an HTTP/1.1 upgrade to [`append_stream::PROTOCOL`].
    async fn open_append_stream(&self, timeout: Duration) -> Result<reqwest::Upgraded, CallError> {
        let response = self
            .request(reqwest::Method::GET, append_stream::PATH, timeout)?
            .header(reqwest::header::CONNECTION, "upgrade")
            .header(reqwest::header::UPGRADE, append_stream::PROTOCOL)
            .send()
            .await
            .map_err(|e| classify(&self.url, &e))?;
        self.note_version(&response);
        if matches!(
            response.status(),
            reqwest::StatusCode::NOT_FOUND | reqwest::StatusCode::METHOD_NOT_ALLOWED
        ) {
            return Err(CallError::NoAppendStream);
        }
        if response.status() != reqwest::StatusCode::SWITCHING_PROTOCOLS {
            let status = response.status();
            let body = response.bytes().await.unwrap_or_default();
            return Err(CallError::Network(format!(
                "{} answered an append stream with {status}: {}",
                self.url,
                String::from_utf8_lossy(&body)
            )));
        }
        response
            .upgrade()
            .await
            .map_err(|e| classify(&self.url, &e))
    }

    async fn send_snapshot(
        &self,
        vote: Vote,
        snapshot: Snapshot,
        option: &RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, CallError> {
        let store = &self.shared.store;
        let timeout = option.hard_ttl().max(Duration::from_secs(10));
        let offer: SnapshotOffer = decode_answer(
            &self.url,
            self.request(
                reqwest::Method::GET,
                "/internal/raft/snapshot/offer",
                timeout,
            )?
            .send()
            .await
            .map_err(|e| classify(&self.url, &e))?,
        )
        .await?;
        let file_size = store.config().commit_log_file_size_bytes;
        if offer.commit_log_file_size_bytes != file_size {
            return Err(CallError::Network(format!(
                "node {} uses {}-byte commit log files, this node {file_size}: replicas must match",
                self.target, offer.commit_log_file_size_bytes
            )));
        }
        let end = snapshot.snapshot.commit_log_end;
        let min = store.min_commit_log_offset();
        // Stream what the follower lacks; if it ends below our minimum (retention
        // deleted what it needs), it restarts its log at our first file.
        let (start, reset) = if offer.commit_log_end < min {
            (min, true)
        } else {
            (offer.commit_log_end.min(end), false)
        };
        let mut position = start;
        let mut first = true;
        while first || position < end {
            let chunk = if position < end {
                store
                    .read_commit_log_raw(position, SNAPSHOT_CHUNK_BYTES.min(end.0 - position.0))
                    .map_err(|e| {
                        CallError::Network(format!("reading the commit log at {position}: {e}"))
                    })?
            } else {
                Vec::new()
            };
            let path = format!(
                "/internal/raft/snapshot/chunk?start={}&from={}&reset={}&first={}",
                start.0, position.0, reset, first
            );
            let len = chunk.len() as u64;
            let response = self
                .request(reqwest::Method::POST, &path, timeout)?
                .header("content-type", "application/octet-stream")
                .body(chunk)
                .send()
                .await
                .map_err(|e| classify(&self.url, &e))?;
            let () = decode_answer(&self.url, response).await?;
            position = position.advance(len);
            first = false;
            if len == 0 && position < end {
                return Err(CallError::Network(format!(
                    "commit log returned no bytes at {position} below {end}"
                )));
            }
        }
        let install = InstallRequest {
            vote,
            meta: snapshot.meta,
            commit_log_end: end,
            state: snapshot.snapshot.state.as_ref().clone(),
        };
        self.call("/internal/raft/snapshot/install", &install, timeout)
            .await
    }
}

/// Decodes an internal answer: 200 with a bincode `Result<T, String>`, or an error
/// status whose body explains it.
async fn decode_answer<T: DeserializeOwned>(
    url: &str,
    response: reqwest::Response,
) -> Result<T, CallError> {
    let status = response.status();
    let bytes = response.bytes().await.map_err(|e| classify(url, &e))?;
    if !status.is_success() {
        return Err(CallError::Network(format!(
            "{url} answered {status}: {}",
            String::from_utf8_lossy(&bytes)
        )));
    }
    let (answer, _): (Result<T, String>, usize) =
        bincode::serde::decode_from_slice(&bytes, bincode::config::standard())
            .map_err(|e| CallError::Network(format!("{url}: undecodable answer: {e}")))?;
    answer.map_err(|e| CallError::Network(format!("{url}: {e}")))
}

impl RaftNetworkV2<TypeConfig> for PeerClient {
    type SnapshotData = CommitLogSnapshot;

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.call("/internal/raft/append", &rpc, option.hard_ttl())
            .await
            .map_err(CallError::into_rpc)
    }

    /// A stream that ends after one request (a heartbeat, a probe) goes as a
    /// unary append on a pooled connection; anything longer is pipelined on an
    /// append stream of its own, or sent in lockstep (openraft's default) to a
    /// peer that serves none.
    fn stream_append<'s, S>(
        &'s mut self,
        mut input: S,
        option: RPCOption,
    ) -> BoxFuture<'s, Result<BoxStream<'s, append_stream::Reply>, RPCError<TypeConfig>>>
    where
        S: Stream<Item = AppendEntriesRequest<TypeConfig>> + Send + Unpin + 'static,
    {
        Box::pin(async move {
            let Some(first) = input.next().await else {
                return Ok(futures::stream::empty().boxed());
            };
            // Requests already taken from `input`, in order.
            let mut taken = vec![first];
            match input.next().now_or_never() {
                Some(None) => {
                    let lone = futures::stream::iter(taken);
                    return stream_append_sequential(self, lone, option).await;
                }
                Some(Some(second)) => taken.push(second),
                None => {}
            }
            let refused_lately = self
                .append_stream_refused
                .is_some_and(|at| at.elapsed() < APPEND_STREAM_RETRY);
            if !refused_lately {
                match self.open_append_stream(option.hard_ttl()).await {
                    Ok(io) => {
                        self.append_stream_refused = None;
                        return Ok(append_stream::pipeline(io, taken, input, option.hard_ttl()));
                    }
                    Err(CallError::NoAppendStream) => {
                        tracing::warn!(
                            "node {} serves no append stream (an older version?): replicating to it in lockstep",
                            self.target
                        );
                        self.append_stream_refused = Some(std::time::Instant::now());
                    }
                    Err(e) => return Err(e.into_rpc()),
                }
            }
            let all = futures::stream::iter(taken).chain(input);
            stream_append_sequential(self, all, option).await
        })
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.call("/internal/raft/vote", &rpc, option.hard_ttl())
            .await
            .map_err(CallError::into_rpc)
    }

    async fn pre_vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.call("/internal/raft/pre-vote", &rpc, option.hard_ttl())
            .await
            .map_err(CallError::into_rpc)
    }

    async fn transfer_leader(
        &mut self,
        req: TransferLeaderRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<TransferLeaderResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.call("/internal/raft/transfer-leader", &req, option.hard_ttl())
            .await
            .map_err(CallError::into_rpc)
    }

    async fn full_snapshot(
        &mut self,
        vote: Vote,
        snapshot: Snapshot,
        cancel: impl Future<Output = ReplicationClosed> + openraft::OptionalSend + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        tokio::select! {
            closed = cancel => Err(StreamingError::Closed(closed)),
            result = self.send_snapshot(vote, snapshot, &option) => result.map_err(CallError::into_streaming),
        }
    }
}
