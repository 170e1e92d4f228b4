//! `mqctl`, the command line client of the HTTP/JSON API (shared/API.md): topics,
//! sends (one, a file, bulk), pulls and `tail -f`, consumer offsets and resets by
//! time, queries, routes and cluster membership.
//!
//! # Layout
//! * [`args`] — the command line (clap): global flags and every subcommand.
//! * [`scoped`] — [`scoped::ScopedApi`]: the calls the client library does not make
//!   (broker-group-scoped pulls, queues, offsets by time and commits; membership).
//! * [`output`] — aligned tables, JSON, timestamps; writing that survives a closed
//!   pipe (`mqctl tail -f | head`).
//! * [`topics`], [`send`], [`pull`], [`offsets`], [`query`], [`cluster`] — one module
//!   per command family.
//! * [`error`] — [`CliError`] and how it is printed: `error: CODE: message`.
//!
//! Everything goes through the public API only (no cluster secret): the client
//! library's [`BrokerClient`] and [`Producer`] where they fit, [`scoped::ScopedApi`]
//! where a request must name a broker group.

pub mod args;
pub mod cluster;
pub mod error;
pub mod offsets;
pub mod output;
pub mod pull;
pub mod query;
pub mod scoped;
pub mod send;
pub mod topics;

use std::process::ExitCode;

use clap::Parser;

pub use error::CliError;

use crate::client::{BrokerClient, ClientOptions, Producer};
use args::{Cli, Command};
use output::Output;
use scoped::ScopedApi;

/// What every command needs: the connections and the output settings.
pub struct Context {
    /// The client library's client (leader following, retries in [`Producer`]).
    pub client: BrokerClient,
    /// Calls that name a broker group, or that the library lacks.
    pub scoped: ScopedApi,
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
        ..ClientOptions::default()
    };
    let client = BrokerClient::new(cli.server.clone(), options)?;
    let scoped = ScopedApi::new(&cli.server, cli.timeout)?;
    let ctx = Context {
        client,
        scoped,
        out: Output::new(cli.json),
    };
    match cli.command {
        Command::Topic(command) => topics::run(&ctx, command).await,
        Command::Routes(args) => topics::routes(&ctx, &args.topic).await,
        Command::Send(args) => send::run(&ctx, args).await,
        Command::Pull(args) => pull::pull(&ctx, args).await,
        Command::Tail(args) => pull::tail(&ctx, args).await,
        Command::Group(command) => offsets::run(&ctx, command).await,
        Command::Query(command) => query::run(&ctx, command).await,
        Command::Cluster(command) => cluster::run(&ctx, command).await,
    }
}

/// A producer with the library's defaults (idempotent, two retries).
fn producer(ctx: &Context) -> Producer {
    Producer::new(
        ctx.client.clone(),
        crate::client::ProducerOptions::default(),
    )
}
