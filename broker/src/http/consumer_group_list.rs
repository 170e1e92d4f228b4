//! `GET /v1/groups`: every consumer group that has committed an offset or
//! received (receive and ack), with its topics, total lag and lease counts,
//! merged over every live broker group (like the topic and queue listings). `?broker_group=` answers for that one broker group only (this
//! is how the merge asks the others).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use crate::api::{ConsumerGroupView, ConsumerGroupsResponse};
use axum::extract::State;
use axum::Json;

use super::auth::Caller;
use super::error::ApiError;
use super::extract::ApiQuery;
use super::groups::{self, encode, BrokerGroupParam};
use crate::auth::Resource;
use crate::service::node::Node;
use crate::service::routing::{self, Target};
use crate::storage::QueueId;

/// What one queue of a consumer group adds to its listing.
#[derive(Default)]
struct QueueFigures {
    /// The committed offset, or a receive cursor's first un-acked offset.
    offset: u64,
    leased: u64,
    awaiting_redelivery: u64,
    redelivered: u64,
}

/// The consumer groups whose offsets or leases this node's broker group keeps.
fn local_groups(node: &Node) -> Vec<ConsumerGroupView> {
    let now = crate::storage::now_ms();
    let queues: Vec<(String, String, QueueId, QueueFigures)> = {
        let state = node.shared.state();
        let committed = state.consumer_offsets.iter().map(|(key, offset)| {
            let figures = QueueFigures {
                offset: offset.0,
                ..QueueFigures::default()
            };
            (key.group.clone(), key.topic.clone(), key.queue_id, figures)
        });
        let leased = state.leases.iter().map(|(key, leases)| {
            let in_flight = leases.in_flight() as u64;
            let ended = leases.expired(now).count() as u64;
            let figures = QueueFigures {
                offset: leases.committed().0,
                leased: in_flight - ended,
                awaiting_redelivery: ended,
                redelivered: leases.redelivered() as u64,
            };
            (key.group.clone(), key.topic.clone(), key.queue_id, figures)
        });
        committed.chain(leased).collect()
    };
    let mut by_group: BTreeMap<String, ConsumerGroupView> = BTreeMap::new();
    for (group, topic, queue_id, figures) in queues {
        let max = node
            .shared
            .store
            .queue_offsets(&topic, queue_id)
            .map_or(0, |(_, max)| max.0);
        let view = by_group
            .entry(group.clone())
            .or_insert_with(|| ConsumerGroupView {
                group,
                topics: Vec::new(),
                broker_groups: vec![node.group().to_string()],
                queues: 0,
                lag: 0,
                leased: 0,
                awaiting_redelivery: 0,
                redelivered: 0,
            });
        if !view.topics.contains(&topic) {
            view.topics.push(topic);
        }
        view.queues += 1;
        view.lag += max.saturating_sub(figures.offset);
        view.leased += figures.leased;
        view.awaiting_redelivery += figures.awaiting_redelivery;
        view.redelivered += figures.redelivered;
    }
    by_group.into_values().collect()
}

/// Merges listings of several broker groups by consumer group.
fn merge(parts: impl IntoIterator<Item = ConsumerGroupView>) -> Vec<ConsumerGroupView> {
    let mut merged: BTreeMap<String, (BTreeSet<String>, BTreeSet<String>, ConsumerGroupView)> =
        BTreeMap::new();
    for part in parts {
        let (topics, broker_groups, sums) = merged.entry(part.group.clone()).or_insert_with(|| {
            (
                BTreeSet::new(),
                BTreeSet::new(),
                ConsumerGroupView {
                    group: part.group.clone(),
                    topics: Vec::new(),
                    broker_groups: Vec::new(),
                    queues: 0,
                    lag: 0,
                    leased: 0,
                    awaiting_redelivery: 0,
                    redelivered: 0,
                },
            )
        });
        topics.extend(part.topics);
        broker_groups.extend(part.broker_groups);
        sums.queues += part.queues;
        sums.lag += part.lag;
        sums.leased += part.leased;
        sums.awaiting_redelivery += part.awaiting_redelivery;
        sums.redelivered += part.redelivered;
    }
    merged
        .into_values()
        .map(|(topics, broker_groups, sums)| ConsumerGroupView {
            topics: topics.into_iter().collect(),
            broker_groups: broker_groups.into_iter().collect(),
            ..sums
        })
        .collect()
}

/// `GET /v1/groups`
pub async fn list_groups(
    State(node): State<Arc<Node>>,
    ApiQuery(param): ApiQuery<BrokerGroupParam>,
    caller: Caller,
) -> Result<Json<ConsumerGroupsResponse>, ApiError> {
    let routes = match param.broker_group.as_deref() {
        Some(name) => match routing::named(&node, name)? {
            Target::Local => vec![node.local_route()],
            Target::Forward(route) => vec![*route],
        },
        None => node.group_routes(),
    };
    let mut parts = Vec::new();
    for route in routes {
        if route.is_local() {
            parts.extend(local_groups(&node));
            continue;
        }
        let path = format!("/v1/groups?broker_group={}", encode(&route.group));
        let answer: ConsumerGroupsResponse = groups::fetch(&node, &caller, &route, &path).await?;
        parts.extend(answer.groups);
    }
    // Only the consumer groups the caller may see.
    parts.retain(|part| caller.allows_any(Resource::Group(&part.group)));
    Ok(Json(ConsumerGroupsResponse {
        groups: merge(parts),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(group: &str, topic: &str, broker: &str, queues: u64, lag: u64) -> ConsumerGroupView {
        ConsumerGroupView {
            group: group.into(),
            topics: vec![topic.into()],
            broker_groups: vec![broker.into()],
            queues,
            lag,
            leased: queues,
            awaiting_redelivery: 1,
            redelivered: 0,
        }
    }

    #[test]
    fn merging_adds_up_queues_and_lag_per_consumer_group() {
        let merged = merge([
            view("billing", "orders", "broker-b", 2, 5),
            view("audit", "orders", "broker-a", 1, 0),
            view("billing", "payments", "broker-a", 4, 1),
        ]);
        assert_eq!(
            merged,
            vec![
                view("audit", "orders", "broker-a", 1, 0),
                ConsumerGroupView {
                    group: "billing".into(),
                    topics: vec!["orders".into(), "payments".into()],
                    broker_groups: vec!["broker-a".into(), "broker-b".into()],
                    queues: 6,
                    lag: 6,
                    leased: 6,
                    awaiting_redelivery: 2,
                    redelivered: 0,
                },
            ]
        );
    }
}
