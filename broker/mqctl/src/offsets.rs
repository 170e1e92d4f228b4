//! `mqctl group offsets|commit|reset|retry`: a consumer group's committed offsets
//! and lag, one commit, a reset of every queue of a topic to a point in time, and
//! giving a message back (retry or dead letter).
//!
//! Offsets live in the broker group owning each queue, so commits name it
//! (`?broker_group=`), taken from the topic's queue list.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::json;

use super::args::{GroupCommand, GroupCommitArgs, GroupResetArgs, GroupRetryArgs};
use super::output::{utc, Table};
use super::{CliError, Context};
use broker_client::{CommitMode, GroupQueue};
use broker_proto::api::{GroupOffsetsResponse, RetryRequest};

/// Runs a `group` subcommand.
///
/// # Errors
/// A bad argument or a failed request.
pub async fn run(ctx: &Context, command: GroupCommand) -> Result<(), CliError> {
    match command {
        GroupCommand::Offsets(args) => {
            let offsets = ctx
                .client
                .group_offsets_with(&args.group, args.topic.as_deref(), args.stale)
                .await?;
            ctx.out.either(&offsets, || offsets_table(&offsets))
        }
        GroupCommand::Commit(args) => commit(ctx, args).await,
        GroupCommand::Reset(args) => reset(ctx, args).await,
        GroupCommand::Retry(args) => retry(ctx, args).await,
    }
}

async fn retry(ctx: &Context, args: GroupRetryArgs) -> Result<(), CliError> {
    let request = RetryRequest {
        topic: args.topic,
        queue_id: args.queue,
        queue_offset: args.offset,
        delay_level: if args.dead_letter {
            -1
        } else {
            args.delay_level.map_or(0, |level| level as i32)
        },
    };
    let answer = ctx
        .client
        .give_back_with(&args.group, &request, args.broker_group.as_deref())
        .await?;
    if ctx.out.json {
        return ctx.out.json(&answer);
    }
    let mut table = Table::new(&["MSG_ID", "TO", "RECONSUME_TIMES", "DELIVER_AT"]);
    table.row(vec![
        answer.msg_id,
        answer.topic,
        answer.reconsume_times.to_string(),
        answer.deliver_timestamp.map_or("-".into(), utc),
    ]);
    ctx.out.table(&table)
}

async fn commit(ctx: &Context, args: GroupCommitArgs) -> Result<(), CliError> {
    let mode = if args.force {
        CommitMode::Force
    } else {
        CommitMode::Advance
    };
    let stored = match args.broker_group {
        Some(group) => {
            let queue = GroupQueue {
                topic: args.topic.clone(),
                group,
                queue_id: args.queue,
            };
            ctx.client
                .commit_queue_offset(&args.group, &queue, args.offset, mode)
                .await?
        }
        None => {
            ctx.client
                .commit_offset(&args.group, &args.topic, args.queue, args.offset, mode)
                .await?
        }
    };
    if ctx.out.json {
        return ctx.out.json(&stored);
    }
    if stored.offset != args.offset {
        // The broker keeps the larger offset unless forced: say so, it surprises.
        eprintln!(
            "mqctl: the committed offset stays {} (ahead of {}; --force moves it back)",
            stored.offset, args.offset
        );
    }
    let mut table = Table::new(&["GROUP", "TOPIC", "QUEUE", "OFFSET"]);
    table.row(vec![
        stored.group,
        stored.topic,
        stored.queue_id.to_string(),
        stored.offset.to_string(),
    ]);
    ctx.out.table(&table)
}

/// Where a reset moves each queue.
enum Target {
    Time(u64),
    Earliest,
    Latest,
}

async fn reset(ctx: &Context, args: GroupResetArgs) -> Result<(), CliError> {
    let target = match (args.timestamp, args.ago, args.earliest, args.latest) {
        (Some(ms), ..) => Target::Time(ms),
        (None, Some(ago), ..) => Target::Time(ms_before_now(ago)),
        (None, None, true, _) => Target::Earliest,
        (None, None, false, true) => Target::Latest,
        (None, None, false, false) => {
            return Err(CliError::Usage(
                "give --timestamp, --ago, --earliest or --latest".into(),
            ))
        }
    };
    let queues: Vec<_> = ctx
        .client
        .queues_in(&args.topic, args.broker_group.as_deref())
        .await?
        .queues
        .into_iter()
        .filter(|q| args.queue.is_none_or(|id| id == q.queue_id))
        .filter(|q| args.broker_group.as_deref().is_none_or(|g| g == q.group))
        .collect();
    if queues.is_empty() {
        return Err(CliError::Usage(format!(
            "topic {} has no such queue to reset",
            args.topic
        )));
    }
    let mut rows = Vec::new();
    for view in &queues {
        let queue = GroupQueue {
            topic: args.topic.clone(),
            group: view.group.clone(),
            queue_id: view.queue_id,
        };
        let offset = match target {
            Target::Time(ms) => ctx.client.queue_offset_by_timestamp(&queue, ms).await?,
            Target::Earliest => view.min_offset,
            Target::Latest => view.max_offset,
        };
        // A reset moves the group back as well as forward.
        let stored = ctx
            .client
            .commit_queue_offset(&args.group, &queue, offset, CommitMode::Force)
            .await?;
        rows.push(json!({
            "broker_group": queue.group,
            "topic": stored.topic,
            "queue_id": stored.queue_id,
            "offset": stored.offset,
            "max_offset": view.max_offset,
        }));
    }
    if ctx.out.json {
        let timestamp = match target {
            Target::Time(ms) => json!(ms),
            Target::Earliest | Target::Latest => json!(null),
        };
        return ctx.out.json(&json!({
            "group": args.group,
            "timestamp": timestamp,
            "offsets": rows,
        }));
    }
    if let Target::Time(ms) = target {
        eprintln!(
            "reset {} to the first messages stored at or after {}",
            args.group,
            utc(ms)
        );
    }
    let mut table = Table::new(&["BROKER_GROUP", "TOPIC", "QUEUE", "OFFSET", "MAX_OFFSET"]);
    for row in &rows {
        table.row(
            ["broker_group", "topic", "queue_id", "offset", "max_offset"]
                .iter()
                .map(|field| match &row[field] {
                    serde_json::Value::String(s) => s.clone(),
                    other => other.to_string(),
                })
                .collect(),
        );
    }
    ctx.out.table(&table)
}

/// Unix milliseconds `ago` before now (0 if that is before the epoch).
fn ms_before_now(ago: Duration) -> u64 {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    u64::try_from(now.saturating_sub(ago).as_millis()).unwrap_or(u64::MAX)
}

fn offsets_table(offsets: &GroupOffsetsResponse) -> Table {
    let mut table = Table::new(&[
        "BROKER_GROUP",
        "TOPIC",
        "QUEUE",
        "OFFSET",
        "MAX_OFFSET",
        "LAG",
    ]);
    for offset in &offsets.offsets {
        table.row(vec![
            offset.group.clone(),
            offset.topic.clone(),
            offset.queue_id.to_string(),
            offset.offset.to_string(),
            offset.max_offset.to_string(),
            offset.lag.to_string(),
        ]);
    }
    table
}
