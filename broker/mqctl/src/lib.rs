//! `mqctl`, the command line client of the HTTP/JSON API (shared/API.md): topics,
//! sends (one, a file, bulk), pulls and `tail -f`, consumer offsets and resets by
//! time, receive / ack / nack (lease-based consumption), queries, routes, cluster
//! membership, and users with their permissions.
//!
//! # Layout
//! * [`args`] — the command line (clap): global flags and every subcommand.
//! * [`output`] — aligned tables, JSON, timestamps; writing that survives a closed
//!   pipe (`mqctl tail -f | head`).
//! * [`topics`], [`send`], [`pull`], [`offsets`], [`receive`], [`query`],
//!   [`cluster`], [`users`] — one module per command family.
//! * [`error`] — [`CliError`] and how it is printed: `error: CODE: message`, with a
//!   hint on 401 and 403.
//!
//! Everything goes through the public API only (no cluster secret), and every
//! request through the client library: its [`BrokerClient`] (leader following,
//! failover on connect errors; the calls that name a broker group) and its
//! [`Producer`] (idempotent sends with retries). The client sends the bearer token
//! (`--token`, `MQ_TOKEN`, `--token-file`), trusts the CA (`--ca-file`) and names
//! itself `mqctl/<version>`.

pub mod args;
pub mod cluster;
pub mod error;
pub mod offsets;
pub mod output;
pub mod pull;
pub mod query;
pub mod receive;
pub mod send;
pub mod topics;
pub mod tx;
pub mod users;

use std::process::ExitCode;

use clap::Parser;

pub use error::CliError;

use args::{Cli, Command};
use broker_client::{BrokerClient, ClientOptions, Producer};
use output::Output;

/// What every command needs: the connections and the output settings.
pub struct Context {
    /// The client library's client (leader following, retries in [`Producer`]).
    pub client: BrokerClient,
    pub out: Output,
}

/// Runs `mqctl` with the process's arguments and returns its exit status: 0 on
/// success, 1 when a request failed, 2 for a bad command line (as clap does).
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => return error::report(&CliError::Io(e)),
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => error::report(&e),
    }
}

/// Runs one parsed command line.
///
/// # Errors
/// The first failed request, a bad argument, or an unreadable input file.
pub async fn run(cli: Cli) -> Result<(), CliError> {
    let options = ClientOptions {
        request_timeout: cli.timeout,
        token: token(&cli)?,
        ca_file: cli.ca_file.clone(),
        user_agent: Some(concat!("mqctl/", env!("CARGO_PKG_VERSION")).to_string()),
        ..ClientOptions::default()
    };
    let client = BrokerClient::new(cli.server.clone(), options)?;
    let ctx = Context {
        client,
        out: Output::new(cli.json),
    };
    match cli.command {
        Command::Topic(command) => topics::run(&ctx, command).await,
        Command::Routes(args) => topics::routes(&ctx, &args.topic).await,
        Command::Send(args) => send::run(&ctx, args).await,
        Command::Pull(args) => pull::pull(&ctx, args).await,
        Command::Tail(args) => pull::tail(&ctx, args).await,
        Command::Group(command) => offsets::run(&ctx, command).await,
        Command::Receive(args) => receive::receive(&ctx, args).await,
        Command::Ack(args) => receive::ack(&ctx, args).await,
        Command::Nack(args) => receive::nack(&ctx, args).await,
        Command::Query(command) => query::run(&ctx, command).await,
        Command::Cluster(command) => cluster::run(&ctx, command).await,
        Command::User(command) => users::run(&ctx, command).await,
        Command::Tx(command) => tx::run(&ctx, command).await,
    }
}

/// The token from `--token` / `MQ_TOKEN`, or the first line of `--token-file`.
fn token(cli: &Cli) -> Result<Option<String>, CliError> {
    if let Some(token) = &cli.token {
        return Ok(Some(token.trim().to_string()).filter(|t| !t.is_empty()));
    }
    let Some(path) = &cli.token_file else {
        return Ok(None);
    };
    let text = std::fs::read_to_string(path).map_err(|source| CliError::Input {
        path: path.display().to_string(),
        source,
    })?;
    let token = text.lines().next().unwrap_or_default().trim().to_string();
    if token.is_empty() {
        return Err(CliError::Usage(format!(
            "--token-file {}: the file is empty",
            path.display()
        )));
    }
    Ok(Some(token))
}

/// A producer with the library's defaults (idempotent, two retries).
fn producer(ctx: &Context) -> Producer {
    Producer::new(
        ctx.client.clone(),
        broker_client::ProducerOptions::default(),
    )
}
