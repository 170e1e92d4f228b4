//! `mqctl cluster status|add-node|remove-node|transfer-leader`.

use super::args::ClusterCommand;
use super::output::{opt, Table};
use super::{CliError, Context};
use crate::api::GroupView;

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
            ctx.scoped
                .add_node(&args.group, args.node_id, &args.address)
                .await?
        }
        ClusterCommand::RemoveNode(args) => {
            ctx.scoped.remove_node(&args.group, args.node_id).await?
        }
        ClusterCommand::TransferLeader(args) => {
            ctx.scoped.transfer_leader(&args.group, args.to).await?
        }
    };
    ctx.out
        .either(&group, || nodes_table(std::slice::from_ref(&group)))
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
