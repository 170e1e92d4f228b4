//! A cluster of real broker processes on loopback ports.
//!
//! Each node gets a directory with its TOML config, data and log. Nodes are killed
//! (SIGKILL), stopped (SIGTERM), paused (SIGSTOP) and restarted as real processes;
//! the cluster is torn down (SIGKILL) when dropped. Network partitions need network
//! namespaces and live in `scripts/cluster.sh` and the Jepsen-style suite.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use broker::api::{ClusterResponse, ErrorBody, PullResponse, SendRequest, SendResponse};
use serde::de::DeserializeOwned;

/// How to build a cluster.
#[derive(Clone, Debug)]
pub struct ClusterOptions {
    /// Nodes per group.
    pub nodes: usize,
    /// Name of the group when there is one.
    pub group: String,
    /// Groups; with more than one they are named broker-a, broker-b, …, and node
    /// ids run 1..=nodes in the first, then on.
    pub groups: usize,
    /// TOML appended to every node's config (sections like `[raft]`, `[storage]`).
    pub extra_config: String,
    pub cluster_secret: Option<String>,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        Self {
            nodes: 3,
            group: "broker-a".into(),
            groups: 1,
            extra_config: String::new(),
            cluster_secret: None,
        }
    }
}

/// Small files so tests roll CommitLog and ConsumeQueue files quickly.
pub const SMALL_STORAGE: &str = "[storage]\ncommit_log_file_size = \"1MiB\"\nconsume_queue_units_per_file = 1024\nindex_slot_count = 1024\nindex_max_entries = 16384\nmax_message_size = \"256KiB\"\nflush_interval = \"200ms\"\n";

/// One node process.
pub struct TestNode {
    pub id: u64,
    pub group: String,
    pub url: String,
    pub dir: PathBuf,
    pub data_dir: PathBuf,
    config_path: PathBuf,
    log_path: PathBuf,
    child: Option<Child>,
    paused: bool,
}

/// A running cluster.
pub struct TestCluster {
    pub dir: tempfile::TempDir,
    binary: PathBuf,
    options: ClusterOptions,
    pub nodes: BTreeMap<u64, TestNode>,
    pub http: reqwest::Client,
}

fn free_port() -> Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(listener.local_addr()?.port())
}

impl TestCluster {
    /// Starts `options.nodes` nodes of one group and waits until they agree on a leader.
    ///
    /// # Errors
    /// A node failed to start or no leader emerged in time.
    pub async fn start(binary: &Path, options: ClusterOptions) -> Result<Self> {
        let dir = tempfile::Builder::new().prefix("cluster-").tempdir()?;
        let group_names: Vec<String> = if options.groups <= 1 {
            vec![options.group.clone()]
        } else {
            (0..options.groups)
                .map(|g| format!("broker-{}", char::from(b'a' + g as u8)))
                .collect()
        };
        let mut layout = Vec::new();
        let mut id = 0u64;
        for group in &group_names {
            for _ in 0..options.nodes {
                id += 1;
                layout.push((id, group.clone(), free_port()?));
            }
        }
        let seeds: Vec<String> = layout
            .iter()
            .map(|(_, _, port)| format!("\"http://127.0.0.1:{port}\""))
            .collect();
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(1))
            .timeout(Duration::from_secs(30))
            .build()?;
        let mut cluster = Self {
            dir,
            binary: binary.to_path_buf(),
            options: options.clone(),
            nodes: BTreeMap::new(),
            http,
        };
        for (id, group, port) in &layout {
            let peers: Vec<String> = layout
                .iter()
                .filter(|(_, g, _)| g == group)
                .map(|(id, _, port)| format!("\"{id}=http://127.0.0.1:{port}\""))
                .collect();
            cluster.write_node(*id, group, *port, &peers, &seeds)?;
        }
        let ids: Vec<u64> = cluster.nodes.keys().copied().collect();
        for id in ids {
            cluster.start_node(id)?;
        }
        for group in &group_names {
            cluster
                .wait_for_group_leader(group, Duration::from_secs(30))
                .await?;
        }
        Ok(cluster)
    }

    /// Writes a node's directory and config (not started).
    fn write_node(
        &mut self,
        id: u64,
        group: &str,
        port: u16,
        peers: &[String],
        seeds: &[String],
    ) -> Result<()> {
        let node_dir = self.dir.path().join(format!("node-{id}"));
        fs::create_dir_all(&node_dir)?;
        let data_dir = node_dir.join("data");
        let url = format!("http://127.0.0.1:{port}");
        let secret = self
            .options
            .cluster_secret
            .as_ref()
            .map(|s| format!("cluster_secret = \"{s}\"\n"))
            .unwrap_or_default();
        let config = format!(
            "node_id = {id}\ngroup = \"{group}\"\nlisten = \"127.0.0.1:{port}\"\nadvertise_url = \"{url}\"\ndata_dir = \"{data}\"\npeers = [{peers}]\nseeds = [{seeds}]\n{secret}{extra}",
            data = data_dir.display(),
            peers = peers.join(", "),
            seeds = seeds.join(", "),
            extra = self.options.extra_config,
        );
        let config_path = node_dir.join("broker.toml");
        fs::write(&config_path, config)?;
        self.nodes.insert(
            id,
            TestNode {
                id,
                group: group.to_string(),
                url,
                log_path: node_dir.join("broker.log"),
                dir: node_dir,
                data_dir,
                config_path,
                child: None,
                paused: false,
            },
        );
        Ok(())
    }

    /// Starts a new node for `group` with a fresh id and no peers (it waits to be
    /// added through the membership API), knowing every other node as a seed.
    /// Answers its id.
    ///
    /// # Errors
    /// No free port, or the process could not be spawned.
    pub fn start_new_node(&mut self, group: &str) -> Result<u64> {
        let id = self.nodes.keys().max().copied().unwrap_or(0) + 1;
        let seeds: Vec<String> = self
            .nodes
            .values()
            .map(|n| format!("\"{}\"", n.url))
            .collect();
        self.write_node(id, group, free_port()?, &[], &seeds)?;
        self.start_node(id)?;
        Ok(id)
    }

    /// Waits until every live node lists `groups` broker groups in `/v1/cluster`
    /// (route registrations have reached everyone).
    ///
    /// # Errors
    /// Not within `timeout`.
    pub async fn wait_for_routes(&self, groups: usize, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        for id in self.live_nodes() {
            loop {
                let known = self
                    .get::<ClusterResponse>(id, "/v1/cluster")
                    .await
                    .map(|view| view.groups.len())
                    .unwrap_or(0);
                if known >= groups {
                    break;
                }
                if Instant::now() > deadline {
                    bail!("node {id} knows {known} groups, not {groups}, after {timeout:?}");
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        Ok(())
    }

    /// Ids of the nodes of `group`.
    pub fn group_nodes(&self, group: &str) -> Vec<u64> {
        self.nodes
            .values()
            .filter(|n| n.group == group)
            .map(|n| n.id)
            .collect()
    }

    pub fn node(&self, id: u64) -> &TestNode {
        &self.nodes[&id]
    }

    pub fn url(&self, id: u64) -> &str {
        &self.nodes[&id].url
    }

    /// Starts (or restarts) a node's process with its data.
    ///
    /// # Errors
    /// The process could not be spawned.
    pub fn start_node(&mut self, id: u64) -> Result<()> {
        let binary = self.binary.clone();
        let node = self
            .nodes
            .get_mut(&id)
            .ok_or_else(|| anyhow!("no node {id}"))?;
        if node.child.is_some() {
            bail!("node {id} is already running");
        }
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&node.log_path)?;
        let child = Command::new(&binary)
            .arg("--config")
            .arg(&node.config_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("spawning {}", binary.display()))?;
        node.child = Some(child);
        node.paused = false;
        Ok(())
    }

    /// SIGKILLs a node and reaps it.
    pub fn kill(&mut self, id: u64) {
        if let Some(node) = self.nodes.get_mut(&id) {
            if let Some(mut child) = node.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
            node.paused = false;
        }
    }

    /// SIGTERMs a node and waits for it to exit (SIGKILL after `timeout`).
    pub async fn stop(&mut self, id: u64, timeout: Duration) {
        let Some(node) = self.nodes.get_mut(&id) else {
            return;
        };
        let Some(mut child) = node.child.take() else {
            return;
        };
        if node.paused {
            signal(&child, rustix::process::Signal::CONT);
            node.paused = false;
        }
        signal(&child, rustix::process::Signal::TERM);
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGSTOPs a node.
    pub fn pause(&mut self, id: u64) {
        if let Some(node) = self.nodes.get_mut(&id) {
            if let Some(child) = &node.child {
                signal(child, rustix::process::Signal::STOP);
                node.paused = true;
            }
        }
    }

    /// SIGCONTs a node.
    pub fn resume(&mut self, id: u64) {
        if let Some(node) = self.nodes.get_mut(&id) {
            if let Some(child) = &node.child {
                signal(child, rustix::process::Signal::CONT);
                node.paused = false;
            }
        }
    }

    /// Nodes whose process runs and is not paused.
    pub fn live_nodes(&self) -> Vec<u64> {
        self.nodes
            .values()
            .filter(|n| n.child.is_some() && !n.paused)
            .map(|n| n.id)
            .collect()
    }

    /// GETs JSON from a node.
    ///
    /// # Errors
    /// Transport failure, a non-2xx answer (with its error body), or bad JSON.
    pub async fn get<T: DeserializeOwned>(&self, id: u64, path: &str) -> Result<T> {
        let response = self
            .http
            .get(format!("{}{path}", self.url(id)))
            .send()
            .await?;
        decode(response).await
    }

    /// The leader as the live nodes agree on it, if they do (the first group's,
    /// when there are several).
    pub async fn agreed_leader(&self) -> Option<u64> {
        let group = self.nodes.values().next()?.group.clone();
        self.agreed_leader_of(&group).await
    }

    /// The leader of `group` as its live nodes agree on it, if they do.
    pub async fn agreed_leader_of(&self, group: &str) -> Option<u64> {
        let mut leader = None;
        let members = self.group_nodes(group);
        let live: Vec<u64> = self
            .live_nodes()
            .into_iter()
            .filter(|id| members.contains(id))
            .collect();
        for &id in &live {
            let view: ClusterResponse = self.get(id, "/v1/cluster").await.ok()?;
            let this = view
                .groups
                .into_iter()
                .find(|g| g.group == group)?
                .leader_id?;
            if leader.is_some_and(|l| l != this) {
                return None;
            }
            leader = Some(this);
        }
        leader.filter(|l| live.contains(l))
    }

    /// Waits until the live nodes agree on a live leader.
    ///
    /// # Errors
    /// No agreement within `timeout`.
    pub async fn wait_for_leader(&self, timeout: Duration) -> Result<u64> {
        let group = self
            .nodes
            .values()
            .next()
            .map(|n| n.group.clone())
            .ok_or_else(|| anyhow!("no nodes"))?;
        self.wait_for_group_leader(&group, timeout).await
    }

    /// Waits until the live nodes of `group` agree on a live leader.
    ///
    /// # Errors
    /// No agreement within `timeout`.
    pub async fn wait_for_group_leader(&self, group: &str, timeout: Duration) -> Result<u64> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(leader) = self.agreed_leader_of(group).await {
                return Ok(leader);
            }
            if Instant::now() > deadline {
                bail!(
                    "no agreed leader within {timeout:?}\n{}",
                    self.log_tails(30)
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Sends a batch through node `id`.
    ///
    /// # Errors
    /// Transport failure or an error answer.
    pub async fn send(&self, id: u64, topic: &str, request: &SendRequest) -> Result<SendResponse> {
        let response = self
            .http
            .post(format!("{}/v1/topics/{topic}/messages", self.url(id)))
            .json(request)
            .send()
            .await?;
        decode(response).await
    }

    /// Pulls a queue from `from` to its end on node `id`.
    ///
    /// # Errors
    /// Transport failure or an error answer.
    pub async fn pull_all(
        &self,
        id: u64,
        topic: &str,
        queue: u32,
        from: u64,
    ) -> Result<Vec<broker::api::MessageView>> {
        let mut offset = from;
        let mut out = Vec::new();
        loop {
            let page: PullResponse = self
                .get(id, &format!("/v1/topics/{topic}/queues/{queue}/messages?offset={offset}&max_messages=1024"))
                .await?;
            if page.messages.is_empty() {
                if page.status != "NO_NEW_MSG" {
                    bail!(
                        "pull of {topic}/{queue} at {offset} on node {id} answered {}",
                        page.status
                    );
                }
                return Ok(out);
            }
            offset = page.next_offset;
            out.extend(page.messages);
        }
    }

    /// Creates (or updates) a topic through node `id`.
    ///
    /// # Errors
    /// Transport failure or an error answer.
    pub async fn create_topic(&self, id: u64, topic: &str, queues: u32) -> Result<()> {
        let response = self
            .http
            .put(format!("{}/v1/topics/{topic}", self.url(id)))
            .json(&serde_json::json!({"read_queue_nums": queues, "write_queue_nums": queues}))
            .send()
            .await?;
        decode::<serde_json::Value>(response).await.map(|_| ())
    }

    /// Max offset of every queue of a topic on node `id`, by queue id.
    ///
    /// # Errors
    /// Transport failure or an error answer.
    pub async fn queue_max_offsets(&self, id: u64, topic: &str) -> Result<BTreeMap<u32, u64>> {
        let queues: broker::api::QueuesResponse =
            self.get(id, &format!("/v1/topics/{topic}/queues")).await?;
        Ok(queues
            .queues
            .into_iter()
            .map(|q| (q.queue_id, q.max_offset))
            .collect())
    }

    /// Waits until node `id` has every queue of `topic` at least at `expected`.
    ///
    /// # Errors
    /// Not reached within `timeout`.
    pub async fn wait_for_offsets(
        &self,
        id: u64,
        topic: &str,
        expected: &BTreeMap<u32, u64>,
        timeout: Duration,
    ) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(actual) = self.queue_max_offsets(id, topic).await {
                if expected
                    .iter()
                    .all(|(q, max)| actual.get(q).is_some_and(|a| a >= max))
                {
                    return Ok(());
                }
                if Instant::now() > deadline {
                    bail!(
                        "node {id} has {actual:?} of {topic}, expected {expected:?}\n{}",
                        self.log_tails(20)
                    );
                }
            } else if Instant::now() > deadline {
                bail!(
                    "node {id} did not answer for {topic}\n{}",
                    self.log_tails(20)
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// A gauge or counter from node `id`'s `/metrics`.
    ///
    /// # Errors
    /// Transport failure or the metric is missing.
    pub async fn metric(&self, id: u64, name: &str) -> Result<f64> {
        let text = self
            .http
            .get(format!("{}/metrics", self.url(id)))
            .send()
            .await?
            .text()
            .await?;
        text.lines()
            .find_map(|line| {
                line.strip_prefix(name)
                    .and_then(|rest| rest.strip_prefix(' '))
            })
            .and_then(|value| value.trim().parse().ok())
            .ok_or_else(|| anyhow!("metric {name} missing on node {id}"))
    }

    /// CRC-32 of every CommitLog file of a node, by file name.
    ///
    /// # Errors
    /// A file could not be read.
    pub fn commit_log_digest(&self, id: u64) -> Result<BTreeMap<String, u32>> {
        let dir = self.node(id).data_dir.join("store/commitlog");
        let mut digest = BTreeMap::new();
        for entry in fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))? {
            let entry = entry?;
            let bytes = fs::read(entry.path())?;
            digest.insert(
                entry.file_name().to_string_lossy().into_owned(),
                crc32fast::hash(&bytes),
            );
        }
        Ok(digest)
    }

    /// The last `lines` lines of every node's log, for failure messages.
    pub fn log_tails(&self, lines: usize) -> String {
        let mut out = String::new();
        for node in self.nodes.values() {
            let text = fs::read_to_string(&node.log_path).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(lines).collect();
            out.push_str(&format!(
                "--- node {} ({})\n",
                node.id,
                node.log_path.display()
            ));
            for line in tail.into_iter().rev() {
                out.push_str(line);
                out.push('\n');
            }
        }
        out
    }

    /// Whether a node's log contains `needle`.
    pub fn log_contains(&self, id: u64, needle: &str) -> bool {
        fs::read_to_string(&self.node(id).log_path)
            .map(|text| text.contains(needle))
            .unwrap_or(false)
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        let ids: Vec<u64> = self.nodes.keys().copied().collect();
        for id in ids {
            self.kill(id);
        }
        if std::thread::panicking() || std::env::var_os("KEEP_CLUSTER_DIR").is_some() {
            let path = self.dir.path().to_path_buf();
            // Keep the directory (logs, data) for the post-mortem.
            let dir = std::mem::replace(
                &mut self.dir,
                match tempfile::tempdir() {
                    Ok(d) => d,
                    Err(_) => return,
                },
            );
            let _ = dir.keep();
            eprintln!("cluster directory kept at {}", path.display());
        }
    }
}

fn signal(child: &Child, signal: rustix::process::Signal) {
    if let Some(pid) = rustix::process::Pid::from_raw(child.id() as i32) {
        // A child that already exited only makes this fail.
        let _ = rustix::process::kill_process(pid, signal);
    }
}

/// Decodes a JSON answer or turns an error answer into an error naming its code.
///
/// # Errors
/// A non-2xx answer or bad JSON.
pub async fn decode<T: DeserializeOwned>(response: reqwest::Response) -> Result<T> {
    let status = response.status();
    let bytes = response.bytes().await?;
    if !status.is_success() {
        let body: Option<ErrorBody> = serde_json::from_slice(&bytes).ok();
        return Err(match body {
            Some(body) => anyhow!(ApiFailure {
                status: status.as_u16(),
                body
            }),
            None => anyhow!("HTTP {status}: {}", String::from_utf8_lossy(&bytes)),
        });
    }
    serde_json::from_slice(&bytes)
        .with_context(|| format!("decoding {}", String::from_utf8_lossy(&bytes)))
}

/// An error answer from a node.
#[derive(Debug)]
pub struct ApiFailure {
    pub status: u16,
    pub body: ErrorBody,
}

impl std::fmt::Display for ApiFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "HTTP {} {}: {}",
            self.status, self.body.code, self.body.message
        )
    }
}

impl std::error::Error for ApiFailure {}
