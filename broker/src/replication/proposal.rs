//! Typed proposals: each command knows the answer its apply gives.
//!
//! openraft hands back one response type for every entry ([`CommandResponse`]), so a
//! caller that proposed a topic update would otherwise match a `Sent` or a
//! `Delivered` it can never get. Apply answers each command with one kind of
//! response (plus `Rejected` where a command can be refused); [`Proposal::answer`]
//! states that per command, in this one place, and callers get the typed answer:
//! `node.write(UpsertTopic(config))` is a `Result<TopicConfig, Rejection>` once
//! committed.
//!
//! A response of another kind would be a bug in apply, not an outcome: it panics
//! with both kinds named (`state_machine::tests::every_command_gets_the_answer_it_declares`
//! applies each command and checks).

use openraft::errors::{ClientWriteError, RaftError};

use super::claims::{ClaimsChange, ClaimsRefusal};
use super::command::{
    Command, CommandResponse, DeliverCommand, DeliverTimersCommand, OffsetCommit, Rejection,
    ResolveTransaction, SendCommand, SendResult,
};
use super::leases::{LeaseCommand, LeaseOutcome};
use super::transactions::ResolveOutcome;
use super::type_config::Raft;
use crate::auth::users::{MergeOutcome, UserRecord};
use crate::error::BrokerError;
use crate::storage::{MessageId, QueueOffset};
use crate::topic::TopicConfig;
use crate::units::HumanDuration;

/// A command with its answer type.
pub trait Proposal {
    /// What applying the command answers.
    type Answer;

    /// The command to replicate.
    fn into_command(self) -> Command;

    /// The typed answer in apply's response.
    ///
    /// # Panics
    /// If apply answered with a kind this command never gets (a bug in apply).
    fn answer(response: CommandResponse) -> Self::Answer;
}

/// Proposes a command to `raft` and waits until it is committed and applied here.
///
/// # Errors
/// NOT_LEADER if this node is not (or stopped being) the leader; UNAVAILABLE if
/// the write did not commit within `write_timeout` (no quorum) or Raft stopped.
pub async fn propose<P: Proposal>(
    raft: &Raft,
    write_timeout: HumanDuration,
    proposal: P,
) -> Result<P::Answer, BrokerError> {
    let command = proposal.into_command();
    match tokio::time::timeout(write_timeout.0, raft.client_write(command)).await {
        Err(_) => Err(BrokerError::WriteTimeout {
            timeout: write_timeout,
        }),
        Ok(Ok(response)) => Ok(P::answer(response.data)),
        Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(forward)))) => {
            Err(BrokerError::NotLeader {
                leader: forward.leader_node.map(|node| node.url),
            })
        }
        Ok(Err(RaftError::APIError(ClientWriteError::LogEntryDiscarded(e)))) => {
            Err(BrokerError::LeadershipLost(e.to_string()))
        }
        Ok(Err(RaftError::APIError(e @ ClientWriteError::ChangeMembershipError(_))))
        | Ok(Err(RaftError::APIError(e @ ClientWriteError::PreconditionFailed(_)))) => Err(
            BrokerError::Internal(format!("unexpected write error: {e}")),
        ),
        Ok(Err(RaftError::Fatal(fatal))) => {
            Err(BrokerError::unavailable(format!("raft stopped: {fatal}")))
        }
    }
}

/// Create or update a topic ([`Command::UpsertTopic`]); refused if invalid.
#[derive(Clone, Debug)]
pub struct UpsertTopic(pub TopicConfig);

/// Delete a topic ([`Command::DeleteTopic`]); answers whether it existed.
#[derive(Clone, Debug)]
pub struct DeleteTopic(pub String);

/// Merge user records ([`Command::PutUsers`]).
#[derive(Clone, Debug)]
pub struct PutUsers(pub Vec<UserRecord>);

/// Sends of concurrent requests in one entry ([`Command::SendBatch`]): one answer
/// per send, in order.
#[derive(Clone, Debug)]
pub struct SendBatch(pub Vec<SendCommand>);

/// Where a scheduled delivery got to ([`Command::Deliver`]).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Delivered {
    pub delivered: usize,
    /// Messages whose topic or queue no longer exists.
    pub skipped: usize,
}

fn wrong_answer(command: &str, response: &CommandResponse) -> ! {
    panic!("apply answered a {command} with `{response}`: a bug in the state machine")
}

/// The answer of a send: its results, or why apply refused it.
fn send_answer(response: CommandResponse) -> Result<Vec<SendResult>, Rejection> {
    match response {
        CommandResponse::Sent(results) => Ok(results),
        CommandResponse::Rejected(rejection) => Err(rejection),
        other => wrong_answer("send", &other),
    }
}

impl Proposal for SendCommand {
    type Answer = Result<Vec<SendResult>, Rejection>;

    fn into_command(self) -> Command {
        Command::Send(self)
    }

    fn answer(response: CommandResponse) -> Self::Answer {
        send_answer(response)
    }
}

impl Proposal for SendBatch {
    type Answer = Vec<Result<Vec<SendResult>, Rejection>>;

    fn into_command(self) -> Command {
        Command::SendBatch(self.0)
    }

    fn answer(response: CommandResponse) -> Self::Answer {
        match response {
            CommandResponse::SentBatch(answers) => answers.into_iter().map(send_answer).collect(),
            other => wrong_answer("batch of sends", &other),
        }
    }
}

impl Proposal for UpsertTopic {
    type Answer = Result<TopicConfig, Rejection>;

    fn into_command(self) -> Command {
        Command::UpsertTopic(self.0)
    }

    fn answer(response: CommandResponse) -> Self::Answer {
        match response {
            CommandResponse::Topic(config) => Ok(config),
            CommandResponse::Rejected(rejection) => Err(rejection),
            other => wrong_answer("topic update", &other),
        }
    }
}

impl Proposal for DeleteTopic {
    /// Whether the topic existed.
    type Answer = bool;

    fn into_command(self) -> Command {
        Command::DeleteTopic { topic: self.0 }
    }

    fn answer(response: CommandResponse) -> Self::Answer {
        match response {
            CommandResponse::TopicDeleted { existed } => existed,
            other => wrong_answer("topic deletion", &other),
        }
    }
}

impl Proposal for OffsetCommit {
    /// The offset stored afterwards (higher than asked when a lower commit without
    /// `force` was ignored).
    type Answer = QueueOffset;

    fn into_command(self) -> Command {
        Command::CommitOffset(self)
    }

    fn answer(response: CommandResponse) -> Self::Answer {
        match response {
            CommandResponse::OffsetCommitted { offset } => offset,
            other => wrong_answer("offset commit", &other),
        }
    }
}

impl Proposal for DeliverCommand {
    /// Refused when another delivery moved the queue's offset first.
    type Answer = Result<Delivered, Rejection>;

    fn into_command(self) -> Command {
        Command::Deliver(self)
    }

    fn answer(response: CommandResponse) -> Self::Answer {
        match response {
            CommandResponse::Delivered { delivered, skipped } => {
                Ok(Delivered { delivered, skipped })
            }
            CommandResponse::Rejected(rejection) => Err(rejection),
            other => wrong_answer("delivery", &other),
        }
    }
}

impl Proposal for DeliverTimersCommand {
    /// Refused when the delivered key moved first, or the run would pass over a
    /// timer stored since it was read.
    type Answer = Result<Delivered, Rejection>;

    fn into_command(self) -> Command {
        Command::DeliverTimers(self)
    }

    fn answer(response: CommandResponse) -> Self::Answer {
        match response {
            CommandResponse::Delivered { delivered, skipped } => {
                Ok(Delivered { delivered, skipped })
            }
            CommandResponse::Rejected(rejection) => Err(rejection),
            other => wrong_answer("timer delivery", &other),
        }
    }
}

impl Proposal for ResolveTransaction {
    type Answer = ResolveOutcome;

    fn into_command(self) -> Command {
        Command::ResolveTransaction(self)
    }

    fn answer(response: CommandResponse) -> Self::Answer {
        match response {
            CommandResponse::Transaction(outcome) => outcome,
            other => wrong_answer("transaction resolution", &other),
        }
    }
}

/// Count a check of these open transactions as offered ([`Command::OfferChecks`]).
#[derive(Clone, Debug)]
pub struct OfferChecks {
    pub ids: Vec<MessageId>,
    /// When the next check of each is offered.
    pub next_ms: u64,
}

impl Proposal for OfferChecks {
    type Answer = ();

    fn into_command(self) -> Command {
        Command::OfferChecks {
            ids: self.ids,
            next_ms: self.next_ms,
        }
    }

    fn answer(response: CommandResponse) -> Self::Answer {
        match response {
            CommandResponse::Applied => {}
            other => wrong_answer("offer of checks", &other),
        }
    }
}

impl Proposal for PutUsers {
    type Answer = MergeOutcome;

    fn into_command(self) -> Command {
        Command::PutUsers(self.0)
    }

    fn answer(response: CommandResponse) -> Self::Answer {
        match response {
            CommandResponse::UsersMerged(outcome) => outcome,
            other => wrong_answer("user change", &other),
        }
    }
}

impl Proposal for LeaseCommand {
    /// One outcome per op, in order.
    type Answer = Vec<LeaseOutcome>;

    fn into_command(self) -> Command {
        Command::Lease(self)
    }

    fn answer(response: CommandResponse) -> Self::Answer {
        match response {
            CommandResponse::Leased(outcomes) => outcomes,
            other => wrong_answer("lease change", &other),
        }
    }
}

impl Proposal for ClaimsChange {
    /// Applied, or refused whole (claims off, or the table full).
    type Answer = Result<(), ClaimsRefusal>;

    fn into_command(self) -> Command {
        Command::Claims(self)
    }

    fn answer(response: CommandResponse) -> Self::Answer {
        match response {
            CommandResponse::Claims(outcome) => outcome,
            other => wrong_answer("claims change", &other),
        }
    }
}
