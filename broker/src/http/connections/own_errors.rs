//! hyper's own error answers in the API's error shape.
//!
//! When hyper cannot parse a request head (a NUL in the request line, a URI over
//! 64 KiB, a head larger than `http.max_header_size`) it answers by itself —
//! `400`, `414` or `431` with an empty body — and closes the connection; no
//! handler of ours runs. shared/API.md promises the JSON error shape for every
//! error, so [`OwnErrorsIo`] sits between hyper and the socket and replaces those
//! answers with ours.
//!
//! It tells hyper's answers from ours by following the responses on the wire:
//! the service pushes one [`AnswerSlot`] per request it answers, *before* hyper
//! writes that answer's head; the writer parses each head, skips its body
//! (`Content-Length` or chunked framing) and pops the slot. A head that starts
//! where no slot is waiting was written by hyper itself. An informational head
//! (`100 Continue`) passes; an error head is swallowed and replaced. After a
//! `101 Switching Protocols` (the append stream) or a body delimited by the
//! connection's close, bytes pass untouched; so do they whenever a head of ours
//! cannot be parsed — this layer never rewrites what it does not understand.
//!
//! Writes are not vectored through this layer, so hyper flattens a head and its
//! body into one buffer: one write per answer, at the cost of copying bodies.

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::http::error::{ApiError, ErrorCode};

/// Longest response head parsed; a longer one of ours passes untouched.
const MAX_HEAD_BYTES: usize = 64 << 10;

/// What the writer needs to know of an answer the service produced.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct AnswerSlot {
    /// The request was `HEAD`: the answer has no body whatever its headers say.
    pub head_request: bool,
}

/// Answers the service produced and hyper has not finished writing, in order.
#[derive(Clone, Default)]
pub struct AnswerSlots(Arc<Mutex<VecDeque<AnswerSlot>>>);

impl AnswerSlots {
    /// Called by the service when it hands hyper an answer.
    pub fn push(&self, slot: AnswerSlot) {
        self.lock().push_back(slot);
    }

    fn pop(&self) -> Option<AnswerSlot> {
        self.lock().pop_front()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<AnswerSlot>> {
        // A queue of plain values: nothing a panicking holder could leave half-done.
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Where the writer stands in the stream of answers.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Framing {
    /// Between answers.
    Boundary,
    /// Inside a head: the bytes so far, and whether it is ours (a slot was
    /// waiting) or hyper's.
    Head { bytes: Vec<u8>, ours: bool },
    /// Inside a body with this many bytes left.
    Body { remaining: u64 },
    /// Inside a chunked body.
    Chunked(Chunk),
    /// Everything from here on passes untouched.
    Raw,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Chunk {
    /// Reading a chunk-size line (hex digits, extensions, CRLF).
    SizeLine { line: Vec<u8> },
    /// Inside a chunk's data, then its CRLF.
    Data { remaining: u64 },
    /// After the last (zero) chunk: trailer lines until an empty one.
    Trailer { line: Vec<u8> },
}

/// What one byte range of the output is.
enum Step {
    /// This many bytes belong to our answers (or to a raw stream): write them.
    Pass(usize),
    /// This many bytes are a head hyper wrote itself; swallow them and, once the
    /// head is complete, write `replacement` instead.
    Swallow {
        taken: usize,
        replacement: Option<Vec<u8>>,
    },
}

/// Follows the output and says which bytes pass.
struct Tracker {
    framing: Framing,
    slots: AnswerSlots,
}

impl Tracker {
    /// Classifies the start of `data` and advances past it.
    fn step(&mut self, data: &[u8]) -> Step {
        match &mut self.framing {
            Framing::Raw => Step::Pass(data.len()),
            Framing::Boundary => {
                // A head begins; whose it is depends on whether an answer of ours
                // is waiting. An informational head (100 Continue) of hyper's is
                // written while the handler is still running: no slot is taken for
                // it in either case (see `finish_head`).
                let ours = !self.slots.lock().is_empty();
                self.framing = Framing::Head {
                    bytes: Vec::new(),
                    ours,
                };
                self.step(data)
            }
            Framing::Head { bytes, ours } => {
                let ours = *ours;
                let before = bytes.len();
                bytes.extend_from_slice(&data[..data.len().min(MAX_HEAD_BYTES + 4 - before)]);
                match find_head_end(bytes, before) {
                    Some(end) => {
                        let head = std::mem::take(bytes);
                        let taken = end - before;
                        let replacement = self.finish_head(&head[..end], ours);
                        if ours {
                            Step::Pass(taken)
                        } else {
                            // hyper's head was held back whole: write ours in its
                            // place, or it as it was (an informational head).
                            Step::Swallow {
                                taken,
                                replacement: Some(
                                    replacement.unwrap_or_else(|| head[..end].to_vec()),
                                ),
                            }
                        }
                    }
                    None if bytes.len() > MAX_HEAD_BYTES => {
                        // Not a head we can read: stop interpreting.
                        self.framing = Framing::Raw;
                        Step::Pass(data.len())
                    }
                    None if ours => Step::Pass(data.len()),
                    None => Step::Swallow {
                        taken: data.len(),
                        replacement: None,
                    },
                }
            }
            Framing::Body { remaining } => {
                let n = usize::try_from(*remaining)
                    .unwrap_or(usize::MAX)
                    .min(data.len());
                *remaining -= n as u64;
                if *remaining == 0 {
                    self.framing = Framing::Boundary;
                }
                Step::Pass(n)
            }
            Framing::Chunked(chunk) => {
                let (n, done) = chunk.step(data);
                match done {
                    Some(true) => self.framing = Framing::Boundary,
                    Some(false) => self.framing = Framing::Raw,
                    None => {}
                }
                Step::Pass(n)
            }
        }
    }

    /// A complete head: sets the framing of what follows it; for one of hyper's
    /// error heads, answers the replacement.
    fn finish_head(&mut self, head: &[u8], ours: bool) -> Option<Vec<u8>> {
        let Some(parsed) = ParsedHead::parse(head) else {
            self.framing = Framing::Raw;
            return None;
        };
        if (100..200).contains(&parsed.status) && parsed.status != 101 {
            // Informational: the final answer follows; its slot stays.
            self.framing = Framing::Boundary;
            return None;
        }
        if !ours {
            // hyper's own answer: it closes the connection after it.
            self.framing = Framing::Raw;
            return (parsed.status >= 400).then(|| replacement(parsed.status));
        }
        let slot = self.slots.pop().unwrap_or(AnswerSlot {
            head_request: false,
        });
        self.framing = if parsed.status == 101 {
            Framing::Raw
        } else if slot.head_request || parsed.status == 204 || parsed.status == 304 {
            Framing::Boundary
        } else if parsed.chunked {
            Framing::Chunked(Chunk::SizeLine { line: Vec::new() })
        } else {
            match parsed.content_length {
                Some(0) => Framing::Boundary,
                Some(n) => Framing::Body { remaining: n },
                // Delimited by the close of the connection.
                None => Framing::Raw,
            }
        };
        None
    }
}

impl Chunk {
    /// Consumes from the start of `data`; answers the bytes consumed and, when the
    /// body ended, `Some(true)` (or `Some(false)` when the framing is not
    /// understood).
    fn step(&mut self, data: &[u8]) -> (usize, Option<bool>) {
        let mut used = 0;
        while used < data.len() {
            match self {
                Self::SizeLine { line } | Self::Trailer { line } => {
                    let Some(newline) = data[used..].iter().position(|&b| b == b'\n') else {
                        line.extend_from_slice(&data[used..]);
                        if line.len() > 1024 {
                            return (data.len(), Some(false));
                        }
                        return (data.len(), None);
                    };
                    line.extend_from_slice(&data[used..used + newline]);
                    used += newline + 1;
                    let text = std::mem::take(line);
                    let text = text.strip_suffix(b"\r").unwrap_or(&text);
                    match self {
                        Self::Trailer { .. } if text.is_empty() => return (used, Some(true)),
                        Self::Trailer { .. } => {}
                        _ => {
                            let digits = text.split(|&b| b == b';').next().unwrap_or_default();
                            let size = std::str::from_utf8(digits)
                                .ok()
                                .and_then(|d| u64::from_str_radix(d.trim(), 16).ok());
                            *self = match size {
                                None => return (used, Some(false)),
                                Some(0) => Self::Trailer { line: Vec::new() },
                                // The data, then its CRLF.
                                Some(n) => Self::Data { remaining: n + 2 },
                            };
                        }
                    }
                }
                Self::Data { remaining } => {
                    let n = usize::try_from(*remaining)
                        .unwrap_or(usize::MAX)
                        .min(data.len() - used);
                    *remaining -= n as u64;
                    used += n;
                    if *remaining == 0 {
                        *self = Self::SizeLine { line: Vec::new() };
                    }
                }
            }
        }
        (used, None)
    }
}

/// The end (one past `\r\n\r\n`) of a head whose bytes are `bytes`, searching from
/// a little before `from` (the terminator may straddle two writes).
fn find_head_end(bytes: &[u8], from: usize) -> Option<usize> {
    let start = from.saturating_sub(3);
    bytes[start..]
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| start + i + 4)
}

/// What the framing of a response depends on.
struct ParsedHead {
    status: u16,
    content_length: Option<u64>,
    chunked: bool,
}

impl ParsedHead {
    fn parse(head: &[u8]) -> Option<Self> {
        let text = std::str::from_utf8(head).ok()?;
        let mut lines = text.split("\r\n");
        let status_line = lines.next()?;
        let mut parts = status_line.splitn(3, ' ');
        if !parts.next()?.starts_with("HTTP/1.") {
            return None;
        }
        let status: u16 = parts.next()?.parse().ok()?;
        let mut parsed = Self {
            status,
            content_length: None,
            chunked: false,
        };
        for line in lines.filter(|l| !l.is_empty()) {
            let (name, value) = line.split_once(':')?;
            let value = value.trim();
            if name.eq_ignore_ascii_case("content-length") {
                parsed.content_length = Some(value.parse().ok()?);
            } else if name.eq_ignore_ascii_case("transfer-encoding") {
                parsed.chunked = value
                    .rsplit(',')
                    .next()
                    .is_some_and(|last| last.trim().eq_ignore_ascii_case("chunked"));
            }
        }
        Some(parsed)
    }
}

/// Our answer in place of hyper's bare `status`.
fn replacement(status: u16) -> Vec<u8> {
    let (code, message) = match status {
        414 => (
            ErrorCode::UriTooLong,
            "the request URI is too long (64 KiB at most)",
        ),
        431 => (
            ErrorCode::HeadersTooLarge,
            "the request head is too large (see http.max_header_size)",
        ),
        _ => (
            ErrorCode::BadRequest,
            "malformed HTTP request (request line or headers)",
        ),
    };
    let error = ApiError::new(code, message);
    let body = serde_json::to_vec(&error.body()).unwrap_or_default();
    let reason = match status {
        414 => "URI Too Long",
        431 => "Request Header Fields Too Large",
        _ => "Bad Request",
    };
    let mut out = format!(
        "HTTP/1.1 {} {reason}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        error.code.status(),
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(&body);
    out
}

/// An IO stream whose output hyper writes, with hyper's own error answers
/// replaced (see the module doc).
pub struct OwnErrorsIo<IO> {
    inner: IO,
    tracker: Tracker,
    /// Bytes of a replacement not yet written.
    pending: Vec<u8>,
    pending_from: usize,
}

impl<IO> OwnErrorsIo<IO> {
    pub fn new(inner: IO, slots: AnswerSlots) -> Self {
        Self {
            inner,
            tracker: Tracker {
                framing: Framing::Boundary,
                slots,
            },
            pending: Vec::new(),
            pending_from: 0,
        }
    }
}

impl<IO: AsyncWrite + Unpin> OwnErrorsIo<IO> {
    /// Writes what is pending of a replacement.
    fn poll_pending(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.pending_from < self.pending.len() {
            let n = ready!(
                Pin::new(&mut self.inner).poll_write(cx, &self.pending[self.pending_from..])
            )?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.pending_from += n;
        }
        self.pending.clear();
        self.pending_from = 0;
        Poll::Ready(Ok(()))
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for OwnErrorsIo<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for OwnErrorsIo<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        ready!(this.poll_pending(cx))?;
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        // Classify on a copy of the tracker: only what the socket takes advances
        // the real one.
        let saved = this.tracker.framing.clone();
        match this.tracker.step(buf) {
            Step::Pass(n) => {
                this.tracker.framing = saved;
                let written = ready!(Pin::new(&mut this.inner).poll_write(cx, &buf[..n]))?;
                let mut advanced = 0;
                while advanced < written {
                    match this.tracker.step(&buf[advanced..written]) {
                        Step::Pass(k) => advanced += k,
                        // The same bytes classified as passing a moment ago.
                        Step::Swallow { taken, .. } => advanced += taken,
                    }
                }
                Poll::Ready(Ok(written))
            }
            Step::Swallow { taken, replacement } => {
                if let Some(replacement) = replacement {
                    this.pending = replacement;
                    this.pending_from = 0;
                    // Best effort now; flush and shutdown finish it.
                    let _ = this.poll_pending(cx)?;
                }
                Poll::Ready(Ok(taken))
            }
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_pending(cx))?;
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_pending(cx))?;
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `writes` through a tracker the way `poll_write` does, with the slots
    /// pushed before the write at the given index; answers what reaches the wire.
    fn wire(writes: &[&[u8]], slots_before: &[(usize, AnswerSlot)]) -> Vec<u8> {
        let slots = AnswerSlots::default();
        let mut tracker = Tracker {
            framing: Framing::Boundary,
            slots: slots.clone(),
        };
        let mut out = Vec::new();
        for (i, write) in writes.iter().enumerate() {
            for (_, slot) in slots_before.iter().filter(|(at, _)| *at == i) {
                slots.push(*slot);
            }
            let mut at = 0;
            while at < write.len() {
                match tracker.step(&write[at..]) {
                    Step::Pass(n) => {
                        out.extend_from_slice(&write[at..at + n]);
                        at += n;
                    }
                    Step::Swallow { taken, replacement } => {
                        out.extend(replacement.unwrap_or_default());
                        at += taken;
                    }
                }
            }
        }
        out
    }

    const OURS: AnswerSlot = AnswerSlot {
        head_request: false,
    };

    #[test]
    fn our_answers_pass_untouched_and_hypers_error_is_replaced() {
        let first: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello";
        // A body that looks like an error head must not be taken for one.
        let lookalike = "HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n";
        let second = format!(
            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{lookalike}",
            lookalike.len()
        );
        let second = second.as_bytes();
        let hypers: &[u8] =
            b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\ndate: x\r\n\r\n";
        let out = wire(&[first, second, hypers], &[(0, OURS), (1, OURS)]);
        let text = String::from_utf8(out).expect("text");
        assert!(text.starts_with(&format!(
            "{}{}",
            String::from_utf8_lossy(first),
            String::from_utf8_lossy(second)
        )));
        let replaced = &text[first.len() + second.len()..];
        assert!(replaced.starts_with("HTTP/1.1 431 "), "{replaced}");
        assert!(
            replaced.contains("\"code\":\"HEADERS_TOO_LARGE\""),
            "{replaced}"
        );
        assert!(replaced.contains("connection: close"), "{replaced}");
    }

    #[test]
    fn an_error_head_split_across_writes_and_sharing_a_write_with_our_tail() {
        let ours: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\nab";
        let tail_and_error: &[u8] = b"cHTTP/1.1 400 Bad Request\r\ncont";
        let rest: &[u8] = b"ent-length: 0\r\n\r\n";
        let out = wire(&[ours, tail_and_error, rest], &[(0, OURS)]);
        let text = String::from_utf8(out).expect("text");
        assert!(text.starts_with("HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\nabcHTTP/1.1 400 "));
        assert!(text.contains("\"code\":\"BAD_REQUEST\""), "{text}");
        assert!(
            !text.contains("cont\r\n") && !text.contains("ent-length: 0"),
            "{text}"
        );
    }

    #[test]
    fn chunked_bodies_continue_and_informational_heads_pass() {
        let cont: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";
        let chunked: &[u8] =
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n3;x=y\r\nabc\r\n0\r\n\r\n";
        let hypers: &[u8] = b"HTTP/1.1 414 URI Too Long\r\ncontent-length: 0\r\n\r\n";
        // The 100 is written while the handler runs, before its slot is pushed.
        let out = wire(&[cont, chunked, hypers], &[(1, OURS)]);
        let text = String::from_utf8(out).expect("text");
        let expected = format!(
            "{}{}",
            String::from_utf8_lossy(cont),
            String::from_utf8_lossy(chunked)
        );
        assert!(text.starts_with(&expected), "{text}");
        assert!(text[expected.len()..].contains("URI_TOO_LONG"), "{text}");
    }

    #[test]
    fn head_requests_upgrades_and_close_delimited_bodies() {
        let head_answer: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 99\r\n\r\n";
        let hypers: &[u8] = b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n";
        let out = wire(
            &[head_answer, hypers],
            &[(0, AnswerSlot { head_request: true })],
        );
        assert!(String::from_utf8_lossy(&out).contains("BAD_REQUEST"));
        // After a 101 everything passes, even what looks like an error head.
        let upgrade: &[u8] = b"HTTP/1.1 101 Switching Protocols\r\nupgrade: x\r\n\r\n";
        let out = wire(&[upgrade, hypers], &[(0, OURS)]);
        assert_eq!(out, [upgrade, hypers].concat());
    }
}
