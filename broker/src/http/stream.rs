//! Streaming pull (shared/API.md "Streaming pull"): `GET
//! /v1/topics/{topic}/queues/{queue_id}/stream` answers a queue as server-sent
//! events, one per message — `id:` its queue offset, `event: message`, `data:` the
//! message as a pull answers it — for as long as the client stays.
//!
//! The stream is a loop of long-polling pulls ([`crate::service::pull`]) from the
//! offset the last one reached, so it reads like a pull everywhere: any replica
//! serves it from what it applied, and a client resumes on any node with the
//! `Last-Event-ID` its connection last saw (it wins over `?offset=`).
//!
//! # Before the first event
//! The start offset, the tag filter, the topic (it exists, is readable) and the
//! queue are checked by a first pull that is not held, before the answer's head is
//! sent: a bad request is answered with the API's JSON error, never as an event.
//!
//! # Bounds
//! * Each pull reads at most [`BATCH_MESSAGES`] and is held at most
//!   [`KEEP_ALIVE_INTERVAL`]; an idle stream sends the comment `: keep-alive` every
//!   [`KEEP_ALIVE_INTERVAL`] (axum's [`KeepAlive`] counts from the last event).
//! * A stream holds one of the node's held polls (`http.max_held_polls`) while it
//!   waits. Past the cap a pull answers at once with nothing; so does a replica
//!   that has not applied the resumed offset yet. The loop then waits
//!   [`RETRY_PAUSE`] before reading again: it never spins.
//! * The stream ends when its topic is deleted or stops being readable, its queue
//!   is gone, the store cannot be read, or this node's Raft stopped (it applies
//!   nothing more: the client resumes elsewhere). A client that goes away drops
//!   the stream, and with it the held pull.
//!
//! # Offsets
//! Below the queue's retained minimum the stream goes on from the minimum (the
//! pull's `next_offset`). Beyond the end of what this replica applied it stays at
//! its offset and waits: the client may have read that far on a replica ahead of
//! this one, and jumping back would repeat events.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, HeaderName};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::{Stream, StreamExt};
use serde::Deserialize;
use tracing::Instrument;

use super::data_plane::{message_view, DEFAULT_PULL_MESSAGES};
use super::error::ApiError;
use super::extract::{ApiPath, ApiQuery, WriteRequest};
use super::forward;
use super::groups::GroupParam;
use crate::api::MAX_FILTER_TAGS;
use crate::error::BrokerError;
use crate::service::node::Node;
use crate::service::pull::Pull;
use crate::service::routing::{self, Choice, Target};
use crate::storage::{PullResult, PullStatus, QueueId, QueueOffset, TagFilter};

/// How long an idle stream goes without sending anything: the keep-alive comment's
/// interval, and the longest each of its pulls is held (API: every 15 s).
pub const KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(15);
/// Messages one pull of the stream reads (a pull's default batch).
pub const BATCH_MESSAGES: usize = DEFAULT_PULL_MESSAGES;
/// The pause after a pull that answered nothing without being held (the node's
/// held polls are at their cap, or this replica is behind the offset): at most
/// five such reads a second per stream.
pub const RETRY_PAUSE: Duration = Duration::from_millis(200);

/// The request header a reconnecting client names the last event it saw with.
pub const LAST_EVENT_ID: HeaderName = HeaderName::from_static("last-event-id");

#[derive(Deserialize)]
pub struct StreamQuery {
    offset: Option<u64>,
    tags: Option<String>,
}

/// One server-sent event; an error (a message that does not serialize, which
/// `serde_json` never does for a `MessageView`) ends the body.
type EventItem = Result<Event, axum::Error>;

/// `GET /v1/topics/{topic}/queues/{queue_id}/stream`
pub async fn pull_stream(
    State(node): State<Arc<Node>>,
    ApiPath((topic, queue_id)): ApiPath<(String, u32)>,
    ApiQuery(query): ApiQuery<StreamQuery>,
    ApiQuery(param): ApiQuery<GroupParam>,
    request: WriteRequest,
) -> Response {
    match routing::resolve(&node, &topic, param.group.as_deref(), Choice::Unique) {
        Ok(Target::Local) => open(node, topic, queue_id, query, &request.headers)
            .await
            .map_or_else(IntoResponse::into_response, IntoResponse::into_response),
        Ok(Target::Forward(route)) => {
            forward::stream_to_group(&node, request, &route, "group").await
        }
        Err(e) => e.into_response(),
    }
}

/// Checks the request with a first pull (not held) and answers the stream that
/// starts with what it found.
async fn open(
    node: Arc<Node>,
    topic: String,
    queue_id: u32,
    query: StreamQuery,
    headers: &HeaderMap,
) -> Result<Sse<impl Stream<Item = EventItem>>, ApiError> {
    let offset = start_offset(query.offset, headers)?;
    let tags = query.tags.as_deref().unwrap_or("*");
    if tags.split("||").count() > MAX_FILTER_TAGS {
        return Err(ApiError::bad_request(format!(
            "tags names at most {MAX_FILTER_TAGS} tags (a protocol limit)"
        )));
    }
    let mut cursor = Cursor {
        node,
        topic,
        queue: QueueId(queue_id),
        offset,
        filter: TagFilter::parse(tags).map_err(ApiError::bad_request)?,
    };
    let first = cursor.pull(Duration::ZERO).await?;
    let first = cursor.advance(first);
    // The stream runs after the handler returned: keep the request's span on it.
    let span = tracing::Span::current();
    let rest = futures::stream::unfold(cursor, move |mut cursor| {
        async move {
            let events = cursor.next_events().await?;
            Some((events, cursor))
        }
        .instrument(span.clone())
    });
    let events = futures::stream::once(async { first })
        .chain(rest)
        .flat_map(futures::stream::iter);
    Ok(Sse::new(events).keep_alive(
        KeepAlive::new()
            .interval(KEEP_ALIVE_INTERVAL)
            .text("keep-alive"),
    ))
}

/// Where the stream starts: after `Last-Event-ID` when the request carries one,
/// else at `?offset=`.
///
/// # Errors
/// BAD_REQUEST for a `Last-Event-ID` that is not a queue offset (or is the last
/// one there can be), or for neither of the two.
fn start_offset(offset: Option<u64>, headers: &HeaderMap) -> Result<QueueOffset, ApiError> {
    let Some(last) = headers.get(LAST_EVENT_ID) else {
        return offset.map(QueueOffset).ok_or_else(|| {
            ApiError::bad_request("offset is required (or a Last-Event-ID header to resume after)")
        });
    };
    let last = last
        .to_str()
        .ok()
        .and_then(|text| text.parse::<u64>().ok())
        .ok_or_else(|| {
            let shown: String = String::from_utf8_lossy(last.as_bytes())
                .chars()
                .take(64)
                .collect();
            ApiError::bad_request(format!(
                "Last-Event-ID must be a queue offset (an unsigned integer), not `{shown}`"
            ))
        })?;
    last.checked_add(1)
        .map(QueueOffset)
        .ok_or_else(|| ApiError::bad_request("no queue offset follows Last-Event-ID"))
}

/// A stream's position in its queue.
struct Cursor {
    node: Arc<Node>,
    topic: String,
    queue: QueueId,
    offset: QueueOffset,
    filter: TagFilter,
}

impl Cursor {
    async fn pull(&self, max_wait: Duration) -> Result<PullResult, BrokerError> {
        crate::service::pull::pull(
            &self.node,
            Pull {
                topic: self.topic.clone(),
                queue: self.queue,
                offset: self.offset,
                max_messages: BATCH_MESSAGES,
                max_wait,
                filter: self.filter.clone(),
            },
        )
        .await
    }

    /// The events of the next pull that finds messages; `None` when the stream
    /// ends (see the module's bounds).
    async fn next_events(&mut self) -> Option<Vec<EventItem>> {
        loop {
            let started = tokio::time::Instant::now();
            let result = match self.pull(KEEP_ALIVE_INTERVAL).await {
                Ok(result) => result,
                Err(e) => {
                    tracing::debug!(topic = %self.topic, queue = self.queue.0, error = %e, "stream ends");
                    return None;
                }
            };
            if self.raft_stopped() {
                tracing::debug!(topic = %self.topic, queue = self.queue.0, "Raft stopped: stream ends");
                return None;
            }
            if self.node.drain.is_draining() && result.messages.is_empty() {
                // Its client reconnects to another node with Last-Event-ID.
                tracing::debug!(topic = %self.topic, queue = self.queue.0, "node draining: stream ends");
                return None;
            }
            let before = self.offset;
            let events = self.advance(result);
            if !events.is_empty() {
                return Some(events);
            }
            if self.offset == before && started.elapsed() < KEEP_ALIVE_INTERVAL {
                // Answered empty without being held: do not spin.
                tokio::time::sleep(RETRY_PAUSE).await;
            }
        }
    }

    /// Moves past what `result` read and answers its messages as events.
    fn advance(&mut self, result: PullResult) -> Vec<EventItem> {
        // Beyond what this replica applied the pull answers its end; stay where
        // the client is (see "Offsets" above).
        if result.status != PullStatus::OffsetOverflow {
            self.offset = result.next_offset;
        }
        result
            .messages
            .into_iter()
            .map(|message| {
                Event::default()
                    .id(message.queue_offset.0.to_string())
                    .event("message")
                    .json_data(message_view(message))
            })
            .collect()
    }

    fn raft_stopped(&self) -> bool {
        use openraft::type_config::async_runtime::WatchReceiver;
        self.node.raft.metrics().borrow_watched().state == openraft::ServerState::Shutdown
    }
}
