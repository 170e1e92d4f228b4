//! `GET /v1/cluster/nodes/{node_id}/metrics`: any node serves any node's
//! Prometheus text (the dashboard can call only the node that served its page).
//! Proves that every node answers for every node with that node's own metrics,
//! that the route wants a token with cluster rights, that an unknown or malformed
//! id is a 4xx in the API's error shape, that a dead node is a prompt 503, and
//! that the peer-link endpoint behind it wants the cluster secret.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use cluster_tests::harness::{ClusterOptions, TestCluster};

const BINARY: &str = env!("CARGO_BIN_EXE_cluster-node");

/// The error code of an API error answer.
async fn code_of(response: reqwest::Response) -> Result<(u16, String)> {
    let status = response.status().as_u16();
    let body: serde_json::Value = response.json().await.context("an error body in JSON")?;
    let code = body["code"].as_str().context("an error code")?.to_string();
    Ok((status, code))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_node_serves_every_nodes_metrics() -> Result<()> {
    let mut cluster =
        TestCluster::start(std::path::Path::new(BINARY), ClusterOptions::default()).await?;
    cluster.wait_for_leader(Duration::from_secs(30)).await?;

    eprintln!("--- each node answers with each node's own metrics");
    for serving in 1..=3u64 {
        for named in 1..=3u64 {
            let response = cluster
                .http
                .get(format!(
                    "{}/v1/cluster/nodes/{named}/metrics",
                    cluster.url(serving)
                ))
                .send()
                .await?;
            assert_eq!(
                response.status().as_u16(),
                200,
                "node {serving} for {named}"
            );
            let text = response.text().await?;
            let info = text
                .lines()
                .find(|line| line.starts_with("broker_info{"))
                .with_context(|| format!("broker_info in node {named}'s metrics"))?;
            assert!(
                info.contains(&format!("node_id=\"{named}\"")),
                "node {serving} answered for node {named} with {info}"
            );
        }
    }

    eprintln!("--- no token: 401; the peer-link endpoint without the secret: refused");
    let anonymous = reqwest::Client::new();
    let status = anonymous
        .get(format!("{}/v1/cluster/nodes/2/metrics", cluster.url(1)))
        .send()
        .await?
        .status();
    assert_eq!(status.as_u16(), 401);
    // With the admin token and the peer protocol's version header (every
    // internal answer names it) but not the cluster secret: the token is no secret.
    let internal = format!("{}/internal/metrics", cluster.url(2));
    let probe = cluster.http.get(&internal).send().await?;
    let version = probe
        .headers()
        .get("x-broker-protocol")
        .context("an internal answer names the peer protocol's version")?
        .clone();
    let response = cluster
        .http
        .get(&internal)
        .header("x-broker-protocol", version)
        .send()
        .await?;
    assert_eq!(
        code_of(response).await?,
        (401, "UNAUTHORIZED".to_string()),
        "/internal/metrics without the cluster secret"
    );

    eprintln!("--- an unknown id: 404; not a number: 400");
    let response = cluster
        .http
        .get(format!("{}/v1/cluster/nodes/99/metrics", cluster.url(1)))
        .send()
        .await?;
    assert_eq!(code_of(response).await?, (404, "NOT_FOUND".to_string()));
    let response = cluster
        .http
        .get(format!("{}/v1/cluster/nodes/two/metrics", cluster.url(1)))
        .send()
        .await?;
    let (status, _) = code_of(response).await?;
    assert_eq!(status, 400);

    eprintln!("--- a dead node: 503 UNAVAILABLE, promptly");
    cluster.kill(3);
    let asked = Instant::now();
    let response = cluster
        .http
        .get(format!("{}/v1/cluster/nodes/3/metrics", cluster.url(1)))
        .send()
        .await?;
    let waited = asked.elapsed();
    assert_eq!(code_of(response).await?, (503, "UNAVAILABLE".to_string()));
    // The node's own bound is 3 s; generous room for a loaded CI machine.
    assert!(
        waited < Duration::from_secs(15),
        "answered after {waited:?}"
    );
    Ok(())
}
