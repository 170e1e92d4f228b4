//! Giving a message back at the leader of its group: read the message at the
//! offset the consumer names, plan its copy ([`super::retry::give_back`]: the
//! retry topic after a delay, or the dead-letter topic), and store the copy —
//! creating the group's retry or dead-letter topic on first use when topics may
//! be created by use.

use super::delay::draft_due_ms;
use super::retry::{self, Request};
use crate::api::{RetryRequest, RetryResponse};
use crate::error::BrokerError;
use crate::replication::command::SendCommand;
use crate::service::node::Node;
use crate::service::offsets;
use crate::storage::{now_ms, PullStatus, QueueOffset, StoredMessage, TagFilter};
use crate::topic::TopicConfig;

/// Gives back the message `body` names for consumer `group` (this node leads the
/// message's group) and answers where its copy went.
///
/// # Errors
/// `DiskFull`/`StorageFailed` before any work; `QueueNotFound`, `Invalid` (a
/// delay level out of range), `MessageNotFound` (retention deleted it, or past
/// the queue's end), `GroupTopicMissing` (its retry or dead-letter topic does not
/// exist and cannot be created by use), `LimitReached` (the topic quota); the write's
/// errors.
pub async fn give_back(
    node: &Node,
    group: &str,
    body: &RetryRequest,
) -> Result<RetryResponse, BrokerError> {
    // A give-back stores a new message (in the retry or dead-letter topic).
    node.health.check_room()?;
    let command = give_back_command(node, group, body).await?;
    let topic = command.topic.clone();
    // The group's first give-back creates its retry or dead-letter topic: that
    // counts against the topic quota, holding the permit until applied (and
    // releasing it before a NOT_LEADER answer is forwarded).
    let _creation = match &command.create_if_missing {
        Some(_) => node.topic_limits.admit(&node.shared, &topic).await?,
        None => None,
    };
    let draft = &command.messages[0];
    let (msg_id, reconsume_times) = (draft.msg_id.to_string(), draft.reconsume_times);
    let due = draft_due_ms(draft);
    node.write(command).await??;
    Ok(RetryResponse {
        msg_id,
        dead_letter: due.is_none(),
        topic,
        reconsume_times,
        deliver_timestamp: due,
        broker_group: node.group().to_string(),
    })
}

/// Reads the given-back message and builds the send of its copy.
async fn give_back_command(
    node: &Node,
    group: &str,
    body: &RetryRequest,
) -> Result<SendCommand, BrokerError> {
    let levels = node.sender.delay_levels();
    let request = match body.delay_level {
        0 => Request::Default,
        level if level < 0 => Request::DeadLetter,
        level if level as u32 > levels.max_level() => {
            return Err(BrokerError::Invalid(format!(
                "delay_level must be at most {}, got {level}",
                levels.max_level()
            )))
        }
        level => Request::Level(level as u32),
    };
    let message = match locate(node, body) {
        Ok(message) => message,
        // Not on this node: as leader it may not yet have applied what the group
        // committed (and the consumer saw on another replica), the message or even
        // its queue — apply that first, then look again.
        Err(e) if e.is_missing() => {
            node.catch_up().await?;
            locate(node, body)?
        }
        Err(e) => return Err(e),
    };
    let plan = retry::give_back(
        message,
        group,
        request,
        node.config.consumer.max_reconsume_times,
        levels,
        now_ms(),
    );
    // The group's retry and dead-letter topics are created on first use only
    // when topics may be created by use at all; otherwise an admin creates them.
    // (Apply checks again: a topic deleted meanwhile is TOPIC_NOT_FOUND there.)
    let create_if_missing = if node.config.auto_create_topics {
        Some(TopicConfig::for_consumer_group_topic(&plan.topic))
    } else {
        if !node.shared.state().topics.contains_key(&plan.topic) {
            let kind = if plan.due_ms.is_some() {
                "retry"
            } else {
                "dead-letter"
            };
            return Err(BrokerError::GroupTopicMissing {
                kind,
                topic: plan.topic,
                group: group.to_string(),
            });
        }
        None
    };
    Ok(SendCommand {
        create_if_missing,
        topic: plan.topic,
        messages: vec![plan.draft],
    })
}

/// The message the request names.
///
/// # Errors
/// As [`offsets::queue`]; `MessageNotFound` (retention deleted it, or past the
/// queue's end).
fn locate(node: &Node, body: &RetryRequest) -> Result<StoredMessage, BrokerError> {
    let queue = offsets::queue(node, &body.topic, body.queue_id)?;
    let page = node
        .shared
        .store
        .pull(
            &body.topic,
            queue,
            QueueOffset(body.queue_offset),
            1,
            &TagFilter::All,
        )
        .map_err(|e| BrokerError::Internal(format!("reading the message: {e}")))?;
    let status = page.status;
    page.messages
        .into_iter()
        .find(|m| m.queue_offset.0 == body.queue_offset)
        .ok_or_else(|| {
            let why = match status {
                PullStatus::OffsetTooSmall => "deleted by retention",
                _ => "beyond the queue's end",
            };
            BrokerError::MessageNotFound(format!(
                "no message at offset {} of {}/{}: {why}",
                body.queue_offset, body.topic, body.queue_id
            ))
        })
}
