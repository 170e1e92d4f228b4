//! [`CliError`] and its printing: one line on stderr, `error: CODE: message`, where
//! CODE is the API's word (`TOPIC_NOT_FOUND`, `NOT_LEADER`, …) or the client's kind
//! of local failure (`connect`, `timeout`, …).

use std::error::Error as _;
use std::process::ExitCode;

use crate::client::ClientError;

/// A failed `mqctl` command.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// A request failed (the broker refused it, or it did not get through).
    #[error(transparent)]
    Client(#[from] ClientError),
    /// An argument the command line parser cannot check on its own.
    #[error("{0}")]
    Usage(String),
    /// An input file could not be read.
    #[error("cannot read {path}: {source}")]
    Input {
        path: String,
        source: std::io::Error,
    },
    /// Writing the output or starting the runtime failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

impl CliError {
    /// The exit status: 2 for a bad command line (as clap's own errors), else 1.
    fn exit_code(&self) -> u8 {
        match self {
            Self::Usage(_) => 2,
            _ => 1,
        }
    }
}

/// Prints `error` on stderr and returns the exit status for it. A closed stdout
/// (`mqctl tail -f | head`) is how a reader says "enough": success, silently.
pub fn report(error: &CliError) -> ExitCode {
    if let CliError::Io(e) = error {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            return ExitCode::SUCCESS;
        }
    }
    let text = match error {
        CliError::Client(e) => describe(e),
        CliError::Usage(message) => format!("usage: {message}"),
        other => format!("io: {other}"),
    };
    eprintln!("error: {text}");
    ExitCode::from(error.exit_code())
}

/// `CODE: message` for a client error, with the transport's underlying cause
/// (reqwest's own message says only "error sending request for url").
pub fn describe(error: &ClientError) -> String {
    match error {
        ClientError::Api { body, .. } => match &body.leader {
            Some(leader) => format!("{}: {} (leader: {leader})", body.code, body.message),
            None => format!("{}: {}", body.code, body.message),
        },
        ClientError::RetriesExhausted {
            attempts,
            outcome_unknown,
            last,
        } => {
            let unknown = if *outcome_unknown {
                "; an attempt may have been stored"
            } else {
                ""
            };
            format!(
                "{} (gave up after {attempts} attempts{unknown})",
                describe(last)
            )
        }
        ClientError::Transport(e) => {
            let mut text = e.to_string();
            let mut cause = e.source();
            while let Some(inner) = cause {
                text.push_str(": ");
                text.push_str(&inner.to_string());
                cause = inner.source();
            }
            format!("{}: {text}", error.kind())
        }
        other => format!("{}: {other}", other.kind()),
    }
}
