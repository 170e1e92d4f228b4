//! `mqctl topic create|list|describe|delete` and `mqctl routes`.

use serde_json::json;

use super::args::TopicCommand;
use super::output::{fields, Table};
use super::{CliError, Context};
use broker_proto::api::{QueueView, RouteResponse, TopicRequest, TopicView};

/// Runs a `topic` subcommand.
///
/// # Errors
/// The failed request.
pub async fn run(ctx: &Context, command: TopicCommand) -> Result<(), CliError> {
    match command {
        TopicCommand::Create(args) => {
            let request = TopicRequest {
                read_queue_nums: args.read_queues.or(args.queues),
                write_queue_nums: args.write_queues.or(args.queues),
                perm: args.perm,
                groups: (!args.groups.is_empty()).then_some(args.groups),
            };
            let topic = ctx.client.create_topic(&args.topic, &request).await?;
            ctx.out
                .either(&topic, || topics_table(std::slice::from_ref(&topic)))
        }
        TopicCommand::List => {
            let topics = ctx.client.topics().await?;
            ctx.out.either(&topics, || topics_table(&topics.topics))
        }
        TopicCommand::Describe(args) => describe(ctx, &args.topic).await,
        TopicCommand::Delete(args) => {
            ctx.client.delete_topic(&args.topic).await?;
            if ctx.out.json {
                ctx.out.json(&json!({ "deleted": args.topic }))
            } else {
                ctx.out.line(&format!("deleted topic {}", args.topic))
            }
        }
    }
}

/// `mqctl routes TOPIC`.
///
/// # Errors
/// The failed request.
pub async fn routes(ctx: &Context, topic: &str) -> Result<(), CliError> {
    let route = ctx.client.route(topic).await?;
    ctx.out.either(&route, || routes_table(&route))
}

/// A topic's settings, its routes and its queues, from three requests.
async fn describe(ctx: &Context, topic: &str) -> Result<(), CliError> {
    let config = ctx.client.topic(topic).await?;
    let route = ctx.client.route(topic).await?;
    let queues = ctx.client.queues(topic).await?;
    if ctx.out.json {
        return ctx.out.json(&json!({
            "topic": config,
            "routes": route.groups,
            "queues": queues.queues,
        }));
    }
    ctx.out.table(&fields(vec![
        ("topic", config.topic.clone()),
        ("read_queue_nums", config.read_queue_nums.to_string()),
        ("write_queue_nums", config.write_queue_nums.to_string()),
        ("perm", perm_text(config.perm)),
        ("groups", config.groups.join(",")),
    ]))?;
    ctx.out.line("")?;
    ctx.out.table(&routes_table(&route))?;
    ctx.out.line("")?;
    ctx.out.table(&queues_table(&queues.queues))
}

fn topics_table(topics: &[TopicView]) -> Table {
    let mut table = Table::new(&["TOPIC", "READ_QUEUES", "WRITE_QUEUES", "PERM", "GROUPS"]);
    for topic in topics {
        table.row(vec![
            topic.topic.clone(),
            topic.read_queue_nums.to_string(),
            topic.write_queue_nums.to_string(),
            perm_text(topic.perm),
            topic.groups.join(","),
        ]);
    }
    table
}

fn routes_table(route: &RouteResponse) -> Table {
    let mut table = Table::new(&[
        "GROUP",
        "LEADER",
        "READ_QUEUES",
        "WRITE_QUEUES",
        "PERM",
        "REPLICAS",
    ]);
    for group in &route.groups {
        table.row(vec![
            group.group.clone(),
            group.leader.clone().unwrap_or_else(|| "-".into()),
            group.read_queue_nums.to_string(),
            group.write_queue_nums.to_string(),
            perm_text(group.perm),
            group.replicas.join(","),
        ]);
    }
    table
}

/// Queues with their offsets and message count.
pub fn queues_table(queues: &[QueueView]) -> Table {
    let mut table = Table::new(&["GROUP", "QUEUE", "MIN_OFFSET", "MAX_OFFSET", "MESSAGES"]);
    for queue in queues {
        table.row(vec![
            queue.group.clone(),
            queue.queue_id.to_string(),
            queue.min_offset.to_string(),
            queue.max_offset.to_string(),
            queue
                .max_offset
                .saturating_sub(queue.min_offset)
                .to_string(),
        ]);
    }
    table
}

/// RocketMQ's permission bits as `6 (rw)`.
fn perm_text(perm: u8) -> String {
    let read = if perm & 4 != 0 { "r" } else { "-" };
    let write = if perm & 2 != 0 { "w" } else { "-" };
    format!("{perm} ({read}{write})")
}
