//! Transactional messages at the leader (shared/API.md "Transactional messages";
//! the replicated side is `replication::transactions`):
//!
//! * a send with `transaction` stores its batch as half messages
//!   ([`into_half_messages`]) and answers the transaction id (its first message's);
//! * [`resolve`] commits or rolls back, once;
//! * [`run_checks`] offers open transactions to their producer group's checks
//!   (`transaction.check_after` after they were stored, then every
//!   `transaction.check_interval`), each offer counted through Raft, and rolls
//!   back one whose `transaction.max_checks` offers went unanswered;
//! * [`take_checks`] hands the offers to a producer's long poll
//!   (`GET /v1/producer-groups/{pg}/transaction-checks`). An offer goes to one
//!   poll; one nobody takes, or whose taker never answers, is offered again at the
//!   next interval.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, Weak};
use std::time::Duration;

use tokio::sync::Notify;
use tracing::{debug, info};

use crate::api::SendRequest;
use crate::auth::{Action, Identity, Resource};
use crate::error::BrokerError;
use crate::metrics::Metrics;
use crate::replication::command::{ResolveTransaction, SendCommand};
use crate::replication::proposal::OfferChecks;
use crate::replication::transactions::{
    OpenTransaction, Resolution, ResolveOutcome, HALF_QUEUE, HALF_TOPIC, PROPERTY_PRODUCER_GROUP,
    PROPERTY_TRANSACTION_ID,
};
use crate::service::node::Node;
use crate::storage::{now_ms, MessageId, QueueOffset, StoredMessage, TagFilter};
use crate::topic::validate_name;
use broker_proto::properties::{PROPERTY_REAL_QUEUE_ID, PROPERTY_REAL_TOPIC};
use broker_proto::transaction::{MAX_CHECKS, STATUS_COMMITTED, STATUS_ROLLED_BACK};

pub use broker_proto::transaction::TransactionResolution;

/// Most transactions one offer entry counts.
const MAX_OFFER_BATCH: usize = 1024;

/// Checks the transaction part of a send request, before it is prepared.
///
/// # Errors
/// `Invalid`: a bad producer group, or what a transaction cannot carry
/// (idempotency stamps — the transaction id is the retry key —, delays, timers).
pub fn validate(request: &SendRequest) -> Result<(), BrokerError> {
    let Some(transaction) = &request.transaction else {
        return Ok(());
    };
    validate_name("producer_group", &transaction.producer_group).map_err(BrokerError::Invalid)?;
    for (i, message) in request.messages.iter().enumerate() {
        if message.producer_id.is_some() || message.sequence.is_some() {
            return Err(BrokerError::Invalid(format!(
                "messages[{i}]: a transaction's messages take no producer_id/sequence (commit and rollback are idempotent by transaction id)"
            )));
        }
        if message.delay_level.is_some_and(|level| level > 0)
            || message.deliver_at.is_some()
            || message.delay_ms.is_some()
        {
            return Err(BrokerError::Invalid(format!(
                "messages[{i}]: a transaction's messages cannot be delayed (delay_level, deliver_at, delay_ms)"
            )));
        }
    }
    Ok(())
}

/// Turns a prepared send into one transaction's half messages; answers its id.
pub fn into_half_messages(command: &mut SendCommand, producer_group: &str) -> Option<MessageId> {
    let id = command.messages.first()?.msg_id;
    let id_text = id.to_string();
    for draft in &mut command.messages {
        let properties = &mut draft.properties;
        properties.insert(PROPERTY_REAL_TOPIC.into(), draft.topic.clone());
        properties.insert(PROPERTY_REAL_QUEUE_ID.into(), draft.queue_id.0.to_string());
        properties.insert(PROPERTY_TRANSACTION_ID.into(), id_text.clone());
        properties.insert(PROPERTY_PRODUCER_GROUP.into(), producer_group.to_string());
        draft.topic = HALF_TOPIC.to_string();
        draft.queue_id = HALF_QUEUE;
    }
    Some(id)
}

/// The transaction id a send's half messages carry.
pub fn transaction_of(command: &SendCommand) -> Option<String> {
    let first = command.messages.first()?;
    (first.topic == HALF_TOPIC)
        .then(|| first.properties.get(PROPERTY_TRANSACTION_ID).cloned())
        .flatten()
}

/// The topic of transaction `id` in this group, open or resolved.
fn topic_of(node: &Node, id: &MessageId) -> Option<String> {
    let state = node.shared.state();
    state
        .transactions
        .open_transaction(id)
        .map(|open| open.topic.clone())
        .or_else(|| state.transactions.resolution(id).map(|r| r.topic.clone()))
}

/// Commits (`commit`) or rolls back transaction `id` for `caller` (this node
/// leads its group): a repeat answers as the first did.
///
/// # Errors
/// `TransactionNotFound`; `NoPermission` without `pub` on its topic;
/// `Conflict` when it was resolved the other way; the write's errors.
pub async fn resolve(
    node: &Node,
    caller: &Identity,
    id: MessageId,
    commit: bool,
) -> Result<TransactionResolution, BrokerError> {
    let Some(topic) = topic_of(node, &id) else {
        // This node may trail the group: look again once it caught up.
        node.catch_up().await?;
        let Some(topic) = topic_of(node, &id) else {
            return Err(BrokerError::TransactionNotFound(id.to_string()));
        };
        return resolve_on(node, caller, id, commit, &topic).await;
    };
    resolve_on(node, caller, id, commit, &topic).await
}

async fn resolve_on(
    node: &Node,
    caller: &Identity,
    id: MessageId,
    commit: bool,
    topic: &str,
) -> Result<TransactionResolution, BrokerError> {
    caller.require(Action::Pub, Resource::Topic(topic))?;
    let outcome = node
        .write(ResolveTransaction {
            id,
            commit,
            by_timeout: false,
            at_ms: now_ms(),
        })
        .await?;
    match outcome {
        ResolveOutcome::Resolved(resolution) => {
            count(node, &resolution);
            Ok(view(node, id, &resolution))
        }
        ResolveOutcome::AlreadyResolved(resolution) => Ok(view(node, id, &resolution)),
        ResolveOutcome::Conflict(resolution) => Err(BrokerError::Conflict(format!(
            "transaction {id} was {} already",
            if resolution.committed {
                "committed"
            } else if resolution.by_timeout {
                "rolled back by the broker after its last check"
            } else {
                "rolled back"
            }
        ))),
        ResolveOutcome::NotFound => Err(BrokerError::TransactionNotFound(id.to_string())),
    }
}

fn count(node: &Node, resolution: &Resolution) {
    let counter = if resolution.committed {
        &node.metrics.transactions.committed
    } else if resolution.by_timeout {
        &node.metrics.transactions.timed_out
    } else {
        &node.metrics.transactions.rolled_back
    };
    Metrics::add(counter, 1);
}

fn view(node: &Node, id: MessageId, resolution: &Resolution) -> TransactionResolution {
    TransactionResolution {
        transaction_id: id.to_string(),
        status: if resolution.committed {
            STATUS_COMMITTED
        } else {
            STATUS_ROLLED_BACK
        }
        .to_string(),
        by_timeout: resolution.by_timeout,
        topic: resolution.topic.clone(),
        messages: resolution.messages,
        broker_group: node.group().to_string(),
    }
}

/// Offers waiting for their producer group's poll: per producer group, the
/// transactions offered and the count of each offer. Only the leader fills it.
#[derive(Default)]
pub struct CheckOffers {
    offers: Mutex<HashMap<String, BTreeMap<MessageId, u32>>>,
    offered: Notify,
}

impl CheckOffers {
    /// Wakes every held checks request (they look again now).
    pub fn wake_all(&self) {
        self.offered.notify_waiters();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, BTreeMap<MessageId, u32>>> {
        self.offers.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn put(&self, producer_group: &str, id: MessageId, check_count: u32) {
        self.lock()
            .entry(producer_group.to_string())
            .or_default()
            .insert(id, check_count);
        self.offered.notify_waiters();
    }

    fn clear(&self) {
        self.lock().clear();
    }

    /// Takes up to `max` offers of `producer_group` that `caller` may see.
    fn take(
        &self,
        producer_group: &str,
        max: usize,
        may_see: impl Fn(&MessageId) -> bool,
    ) -> Vec<(MessageId, u32)> {
        let mut offers = self.lock();
        let Some(group) = offers.get_mut(producer_group) else {
            return Vec::new();
        };
        let taken: Vec<(MessageId, u32)> = group
            .iter()
            .filter(|(id, _)| may_see(id))
            .take(max)
            .map(|(id, count)| (*id, *count))
            .collect();
        for (id, _) in &taken {
            group.remove(id);
        }
        if group.is_empty() {
            offers.remove(producer_group);
        }
        taken
    }
}

/// One check handed to a producer: the transaction and its half messages.
pub struct Check {
    pub id: MessageId,
    pub topic: String,
    pub check_count: u32,
    /// As stored in the half topic (the HTTP layer shows them as their topic's).
    pub messages: Vec<StoredMessage>,
}

/// The checks offered to `producer_group` that `caller` may `pub` on, waiting up
/// to `wait` for one (this node leads its group).
///
/// # Errors
/// `NotLeader` when this node does not lead (offers live at the leader).
pub async fn take_checks(
    node: &Node,
    caller: &Identity,
    producer_group: &str,
    wait: Duration,
) -> Result<Vec<Check>, BrokerError> {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        if !node.is_leader() {
            return Err(BrokerError::NotLeader {
                leader: node.leader_url(),
            });
        }
        let offered = node.check_offers.offered.notified();
        let taken = node.check_offers.take(producer_group, MAX_CHECKS, |id| {
            topic_of(node, id)
                .is_some_and(|topic| caller.allows(Action::Pub, Resource::Topic(&topic)))
        });
        let checks: Vec<Check> = taken
            .into_iter()
            .filter_map(|(id, check_count)| {
                let open = node
                    .shared
                    .state()
                    .transactions
                    .open_transaction(&id)
                    .cloned()?;
                Some(Check {
                    id,
                    topic: open.topic.clone(),
                    check_count,
                    messages: half_messages(node, &open),
                })
            })
            .collect();
        if !checks.is_empty() || tokio::time::Instant::now() >= deadline || node.drain.is_draining()
        {
            return Ok(checks);
        }
        // Woken by a new offer, or at the deadline; a second's nap bounds a
        // missed wake-up (the leadership check above runs again).
        let nap = deadline.min(tokio::time::Instant::now() + Duration::from_secs(1));
        let _ = tokio::time::timeout_at(nap, offered).await;
    }
}

/// Shows a half message as its topic's (its topic and queue, the transaction's
/// properties removed); its queue offset stays the half topic's.
pub fn show_in_topic(half: &mut StoredMessage) {
    let properties = &mut half.properties;
    if let Some(topic) = properties.remove(PROPERTY_REAL_TOPIC) {
        half.topic = topic;
    }
    if let Some(queue) = properties
        .remove(PROPERTY_REAL_QUEUE_ID)
        .and_then(|q| q.parse::<u32>().ok())
    {
        half.queue_id = crate::storage::QueueId(queue);
    }
    properties.remove(PROPERTY_TRANSACTION_ID);
    properties.remove(PROPERTY_PRODUCER_GROUP);
}

fn half_messages(node: &Node, open: &OpenTransaction) -> Vec<StoredMessage> {
    open.offsets
        .iter()
        .filter_map(|&offset| {
            node.shared
                .store
                .pull(
                    HALF_TOPIC,
                    HALF_QUEUE,
                    QueueOffset(offset),
                    1,
                    &TagFilter::All,
                )
                .ok()?
                .messages
                .into_iter()
                .find(|m| m.queue_offset.0 == offset)
        })
        .collect()
}

/// Offers due checks and rolls back transactions past their last one, while this
/// node leads its group; runs until the node is dropped.
pub async fn run_checks(node: Weak<Node>) {
    let mut ticker = tokio::time::interval(Duration::from_millis(200));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut leading = false;
    loop {
        ticker.tick().await;
        let Some(node) = node.upgrade() else {
            return;
        };
        if !node.is_leader() {
            if leading {
                // Offers are the leader's: a new leader offers again.
                node.check_offers.clear();
                leading = false;
            }
            continue;
        }
        leading = true;
        if let Err(e) = check_round(&node).await {
            debug!(error = %e, "transaction checks: round failed; next round");
        }
    }
}

/// One round: the transactions whose next check is due get one, or — past
/// their last — a rollback.
async fn check_round(node: &Node) -> Result<(), BrokerError> {
    let config = &node.config.transaction;
    let now = now_ms();
    let after = config.check_after.0.as_millis() as u64;
    let (offer, expire): (Vec<_>, Vec<_>) = {
        let state = node.shared.state();
        state
            .transactions
            .open()
            .filter(|(_, open)| {
                let due = if open.checks == 0 {
                    open.opened_ms.saturating_add(after)
                } else {
                    open.next_check_ms
                };
                due <= now
            })
            .map(|(id, open)| (*id, open.producer_group.clone(), open.checks))
            .partition(|(_, _, checks)| *checks < config.max_checks)
    };
    for (id, _, checks) in expire {
        let outcome = node
            .write(ResolveTransaction {
                id,
                commit: false,
                by_timeout: true,
                at_ms: now_ms(),
            })
            .await?;
        if let ResolveOutcome::Resolved(resolution) = outcome {
            info!(transaction = %id, checks, "transaction rolled back: its last check went unanswered");
            count(node, &resolution);
        }
    }
    let next_ms = now.saturating_add(config.check_interval.0.as_millis() as u64);
    for batch in offer.chunks(MAX_OFFER_BATCH) {
        node.write(OfferChecks {
            ids: batch.iter().map(|(id, _, _)| *id).collect(),
            next_ms,
        })
        .await?;
        Metrics::add(&node.metrics.transactions.checks, batch.len() as u64);
        for (id, group, checks) in batch {
            node.check_offers.put(group, *id, checks + 1);
        }
    }
    Ok(())
}
