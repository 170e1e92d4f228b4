//! [`ScopedApi`]: the requests `mqctl` needs that the client library does not make —
//! those naming a broker group (`?group=` on pulls, queues, offsets by time and
//! sends; `?broker_group=` on offset commits) and the membership endpoints.
//!
//! Node choice is deliberately simpler than [`broker_client::BrokerClient`]'s: every
//! node answers every endpoint (forwarding where needed), so the servers are tried
//! in the order given, moving on only when one cannot be reached, and a
//! `NOT_LEADER` naming a leader is followed a few times. Errors are the library's
//! [`ClientError`], so they print and classify the same way.

use std::time::Duration;

use reqwest::Method;
use serde::de::DeserializeOwned;
use serde::Serialize;

use broker_client::endpoint::NodeUrl;
use broker_client::{http_builder, ClientError, ClientOptions, PullOptions};
use broker_proto::api::{
    AddNodeRequest, CommitOffsetRequest, CommitOffsetResponse, ErrorBody, GroupView, JoinView,
    OffsetResponse, PullResponse, QueuesResponse, SendRequest, SendResponse,
};

/// `NOT_LEADER` redirects followed per request.
const MAX_LEADER_HOPS: usize = 3;
/// Longest piece of an undecodable body quoted in an error.
const QUOTED_BODY_CHARS: usize = 200;

/// Requests scoped to a broker group, and membership changes.
#[derive(Clone, Debug)]
pub struct ScopedApi {
    http: reqwest::Client,
    servers: Vec<NodeUrl>,
    timeout: Duration,
}

/// One request: path segments (each percent-encoded), query pairs, JSON body.
struct Request<'a> {
    method: Method,
    segments: &'a [&'a str],
    query: Vec<(&'a str, String)>,
    body: Option<Vec<u8>>,
    /// Added to the request timeout (a long poll's wait).
    extra_timeout: Duration,
}

impl<'a> Request<'a> {
    fn get(segments: &'a [&'a str]) -> Self {
        Self {
            method: Method::GET,
            segments,
            query: Vec::new(),
            body: None,
            extra_timeout: Duration::ZERO,
        }
    }

    fn with_body(
        method: Method,
        segments: &'a [&'a str],
        body: &impl Serialize,
    ) -> Result<Self, ClientError> {
        let body = serde_json::to_vec(body)
            .map_err(|e| ClientError::InvalidArgument(format!("cannot encode the body: {e}")))?;
        Ok(Self {
            body: Some(body),
            method,
            ..Self::get(segments)
        })
    }

    fn param(mut self, name: &'a str, value: Option<impl ToString>) -> Self {
        if let Some(value) = value {
            self.query.push((name, value.to_string()));
        }
        self
    }
}

impl ScopedApi {
    /// A client of the nodes at `servers` with `options`' request timeout, token
    /// and CA file.
    ///
    /// # Errors
    /// [`ClientError::InvalidUrl`] for a server that is not an `http(s)://` base URL,
    /// [`ClientError::InvalidArgument`] without servers, with a token a header
    /// cannot hold or an unreadable CA file.
    pub fn new(servers: &[String], options: &ClientOptions) -> Result<Self, ClientError> {
        let timeout = options.request_timeout;
        if servers.is_empty() {
            return Err(ClientError::InvalidArgument(
                "at least one server URL is required".into(),
            ));
        }
        let servers = servers
            .iter()
            .map(|url| NodeUrl::parse(url))
            .collect::<Result<Vec<_>, _>>()?;
        let http = http_builder(options)?
            .connect_timeout(Duration::from_secs(2).min(timeout))
            .user_agent(concat!("mqctl/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Self {
            http,
            servers,
            timeout,
        })
    }

    /// `GET /v1/topics/{topic}/queues/{queue_id}/messages`, in `group` if named.
    ///
    /// # Errors
    /// `TOPIC_NOT_FOUND`, `BAD_REQUEST` (e.g. several groups serve the topic and none
    /// is named), transport failures.
    pub async fn pull(
        &self,
        topic: &str,
        queue_id: u32,
        offset: u64,
        options: &PullOptions,
        group: Option<&str>,
    ) -> Result<PullResponse, ClientError> {
        let queue = queue_id.to_string();
        let segments = ["v1", "topics", topic, "queues", &queue, "messages"];
        let mut request = Request::get(&segments)
            .param("offset", Some(offset))
            .param("max_messages", Some(options.max_messages))
            .param("max_wait_ms", Some(options.max_wait_ms))
            .param("tags", options.tags.as_deref())
            .param("group", group);
        request.extra_timeout = Duration::from_millis(options.max_wait_ms);
        self.call(&request).await
    }

    /// `GET /v1/topics/{topic}/queues`: every group's queues, or `group`'s.
    ///
    /// # Errors
    /// `TOPIC_NOT_FOUND`, transport failures.
    pub async fn queues(
        &self,
        topic: &str,
        group: Option<&str>,
    ) -> Result<QueuesResponse, ClientError> {
        let segments = ["v1", "topics", topic, "queues"];
        self.call(&Request::get(&segments).param("group", group))
            .await
    }

    /// `GET /v1/topics/{topic}/queues/{queue_id}/offset?timestamp=MS`: the first
    /// offset stored at or after `timestamp_ms`.
    ///
    /// # Errors
    /// `TOPIC_NOT_FOUND`, `BAD_REQUEST`, transport failures.
    pub async fn offset_by_timestamp(
        &self,
        topic: &str,
        queue_id: u32,
        timestamp_ms: u64,
        group: Option<&str>,
    ) -> Result<u64, ClientError> {
        let queue = queue_id.to_string();
        let segments = ["v1", "topics", topic, "queues", &queue, "offset"];
        let request = Request::get(&segments)
            .param("timestamp", Some(timestamp_ms))
            .param("group", group);
        let answer: OffsetResponse = self.call(&request).await?;
        Ok(answer.offset)
    }

    /// `PUT /v1/groups/{group}/offsets/{topic}/{queue_id}?broker_group=G`.
    ///
    /// # Errors
    /// `BAD_REQUEST` (offset beyond the queue's end, bad name), `TOPIC_NOT_FOUND`,
    /// transport failures.
    pub async fn commit_offset(
        &self,
        consumer_group: &str,
        topic: &str,
        queue_id: u32,
        commit: &CommitOffsetRequest,
        broker_group: Option<&str>,
    ) -> Result<CommitOffsetResponse, ClientError> {
        let queue = queue_id.to_string();
        let segments = ["v1", "groups", consumer_group, "offsets", topic, &queue];
        let request =
            Request::with_body(Method::PUT, &segments, commit)?.param("broker_group", broker_group);
        self.call(&request).await
    }

    /// `POST /v1/groups/{group}/retry?broker_group=G`: gives a message back.
    ///
    /// # Errors
    /// `MESSAGE_NOT_FOUND`, `TOPIC_NOT_FOUND`, `BAD_REQUEST`, transport failures.
    pub async fn give_back(
        &self,
        consumer_group: &str,
        retry: &broker_proto::api::RetryRequest,
        broker_group: Option<&str>,
    ) -> Result<broker_proto::api::RetryResponse, ClientError> {
        let segments = ["v1", "groups", consumer_group, "retry"];
        let request =
            Request::with_body(Method::POST, &segments, retry)?.param("broker_group", broker_group);
        self.call(&request).await
    }

    /// `POST /v1/topics/{topic}/messages?group=G`: one batch to a named group. The
    /// caller stamps `producer_id` + `sequence` so that resending is safe.
    ///
    /// # Errors
    /// As [`broker_client::BrokerClient::send`].
    pub async fn send(
        &self,
        topic: &str,
        batch: &SendRequest,
        group: &str,
    ) -> Result<SendResponse, ClientError> {
        let segments = ["v1", "topics", topic, "messages"];
        let request =
            Request::with_body(Method::POST, &segments, batch)?.param("group", Some(group));
        self.call(&request).await
    }

    /// `POST /v1/cluster/groups/{group}/nodes`: starts the join (or finds the one
    /// running) and answers it; follow it with [`ScopedApi::join`].
    ///
    /// # Errors
    /// `BROKER_GROUP_NOT_FOUND` (unknown group), `BAD_REQUEST` (bad address, id in use), `UNAVAILABLE` (too
    /// many joins running), transport failures.
    pub async fn add_node(
        &self,
        group: &str,
        node_id: u64,
        address: &str,
    ) -> Result<JoinView, ClientError> {
        let segments = ["v1", "cluster", "groups", group, "nodes"];
        let body = AddNodeRequest {
            node_id,
            address: address.to_string(),
        };
        self.call(&Request::with_body(Method::POST, &segments, &body)?)
            .await
    }

    /// `GET /v1/cluster/groups/{group}/nodes/{node_id}`: the node's join.
    ///
    /// # Errors
    /// `NOT_FOUND` (neither joining nor a member), transport failures.
    pub async fn join(&self, group: &str, node_id: u64) -> Result<JoinView, ClientError> {
        let id = node_id.to_string();
        let segments = ["v1", "cluster", "groups", group, "nodes", &id];
        self.call(&Request::get(&segments)).await
    }

    /// `DELETE /v1/cluster/groups/{group}/nodes/{node_id}`.
    ///
    /// # Errors
    /// `BROKER_GROUP_NOT_FOUND` (unknown group), `BAD_REQUEST` (unknown node), transport failures.
    pub async fn remove_node(&self, group: &str, node_id: u64) -> Result<GroupView, ClientError> {
        let id = node_id.to_string();
        let segments = ["v1", "cluster", "groups", group, "nodes", &id];
        let mut request = Request::get(&segments);
        request.method = Method::DELETE;
        self.call(&request).await
    }

    /// `POST /v1/cluster/groups/{group}/transfer-leader` `{"to": N}`.
    ///
    /// # Errors
    /// `BAD_REQUEST` (not a voter), `UNAVAILABLE` (did not happen in time),
    /// transport failures.
    pub async fn transfer_leader(&self, group: &str, to: u64) -> Result<GroupView, ClientError> {
        let segments = ["v1", "cluster", "groups", group, "transfer-leader"];
        let body = serde_json::json!({ "to": to });
        self.call(&Request::with_body(Method::POST, &segments, &body)?)
            .await
    }

    /// Sends `request` to the first reachable server, following `NOT_LEADER` hints.
    async fn call<T: DeserializeOwned>(&self, request: &Request<'_>) -> Result<T, ClientError> {
        let mut candidates: Vec<NodeUrl> = self.servers.iter().rev().cloned().collect();
        let mut hops = 0;
        let mut last_error = None;
        while let Some(node) = candidates.pop() {
            match self.send_once(&node, request).await {
                Ok(answer) => return Ok(answer),
                // Never sent: the next server is as good.
                Err(e) if e.is_connect() => last_error = Some(e),
                Err(e) if e.is_not_leader() && hops < MAX_LEADER_HOPS => {
                    hops += 1;
                    match e.leader().map(NodeUrl::parse) {
                        Some(Ok(leader)) if leader != node => candidates.push(leader),
                        _ => {}
                    }
                    last_error = Some(e);
                }
                Err(e) => return Err(e),
            }
        }
        Err(last_error
            .unwrap_or_else(|| ClientError::InvalidArgument("no server to send to".into())))
    }

    async fn send_once<T: DeserializeOwned>(
        &self,
        node: &NodeUrl,
        request: &Request<'_>,
    ) -> Result<T, ClientError> {
        let url = node.endpoint(request.segments, &request.query);
        let mut builder = self
            .http
            .request(request.method.clone(), url.clone())
            .timeout(self.timeout + request.extra_timeout);
        if let Some(body) = &request.body {
            builder = builder
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body.clone());
        }
        let response = builder.send().await?;
        let status = response.status().as_u16();
        let body = response.bytes().await?;
        let quoted = || {
            String::from_utf8_lossy(&body)
                .chars()
                .take(QUOTED_BODY_CHARS)
                .collect::<String>()
        };
        if (200..300).contains(&status) {
            return serde_json::from_slice(&body).map_err(|e| ClientError::Decode {
                status,
                url: url.to_string(),
                reason: format!("{e}; body: {}", quoted()),
            });
        }
        match serde_json::from_slice::<ErrorBody>(&body) {
            Ok(body) => Err(ClientError::Api { status, body }),
            Err(e) => Err(ClientError::Decode {
                status,
                url: url.to_string(),
                reason: format!("not the API's error shape ({e}); body: {}", quoted()),
            }),
        }
    }
}
