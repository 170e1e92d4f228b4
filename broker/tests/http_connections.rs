//! The connection layer of a real node on a real socket (`server::run`): slow and
//! idle connections are closed after `http.header_read_timeout`; beyond
//! `http.max_connections` a client gets 503 and a peer (the cluster secret) still
//! gets through; hyper's own error answers (URI too long, headers too large, a
//! malformed request line) come in the API's JSON error shape; a slow body times
//! out with 408; TLS serves HTTPS and refuses plain HTTP.

use crate::common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use broker::config::{NodeConfig, TEST_ADMIN_TOKEN, TEST_CLUSTER_SECRET};
use broker::units::HumanDuration;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tracing::info;

/// A node served on a real listener until dropped.
struct ServedNode {
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
    _dir: tempfile::TempDir,
}

impl ServedNode {
    async fn start(configure: impl FnOnce(&mut NodeConfig)) -> Self {
        common::init_tracing();
        let dir = common::fast_tempdir();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("address");
        let mut config = NodeConfig::for_test(dir.path(), 1, addr);
        config.storage.disk_high_water_ratio = 1.0;
        configure(&mut config);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(broker::server::run(config, listener, async move {
            let _ = stopped.await;
        }));
        let node = Self {
            addr,
            stop: Some(stop),
            task: Some(task),
            _dir: dir,
        };
        node.wait_ready().await;
        node
    }

    async fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Ok(answer) = raw(
                self.addr,
                b"GET /ready HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
            )
            .await
            {
                if answer.starts_with("HTTP/1.1 200") {
                    return;
                }
            }
            assert!(Instant::now() < deadline, "the node never became ready");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await
                .expect("the server task")
                .expect("the server ran");
        }
    }
}

/// Writes `request` on a new connection and reads until the server closes it.
async fn raw(addr: SocketAddr, request: &[u8]) -> std::io::Result<String> {
    let mut stream = TcpStream::connect(addr).await?;
    stream.write_all(request).await?;
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer))
        .await
        .map_err(|_| std::io::Error::other("no answer within 10 s"))??;
    Ok(String::from_utf8_lossy(&answer).into_owned())
}

/// The status and JSON body of a raw HTTP/1.1 answer.
fn parse(answer: &str) -> (u16, Value) {
    let status = answer
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("a status line: {answer:?}"));
    let body = answer
        .split_once("\r\n\r\n")
        .map(|(_, body)| body)
        .unwrap_or_default();
    let json =
        serde_json::from_str(body).unwrap_or_else(|e| panic!("a JSON body ({e}): {answer:?}"));
    (status, json)
}

/// Whether the server closed `stream` (a read sees EOF or a reset) within `within`.
async fn closed_within(stream: &mut TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 1024];
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, stream.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            // An answer (a 408 or the like) before the close: keep reading.
            Ok(Ok(_)) => continue,
        }
    }
}

/// The finding: 40 connections that sent half a request line and 40 that sent
/// nothing were all still open after 60 s, on the port the peers use too. With
/// `http.header_read_timeout = 1s`, every one of them is closed within a few
/// seconds, and an idle keep-alive connection after its answer too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_and_idle_connections_are_closed() {
    let node = ServedNode::start(|config| {
        config.http.header_read_timeout = HumanDuration(Duration::from_secs(1));
    })
    .await;
    let mut connections = Vec::new();
    for i in 0..80 {
        let mut stream = TcpStream::connect(node.addr).await.expect("connect");
        if i % 2 == 0 {
            stream
                .write_all(b"GET /v1/top")
                .await
                .expect("half a request line");
        }
        connections.push(stream);
    }
    info!("--- a keep-alive connection after a full request");
    let mut keep_alive = TcpStream::connect(node.addr).await.expect("connect");
    keep_alive
        .write_all(b"GET /health HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .expect("write");
    let mut first = [0u8; 256];
    let n = keep_alive.read(&mut first).await.expect("an answer");
    assert!(String::from_utf8_lossy(&first[..n]).starts_with("HTTP/1.1 200"));
    connections.push(keep_alive);
    let started = Instant::now();
    for (i, stream) in connections.iter_mut().enumerate() {
        assert!(
            closed_within(stream, Duration::from_secs(5)).await,
            "connection {i} still open after {:?}",
            started.elapsed()
        );
    }
    info!(elapsed = ?started.elapsed(), "all 81 closed");
    node.stop().await;
}

/// Beyond `http.max_connections` a client's request on a new connection gets 503
/// UNAVAILABLE in the error shape and the connection is closed; a peer's request
/// (the cluster secret) on such a connection is served, and that connection stops
/// counting. Closing a client connection frees its slot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_connection_limit_refuses_clients_and_lets_peers_in() {
    let node = ServedNode::start(|config| {
        config.http.max_connections = 3;
    })
    .await;
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(TcpStream::connect(node.addr).await.expect("connect"));
    }
    // The slots are taken when the connections are accepted.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let answer = raw(node.addr, b"GET /health HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .expect("an answer");
    let (status, body) = parse(&answer);
    assert_eq!(status, 503, "{answer}");
    assert_eq!(body["code"], "UNAVAILABLE", "{body}");

    info!("--- a peer gets through over the limit");
    let request = format!(
        "GET /internal/raft/snapshot/offer HTTP/1.1\r\nhost: x\r\nx-cluster-secret: {TEST_CLUSTER_SECRET}\r\nconnection: close\r\n\r\n"
    );
    let answer = raw(node.addr, request.as_bytes()).await.expect("an answer");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let wrong = raw(
        node.addr,
        b"GET /internal/raft/snapshot/offer HTTP/1.1\r\nhost: x\r\nx-cluster-secret: guess-guess-guess\r\nconnection: close\r\n\r\n",
    )
    .await
    .expect("an answer");
    assert!(wrong.starts_with("HTTP/1.1 401"), "{wrong}");

    info!("--- a freed slot takes a client again");
    held.pop();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let answer = raw(
        node.addr,
        b"GET /health HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
    )
    .await
    .expect("an answer");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    drop(held);
    node.stop().await;
}

/// The finding: a 100 KB query (414), a 1 MB header (431) and a NUL in the request
/// line (400) came back with empty bodies. Each is now in the JSON error shape.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_of_the_http_layer_are_json() {
    let node = ServedNode::start(|_| {}).await;
    let long_query = format!(
        "GET /v1/topics?x={} HTTP/1.1\r\nhost: x\r\n\r\n",
        "a".repeat(100_000)
    );
    let big_header = format!(
        "GET /v1/topics HTTP/1.1\r\nhost: x\r\nx-big: {}\r\n\r\n",
        "b".repeat(1 << 20)
    );
    let cases: [(&str, Vec<u8>, u16, &str); 3] = [
        (
            "a 100 KB query",
            long_query.into_bytes(),
            414,
            "URI_TOO_LONG",
        ),
        (
            "a 1 MB header",
            big_header.into_bytes(),
            431,
            "HEADERS_TOO_LARGE",
        ),
        (
            "a NUL in the request line",
            b"GET /v1/top\0ics HTTP/1.1\r\nhost: x\r\n\r\n".to_vec(),
            400,
            "BAD_REQUEST",
        ),
    ];
    for (what, request, status, code) in cases {
        info!("--- {what}");
        let answer = raw(node.addr, &request).await.expect("an answer");
        let (got, body) = parse(&answer);
        assert_eq!(got, status, "{what}: {answer}");
        assert_eq!(body["code"], code, "{what}: {body}");
        assert!(
            body["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{body}"
        );
        assert!(body.get("leader").is_some(), "{body}");
    }
    node.stop().await;
}

/// A body that does not arrive within `http.body_read_timeout` is answered 408
/// REQUEST_TIMEOUT in the error shape, and nothing is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_body_times_out() {
    let node = ServedNode::start(|config| {
        config.http.body_read_timeout = HumanDuration(Duration::from_millis(500));
    })
    .await;
    let mut stream = TcpStream::connect(node.addr).await.expect("connect");
    let head = format!(
        "POST /v1/topics/slow/messages HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {TEST_ADMIN_TOKEN}\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{{\"messa"
    );
    stream.write_all(head.as_bytes()).await.expect("write");
    let mut answer = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut answer))
        .await
        .expect("answered within 5 s")
        .expect("read");
    let (status, body) = parse(&String::from_utf8_lossy(&answer[..n]));
    assert_eq!(status, 408);
    assert_eq!(body["code"], "REQUEST_TIMEOUT", "{body}");
    node.stop().await;
}

/// Writes a CA and a certificate for 127.0.0.1 signed by it into `dir`.
fn write_certificates(dir: &std::path::Path) {
    let ca_key = rcgen::KeyPair::generate().expect("a CA key");
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).expect("a CA certificate");
    let node_key = rcgen::KeyPair::generate().expect("a node key");
    let node_params =
        rcgen::CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".into()])
            .expect("node params");
    let node = node_params
        .signed_by(&node_key, &ca, &ca_key)
        .expect("a node certificate");
    std::fs::write(dir.join("ca.pem"), ca.pem()).expect("write");
    std::fs::write(dir.join("node.pem"), node.pem()).expect("write");
    std::fs::write(dir.join("node-key.pem"), node_key.serialize_pem()).expect("write");
}

/// With a certificate and key the node serves HTTPS only: a client trusting the CA
/// sends and pulls; plain HTTP to the same port gets no HTTP answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_serves_https_and_refuses_plain_http() {
    let certs = tempfile::tempdir().expect("tempdir");
    write_certificates(certs.path());
    let dir = certs.path().to_path_buf();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("address");
    let data = common::fast_tempdir();
    let mut config = NodeConfig::for_test(data.path(), 1, addr);
    config.storage.disk_high_water_ratio = 1.0;
    config.advertise_url = format!("https://{addr}");
    config.peers = vec![format!("1=https://{addr}")];
    config.tls.cert_file = Some(dir.join("node.pem"));
    config.tls.key_file = Some(dir.join("node-key.pem"));
    config.tls.ca_file = Some(dir.join("ca.pem"));
    config.validate().expect("a valid TLS configuration");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(broker::server::run(config, listener, async move {
        let _ = stopped.await;
    }));
    let client = broker_client::BrokerClient::new(
        vec![format!("https://{addr}")],
        broker_client::ClientOptions {
            token: Some(TEST_ADMIN_TOKEN.into()),
            ca_file: Some(dir.join("ca.pem")),
            ..broker_client::ClientOptions::default()
        },
    )
    .expect("a client");
    let deadline = Instant::now() + Duration::from_secs(15);
    while client.ready().await.is_err() {
        assert!(Instant::now() < deadline, "never ready over TLS");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    info!("--- send and pull over TLS");
    let sent = client
        .send(
            "secure",
            &broker::api::SendRequest {
                messages: vec![broker::api::MessageInput {
                    body: Some("over tls".into()),
                    queue_id: Some(0),
                    ..broker::api::MessageInput::default()
                }],
                transaction: None,
            },
        )
        .await
        .expect("a send over TLS");
    assert_eq!(sent.results.len(), 1);
    let pulled = client
        .pull("secure", 0, 0, 10, 0, None)
        .await
        .expect("a pull over TLS");
    assert_eq!(pulled.messages[0].body.as_deref(), Some("over tls"));

    info!("--- plain HTTP to the TLS port");
    // The handshake fails: at most a TLS alert comes back, never an HTTP answer.
    if let Ok(answer) = raw(
        addr,
        b"GET /health HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
    )
    .await
    {
        assert!(
            !answer.starts_with("HTTP/"),
            "plain HTTP was answered: {answer}"
        );
    }
    info!("--- a client that does not trust the CA");
    let untrusting = broker_client::BrokerClient::new(
        vec![format!("https://{addr}")],
        broker_client::ClientOptions::default(),
    )
    .expect("a client");
    assert!(untrusting.ready().await.is_err());
    let _ = stop.send(());
    task.await
        .expect("the server task")
        .expect("the server ran");
}
