//! `mqctl user create|list|show|update|delete|rotate`.
//!
//! A token is shown once, in the answer that made it: `create` and `rotate` print
//! it alone on stdout (so `TOKEN=$(mqctl user create …)` captures exactly it) and
//! say on stderr what it is; `--json` prints the whole answer instead.
//! `update` changes only what its flags name: it reads the user, then replaces
//! permissions and quotas as the API's `PUT` requires.

use super::args::{QuotaArgs, UserCommand, UserCreateArgs, UserUpdateArgs};
use super::output::{fields, opt, utc, Table};
use super::{CliError, Context};
use broker_proto::acl::Permission;
use broker_proto::api::{QuotasView, UserRequest, UserTokenResponse, UserUpdate, UserView};

/// Runs a `user` subcommand.
///
/// # Errors
/// The failed request.
pub async fn run(ctx: &Context, command: UserCommand) -> Result<(), CliError> {
    match command {
        UserCommand::Create(args) => create(ctx, args).await,
        UserCommand::List => {
            let users = ctx.client.users().await?;
            ctx.out.either(&users, || users_table(&users.users))
        }
        UserCommand::Show(args) => {
            let user = ctx.client.user(&args.name).await?;
            ctx.out.either(&user, || user_fields(&user))
        }
        UserCommand::Update(args) => update(ctx, args).await,
        UserCommand::Delete(args) => {
            let deleted = ctx.client.delete_user(&args.name).await?;
            warn_pending(&deleted.pending_groups);
            if ctx.out.json {
                ctx.out.json(&deleted)
            } else {
                ctx.out.line(&format!(
                    "deleted user {}: its token stops working on every node within seconds",
                    deleted.name
                ))
            }
        }
        UserCommand::Rotate(args) => {
            let answer = ctx.client.rotate_user_token(&args.name).await?;
            let what = format!(
                "issued a new token for user {} (the old one stops working)",
                answer.name
            );
            print_token(ctx, &answer, &what)
        }
    }
}

async fn create(ctx: &Context, args: UserCreateArgs) -> Result<(), CliError> {
    let request = UserRequest {
        name: args.name,
        permissions: args.permissions,
        quotas: quotas(&args.quotas),
    };
    let answer = ctx.client.create_user(&request).await?;
    print_token(ctx, &answer, &format!("created user {}", answer.name))
}

async fn update(ctx: &Context, args: UserUpdateArgs) -> Result<(), CliError> {
    let current = ctx.client.user(&args.name).await?;
    let permissions = if args.no_permissions {
        Vec::new()
    } else if args.permissions.is_empty() {
        current.permissions
    } else {
        args.permissions
    };
    let quotas = if args.no_quotas {
        QuotasView::default()
    } else {
        QuotasView {
            send_messages_per_s: args
                .quotas
                .send_messages_per_s
                .or(current.quotas.send_messages_per_s),
            send_bytes_per_s: args
                .quotas
                .send_bytes_per_s
                .or(current.quotas.send_bytes_per_s),
        }
    };
    let update = UserUpdate {
        permissions,
        quotas,
    };
    let user = ctx.client.update_user(&args.name, &update).await?;
    ctx.out.either(&user, || user_fields(&user))
}

fn quotas(args: &QuotaArgs) -> QuotasView {
    QuotasView {
        send_messages_per_s: args.send_messages_per_s,
        send_bytes_per_s: args.send_bytes_per_s,
    }
}

/// The token alone on stdout, what it is on stderr; or the whole answer as JSON.
fn print_token(ctx: &Context, answer: &UserTokenResponse, what: &str) -> Result<(), CliError> {
    warn_pending(&answer.pending_groups);
    if ctx.out.json {
        return ctx.out.json(answer);
    }
    eprintln!(
        "{what}; the token follows on stdout, shown only this once (the broker keeps a \
         hash). Give it to the client as MQ_TOKEN or an `Authorization: Bearer` header."
    );
    ctx.out.line(&answer.token)
}

/// A change that did not reach every broker group yet still holds: they catch up
/// from the others within seconds of becoming reachable.
fn warn_pending(pending_groups: &[String]) {
    if !pending_groups.is_empty() {
        eprintln!(
            "note: broker group(s) {} could not be reached; they take the change from the \
             others within seconds of becoming reachable",
            pending_groups.join(", ")
        );
    }
}

/// `topic:orders=pub,sub group:billing*=sub`
fn permissions_text(permissions: &[Permission]) -> String {
    permissions
        .iter()
        .map(|p| {
            let actions: Vec<&str> = p.actions.iter().map(|a| a.word()).collect();
            format!("{}={}", String::from(p.resource.clone()), actions.join(","))
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn users_table(users: &[UserView]) -> Table {
    let mut table = Table::new(&[
        "NAME",
        "PERMISSIONS",
        "SEND_MSGS_PER_S",
        "SEND_BYTES_PER_S",
        "UPDATED",
    ]);
    for user in users {
        table.row(vec![
            user.name.clone(),
            permissions_text(&user.permissions),
            opt(user.quotas.send_messages_per_s),
            opt(user.quotas.send_bytes_per_s),
            utc(user.updated),
        ]);
    }
    table
}

fn user_fields(user: &UserView) -> Table {
    fields(vec![
        ("name", user.name.clone()),
        ("permissions", permissions_text(&user.permissions)),
        ("send_messages_per_s", opt(user.quotas.send_messages_per_s)),
        ("send_bytes_per_s", opt(user.quotas.send_bytes_per_s)),
        ("created", utc(user.created)),
        ("updated", utc(user.updated)),
    ])
}
