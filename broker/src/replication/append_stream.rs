//! Pipelined AppendEntries: one long-lived connection per replication stream.
//!
//! openraft's default `stream_append` sends one AppendEntries request, waits for
//! its answer, and only then sends the next, so entries that reach the leader
//! while a follower is fsyncing wait a whole round before they leave. Here the
//! leader writes each request as soon as openraft produces it and reads the
//! answers as they come; the follower feeds the requests to
//! `Raft::stream_append`, which appends them in order without waiting for the
//! previous flush, and answers each once it is durable.
//!
//! # Wire format
//! The leader sends `GET` [`PATH`] with `Connection: upgrade` and
//! `Upgrade:` [`PROTOCOL`] (plus the cluster secret); the follower answers
//! `101 Switching Protocols` and both sides then write frames on the raw
//! connection. A frame is a `u32` little-endian length followed by that many
//! bytes of bincode 2 (standard configuration), at most [`MAX_FRAME_BYTES`].
//! A reader allocates a frame's buffer as its bytes arrive (at most about twice
//! what has arrived), never from the length alone: four bytes claiming 64 MiB
//! cost nothing until 64 MiB come.
//! * Leader → follower: `AppendEntriesRequest`s in log order. The leader closes
//!   its write half when openraft's request stream ends.
//! * Follower → leader: one `Result<StreamAppendResult, String>` per request, in
//!   request order. `Err` is a fatal error of the follower's Raft. The follower
//!   closes the connection after its last answer, after a `Conflict` or
//!   `HigherVote` (openraft ends the stream there), and on an undecodable frame.
//!
//! The follower must keep answering: the oldest unanswered request within the
//! RPC timeout of its sending or of the previous answer. A late answer, a closed
//! connection or a broken frame ends the stream with an error, and openraft
//! opens a new one.

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::stream::{BoxStream, Stream, StreamExt};
use openraft::errors::RPCError;
use openraft::raft::{AppendEntriesRequest, StreamAppendResult};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use super::network::CallError;
use super::type_config::{Raft, TypeConfig};
use crate::metrics::Metrics;

/// The internal endpoint that upgrades to an append stream.
pub const PATH: &str = "/internal/raft/append-stream";
/// The `Upgrade` token; the version changes with the frame format.
pub const PROTOCOL: &str = "broker-raft-append/1";
/// The largest frame either side accepts (the same bound as an internal HTTP body).
pub const MAX_FRAME_BYTES: usize = 64 << 20;

type Request = AppendEntriesRequest<TypeConfig>;
/// What the follower writes per request: openraft's answer, or its fatal error.
type Answer = Result<StreamAppendResult<TypeConfig>, String>;
/// What the leader's side yields to openraft.
pub type Reply = Result<StreamAppendResult<TypeConfig>, RPCError<TypeConfig>>;

/// Encodes `value` as one frame: length prefix and body in one buffer, so each
/// frame is one write.
fn encode_frame<T: Serialize>(value: &T) -> io::Result<Vec<u8>> {
    let mut frame = vec![0u8; 4];
    bincode::serde::encode_into_std_write(value, &mut frame, bincode::config::standard())
        .map_err(|e| io::Error::other(format!("encoding a frame: {e}")))?;
    let len = frame.len() - 4;
    if len > MAX_FRAME_BYTES {
        return Err(io::Error::other(format!(
            "a {len}-byte frame exceeds the {MAX_FRAME_BYTES}-byte limit"
        )));
    }
    let len = u32::try_from(len).map_err(io::Error::other)?;
    frame[..4].copy_from_slice(&len.to_le_bytes());
    Ok(frame)
}

/// Reads one frame and decodes it; `Ok(None)` at a clean end of stream (EOF
/// where a frame would start).
async fn read_frame<T: DeserializeOwned>(
    reader: &mut (impl AsyncRead + Unpin),
) -> io::Result<Option<T>> {
    read_frame_into(reader, &mut Vec::new()).await
}

/// [`read_frame`] into a buffer the caller keeps between frames: a stream of
/// large frames (a follower's append requests) grows it once, not once a frame.
/// A buffer grown past [`KEPT_BUFFER_BYTES`] is let go after its frame.
async fn read_frame_into<T: DeserializeOwned>(
    reader: &mut (impl AsyncRead + Unpin),
    body: &mut Vec<u8>,
) -> io::Result<Option<T>> {
    let decoded = read_frame_decoded(reader, body).await;
    if body.capacity() > KEPT_BUFFER_BYTES {
        *body = Vec::new();
    }
    decoded
}

async fn read_frame_decoded<T: DeserializeOwned>(
    reader: &mut (impl AsyncRead + Unpin),
    body: &mut Vec<u8>,
) -> io::Result<Option<T>> {
    if !read_frame_bytes(reader, body).await? {
        return Ok(None);
    }
    let len = body.len();
    let (value, used) = bincode::serde::decode_from_slice(body, bincode::config::standard())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("bad frame: {e}")))?;
    if used != len {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("bad frame: {} trailing bytes", len - used),
        ));
    }
    Ok(Some(value))
}

/// Reads one frame's body into `body` (replacing its contents); `Ok(false)` at a
/// clean end of stream (EOF where a frame would start).
async fn read_frame_bytes(
    reader: &mut (impl AsyncRead + Unpin),
    body: &mut Vec<u8>,
) -> io::Result<bool> {
    let mut len = [0u8; 4];
    match reader.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(false),
        Err(e) => return Err(e),
    }
    let len = u32::from_le_bytes(len) as usize;
    if len > MAX_FRAME_BYTES {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("a {len}-byte frame exceeds the {MAX_FRAME_BYTES}-byte limit"),
        ));
    }
    // Allocate as the bytes arrive, not from the 4-byte claim: a peer that
    // announces 64 MiB and sends nothing gets a small first chunk, and the buffer
    // then at most doubles what has arrived (read_to_end's growth).
    body.clear();
    body.reserve_exact(len.min(FIRST_CHUNK_BYTES));
    let read = (&mut *reader).take(len as u64).read_to_end(body).await?;
    if read != len {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("the stream ended {read} bytes into a {len}-byte frame"),
        ));
    }
    Ok(true)
}

/// What a frame's buffer starts with before its bytes arrive.
const FIRST_CHUNK_BYTES: usize = 64 << 10;
/// The largest buffer a connection keeps between frames.
const KEPT_BUFFER_BYTES: usize = 16 << 20;

/// The follower's side: feeds the connection's requests to Raft and writes
/// back each answer in order. Returns when either side is done.
pub async fn serve(
    raft: Raft,
    metrics: Arc<Metrics>,
    io: impl AsyncRead + AsyncWrite + Send + 'static,
) {
    Metrics::add(&metrics.append_streams_total, 1);
    let (reader, mut writer) = tokio::io::split(io);
    // Requests read minus answers written: above zero when a request arrives,
    // that request overlaps an earlier one's round.
    let unanswered = Arc::new(AtomicU64::new(0));
    let requests = futures::stream::unfold(
        (
            reader,
            Vec::new(),
            Arc::clone(&unanswered),
            Arc::clone(&metrics),
        ),
        |(mut reader, mut buffer, unanswered, metrics)| async move {
            match read_frame_into::<Request>(&mut reader, &mut buffer).await {
                Ok(Some(request)) => {
                    Metrics::add(&metrics.append_stream_requests_total, 1);
                    if unanswered.fetch_add(1, Ordering::Relaxed) > 0 {
                        Metrics::add(&metrics.append_stream_pipelined_requests_total, 1);
                    }
                    Some((request, (reader, buffer, unanswered, metrics)))
                }
                Ok(None) => None,
                Err(e) => {
                    tracing::warn!("append stream: dropping the connection: {e}");
                    None
                }
            }
        },
    );
    let answers = raft.stream_append(requests);
    futures::pin_mut!(answers);
    while let Some(answer) = answers.next().await {
        let answer: Answer = answer.map_err(|fatal| fatal.to_string());
        let last = !matches!(answer, Ok(Ok(_)));
        // Before the write: once the leader has the answer, its next request is
        // not an overlapping one.
        unanswered.fetch_sub(1, Ordering::Relaxed);
        let written = match encode_frame(&answer) {
            Ok(frame) => writer.write_all(&frame).await,
            Err(e) => Err(e),
        };
        if let Err(e) = written {
            tracing::debug!("append stream: the leader is gone: {e}");
            return;
        }
        if last {
            break;
        }
    }
    let _ = writer.shutdown().await;
}

/// What the leader's writer tells its reader, in request order.
enum Sent {
    /// A request went out at this instant and awaits its answer; its share of
    /// [`MAX_UNANSWERED_BYTES`] is returned when the answer is read.
    Request(Instant, OwnedSemaphorePermit),
    /// Encoding or writing failed; answers for the requests before it may
    /// still come.
    Failed(io::Error),
}

/// Aborts the writer task when the answer stream is dropped (openraft ended the
/// session), so it stops pulling requests for a stream nobody reads.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Frame bytes the leader keeps unanswered on one stream: the follower holds
/// what it has read but not yet answered, so this bounds its memory. One frame
/// of any size may always go out alone.
pub const MAX_UNANSWERED_BYTES: usize = MAX_FRAME_BYTES;

/// The leader's side on an upgraded connection: writes `taken` (requests the
/// caller already pulled from the stream) and then every request of `rest` as
/// soon as it is produced, up to [`MAX_UNANSWERED_BYTES`] unanswered, and
/// returns the answers in order.
///
/// The follower must keep making progress: the oldest unanswered request must
/// be answered within `answer_timeout` of its sending or of the previous
/// answer, whichever is later. (A fixed deadline per request would fail a
/// follower that is merely working through a queue of them.)
pub fn pipeline<IO, S>(
    io: IO,
    taken: Vec<Request>,
    rest: S,
    answer_timeout: Duration,
) -> BoxStream<'static, Reply>
where
    IO: AsyncRead + AsyncWrite + Send + 'static,
    S: Stream<Item = Request> + Send + Unpin + 'static,
{
    let (reader, mut writer) = tokio::io::split(io);
    let (sent_tx, sent_rx) = mpsc::unbounded_channel::<Sent>();
    let budget = Arc::new(Semaphore::new(MAX_UNANSWERED_BYTES));
    let writing = tokio::spawn(async move {
        let mut requests = futures::stream::iter(taken).chain(rest);
        while let Some(request) = requests.next().await {
            let frame = match encode_frame(&request) {
                Ok(frame) => frame,
                Err(e) => {
                    let _ = sent_tx.send(Sent::Failed(e));
                    return;
                }
            };
            // Frames are at most MAX_FRAME_BYTES, so the budget always covers one.
            let share = u32::try_from(frame.len().min(MAX_UNANSWERED_BYTES)).unwrap_or(u32::MAX);
            let Ok(permit) = Arc::clone(&budget).acquire_many_owned(share).await else {
                return;
            };
            // Announce before writing: a write that blocks (a partitioned
            // follower stops reading) must still time out on the reader's side.
            if sent_tx.send(Sent::Request(Instant::now(), permit)).is_err() {
                return;
            }
            // The upgraded connection is unbuffered: `write_all` hands the whole
            // frame to the socket, no flush needed.
            if let Err(e) = writer.write_all(&frame).await {
                let _ = sent_tx.send(Sent::Failed(e));
                return;
            }
        }
        // No more requests: closing the write half tells the follower. Should
        // that fail, the reader finds the dead connection on its own.
        if let Err(e) = writer.shutdown().await {
            tracing::debug!("append stream: closing the write half: {e}");
        }
    });
    let state = Some((reader, sent_rx, Instant::now(), AbortOnDrop(writing)));
    futures::stream::unfold(state, move |state| async move {
        let (mut reader, mut sent_rx, last_answer, writer) = state?;
        let (sent_at, permit) = match sent_rx.recv().await? {
            Sent::Request(at, permit) => (at, permit),
            Sent::Failed(e) => {
                return Some((
                    Err(CallError::Network(format!("writing: {e}")).into_rpc()),
                    None,
                ))
            }
        };
        // Dropping a half-read frame on timeout is safe only because a timeout
        // ends the stream: the connection is never read again.
        let deadline = sent_at.max(last_answer) + answer_timeout;
        let answer = tokio::time::timeout_at(deadline, read_frame::<Answer>(&mut reader)).await;
        drop(permit);
        let reply = match answer {
            Ok(Ok(Some(Ok(result)))) => Ok(result),
            Ok(Ok(Some(Err(fatal)))) => {
                Err(CallError::Network(format!("the follower's Raft stopped: {fatal}")).into_rpc())
            }
            Ok(Ok(None)) => Err(CallError::Network(
                "the follower closed the stream with requests unanswered".into(),
            )
            .into_rpc()),
            Ok(Err(e)) => Err(CallError::Network(format!("reading: {e}")).into_rpc()),
            Err(_) => Err(CallError::Unreachable(format!(
                "the follower answered nothing for {answer_timeout:?}"
            ))
            .into_rpc()),
        };
        // openraft ends a stream at its first error or refusal.
        let go_on = matches!(reply, Ok(Ok(_)));
        Some((
            reply,
            go_on.then(|| (reader, sent_rx, Instant::now(), writer)),
        ))
    })
    .boxed()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::replication::type_config::{LogId, Vote};
    use openraft::raft::StreamAppendError;
    use tokio::io::DuplexStream;

    const PATIENCE: Duration = Duration::from_secs(5);

    /// An entry-less request whose `prev_log_id` names it.
    fn request(index: u64) -> Request {
        AppendEntriesRequest {
            vote: Vote::new_committed(1, 1),
            prev_log_id: Some(LogId::new_term_index(1, index)),
            leader_commit: None,
            entries: Vec::new(),
        }
    }

    fn accepted(index: u64) -> Answer {
        Ok(Ok(Some(LogId::new_term_index(1, index))))
    }

    /// The follower's end of a pipeline whose requests are `indexes`: the
    /// first goes in `taken`, the rest through a finite request stream.
    fn start(
        indexes: &[u64],
        answer_timeout: Duration,
    ) -> (BoxStream<'static, Reply>, DuplexStream) {
        let (leader, follower) = tokio::io::duplex(1 << 20);
        let first = vec![request(indexes[0])];
        let rest =
            futures::stream::iter(indexes[1..].iter().map(|i| request(*i)).collect::<Vec<_>>());
        (pipeline(leader, first, rest, answer_timeout), follower)
    }

    async fn write_answer(follower: &mut DuplexStream, answer: &Answer) {
        let frame = encode_frame(answer).expect("encodes");
        follower.write_all(&frame).await.expect("the pipe is open");
    }

    async fn read_request(follower: &mut DuplexStream) -> Option<Request> {
        tokio::time::timeout(PATIENCE, read_frame(follower))
            .await
            .expect("the leader writes or closes in time")
            .expect("a well-formed frame")
    }

    async fn next(replies: &mut BoxStream<'static, Reply>) -> Option<Reply> {
        tokio::time::timeout(PATIENCE, replies.next())
            .await
            .expect("the pipeline yields or ends in time")
    }

    /// The index the next reply accepted up to; fails on anything else.
    async fn next_accepted(replies: &mut BoxStream<'static, Reply>) -> Option<u64> {
        match next(replies).await {
            Some(Ok(Ok(log_id))) => log_id.map(|id| id.index),
            other => panic!("expected an accepted append, got {other:?}"),
        }
    }

    /// The `prev_log_id` index of the next request the leader wrote.
    async fn next_request_index(follower: &mut DuplexStream) -> Option<u64> {
        let request = read_request(follower).await.expect("a request");
        request.prev_log_id.map(|id| id.index)
    }

    #[tokio::test]
    async fn requests_go_out_before_answers_and_answers_return_in_order() {
        let (mut replies, mut follower) = start(&[10, 11, 12], PATIENCE);
        // The follower reads all three before answering any: a pipeline that
        // waited for each answer would leave it stuck on the second read.
        // (read_request fails the test if a request does not come in time.)
        for index in [10, 11, 12] {
            assert_eq!(next_request_index(&mut follower).await, Some(index));
        }
        // The leader closes its half after the last request.
        assert!(read_request(&mut follower).await.is_none());
        for index in [10, 11, 12] {
            write_answer(&mut follower, &accepted(index)).await;
        }
        drop(follower);
        for index in [10, 11, 12] {
            assert_eq!(next_accepted(&mut replies).await, Some(index));
        }
        assert!(
            next(&mut replies).await.is_none(),
            "every request answered: the stream ends"
        );
    }

    /// As in production: the request stream stays open, requests arrive one by
    /// one, and each goes out while earlier ones are unanswered.
    #[tokio::test]
    async fn answers_return_while_the_request_stream_stays_open() {
        let (more, queued) = mpsc::unbounded_channel::<Request>();
        let rest = Box::pin(futures::stream::unfold(queued, |mut queued| async move {
            queued.recv().await.map(|request| (request, queued))
        }));
        let (leader, mut follower) = tokio::io::duplex(1 << 20);
        let mut replies = pipeline(leader, vec![request(10)], rest, PATIENCE);

        assert_eq!(next_request_index(&mut follower).await, Some(10));
        more.send(request(11)).expect("the writer runs");
        assert_eq!(
            next_request_index(&mut follower).await,
            Some(11),
            "sent with 10 unanswered"
        );
        write_answer(&mut follower, &accepted(10)).await;
        assert_eq!(next_accepted(&mut replies).await, Some(10));

        more.send(request(12)).expect("the writer runs");
        assert_eq!(
            next_request_index(&mut follower).await,
            Some(12),
            "sent with 11 unanswered"
        );
        write_answer(&mut follower, &accepted(11)).await;
        write_answer(&mut follower, &accepted(12)).await;
        assert_eq!(next_accepted(&mut replies).await, Some(11));
        assert_eq!(next_accepted(&mut replies).await, Some(12));

        drop(more);
        assert!(
            read_request(&mut follower).await.is_none(),
            "the leader closes its half"
        );
        drop(follower);
        assert!(next(&mut replies).await.is_none());
    }

    /// A follower working through a queue is slow per request but keeps
    /// answering: the deadline runs from the previous answer, not from each
    /// request's sending.
    #[tokio::test]
    async fn a_follower_that_keeps_answering_is_not_timed_out() {
        let timeout = Duration::from_millis(1000);
        let gap = Duration::from_millis(500);
        let (mut replies, mut follower) = start(&[10, 11, 12], timeout);
        for _ in 0..3 {
            read_request(&mut follower).await.expect("a request");
        }
        let answering = tokio::spawn(async move {
            for index in [10, 11, 12] {
                tokio::time::sleep(gap).await;
                write_answer(&mut follower, &accepted(index)).await;
            }
            follower
        });
        // The last answer comes about 1.5 s after all three were sent.
        for index in [10, 11, 12] {
            assert_eq!(next_accepted(&mut replies).await, Some(index));
        }
        drop(answering.await.expect("the follower task"));
        assert!(next(&mut replies).await.is_none());
    }

    #[tokio::test]
    async fn a_conflict_ends_the_stream() {
        let (mut replies, mut follower) = start(&[10, 11], PATIENCE);
        read_request(&mut follower).await.expect("a request");
        let conflict: Answer = Ok(Err(StreamAppendError::Conflict(LogId::new_term_index(
            1, 10,
        ))));
        write_answer(&mut follower, &conflict).await;
        write_answer(&mut follower, &accepted(11)).await;
        match next(&mut replies).await {
            Some(Ok(Err(StreamAppendError::Conflict(id)))) => assert_eq!(id.index, 10),
            other => panic!("expected the conflict, got {other:?}"),
        }
        assert!(
            next(&mut replies).await.is_none(),
            "nothing after a conflict"
        );
    }

    #[tokio::test]
    async fn a_request_not_answered_in_time_is_unreachable() {
        let (mut replies, mut follower) = start(&[10, 11], Duration::from_millis(50));
        read_request(&mut follower).await.expect("a request");
        match next(&mut replies).await {
            Some(Err(RPCError::Unreachable(_))) => {}
            other => panic!("expected a timeout, got {other:?}"),
        }
        assert!(next(&mut replies).await.is_none());
        drop(follower);
    }

    #[tokio::test]
    async fn a_follower_that_hangs_up_with_requests_unanswered_is_an_error() {
        let (mut replies, mut follower) = start(&[10, 11], PATIENCE);
        read_request(&mut follower).await.expect("a request");
        write_answer(&mut follower, &accepted(10)).await;
        drop(follower);
        assert_eq!(next_accepted(&mut replies).await, Some(10));
        match next(&mut replies).await {
            Some(Err(RPCError::Network(e))) => assert!(e.to_string().contains("unanswered"), "{e}"),
            other => panic!("expected a network error, got {other:?}"),
        }
        assert!(next(&mut replies).await.is_none());
    }

    #[tokio::test]
    async fn a_stopped_follower_raft_is_an_error() {
        let (mut replies, mut follower) = start(&[10], PATIENCE);
        read_request(&mut follower).await.expect("a request");
        write_answer(&mut follower, &Err("raft stopped".to_string())).await;
        match next(&mut replies).await {
            Some(Err(RPCError::Network(e))) => {
                assert!(e.to_string().contains("raft stopped"), "{e}")
            }
            other => panic!("expected a network error, got {other:?}"),
        }
        assert!(next(&mut replies).await.is_none());
    }

    /// A frame header is four bytes a peer (or a stream cut by the network) can
    /// get wrong: claiming the largest frame and then sending (almost) nothing
    /// must not make the reader allocate the claimed size. The buffer grows with
    /// what arrives.
    #[tokio::test]
    async fn a_claimed_frame_length_is_not_allocated_before_its_bytes_arrive() {
        let (mut sender, mut receiver) = tokio::io::duplex(1 << 16);
        let claimed = u32::try_from(MAX_FRAME_BYTES).expect("fits");
        sender
            .write_all(&claimed.to_le_bytes())
            .await
            .expect("open");
        sender.write_all(&[7u8; 1000]).await.expect("open");
        let mut body = Vec::new();
        let read = tokio::time::timeout(
            Duration::from_millis(200),
            read_frame_bytes(&mut receiver, &mut body),
        )
        .await;
        assert!(read.is_err(), "the frame is incomplete: the read waits");
        assert!(
            body.capacity() <= 256 << 10,
            "{} bytes reserved for a frame of which 1000 arrived",
            body.capacity()
        );
        drop(sender);
    }

    /// Frames of a few sizes, up to several MiB, read back whole; one cut short
    /// is an unexpected end.
    #[tokio::test]
    async fn frames_of_several_sizes_read_back_whole() {
        for len in [0usize, 1, 4095, 70_000, 5 << 20] {
            let (mut a, mut b) = tokio::io::duplex(1 << 16);
            let payload: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let writer = tokio::spawn(async move {
                let n = u32::try_from(payload.len()).expect("fits");
                a.write_all(&n.to_le_bytes()).await.expect("open");
                a.write_all(&payload).await.expect("open");
                payload
            });
            let mut body = Vec::new();
            assert!(read_frame_bytes(&mut b, &mut body).await.expect("reads"));
            assert_eq!(
                body,
                writer.await.expect("the writer"),
                "a {len}-byte frame"
            );
        }
        let (mut a, mut b) = tokio::io::duplex(1 << 16);
        a.write_all(&100u32.to_le_bytes()).await.expect("open");
        a.write_all(&[1u8; 40]).await.expect("open");
        drop(a);
        let e = read_frame_bytes(&mut b, &mut Vec::new())
            .await
            .expect_err("cut short");
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
    }

    #[tokio::test]
    async fn frames_over_the_limit_or_with_trailing_bytes_are_refused() {
        let (mut a, mut b) = tokio::io::duplex(1 << 10);
        let too_long = u32::try_from(MAX_FRAME_BYTES + 1).expect("fits");
        a.write_all(&too_long.to_le_bytes()).await.expect("open");
        let e = read_frame::<Answer>(&mut b).await.expect_err("refused");
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);

        let mut frame = encode_frame(&accepted(3)).expect("encodes");
        frame.push(0);
        let len = u32::try_from(frame.len() - 4).expect("small");
        frame[..4].copy_from_slice(&len.to_le_bytes());
        a.write_all(&frame).await.expect("open");
        let e = read_frame::<Answer>(&mut b).await.expect_err("refused");
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);

        drop(a);
        assert!(read_frame::<Answer>(&mut b)
            .await
            .expect("a clean end")
            .is_none());
    }
}
