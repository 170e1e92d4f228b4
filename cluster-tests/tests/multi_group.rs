//! Two broker groups of three nodes, without a NameServer: routes registered by
//! each group's leader reach every node, a topic spread over both groups is created
//! through each group's Raft, requests for the other group are forwarded, and the
//! routes of a group whose nodes all stopped expire and come back.

use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use broker_proto::api::{
    ClusterResponse, MessageView, MessagesResponse, PullResponse, RouteResponse, SendResponse,
    TopicView,
};
use broker_proto::pull_binary;
use cluster_tests::harness::{ClusterOptions, TestCluster, SMALL_STORAGE};
use serde_json::json;

const BINARY: &str = env!("CARGO_BIN_EXE_cluster-node");
/// Fast registration so the test does not wait out the production defaults.
const CONTROL: &str = "[control]\nregister_interval = \"200ms\"\nroute_expiry = \"2s\"\n";

async fn routes_of(cluster: &TestCluster, id: u64, topic: &str) -> Vec<String> {
    match cluster
        .get::<RouteResponse>(id, &format!("/v1/routes/{topic}"))
        .await
    {
        Ok(route) => route.groups.into_iter().map(|g| g.group).collect(),
        Err(_) => Vec::new(),
    }
}

/// Waits until every node in `ids` routes `topic` to exactly `groups`.
async fn wait_for_routes(
    cluster: &TestCluster,
    ids: &[u64],
    topic: &str,
    groups: &[&str],
    timeout: Duration,
) -> Result<Duration> {
    let start = Instant::now();
    loop {
        let mut all = true;
        for &id in ids {
            if routes_of(cluster, id, topic).await != groups {
                all = false;
                break;
            }
        }
        if all {
            return Ok(start.elapsed());
        }
        if start.elapsed() > timeout {
            let mut seen = Vec::new();
            for &id in ids {
                seen.push((id, routes_of(cluster, id, topic).await));
            }
            bail!("routes of {topic} are not {groups:?} on {ids:?} after {timeout:?}: {seen:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn post<T: serde::de::DeserializeOwned>(
    cluster: &TestCluster,
    id: u64,
    path: &str,
    body: serde_json::Value,
) -> Result<T> {
    let response = cluster
        .http
        .post(format!("{}{path}", cluster.url(id)))
        .json(&body)
        .send()
        .await?;
    cluster_tests::harness::decode(response).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_groups_share_routes_and_serve_one_topic() -> Result<()> {
    let mut cluster = TestCluster::start(
        std::path::Path::new(BINARY),
        ClusterOptions {
            groups: 2,
            extra_config: format!("{SMALL_STORAGE}{CONTROL}"),
            ..ClusterOptions::default()
        },
    )
    .await?;
    let all: Vec<u64> = cluster.nodes.keys().copied().collect();
    let group_a = cluster.group_nodes("broker-a");
    let group_b = cluster.group_nodes("broker-b");

    eprintln!("--- every node learns both groups");
    let deadline = Instant::now() + Duration::from_secs(10);
    for &id in &all {
        loop {
            let view: ClusterResponse = cluster.get(id, "/v1/cluster").await?;
            let names: Vec<String> = view.groups.iter().map(|g| g.group.clone()).collect();
            if names.len() == 2 {
                break;
            }
            ensure!(Instant::now() < deadline, "node {id} knows only {names:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    eprintln!("--- create a topic over both groups through one node of group a");
    let response = cluster
        .http
        .put(format!("{}/v1/topics/orders", cluster.url(group_a[1])))
        .json(&json!({"read_queue_nums": 4, "write_queue_nums": 4}))
        .send()
        .await?;
    let topic: TopicView = cluster_tests::harness::decode(response).await?;
    ensure!(
        topic.groups == ["broker-a", "broker-b"],
        "created in {:?}",
        topic.groups
    );
    let took = wait_for_routes(
        &cluster,
        &all,
        "orders",
        &["broker-a", "broker-b"],
        Duration::from_secs(10),
    )
    .await?;
    eprintln!("routes on all 6 nodes after {took:?}");

    eprintln!("--- unknown groups are refused");
    let response = cluster
        .http
        .put(format!("{}/v1/topics/bad", cluster.url(1)))
        .json(&json!({"groups": ["broker-z"]}))
        .send()
        .await?;
    let status = response.status();
    let body: serde_json::Value = response.json().await?;
    ensure!(
        status == 404 && body["code"] == "BROKER_GROUP_NOT_FOUND",
        "unknown group in a topic's groups: {status} {body}"
    );
    for via in [group_a[0], group_b[0]] {
        let response = cluster
            .http
            .post(format!(
                "{}/v1/topics/orders/messages?group=broker-z",
                cluster.url(via)
            ))
            .json(&json!({"messages": [{"body": "lost"}]}))
            .send()
            .await?;
        let status = response.status();
        let body: serde_json::Value = response.json().await?;
        ensure!(
            status == 404 && body["code"] == "BROKER_GROUP_NOT_FOUND",
            "send naming an unknown group via {via}: {status} {body}"
        );
    }

    eprintln!("--- sends without a group land on the receiving node's group; ?group= picks one");
    let mut sent: Vec<(String, u32, u64, String)> = Vec::new();
    for i in 0..40u32 {
        let via = all[i as usize % all.len()];
        let group = if i % 3 == 0 {
            Some(if i % 2 == 0 { "broker-a" } else { "broker-b" })
        } else {
            None
        };
        let path = match group {
            Some(g) => format!("/v1/topics/orders/messages?group={g}"),
            None => "/v1/topics/orders/messages".to_string(),
        };
        let answer: SendResponse = post(
            &cluster,
            via,
            &path,
            json!({"messages": [{"body": format!("m{i}"), "keys": [format!("k{i}")], "queue_id": i % 4}]}),
        )
        .await?;
        let expected = group
            .map(str::to_string)
            .unwrap_or_else(|| cluster.node(via).group.clone());
        ensure!(
            answer.group == expected,
            "message {i} via {via} went to {}",
            answer.group
        );
        let result = &answer.results[0];
        sent.push((
            answer.group.clone(),
            result.queue_id,
            result.queue_offset,
            format!("m{i}"),
        ));
    }

    eprintln!("--- pulls per (group, queue) from a node of the other group");
    let mut pulled = Vec::new();
    for group in ["broker-a", "broker-b"] {
        let via = if group == "broker-a" {
            group_b[0]
        } else {
            group_a[0]
        };
        for queue in 0..4 {
            let page: PullResponse = cluster
                .get(
                    via,
                    &format!("/v1/topics/orders/queues/{queue}/messages?offset=0&max_messages=100&group={group}"),
                )
                .await?;
            for m in page.messages {
                pulled.push((
                    group.to_string(),
                    m.queue_id,
                    m.queue_offset,
                    m.body.unwrap_or_default(),
                ));
            }
        }
    }
    sent.sort();
    pulled.sort();
    ensure!(sent == pulled, "sent {sent:?}\npulled {pulled:?}");

    eprintln!("--- a forwarded pull keeps the binary form it asked for");
    let path = "/v1/topics/orders/queues/0/messages?offset=0&max_messages=100&group=broker-b";
    let json: PullResponse = cluster.get(group_a[0], path).await?;
    ensure!(!json.messages.is_empty(), "group b's queue 0 read empty");
    let response = cluster
        .http
        .get(format!("{}{path}", cluster.url(group_a[0])))
        .header("accept", pull_binary::MEDIA_TYPE)
        .send()
        .await?;
    let content_type = response.headers().get("content-type").cloned();
    ensure!(
        content_type.as_ref().and_then(|v| v.to_str().ok()) == Some(pull_binary::MEDIA_TYPE),
        "a forwarded binary pull answered {content_type:?}"
    );
    let binary = pull_binary::decode(&response.bytes().await?)?;
    ensure!(
        serde_json::to_value(&binary)? == serde_json::to_value(&json)?,
        "the forwarded binary answer differs from the JSON one"
    );

    eprintln!("--- a pull that names no group reads the receiving node's own group");
    let page: PullResponse = cluster
        .get(group_b[1], "/v1/topics/orders/queues/0/messages?offset=0")
        .await?;
    // Group b's queue 0 holds messages (m4, m16, …): an empty page must not pass.
    ensure!(!page.messages.is_empty(), "group b's queue 0 read empty");
    ensure!(
        page.messages.iter().all(|m| sent
            .iter()
            .any(|s| s.0 == "broker-b" && s.3 == *m.body.as_ref().unwrap_or(&String::new()))),
        "a node of group b pulls group b's queue 0 by default"
    );

    eprintln!("--- queues list both groups; query by id and by key reach the other group");
    let queues: broker_proto::api::QueuesResponse =
        cluster.get(1, "/v1/topics/orders/queues").await?;
    ensure!(queues.queues.len() == 8, "queues {:?}", queues.queues);
    let b_message = &sent
        .iter()
        .find(|s| s.0 == "broker-b")
        .context("a message in b")?;
    let found: PullResponse = cluster
        .get(
            group_b[0],
            &format!(
                "/v1/topics/orders/queues/{}/messages?offset={}&max_messages=1",
                b_message.1, b_message.2
            ),
        )
        .await?;
    let id = &found.messages[0].msg_id;
    let by_id: MessageView = cluster
        .get(group_a[2], &format!("/v1/messages/{id}"))
        .await?;
    ensure!(
        by_id.body.as_deref() == Some(b_message.3.as_str()),
        "by id: {by_id:?}"
    );
    let number = &b_message.3[1..];
    let by_key: MessagesResponse = cluster
        .get(
            group_a[0],
            &format!("/v1/topics/orders/messages?key=k{number}"),
        )
        .await?;
    ensure!(by_key.messages.len() == 1, "by key: {:?}", by_key.messages);

    eprintln!("--- stop every node of group b: its routes expire everywhere, then return");
    for &id in &group_b {
        cluster.stop(id, Duration::from_secs(10)).await;
    }
    let gone = wait_for_routes(
        &cluster,
        &group_a,
        "orders",
        &["broker-a"],
        Duration::from_secs(10),
    )
    .await?;
    eprintln!("group b's routes gone from group a's nodes after {gone:?} (expiry 2 s)");
    let view: ClusterResponse = cluster.get(group_a[0], "/v1/cluster").await?;
    ensure!(
        view.groups.len() == 1,
        "cluster still lists {:?}",
        view.groups.iter().map(|g| &g.group).collect::<Vec<_>>()
    );
    for &id in &group_b {
        cluster.start_node(id)?;
    }
    cluster
        .wait_for_group_leader("broker-b", Duration::from_secs(30))
        .await?;
    let back = wait_for_routes(
        &cluster,
        &all,
        "orders",
        &["broker-a", "broker-b"],
        Duration::from_secs(15),
    )
    .await?;
    eprintln!("group b's routes back on all nodes {back:?} after its leader was elected");

    eprintln!("--- delete removes the topic from both groups");
    let response = cluster
        .http
        .delete(format!("{}/v1/topics/orders", cluster.url(group_b[2])))
        .send()
        .await?;
    ensure!(
        response.status() == 200,
        "delete: {}",
        response.text().await?
    );
    let empty = wait_for_routes(&cluster, &all, "orders", &[], Duration::from_secs(10)).await?;
    eprintln!("deleted everywhere after {empty:?}");
    Ok(())
}
