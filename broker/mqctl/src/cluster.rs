//! `mqctl cluster status|add-node|remove-node|transfer-leader|finalize-upgrade`. `add-node` starts
//! an asynchronous join and follows it until it ends (or `--wait` passes).

use std::time::Duration;

use tokio::time::Instant;

use super::args::ClusterCommand;
use super::output::{opt, Table};
use super::{CliError, Context};
use broker_proto::api::{GroupView, JoinState, JoinView};

/// Runs a `cluster` subcommand.
///
/// # Errors
/// The failed request.
pub async fn run(ctx: &Context, command: ClusterCommand) -> Result<(), CliError> {
    let group = match command {
        ClusterCommand::Status => {
            // A follower reports only itself; the leader knows every member's log
            // index, lag and reachability. Reads go to the remembered leader, so
            // learn it first (if no node names one, any node's view will do).
            ctx.client.discover_leader().await;
            let cluster = ctx.client.cluster().await?;
            return ctx.out.either(&cluster, || nodes_table(&cluster.groups));
        }
        ClusterCommand::AddNode(args) => {
            let mut join = ctx
                .client
                .add_node(&args.group, args.node_id, &args.address)
                .await?;
            let deadline = Instant::now() + args.wait;
            while !join.state.is_final() && Instant::now() < deadline {
                tokio::time::sleep(JOIN_POLL.min(deadline - Instant::now())).await;
                join = ctx.client.join(&args.group, args.node_id).await?;
            }
            ctx.out.either(&join, || join_table(&join))?;
            if join.state == JoinState::Failed {
                return Err(CliError::Failed(format!(
                    "node {} did not join: {}",
                    join.node_id,
                    join.message.as_deref().unwrap_or("no reason given")
                )));
            }
            return Ok(());
        }
        ClusterCommand::RemoveNode(args) => {
            ctx.client.remove_node(&args.group, args.node_id).await?
        }
        ClusterCommand::TransferLeader(args) => {
            ctx.client.transfer_leader(&args.group, args.to).await?
        }
        ClusterCommand::FinalizeUpgrade(args) => {
            let done = ctx.client.finalize_upgrade(&args.group).await?;
            return ctx.out.either(&done, || {
                let mut table = Table::new(&["GROUP", "PROTOCOL", "QUEUE_CLAIMS", "ENABLED_NOW"]);
                table.row(vec![
                    done.group.clone(),
                    done.protocol.to_string(),
                    done.queue_claims.to_string(),
                    done.enabled_now.to_string(),
                ]);
                table
            });
        }
    };
    ctx.out
        .either(&group, || nodes_table(std::slice::from_ref(&group)))
}

/// How often `add-node` asks how the join is going.
const JOIN_POLL: Duration = Duration::from_millis(500);

/// A join as one row.
fn join_table(join: &JoinView) -> Table {
    let mut table = Table::new(&["GROUP", "NODE", "URL", "STATE", "MESSAGE"]);
    let state = serde_json::to_value(join.state)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default();
    table.row(vec![
        join.group.clone(),
        join.node_id.to_string(),
        join.address.clone(),
        state,
        opt(join.message.as_deref()),
    ]);
    table
}

/// One row per node of every group; `*` marks the leader.
fn nodes_table(groups: &[GroupView]) -> Table {
    let mut table = Table::new(&[
        "GROUP",
        "NODE",
        "ROLE",
        "URL",
        "TERM",
        "LAST_LOG",
        "APPLIED",
        "LAG",
        "REACHABLE",
    ]);
    for group in groups {
        for node in &group.nodes {
            let leader = if group.leader_id == Some(node.id) {
                "*"
            } else {
                ""
            };
            table.row(vec![
                group.group.clone(),
                format!("{}{leader}", node.id),
                node.role.clone(),
                node.url.clone(),
                opt(node.term),
                opt(node.last_log_index),
                opt(node.applied_index),
                opt(node.lag),
                opt(node.reachable.map(|r| if r { "yes" } else { "no" })),
            ]);
        }
    }
    table
}
