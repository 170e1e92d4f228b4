//! `mqctl` against a node serving TLS with certificates made as `broker-certs`
//! makes them for `scripts/cluster.sh start --tls` (the same code,
//! `broker::certs`): with `--ca-file` (or `MQ_CA_FILE`) and the token it creates a
//! topic, sends and pulls over `https://`; without the CA it fails the TLS
//! handshake (the client trusts no built-in roots); plain `http://` to the TLS port
//! gets no answer.

use crate::mqctl_support;

use std::path::Path;
use std::time::{Duration, Instant};

use broker::config::{NodeConfig, TEST_ADMIN_TOKEN};
use broker_client::{BrokerClient, ClientOptions};
use mqctl_support::{init_tracing, run_mqctl};
use tracing::info;

const READY_DEADLINE: Duration = Duration::from_secs(30);

fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .expect("certificate file exists")
        .permissions()
        .mode()
        & 0o777
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqctl_speaks_tls_with_the_cluster_ca() -> anyhow::Result<()> {
    init_tracing();
    let dir = tempfile::tempdir()?;
    let tls = dir.path().join("tls");

    info!("--- a CA and a certificate for 127.0.0.1 and localhost; keys are 0600");
    broker::certs::make_ca(&tls)?;
    let ip: std::net::IpAddr = "127.0.0.1".parse()?;
    broker::certs::make_node(&tls, "node-1", &[ip], &["localhost".into()], &tls)?;
    assert_eq!(mode(&tls.join("ca-key.pem")), 0o600);
    assert_eq!(mode(&tls.join("node-1-key.pem")), 0o600);
    assert_eq!(mode(&tls.join("ca.pem")), 0o644);

    info!("--- a node serving only TLS with that certificate");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let https = format!("https://{addr}");
    let mut config = NodeConfig::for_test(dir.path().join("data"), 1, addr);
    config.storage.disk_high_water_ratio = 1.0;
    config.advertise_url = https.clone();
    config.peers = vec![format!("1={https}")];
    config.tls.cert_file = Some(tls.join("node-1.pem"));
    config.tls.key_file = Some(tls.join("node-1-key.pem"));
    config.tls.ca_file = Some(tls.join("ca.pem"));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(broker::server::run(config, listener, async move {
        let _ = stopped.await;
    }));

    let client = BrokerClient::new(
        vec![https.clone()],
        ClientOptions {
            token: Some(TEST_ADMIN_TOKEN.into()),
            ca_file: Some(tls.join("ca.pem")),
            ..ClientOptions::default()
        },
    )?;
    let deadline = Instant::now() + READY_DEADLINE;
    loop {
        match client.ready().await {
            Ok(ready) if ready.leader_id == 1 => break,
            other if Instant::now() < deadline => info!("not ready yet: {other:?}"),
            other => anyhow::bail!("not ready within {READY_DEADLINE:?}: {other:?}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    info!("--- with --ca-file: create, send and pull over https");
    let ca = tls.join("ca.pem").display().to_string();
    run_mqctl(
        &https,
        &[
            "--ca-file",
            &ca,
            "topic",
            "create",
            "secure",
            "--queues",
            "1",
        ],
    )
    .await
    .ok();
    run_mqctl(&https, &["--ca-file", &ca, "send", "secure", "over tls"])
        .await
        .ok();
    let pulled = run_mqctl(&https, &["--ca-file", &ca, "--json", "pull", "secure"])
        .await
        .ok()
        .json();
    let bodies: Vec<&str> = pulled["queues"][0]["messages"]
        .as_array()
        .map(|m| m.iter().filter_map(|m| m["body"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(bodies, ["over tls"], "{pulled}");

    info!("--- without the CA: the handshake fails (no built-in roots are trusted)");
    let untrusted = run_mqctl(&https, &["topic", "list"]).await;
    assert_eq!(untrusted.code, Some(1), "{untrusted:?}");
    assert!(
        untrusted.stderr.to_lowercase().contains("certificate"),
        "the error names the certificate: {untrusted:?}"
    );

    info!("--- plain http to the TLS port: no HTTP answer");
    let plain = run_mqctl(&format!("http://{addr}"), &["topic", "list"]).await;
    assert_eq!(plain.code, Some(1), "{plain:?}");
    assert!(!plain.stderr.contains("error: UNAUTHORIZED"), "{plain:?}");

    let _ = stop.send(());
    server.await??;
    Ok(())
}
