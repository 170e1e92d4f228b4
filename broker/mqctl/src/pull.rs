//! `mqctl pull` (one request per queue, as the endpoint does) and `mqctl tail`
//! (the last messages of every queue; `-f` keeps long-polling each queue).
//!
//! Queue ids are per broker group, so every request names the queue's group
//! (`?group=`), taken from `GET /v1/topics/{topic}/queues`, which lists every
//! group's queues. The set of queues is read once at the start.

use std::time::Duration;

use serde_json::{json, Value};
use tokio::sync::mpsc;

use super::args::{PullArgs, QueueSelection, TailArgs};
use super::output::{message_row, Table, MESSAGE_HEADER};
use super::{CliError, Context};
use broker_client::{GroupQueue, PullOptions};
use broker_proto::api::{MessageView, PullResponse, QueueView};

/// Most messages one pull may ask for (shared/API.md).
const MAX_MESSAGES_PER_PULL: u32 = 1024;
/// Messages per request while tailing.
const TAIL_BATCH: u32 = 256;
/// Pause after a failed request while following, so a down cluster is not hammered.
const ERROR_PAUSE: Duration = Duration::from_secs(1);
/// Column widths of streamed rows (`tail -f` cannot measure rows it has not seen).
const STREAM_WIDTHS: [usize; 8] = [12, 8, 24, 32, 8, 12, 12, 0];

/// Runs `mqctl pull`: one request per selected queue, concurrently, so a long-poll
/// wait is paid once, not once per queue.
///
/// # Errors
/// A bad selection or a failed request.
pub async fn pull(ctx: &Context, args: PullArgs) -> Result<(), CliError> {
    if !(1..=MAX_MESSAGES_PER_PULL).contains(&args.max) {
        return Err(CliError::Usage(format!(
            "--max must be 1..={MAX_MESSAGES_PER_PULL}"
        )));
    }
    let queues = select_queues(ctx, &args.queues).await?;
    let options = PullOptions {
        max_messages: args.max,
        max_wait_ms: args.wait_ms,
        tags: args.queues.tags.clone(),
    };
    let pulls = queues.iter().map(|queue| {
        let offset = args.offset.unwrap_or(queue.min_offset);
        let queue = group_queue(&args.queues.topic, queue);
        let options = &options;
        async move { ctx.client.pull_queue(&queue, offset, options).await }
    });
    let answers: Vec<PullResponse> = futures::future::try_join_all(pulls).await?;
    if ctx.out.json {
        let per_queue: Vec<Value> = queues
            .iter()
            .zip(&answers)
            .map(|(queue, answer)| {
                let mut value = json!(answer);
                value["group"] = json!(queue.group);
                value["queue_id"] = json!(queue.queue_id);
                value
            })
            .collect();
        return ctx
            .out
            .json(&json!({ "topic": args.queues.topic, "queues": per_queue }));
    }
    let mut table = Table::new(&MESSAGE_HEADER);
    for (queue, answer) in queues.iter().zip(&answers) {
        for message in &answer.messages {
            table.row(message_row(Some(&queue.group), message));
        }
    }
    if table.is_empty() {
        eprintln!("no messages");
    } else {
        ctx.out.table(&table)?;
    }
    // Where to go on, on stderr so that stdout holds only the messages.
    for (queue, answer) in queues.iter().zip(&answers) {
        eprintln!(
            "{}/{}: {}, next offset {} (min {}, max {})",
            queue.group,
            queue.queue_id,
            answer.status,
            answer.next_offset,
            answer.min_offset,
            answer.max_offset
        );
    }
    Ok(())
}

/// Runs `mqctl tail`.
///
/// # Errors
/// A bad selection, or a failed request (while following, only one that retrying
/// cannot fix: transient failures are reported on stderr and retried).
pub async fn tail(ctx: &Context, args: TailArgs) -> Result<(), CliError> {
    if args.wait_ms > 30_000 {
        return Err(CliError::Usage("--wait-ms must be at most 30000".into()));
    }
    let queues = select_queues(ctx, &args.queues).await?;
    let (sender, receiver) = mpsc::channel::<(String, MessageView)>(TAIL_BATCH as usize);
    let readers = queues.iter().map(|queue| {
        let start = args.offset.unwrap_or(
            queue
                .max_offset
                .saturating_sub(args.last)
                .max(queue.min_offset),
        );
        let reader = QueueReader {
            ctx,
            topic: &args.queues.topic,
            queue,
            tags: args.queues.tags.clone(),
            follow: args.follow,
            wait_ms: args.wait_ms,
        };
        reader.run(start, sender.clone())
    });
    let readers = futures::future::join_all(readers);
    // The readers hold the only senders left: when they are done, the channel ends.
    drop(sender);
    let printer = print_messages(ctx, receiver, args.follow, args.count);
    tokio::pin!(printer);
    tokio::select! {
        results = readers => {
            // Print what the readers delivered before a failure is reported.
            let printed = printer.await;
            results.into_iter().collect::<Result<Vec<()>, CliError>>()?;
            printed
        }
        printed = &mut printer => printed,
    }
}

/// The queues a pull or tail reads.
async fn select_queues(
    ctx: &Context,
    selection: &QueueSelection,
) -> Result<Vec<QueueView>, CliError> {
    let all = ctx
        .client
        .queues_in(&selection.topic, selection.group.as_deref())
        .await?
        .queues;
    let known: Vec<String> = all
        .iter()
        .map(|q| format!("{}/{}", q.group, q.queue_id))
        .collect();
    let selected: Vec<QueueView> = all
        .into_iter()
        .filter(|q| selection.queue.is_none_or(|id| id == q.queue_id))
        .filter(|q| selection.group.as_deref().is_none_or(|g| g == q.group))
        .collect();
    if selected.is_empty() {
        return Err(CliError::Usage(format!(
            "topic {} has no such queue (queues: {})",
            selection.topic,
            known.join(", ")
        )));
    }
    Ok(selected)
}

/// The client library's name of a listed queue of `topic`.
fn group_queue(topic: &str, queue: &QueueView) -> GroupQueue {
    GroupQueue {
        topic: topic.to_string(),
        group: queue.group.clone(),
        queue_id: queue.queue_id,
    }
}

/// Reads one queue from an offset: up to the end it had at the start, or, when
/// following, forever.
struct QueueReader<'a> {
    ctx: &'a Context,
    topic: &'a str,
    queue: &'a QueueView,
    tags: Option<String>,
    follow: bool,
    wait_ms: u64,
}

impl QueueReader<'_> {
    async fn run(
        self,
        mut offset: u64,
        sender: mpsc::Sender<(String, MessageView)>,
    ) -> Result<(), CliError> {
        let options = PullOptions {
            max_messages: TAIL_BATCH,
            max_wait_ms: if self.follow { self.wait_ms } else { 0 },
            tags: self.tags.clone(),
        };
        let group = self.queue.group.as_str();
        let name = format!("{group}/{}", self.queue.queue_id);
        let queue = group_queue(self.topic, self.queue);
        loop {
            if !self.follow && offset >= self.queue.max_offset {
                return Ok(());
            }
            let answer = match self.ctx.client.pull_queue(&queue, offset, &options).await {
                Ok(answer) => answer,
                Err(e) if self.follow && e.is_retryable() => {
                    eprintln!("mqctl: {name}: {}; retrying", super::error::describe(&e));
                    tokio::time::sleep(ERROR_PAUSE).await;
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            match answer.status.as_str() {
                "FOUND" | "NO_MATCHED_MSG" => {}
                "NO_NEW_MSG" if !self.follow => return Ok(()),
                "NO_NEW_MSG" => {}
                "OFFSET_TOO_SMALL" | "OFFSET_OVERFLOW" => {
                    // Retention removed the start, or the queue is shorter than the
                    // offset given: go on from the nearest offset that exists.
                    let next = if answer.status == "OFFSET_TOO_SMALL" {
                        answer.min_offset
                    } else {
                        answer.max_offset
                    };
                    eprintln!(
                        "mqctl: {name}: {} at offset {offset}; going on from {next}",
                        answer.status
                    );
                    offset = next;
                    continue;
                }
                other => {
                    return Err(CliError::Usage(format!(
                        "{name}: unknown pull status `{other}`"
                    )))
                }
            }
            for message in answer.messages {
                if sender.send((group.to_string(), message)).await.is_err() {
                    // The printer has printed what was asked for.
                    return Ok(());
                }
            }
            offset = answer.next_offset;
        }
    }
}

/// Prints messages from the readers: streamed as they come when following, else
/// collected and sorted by store time. Stops after `count` messages (without
/// following: keeps the first `count` in store-time order).
async fn print_messages(
    ctx: &Context,
    mut receiver: mpsc::Receiver<(String, MessageView)>,
    follow: bool,
    count: Option<u64>,
) -> Result<(), CliError> {
    let limit = count.unwrap_or(u64::MAX);
    let mut printed = 0;
    let mut collected = Vec::new();
    if follow && !ctx.out.json {
        ctx.out
            .line(&stream_row(MESSAGE_HEADER.map(str::to_string).to_vec()))?;
    }
    while let Some((group, message)) = receiver.recv().await {
        if !follow {
            collected.push((group, message));
            continue;
        }
        if ctx.out.json {
            ctx.out.json_line(&with_group(&group, &message))?;
        } else {
            ctx.out
                .line(&stream_row(message_row(Some(&group), &message)))?;
        }
        printed += 1;
        if printed >= limit {
            return Ok(());
        }
    }
    if follow {
        // Every reader stopped: one failed, and its error is reported by the caller.
        return Ok(());
    }
    collected.sort_by(|(ga, a), (gb, b)| {
        (a.store_timestamp, ga, a.queue_id, a.queue_offset).cmp(&(
            b.store_timestamp,
            gb,
            b.queue_id,
            b.queue_offset,
        ))
    });
    collected.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
    if ctx.out.json {
        for (group, message) in &collected {
            ctx.out.json_line(&with_group(group, message))?;
        }
        return Ok(());
    }
    if collected.is_empty() {
        eprintln!("no messages");
        return Ok(());
    }
    let mut table = Table::new(&MESSAGE_HEADER);
    for (group, message) in &collected {
        table.row(message_row(Some(group), message));
    }
    ctx.out.table(&table)
}

/// A message's JSON with the broker group that owns its queue.
fn with_group(group: &str, message: &MessageView) -> Value {
    let mut value = json!(message);
    value["group"] = json!(group);
    value
}

fn stream_row(cells: Vec<String>) -> String {
    let mut line = String::new();
    for (cell, width) in cells.iter().zip(STREAM_WIDTHS) {
        line.push_str(&format!("{cell:<width$}  "));
    }
    line.trim_end().to_string()
}
