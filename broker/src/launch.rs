//! What the `broker` binary does, as a library function so test harnesses can ship
//! the very same node as their own binary: load configuration, initialise logging,
//! run until SIGTERM or Ctrl-C.

use std::process::ExitCode;

use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::EnvFilter;

use crate::config::{CliArgs, LogFormat, NodeConfig};

/// Installs the `tracing` subscriber: `BROKER_LOG` filters, stderr receives text or,
/// with `json`, one JSON object per line carrying the current span's fields
/// (`request_id`, `method`, `route` inside a request).
pub fn init_logging(json: bool) {
    let filter = EnvFilter::try_from_env("BROKER_LOG")
        .unwrap_or_else(|_| EnvFilter::new("info,openraft=error,raft_log=warn,chunked_wal=warn"));
    init_logging_with(json, filter, std::io::stderr);
}

/// [`init_logging`] with its filter and writer given (tests capture the lines).
/// A second initialisation in one process keeps the first subscriber.
pub fn init_logging_with<W>(json: bool, filter: EnvFilter, writer: W)
where
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    // `try_init` also routes the `log` crate's records (raft-log, chunked-wal) here.
    let _ = log_dispatch(json, filter, writer).try_init();
}

/// The subscriber [`init_logging_with`] installs, not installed: a test can make it
/// the default of one thread (`tracing::dispatcher::with_default`) without taking
/// over its whole process.
pub fn log_dispatch<W>(json: bool, filter: EnvFilter, writer: W) -> tracing::Dispatch
where
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    if json {
        tracing::Dispatch::new(
            subscriber
                .json()
                .with_current_span(true)
                .with_span_list(false)
                .finish(),
        )
    } else {
        tracing::Dispatch::new(subscriber.finish())
    }
}

/// Runs a node with these flags; returns the process exit code (2 for a
/// configuration error, 1 for a failure while running).
pub fn main(args: CliArgs) -> ExitCode {
    let config = match NodeConfig::load(&args, std::env::vars()) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("broker: {e}");
            return ExitCode::from(2);
        }
    };
    let json = args.log_json || config.logging.format == LogFormat::Json;
    init_logging(json);
    #[cfg(feature = "fault-injection")]
    if let Err(e) = crate::faults::init() {
        eprintln!("broker: {e}");
        return ExitCode::from(2);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("broker: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let result = runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(&config.listen)
            .await
            .map_err(|e| anyhow::anyhow!("binding {}: {e}", config.listen))?;
        crate::server::run_as(
            config,
            listener,
            shutdown_signal(),
            crate::server::Process::Owned,
        )
        .await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("broker: {e:#}");
            ExitCode::from(1)
        }
    }
}

/// Resolves on SIGTERM or Ctrl-C.
async fn shutdown_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = terminate => {}
    }
    tracing::info!("shutting down");
}
