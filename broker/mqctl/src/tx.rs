//! `mqctl tx`: transactions (shared/API.md "Transactional messages") from the
//! command line — commit or roll back one by id, or take a producer group's
//! checks. `mqctl send --transaction PG` opens one.

use serde_json::json;

use super::args::TxCommand;
use super::output::{utc, Table};
use super::{CliError, Context};

/// Runs `mqctl tx …`.
///
/// # Errors
/// A failed request (`CONFLICT` when resolved the other way,
/// `TRANSACTION_NOT_FOUND`, …).
pub async fn run(ctx: &Context, command: TxCommand) -> Result<(), CliError> {
    match command {
        TxCommand::Commit(arg) => resolve(ctx, &arg.transaction_id, true).await,
        TxCommand::Rollback(arg) => resolve(ctx, &arg.transaction_id, false).await,
        TxCommand::Checks(args) => {
            let answer = ctx
                .client
                .transaction_checks_in(
                    &args.producer_group,
                    args.broker_group.as_deref(),
                    args.wait,
                )
                .await?;
            if ctx.out.json {
                return ctx.out.json(&json!({ "checks": answer.checks }));
            }
            if answer.checks.is_empty() {
                eprintln!("no checks");
                return Ok(());
            }
            let mut table = Table::new(&[
                "TRANSACTION",
                "TOPIC",
                "CHECK",
                "MESSAGES",
                "STORED",
                // The first message's, cut at 40 characters.
                "BODY",
            ]);
            for check in &answer.checks {
                let first = check.messages.first();
                table.row(vec![
                    check.transaction_id.clone(),
                    check.topic.clone(),
                    check.check_count.to_string(),
                    check.messages.len().to_string(),
                    first.map_or_else(String::new, |m| utc(m.store_timestamp)),
                    first
                        .and_then(|m| m.body.clone())
                        .unwrap_or_default()
                        .chars()
                        .take(40)
                        .collect(),
                ]);
            }
            ctx.out.table(&table)
        }
    }
}

async fn resolve(ctx: &Context, id: &str, commit: bool) -> Result<(), CliError> {
    let resolution = ctx.client.resolve_transaction(id, commit).await?;
    if ctx.out.json {
        return ctx.out.json(&json!(resolution));
    }
    println!(
        "{} {} ({} messages of {})",
        resolution.transaction_id, resolution.status, resolution.messages, resolution.topic
    );
    Ok(())
}
