//! The harness runs clusters as a deployment would: secured by default, with the
//! cluster secret and admin token in 0600 files handed over through the
//! environment. Proves that such a cluster refuses anonymous clients and wrong
//! tokens (401) and serves the harness's token, that no node's command line holds
//! either secret, and that `Security::Insecure` still starts an open cluster.

use std::time::Duration;

use anyhow::{Context, Result};
use cluster_tests::harness::{ClusterOptions, Security, TestCluster};

const BINARY: &str = env!("CARGO_BIN_EXE_cluster-node");

fn mode(path: &std::path::Path) -> Result<u32> {
    use std::os::unix::fs::PermissionsExt;
    Ok(std::fs::metadata(path)?.permissions().mode() & 0o777)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secured_cluster_wants_the_token_and_hides_its_secrets() -> Result<()> {
    let cluster =
        TestCluster::start(std::path::Path::new(BINARY), ClusterOptions::default()).await?;
    let leader = cluster.wait_for_leader(Duration::from_secs(30)).await?;
    let url = cluster.url(leader).to_string();

    eprintln!("--- secret and token files: mode 0600, at least 32 random bytes");
    let (secret_file, token_file) = cluster.secret_files().context("a secured cluster")?;
    assert_eq!(mode(secret_file)?, 0o600);
    assert_eq!(mode(token_file)?, 0o600);
    let secret = std::fs::read_to_string(secret_file)?.trim().to_string();
    let token = cluster
        .token
        .clone()
        .context("the harness knows the token")?;
    assert!(secret.len() >= 64 && token.len() >= 64, "hex of 32 bytes");
    assert_eq!(std::fs::read_to_string(token_file)?.trim(), token);

    eprintln!("--- no node's command line or config holds either");
    for id in cluster.live_nodes() {
        let pid = cluster.pid(id).context("a live node has a pid")?;
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline"))?;
        let text = String::from_utf8_lossy(&cmdline);
        assert!(
            !text.contains(&secret) && !text.contains(&token),
            "node {id}: {text}"
        );
        let config = std::fs::read_to_string(cluster.node(id).dir.join("broker.toml"))?;
        assert!(
            !config.contains(&secret) && !config.contains(&token),
            "node {id}'s config"
        );
    }

    eprintln!("--- anonymous and wrong-token requests: 401; the token: 200");
    let anonymous = reqwest::Client::new();
    let topics = format!("{url}/v1/topics");
    let status = anonymous.get(&topics).send().await?.status();
    assert_eq!(status.as_u16(), 401, "anonymous");
    let wrong = anonymous
        .get(&topics)
        .bearer_auth(format!("{token}x"))
        .send()
        .await?
        .status();
    assert_eq!(wrong.as_u16(), 401, "wrong token");
    let ok = cluster.http.get(&topics).send().await?.status();
    assert_eq!(ok.as_u16(), 200, "the harness's token");
    let metrics = cluster.metric(leader, "broker_raft_is_leader").await;
    assert!(
        metrics.is_ok(),
        "/metrics (admin) with the token: {metrics:?}"
    );
    drop(cluster);

    eprintln!("--- Security::Insecure: an open cluster");
    let open = TestCluster::start(
        std::path::Path::new(BINARY),
        ClusterOptions {
            nodes: 1,
            security: Security::Insecure,
            ..ClusterOptions::default()
        },
    )
    .await?;
    assert!(open.secret_files().is_none() && open.token.is_none());
    let status = anonymous
        .get(format!("{}/v1/topics", open.url(1)))
        .send()
        .await?
        .status();
    assert_eq!(status.as_u16(), 200, "anonymous on an insecure cluster");
    Ok(())
}
