//! `mqctl send`: one message, every line of a file, or `--bulk N` generated messages
//! with a progress bar and a final msgs/s figure.
//!
//! Every message carries `producer_id` + `sequence`, so a retry after a timeout or
//! `UNAVAILABLE` cannot store it twice. Without `--group` the client library's
//! [`Producer`] does that (and the retries); with `--group` every request must name
//! the group, which the library's producer does not offer, so [`Lane::Grouped`]
//! stamps and retries the same way over [`BrokerClient::send_to_group`] with one
//! request in flight per producer id. Bulk sends run `--concurrency` lanes, each
//! its own producer id, as `broker-bench` does: the broker remembers only the last
//! 256 sequences of each id.

use std::collections::BTreeMap;
use std::io::{BufRead, IsTerminal, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;

use super::args::SendArgs;
use super::output::{utc, Table};
use super::{CliError, Context};
use broker_client::{BrokerClient, ClientError, Producer, DEDUP_WINDOW};
use broker_proto::api::{MessageInput, SendRequest, SendResponse};

/// Attempts after the first for a grouped lane (the library producer's default).
const GROUPED_RETRIES: u32 = 2;
/// Wait before the first retry of a grouped lane; doubled for each further one.
const GROUPED_BACKOFF: Duration = Duration::from_millis(100);
/// How often the progress bar is redrawn.
const PROGRESS_INTERVAL: Duration = Duration::from_millis(200);
/// Width of the progress bar in characters.
const PROGRESS_WIDTH: u64 = 30;

/// Runs `mqctl send`.
///
/// # Errors
/// A bad argument, an unreadable file, or a batch that failed after its retries.
pub async fn run(ctx: &Context, args: SendArgs) -> Result<(), CliError> {
    if args.batch == 0 || u64::from(args.batch) > DEDUP_WINDOW {
        return Err(CliError::Usage(format!(
            "--batch must be 1..={DEDUP_WINDOW} (the broker's dedup window per producer)"
        )));
    }
    let template = template(&args);
    if let Some(count) = args.bulk {
        return bulk(ctx, &args, &template, count).await;
    }
    let bodies = match (&args.body, &args.file) {
        (Some(body), _) => vec![body.clone()],
        (None, Some(path)) => read_lines(path)?,
        (None, None) => return Err(CliError::Usage("nothing to send".into())),
    };
    if bodies.is_empty() {
        return Err(CliError::Usage("the file holds no non-empty line".into()));
    }
    if let Some(producer_group) = &args.transaction {
        return transaction(ctx, &args, &template, producer_group, bodies).await;
    }
    let mut lane = Lane::new(ctx, args.group.as_deref(), None);
    let mut sent = Vec::new();
    // Batches go one after another, so the file's order is the send order.
    for chunk in bodies.chunks(args.batch as usize) {
        let messages = chunk.iter().map(|body| with_body(&template, body.clone()));
        let response = lane.send(&args.topic, messages.collect()).await?;
        sent.push(response);
    }
    print_results(ctx, &sent)
}

/// `send --transaction PG`: every body in one transaction (one request: no
/// retry, which could open a second one).
async fn transaction(
    ctx: &Context,
    args: &SendArgs,
    template: &MessageInput,
    producer_group: &str,
    bodies: Vec<String>,
) -> Result<(), CliError> {
    let messages = bodies
        .into_iter()
        .map(|body| MessageInput {
            body: Some(body),
            ..template.clone()
        })
        .collect();
    let sent = ctx
        .client
        .send_transaction(&args.topic, producer_group, messages)
        .await?;
    let id = sent.transaction_id.clone().unwrap_or_default();
    if ctx.out.json {
        return ctx.out.json(&json!({
            "transaction_id": id,
            "results": sent.results,
            "group": sent.group,
        }));
    }
    print_results(ctx, std::slice::from_ref(&sent))?;
    // On stderr, so that stdout holds only the table.
    eprintln!("transaction {id}: commit with `mqctl tx commit {id}`, or roll back");
    Ok(())
}

/// The settings every message of this send shares.
fn template(args: &SendArgs) -> MessageInput {
    MessageInput {
        tags: args.tags.clone(),
        keys: args.keys.clone(),
        properties: args.properties.iter().cloned().collect::<BTreeMap<_, _>>(),
        queue_id: args.queue_id,
        sharding_key: args.sharding_key.clone(),
        delay_level: args.delay_level,
        deliver_at: args.deliver_at,
        delay_ms: args.delay,
        ..MessageInput::default()
    }
}

fn with_body(template: &MessageInput, body: String) -> MessageInput {
    MessageInput {
        body: Some(body),
        ..template.clone()
    }
}

/// The non-empty lines of `path` (`-` is stdin). Blank lines are skipped: an empty
/// message is almost never what a trailing newline meant.
fn read_lines(path: &std::path::Path) -> Result<Vec<String>, CliError> {
    let input_error = |source| CliError::Input {
        path: path.display().to_string(),
        source,
    };
    let reader: Box<dyn BufRead> = if path.as_os_str() == "-" {
        Box::new(std::io::stdin().lock())
    } else {
        Box::new(std::io::BufReader::new(
            std::fs::File::open(path).map_err(input_error)?,
        ))
    };
    let mut lines = Vec::new();
    for line in reader.lines() {
        let line = line.map_err(input_error)?;
        let line = line.strip_suffix('\r').unwrap_or(&line);
        if !line.trim().is_empty() {
            lines.push(line.to_string());
        }
    }
    Ok(lines)
}

fn print_results(ctx: &Context, sent: &[SendResponse]) -> Result<(), CliError> {
    if ctx.out.json {
        let results: Vec<_> = sent
            .iter()
            .flat_map(|response| {
                response.results.iter().map(|result| {
                    let mut value = json!(result);
                    value["group"] = json!(response.group);
                    value
                })
            })
            .collect();
        return ctx.out.json(&json!({ "results": results }));
    }
    let mut table = Table::new(&["GROUP", "QUEUE", "OFFSET", "STORED", "MSG_ID"]);
    for response in sent {
        for result in &response.results {
            table.row(vec![
                response.group.clone(),
                result.queue_id.to_string(),
                result.queue_offset.to_string(),
                utc(result.store_timestamp),
                result.msg_id.clone(),
            ]);
        }
    }
    ctx.out.table(&table)
}

/// One sequence space sending batches one at a time.
enum Lane {
    /// The client library's idempotent producer (no group named). Boxed: a
    /// producer is several times the size of the other variant.
    Library(Box<Producer>),
    /// Requests naming a broker group, stamped and retried here.
    Grouped {
        client: BrokerClient,
        group: String,
        producer_id: String,
        next_sequence: u64,
    },
}

impl Lane {
    fn new(ctx: &Context, group: Option<&str>, lane: Option<u32>) -> Self {
        match group {
            None => Self::Library(Box::new(super::producer(ctx))),
            Some(group) => Self::Grouped {
                client: ctx.client.clone(),
                group: group.to_string(),
                producer_id: format!(
                    "mqctl-{:016x}{}",
                    rand::random::<u64>(),
                    lane.map(|l| format!("-{l}")).unwrap_or_default()
                ),
                next_sequence: 0,
            },
        }
    }

    /// Sends one batch with idempotent retries.
    async fn send(
        &mut self,
        topic: &str,
        messages: Vec<MessageInput>,
    ) -> Result<SendResponse, ClientError> {
        match self {
            Self::Library(producer) => producer.send_messages(topic, messages).await,
            Self::Grouped {
                client,
                group,
                producer_id,
                next_sequence,
            } => {
                let mut batch = SendRequest {
                    messages,
                    transaction: None,
                };
                for message in &mut batch.messages {
                    message.producer_id = Some(producer_id.clone());
                    message.sequence = Some(*next_sequence);
                    *next_sequence += 1;
                }
                let mut outcome_unknown = false;
                let mut retry = 0;
                loop {
                    let error = match client.send_to_group(topic, group, &batch).await {
                        Ok(response) => return Ok(response),
                        Err(error) => error,
                    };
                    // The same sequences are resent, so even an outcome-unknown
                    // failure is safe to retry.
                    if retry >= GROUPED_RETRIES || !error.is_retryable() {
                        if retry == 0 {
                            return Err(error);
                        }
                        return Err(ClientError::RetriesExhausted {
                            attempts: retry + 1,
                            outcome_unknown,
                            last: Box::new(error),
                        });
                    }
                    outcome_unknown |= error.is_outcome_unknown();
                    tokio::time::sleep(GROUPED_BACKOFF * 2u32.pow(retry)).await;
                    retry += 1;
                }
            }
        }
    }
}

/// Shared state of a bulk send.
struct Bulk<'a> {
    topic: &'a str,
    template: &'a MessageInput,
    total: u64,
    batch: u64,
    size_bytes: usize,
    /// The next message index to claim.
    next: AtomicU64,
    /// Messages acknowledged.
    acked: AtomicU64,
    /// Set by the first lane that fails, so the others stop claiming batches.
    failed: AtomicBool,
}

impl Bulk<'_> {
    fn body(&self, index: u64) -> String {
        let mut body = format!("message-{index}");
        if body.len() < self.size_bytes {
            body.push_str(&"x".repeat(self.size_bytes - body.len()));
        }
        body
    }

    /// One lane: claims batches until all are claimed or a lane failed.
    async fn lane(&self, mut lane: Lane) -> Result<(), ClientError> {
        while !self.failed.load(Ordering::Relaxed) {
            let first = self.next.fetch_add(self.batch, Ordering::Relaxed);
            if first >= self.total {
                break;
            }
            let last = (first + self.batch).min(self.total);
            let messages = (first..last)
                .map(|i| with_body(self.template, self.body(i)))
                .collect();
            if let Err(e) = lane.send(self.topic, messages).await {
                self.failed.store(true, Ordering::Relaxed);
                return Err(e);
            }
            self.acked.fetch_add(last - first, Ordering::Relaxed);
        }
        Ok(())
    }
}

async fn bulk(
    ctx: &Context,
    args: &SendArgs,
    template: &MessageInput,
    total: u64,
) -> Result<(), CliError> {
    if total == 0 || args.concurrency == 0 {
        return Err(CliError::Usage(
            "--bulk and --concurrency must be at least 1".into(),
        ));
    }
    let size_bytes = usize::try_from(args.size)
        .map_err(|_| CliError::Usage(format!("--size {} is too large", args.size)))?;
    let state = Bulk {
        topic: &args.topic,
        template,
        total,
        batch: u64::from(args.batch),
        size_bytes,
        next: AtomicU64::new(0),
        acked: AtomicU64::new(0),
        failed: AtomicBool::new(false),
    };
    let started = Instant::now();
    let lanes =
        (0..args.concurrency).map(|i| state.lane(Lane::new(ctx, args.group.as_deref(), Some(i))));
    let all = futures::future::join_all(lanes);
    let show_progress = std::io::stderr().is_terminal();
    let results = tokio::select! {
        results = all => results,
        never = progress(&state.acked, total, started, show_progress) => match never {},
    };
    if show_progress {
        eprintln!();
    }
    let elapsed = started.elapsed();
    let acked = state.acked.load(Ordering::Relaxed);
    let rate = acked as f64 / elapsed.as_secs_f64().max(1e-9);
    if let Some(error) = results.into_iter().find_map(Result::err) {
        eprintln!("mqctl: {acked} of {total} messages were acknowledged before the failure");
        return Err(error.into());
    }
    if ctx.out.json {
        return ctx.out.json(&json!({
            "sent": acked,
            "elapsed_ms": elapsed.as_millis() as u64,
            "msgs_per_sec": rate.round(),
            "bytes_per_message": size_bytes,
        }));
    }
    ctx.out.line(&format!(
        "sent {acked} messages in {:.2} s: {rate:.0} msgs/s ({:.2} MB/s of bodies)",
        elapsed.as_secs_f64(),
        rate * size_bytes as f64 / 1e6
    ))
}

/// Redraws a progress bar on stderr until cancelled: it never returns on its own.
async fn progress(
    acked: &AtomicU64,
    total: u64,
    started: Instant,
    visible: bool,
) -> std::convert::Infallible {
    loop {
        tokio::time::sleep(PROGRESS_INTERVAL).await;
        if !visible {
            continue;
        }
        let done = acked.load(Ordering::Relaxed).min(total);
        let filled = done * PROGRESS_WIDTH / total;
        let rate = done as f64 / started.elapsed().as_secs_f64().max(1e-9);
        let bar: String = (0..PROGRESS_WIDTH)
            .map(|i| if i < filled { '#' } else { '-' })
            .collect();
        let mut stderr = std::io::stderr().lock();
        // A failing stderr only loses the bar; the send goes on.
        let _ = write!(stderr, "\r[{bar}] {done}/{total}  {rate:.0} msgs/s");
        let _ = stderr.flush();
    }
}
