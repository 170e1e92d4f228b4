//! The cluster under test: `scripts/cluster.sh` driven as a subprocess (every node
//! in its own network namespace, so partitions are real packet drops), and the
//! HTTP calls the tool makes outside the workload (status, leader, topics).
//!
//! The cluster is secured as `cluster.sh` makes it by default: the admin token is
//! read from the file `cluster.json` names (`token_file`) and sent on every call;
//! [`Security::Insecure`] starts it with `--insecure`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use broker_proto::api::ClusterResponse;
use serde::Deserialize;
use tokio::process::Command;

use crate::harness::{authorized_client, Security};

/// One node as `DIR/cluster.json` lists it.
#[derive(Clone, Debug, Deserialize)]
pub struct NodeInfo {
    pub id: u64,
    pub group: String,
    pub url: String,
    pub data_dir: PathBuf,
    #[serde(default)]
    pub log: Option<PathBuf>,
}

#[derive(Deserialize)]
struct ClusterJson {
    nodes: Vec<NodeInfo>,
    /// The admin token's file of a secured cluster (the token itself is never in
    /// cluster.json).
    #[serde(default)]
    token_file: Option<PathBuf>,
    /// The lazyfs executable when the data dirs are lazyfs mounts (cluster.sh's
    /// CLUSTER_LAZYFS), which power-loss needs.
    #[serde(default)]
    lazyfs: Option<PathBuf>,
}

/// A cluster started by `scripts/cluster.sh` in its own directory.
pub struct Cluster {
    script: PathBuf,
    pub dir: PathBuf,
    /// Environment for every cluster.sh call (BROKER_BIN, BROKER_FAULT, raft cadence):
    /// restarts must start nodes exactly as the first start did.
    env: Vec<(String, String)>,
    pub nodes: BTreeMap<u64, NodeInfo>,
    /// Sends the admin token (when secured) on every request.
    pub http: reqwest::Client,
    /// The admin token, when secured.
    pub token: Option<String>,
    /// The lazyfs executable serving the data dirs, if they are on lazyfs.
    pub lazyfs: Option<PathBuf>,
}

impl Cluster {
    /// Starts a fresh cluster of `nodes` nodes in `dir` (cleaning what was there).
    ///
    /// # Errors
    /// cluster.sh failed (not root, build failure, no leader in time).
    pub async fn start(
        script: &Path,
        dir: &Path,
        nodes: usize,
        env: Vec<(String, String)>,
        security: Security,
    ) -> Result<Self> {
        let mut cluster = Self {
            script: script.to_path_buf(),
            dir: dir.to_path_buf(),
            env,
            nodes: BTreeMap::new(),
            http: reqwest::Client::new(),
            token: None,
            lazyfs: None,
        };
        cluster.run(&["clean"]).await?;
        let count = nodes.to_string();
        let mut args = vec!["start", "--nodes", &count];
        if security == Security::Insecure {
            args.push("--insecure");
        }
        cluster.run(&args).await?;
        let text = std::fs::read_to_string(dir.join("cluster.json"))
            .with_context(|| format!("reading {}/cluster.json", dir.display()))?;
        let parsed: ClusterJson = serde_json::from_str(&text).context("parsing cluster.json")?;
        cluster.nodes = parsed.nodes.into_iter().map(|n| (n.id, n)).collect();
        cluster.lazyfs = parsed.lazyfs;
        if let Some(path) = &parsed.token_file {
            let token = std::fs::read_to_string(path)
                .with_context(|| format!("reading the admin token from {}", path.display()))?;
            cluster.token = token.lines().next().map(|t| t.trim().to_string());
        }
        cluster.http = cluster.client(Duration::from_secs(5))?;
        Ok(cluster)
    }

    /// An HTTP client for the nodes with this request `timeout`: no proxy (node
    /// addresses are only reachable directly), the admin token when secured.
    ///
    /// # Errors
    /// The client could not be built.
    pub fn client(&self, timeout: Duration) -> Result<reqwest::Client> {
        Ok(authorized_client(self.token.as_deref())?
            .no_proxy()
            .connect_timeout(Duration::from_secs(1))
            .timeout(timeout)
            .build()?)
    }

    /// Runs `cluster.sh ARGS --dir DIR`; its stderr goes to DIR/../cluster-sh.log.
    ///
    /// # Errors
    /// The script exited non-zero; the error carries its last output lines.
    pub async fn run(&self, args: &[&str]) -> Result<String> {
        let output = Command::new(&self.script)
            .args(args)
            .arg("--dir")
            .arg(&self.dir)
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .output()
            .await
            .with_context(|| format!("running {}", self.script.display()))?;
        let stderr = String::from_utf8_lossy(&output.stderr);
        if let Some(parent) = self.dir.parent() {
            use std::io::Write;
            if let Ok(mut log) = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(parent.join("cluster-sh.log"))
            {
                let _ = writeln!(log, "$ cluster.sh {}\n{stderr}", args.join(" "));
            }
        }
        if !output.status.success() {
            let tail: Vec<&str> = stderr.lines().rev().take(15).collect();
            bail!(
                "cluster.sh {} failed ({}):\n{}",
                args.join(" "),
                output.status,
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    /// Whether the data dirs are on lazyfs (power loss possible).
    pub fn on_lazyfs(&self) -> bool {
        self.lazyfs.is_some()
    }

    pub fn ids(&self) -> Vec<u64> {
        self.nodes.keys().copied().collect()
    }

    /// # Errors
    /// No such node.
    pub fn url(&self, id: u64) -> Result<&str> {
        self.nodes
            .get(&id)
            .map(|n| n.url.as_str())
            .ok_or_else(|| anyhow!("no node {id}"))
    }

    /// Node `id`'s own view of the cluster.
    ///
    /// # Errors
    /// The node did not answer.
    pub async fn view(&self, id: u64) -> Result<ClusterResponse> {
        let response = self
            .http
            .get(format!("{}/v1/cluster", self.url(id)?))
            .timeout(Duration::from_secs(1))
            .send()
            .await?;
        if !response.status().is_success() {
            bail!("node {id}: /v1/cluster answered {}", response.status());
        }
        Ok(response.json().await?)
    }

    /// The leader a majority of answering nodes names, if any.
    pub async fn leader(&self) -> Option<u64> {
        let mut votes: BTreeMap<u64, usize> = BTreeMap::new();
        for id in self.ids() {
            if let Ok(view) = self.view(id).await {
                if let Some(leader) = view
                    .groups
                    .iter()
                    .find(|g| g.group == view.group)
                    .and_then(|g| g.leader_id)
                {
                    *votes.entry(leader).or_default() += 1;
                }
            }
        }
        let majority = self.nodes.len() / 2 + 1;
        votes
            .into_iter()
            .find(|(_, count)| *count >= majority)
            .map(|(id, _)| id)
    }

    /// Waits for an agreed leader.
    ///
    /// # Errors
    /// None within `timeout`.
    pub async fn wait_for_leader(&self, timeout: Duration) -> Result<u64> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(leader) = self.leader().await {
                return Ok(leader);
            }
            if Instant::now() > deadline {
                bail!("no agreed leader within {timeout:?}");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// A Prometheus metric of one node.
    ///
    /// # Errors
    /// The node did not answer or lacks the metric.
    pub async fn metric(&self, id: u64, name: &str) -> Result<f64> {
        let text = self
            .http
            .get(format!("{}/metrics", self.url(id)?))
            .send()
            .await?
            .text()
            .await?;
        text.lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
            .and_then(|v| v.trim().parse().ok())
            .ok_or_else(|| anyhow!("metric {name} missing on node {id}"))
    }

    /// Creates the topic with `queues` queues, retrying until a leader takes it.
    ///
    /// # Errors
    /// Not created within 30 s.
    pub async fn create_topic(&self, topic: &str, queues: u32) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        let body = serde_json::json!({"read_queue_nums": queues, "write_queue_nums": queues});
        loop {
            let id = self.wait_for_leader(Duration::from_secs(30)).await?;
            let answer = self
                .http
                .put(format!("{}/v1/topics/{topic}", self.url(id)?))
                .json(&body)
                .send()
                .await;
            match answer {
                Ok(r) if r.status().is_success() => break,
                Ok(r) if Instant::now() > deadline => {
                    bail!(
                        "creating topic {topic}: {}",
                        r.text().await.unwrap_or_default()
                    )
                }
                Err(e) if Instant::now() > deadline => bail!("creating topic {topic}: {e}"),
                _ => tokio::time::sleep(Duration::from_millis(300)).await,
            }
        }
        // Every node must know the topic before pulls on it are answered.
        for id in self.ids() {
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                let known = self
                    .http
                    .get(format!("{}/v1/topics/{topic}/queues", self.url(id)?))
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success());
                if known {
                    break;
                }
                if Instant::now() > deadline {
                    bail!("node {id} does not know topic {topic} after 30 s");
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        Ok(())
    }

    /// Per node, the queue max offsets it serves (None: did not answer).
    pub async fn queue_ends(&self, topic: &str) -> BTreeMap<u64, Option<BTreeMap<u32, u64>>> {
        #[derive(Deserialize)]
        struct Queue {
            queue_id: u32,
            max_offset: u64,
        }
        #[derive(Deserialize)]
        struct Queues {
            queues: Vec<Queue>,
        }
        let mut out = BTreeMap::new();
        for id in self.ids() {
            let Ok(url) = self.url(id) else { continue };
            let answer = async {
                let r = self
                    .http
                    .get(format!("{url}/v1/topics/{topic}/queues"))
                    .send()
                    .await?;
                if !r.status().is_success() {
                    bail!("{}", r.status());
                }
                let q: Queues = r.json().await?;
                Ok(q.queues
                    .into_iter()
                    .map(|q| (q.queue_id, q.max_offset))
                    .collect::<BTreeMap<u32, u64>>())
            }
            .await;
            out.insert(id, answer.ok());
        }
        out
    }

    /// Last log index and applied index of every node, as each reports itself.
    pub async fn raft_indexes(&self) -> BTreeMap<u64, (Option<u64>, Option<u64>)> {
        let mut out = BTreeMap::new();
        for id in self.ids() {
            if let Ok(view) = self.view(id).await {
                if let Some(me) = view
                    .groups
                    .iter()
                    .flat_map(|g| g.nodes.iter())
                    .find(|n| n.id == id)
                {
                    out.insert(id, (me.last_log_index, me.applied_index));
                }
            }
        }
        out
    }

    /// A node's data dir.
    pub fn data_dir(&self, id: u64) -> Option<&Path> {
        self.nodes.get(&id).map(|n| n.data_dir.as_path())
    }

    /// The newest file (by name) ending in `suffix` in a node's data subdirectory.
    pub fn newest_file(&self, id: u64, sub: &str, suffix: &str) -> Option<PathBuf> {
        let dir = self.nodes.get(&id)?.data_dir.join(sub);
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .ok()?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_file() && p.to_string_lossy().ends_with(suffix))
            .collect();
        files.sort();
        files.pop()
    }

    /// Whether a node's log contains `needle`.
    pub fn log_contains(&self, id: u64, needle: &str) -> bool {
        self.log_count(id, needle) > 0
    }

    /// How many times `needle` occurs in a node's log (kept across restarts).
    pub fn log_count(&self, id: u64, needle: &str) -> usize {
        let path = self
            .nodes
            .get(&id)
            .and_then(|n| n.log.clone())
            .unwrap_or_else(|| self.dir.join(format!("node-{id}/broker.log")));
        std::fs::read_to_string(path).map_or(0, |text| text.matches(needle).count())
    }
}
