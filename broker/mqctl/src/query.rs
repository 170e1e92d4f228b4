//! `mqctl query id|key`: one message by id (shown field by field) or the messages of
//! a topic carrying a key (a table).

use super::args::QueryCommand;
use super::output::{fields, message_row, utc, Table, MESSAGE_HEADER};
use super::{CliError, Context};
use broker_proto::api::MessageView;

/// Runs a `query` subcommand.
///
/// # Errors
/// `MESSAGE_NOT_FOUND` and other failed requests.
pub async fn run(ctx: &Context, command: QueryCommand) -> Result<(), CliError> {
    match command {
        QueryCommand::Id(args) => {
            let message = ctx.client.message_by_id(&args.msg_id).await?;
            ctx.out.either(&message, || message_fields(&message))
        }
        QueryCommand::Key(args) => {
            let found = ctx
                .client
                .messages_by_key(&args.topic, &args.key, args.begin, args.end, args.max)
                .await?;
            ctx.out.either(&found, || {
                let mut table = Table::new(&MESSAGE_HEADER);
                for message in &found.messages {
                    table.row(message_row(None, message));
                }
                table
            })
        }
    }
}

/// Every field of one message, the body whole.
fn message_fields(message: &MessageView) -> Table {
    let mut pairs = vec![
        ("msg_id", message.msg_id.clone()),
        ("topic", message.topic.clone()),
        ("queue_id", message.queue_id.to_string()),
        ("queue_offset", message.queue_offset.to_string()),
        ("commit_log_offset", message.commit_log_offset.to_string()),
        ("tags", message.tags.clone().unwrap_or_default()),
        ("keys", message.keys.join(",")),
    ];
    for (key, value) in &message.properties {
        pairs.push(("property", format!("{key}={value}")));
    }
    pairs.extend([
        ("born", utc(message.born_timestamp)),
        ("stored", utc(message.store_timestamp)),
        ("reconsume_times", message.reconsume_times.to_string()),
        (
            "producer",
            match (&message.producer_id, message.sequence) {
                (Some(id), Some(sequence)) => format!("{id} #{sequence}"),
                _ => "-".into(),
            },
        ),
    ]);
    match (&message.body, &message.body_base64) {
        (Some(body), _) => pairs.push(("body", body.clone())),
        (None, Some(base64)) => pairs.push(("body_base64", base64.clone())),
        (None, None) => {}
    }
    fields(pairs)
}
