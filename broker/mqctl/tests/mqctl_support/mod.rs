//! Shared by the `mqctl_*` tests: a real single-node broker listening on an
//! ephemeral loopback port (started in-process, as in `client_single_node.rs`), and
//! a runner of the built `mqctl` binary against it. The node is secured as every
//! node is by default; `mqctl` gets the test admin token through `MQ_TOKEN`, as a
//! user would give it, unless a test names another token or none.

#![allow(dead_code)] // a shared toolbox: not every helper has a caller at every moment

use std::sync::Arc;
use std::time::{Duration, Instant};

use broker::config::{NodeConfig, TEST_ADMIN_TOKEN};
use broker::service::node::Node;
use broker_client::{BrokerClient, ClientOptions};
use serde_json::Value;
use tracing::info;

/// How long a one-node group may take to elect itself.
const READY_DEADLINE: Duration = Duration::from_secs(30);

/// A node serving the HTTP API on `url`.
pub struct TestNode {
    node: Arc<Node>,
    pub url: String,
    server: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

impl TestNode {
    /// Starts a node and waits until it leads its one-node group.
    pub async fn start() -> anyhow::Result<Self> {
        Self::start_with(|_| {}).await
    }

    /// Starts a node after `configure` adjusted its `NodeConfig::for_test`, and
    /// waits until it leads its one-node group.
    pub async fn start_with(configure: impl FnOnce(&mut NodeConfig)) -> anyhow::Result<Self> {
        init_tracing();
        let dir = tempfile::tempdir()?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let mut config = NodeConfig::for_test(dir.path(), 1, addr);
        // A nearly full shared disk must not make retention delete files under a test.
        config.storage.disk_high_water_ratio = 1.0;
        configure(&mut config);
        let node = broker::server::start(config).await?;
        let app = broker::http::router(Arc::clone(&node));
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        let test = Self {
            node,
            url: format!("http://{addr}"),
            server,
            _dir: dir,
        };
        test.wait_ready().await?;
        Ok(test)
    }

    async fn wait_ready(&self) -> anyhow::Result<()> {
        let options = ClientOptions {
            token: Some(TEST_ADMIN_TOKEN.into()),
            ..ClientOptions::default()
        };
        let client = BrokerClient::new(vec![self.url.clone()], options)?;
        let deadline = Instant::now() + READY_DEADLINE;
        loop {
            match client.ready().await {
                Ok(_) if self.node.is_leader() => return Ok(()),
                Ok(_) => {}
                Err(e) if Instant::now() < deadline => info!("not ready yet: {e}"),
                Err(e) => anyhow::bail!("node not ready within {READY_DEADLINE:?}: {e}"),
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Runs `mqctl --server URL ARGS…` with the admin token and waits for it.
    pub async fn mqctl(&self, args: &[&str]) -> Run {
        run_mqctl(&self.url, args).await
    }

    /// Runs `mqctl` with `token` in `MQ_TOKEN`, or with no token at all.
    pub async fn mqctl_as(&self, token: Option<&str>, args: &[&str]) -> Run {
        run_mqctl_with(&self.url, token, args).await
    }

    pub async fn stop(self) {
        self.server.abort();
        broker::server::stop(self.node).await;
    }
}

pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,openraft=warn")),
        )
        .with_test_writer()
        .try_init();
}

/// What one run of `mqctl` did.
#[derive(Debug)]
pub struct Run {
    pub args: String,
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// Asserts exit status 0 and returns the run.
    #[track_caller]
    pub fn ok(self) -> Self {
        assert_eq!(
            self.code,
            Some(0),
            "mqctl {} failed\nstdout:\n{}\nstderr:\n{}",
            self.args,
            self.stdout,
            self.stderr
        );
        self
    }

    /// stdout as one JSON document.
    #[track_caller]
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "mqctl {}: stdout is not JSON ({e}):\n{}",
                self.args, self.stdout
            )
        })
    }

    /// stdout as one JSON document per line.
    #[track_caller]
    pub fn json_lines(&self) -> Vec<Value> {
        self.stdout
            .lines()
            .map(|line| {
                serde_json::from_str(line).unwrap_or_else(|e| {
                    panic!("mqctl {}: a line is not JSON ({e}): {line}", self.args)
                })
            })
            .collect()
    }

    /// The table on stdout: one map from column name to cell per row. Columns are
    /// cut where the header's names start (the table pads every column to its
    /// widest cell), so empty cells and cells with spaces read back exactly.
    #[track_caller]
    pub fn table(&self) -> Vec<std::collections::BTreeMap<String, String>> {
        let mut lines = self.stdout.lines();
        let header: Vec<char> = lines
            .next()
            .unwrap_or_else(|| panic!("mqctl {}: no table on stdout", self.args))
            .chars()
            .collect();
        let starts: Vec<usize> = (0..header.len())
            .filter(|&i| header[i] != ' ' && (i == 0 || header[i - 1] == ' '))
            .collect();
        let cut = |chars: &[char], column: usize| -> String {
            let from = starts[column].min(chars.len());
            let to = starts
                .get(column + 1)
                .map_or(chars.len(), |&e| e.min(chars.len()));
            chars[from..to]
                .iter()
                .collect::<String>()
                .trim()
                .to_string()
        };
        let names: Vec<String> = (0..starts.len()).map(|c| cut(&header, c)).collect();
        lines
            .map(|line| {
                let chars: Vec<char> = line.chars().collect();
                names
                    .iter()
                    .enumerate()
                    .map(|(c, name)| (name.clone(), cut(&chars, c)))
                    .collect()
            })
            .collect()
    }
}

/// Runs the built `mqctl` against `server` with `args` and the test admin token.
pub async fn run_mqctl(server: &str, args: &[&str]) -> Run {
    run_mqctl_with(server, Some(TEST_ADMIN_TOKEN), args).await
}

/// Runs the built `mqctl` against `server` with `args`, `token` in `MQ_TOKEN`
/// (none: no token from anywhere).
pub async fn run_mqctl_with(server: &str, token: Option<&str>, args: &[&str]) -> Run {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_mqctl"));
    for variable in ["MQ_SERVER", "MQ_TOKEN", "MQ_TOKEN_FILE", "MQ_CA_FILE"] {
        command.env_remove(variable);
    }
    if let Some(token) = token {
        command.env("MQ_TOKEN", token);
    }
    let output = command
        .args(["--server", server, "--timeout", "10s"])
        .args(args)
        .output()
        .await
        .expect("running the mqctl binary");
    let run = Run {
        args: args.join(" "),
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    };
    info!(
        "mqctl {} -> {:?}\n{}{}",
        run.args, run.code, run.stdout, run.stderr
    );
    run
}

/// Unix time in milliseconds.
pub fn now_ms() -> u64 {
    broker::storage::now_ms()
}

/// A JSON number field, with the value in the panic message when it is not one.
#[track_caller]
pub fn u64_at(value: &Value, pointer: &str) -> u64 {
    value
        .pointer(pointer)
        .and_then(Value::as_u64)
        .unwrap_or_else(|| panic!("no number at {pointer} in {value}"))
}
