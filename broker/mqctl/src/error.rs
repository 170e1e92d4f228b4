//! [`CliError`] and its printing: one line on stderr, `error: CODE: message`, where
//! CODE is the API's word (`TOPIC_NOT_FOUND`, `NOT_LEADER`, …) or the client's kind
//! of local failure (`connect`, `timeout`, …). A 401 or 403 adds a second line, a
//! hint on what to do about it.

use std::error::Error as _;
use std::process::ExitCode;

use broker_client::ClientError;

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
    /// An operation the broker ran on its own (a node's join) ended in failure.
    #[error("{0}")]
    Failed(String),
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
        CliError::Failed(message) => format!("FAILED: {message}"),
        other => format!("io: {other}"),
    };
    eprintln!("error: {text}");
    if let CliError::Client(e) = error {
        if let Some(hint) = hint(e) {
            eprintln!("hint: {hint}");
        }
    }
    ExitCode::from(error.exit_code())
}

/// What to do about a refusal of the caller's credentials.
pub fn hint(error: &ClientError) -> Option<&'static str> {
    match error.status()? {
        401 => Some(
            "the cluster wants a valid token: export MQ_TOKEN=$(scripts/cluster.sh token) \
             (the admin token of a cluster.sh cluster), or --token-file FILE / --token TOKEN; \
             an admin makes users and their tokens with `mqctl user create`",
        ),
        403 => Some(
            "the token is valid but its user lacks the permission for this: \
             an admin can grant it with `mqctl user update NAME --permission RESOURCE=ACTIONS`",
        ),
        _ => None,
    }
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
