//! Sending at the leader: a request's messages become a [`SendCommand`] (queues
//! chosen, ids and timestamps fixed: [`crate::service::producer`]), which is
//! checked against the topic quota and the caller's send quota, replicated
//! (batched with concurrent sends: [`crate::service::send_batcher`]) and answered
//! with where each message was stored.
//!
//! Two steps, so that the test-only fault switches can stand between them
//! (`faults::ack_before_commit` answers a prepared send before it commits).

use crate::api::{SendRequest, SendResponse, SendResultView};
use crate::auth::Identity;
use crate::error::BrokerError;
use crate::metrics::Metrics;
use crate::replication::command::{Rejection, SendCommand};
use crate::service::consumer::delay;
use crate::service::node::Node;
use crate::service::transactions;
use crate::topic::{HALF_TOPIC, SCHEDULE_TOPIC, TIMER_TOPIC};

/// The command that stores `request` in `topic` (this node leads its group).
///
/// # Errors
/// [`BrokerError::DiskFull`] or [`BrokerError::StorageFailed`] before any work;
/// `Invalid`, `TopicNotFound`, `QueueNotFound` or `NoPermission` for a request
/// that cannot be stored.
pub fn prepare(
    node: &Node,
    topic: &str,
    request: SendRequest,
    born_host: &str,
) -> Result<SendCommand, BrokerError> {
    node.health.check_room()?;
    transactions::validate(&request)?;
    let transaction = request.transaction.clone();
    let state = node.shared.state();
    let mut command = node.sender.prepare(
        &state,
        node.config.auto_create_topics,
        topic,
        request,
        born_host,
        node.send_limits(),
    )?;
    if let Some(transaction) = transaction {
        transactions::into_half_messages(&mut command, &transaction.producer_group);
    }
    Ok(command)
}

/// Stores a prepared send for `caller` and answers where each message went.
///
/// # Errors
/// A topic or send quota refusal; apply's [`Rejection`]; the write's errors
/// (`NotLeader`, `WriteTimeout`, `LeadershipLost`, …).
pub async fn commit(
    node: &Node,
    caller: &Identity,
    command: SendCommand,
) -> Result<SendResponse, BrokerError> {
    let body_bytes: u64 = command.messages.iter().map(|m| m.body.len() as u64).sum();
    let count = command.messages.len() as u64;
    // A first send that creates its topic counts against the topic quota, and holds
    // the creation permit until it is applied (or this returns).
    let _creation = match &command.create_if_missing {
        Some(config) => {
            node.topic_limits.check_queues(config)?;
            node.topic_limits
                .admit(&node.shared, &command.topic)
                .await?
        }
        None => None,
    };
    // Where the send is decided, after it is known to be valid: a refused request
    // takes nothing from the quota and stores nothing.
    node.quotas.take(caller, count, body_bytes)?;
    let topic = command.topic.clone();
    // Per message: where a delayed or timer message waits, and until when.
    let waits: Vec<Option<(&'static str, u64)>> = command
        .messages
        .iter()
        .map(|m| {
            let waits_in = if m.topic == TIMER_TOPIC {
                TIMER_TOPIC
            } else {
                SCHEDULE_TOPIC
            };
            delay::draft_due_ms(m).map(|due| (waits_in, due))
        })
        .collect();
    // A transaction's messages wait in the half topic until it is resolved.
    let transaction_id = transactions::transaction_of(&command);
    let results = match node.sends.send(command).await? {
        Ok(results) => results,
        Err(rejection) => {
            if matches!(rejection, Rejection::ProducerTableFull(_)) {
                Metrics::add(&node.metrics.producer_table_full_total, 1);
            }
            return Err(rejection.into());
        }
    };
    node.metrics.record_in(&topic, count, body_bytes);
    Ok(SendResponse {
        results: results
            .into_iter()
            .zip(waits)
            .map(|(r, waits)| SendResultView {
                msg_id: r.msg_id.to_string(),
                topic: match (waits, &transaction_id) {
                    (Some((waits_in, _)), _) => waits_in.to_string(),
                    (None, Some(_)) => HALF_TOPIC.to_string(),
                    (None, None) => topic.clone(),
                },
                queue_id: r.queue_id.0,
                queue_offset: r.queue_offset.0,
                commit_log_offset: r.commit_log_offset,
                store_timestamp: r.store_timestamp_ms,
                deliver_timestamp: waits.map(|(_, due)| due),
            })
            .collect(),
        group: node.group().to_string(),
        transaction_id,
    })
}
