//! A cluster of real broker processes on loopback ports.
//!
//! Each node gets a directory with its TOML config, data and log. Nodes are killed
//! (SIGKILL), stopped (SIGTERM), paused (SIGSTOP) and restarted as real processes;
//! the cluster is torn down (SIGKILL) when dropped. Network partitions need network
//! namespaces and live in `scripts/cluster.sh` and the Jepsen-style suite.
//!
//! Clusters are secured as every node is by default ([`Security::Secured`]): a
//! random cluster secret and admin token in `secret` and `token` files of the
//! cluster directory (mode 0600), handed to each node as file paths in its
//! environment, never on its command line or in its config; [`TestCluster::http`]
//! sends the token on every request and [`TestCluster::client_options`] gives it
//! to the client library. [`Security::Insecure`] starts nodes with `--insecure`.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use broker_client::ClientOptions;
use broker_proto::api::{ClusterResponse, ErrorBody, PullResponse, SendRequest, SendResponse};
use serde::de::DeserializeOwned;

/// Whether the nodes want credentials.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub enum Security {
    /// A cluster secret between nodes and a bearer token from clients.
    #[default]
    Secured,
    /// Nodes run with `--insecure`: neither is needed.
    Insecure,
}

/// Bytes of randomness in the generated cluster secret and admin token.
const SECRET_BYTES: usize = 32;

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
    pub security: Security,
    /// Serve every node over HTTPS (client API and Raft), with a CA and node
    /// certificates the harness makes in the cluster directory.
    pub tls: bool,
    /// `(node id, MiB)`: that node's data directory is a tmpfs of this size,
    /// mounted before the node first starts and unmounted when the cluster is
    /// dropped, so a test can fill its disk (needs root, as `mount` does).
    pub tmpfs_data: Option<(u64, u64)>,
    /// `(node id, switch)`: that node runs with `BROKER_FAULT=switch` (the node
    /// binary must be built with the `fault-injection` feature: this package's
    /// feature of that name).
    pub fault: Option<(u64, &'static str)>,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        Self {
            nodes: 3,
            group: "broker-a".into(),
            groups: 1,
            extra_config: String::new(),
            security: Security::Secured,
            tls: false,
            tmpfs_data: None,
            fault: None,
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
    /// Sends the admin token (when secured) on every request.
    pub http: reqwest::Client,
    /// The admin token every node accepts, when secured.
    pub token: Option<String>,
    /// The secret and token files nodes are given, when secured.
    secret_files: Option<(PathBuf, PathBuf)>,
    /// The CA of a TLS cluster.
    ca: Option<TestCa>,
    /// Mounted data directories ([`ClusterOptions::tmpfs_data`]); unmounted after
    /// the nodes are killed.
    mounts: Vec<TmpfsMount>,
}

/// A tmpfs mounted for a test; unmounted when dropped (also when the test fails).
struct TmpfsMount {
    path: PathBuf,
}

impl TmpfsMount {
    fn mount(path: &Path, mib: u64) -> Result<Self> {
        fs::create_dir_all(path)?;
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mib}m"), "tmpfs"])
            .arg(path)
            .status()
            .context("running mount")?;
        if !status.success() {
            bail!(
                "mount -t tmpfs at {} failed: {status} (mounting needs root; scripts/test.sh skips these tests without it)",
                path.display()
            );
        }
        Ok(Self {
            path: path.to_path_buf(),
        })
    }
}

impl Drop for TmpfsMount {
    fn drop(&mut self) {
        // Lazy: a process that still holds a file there (it was just killed) must
        // not leave the mount behind.
        match Command::new("umount").arg("-l").arg(&self.path).status() {
            Ok(status) if status.success() => {}
            other => eprintln!("umount {} failed: {other:?}", self.path.display()),
        }
    }
}

/// A CA for a TLS test cluster, and certificates for 127.0.0.1 signed by it.
struct TestCa {
    dir: PathBuf,
    key: rcgen::KeyPair,
    certificate: rcgen::Certificate,
}

impl TestCa {
    fn new(dir: &Path) -> Result<Self> {
        fs::create_dir_all(dir)?;
        let key = rcgen::KeyPair::generate()?;
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new())?;
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "cluster-tests CA");
        let certificate = params.self_signed(&key)?;
        fs::write(dir.join("ca.pem"), certificate.pem())?;
        Ok(Self {
            dir: dir.to_path_buf(),
            key,
            certificate,
        })
    }

    fn ca_file(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// Writes node `id`'s certificate and key (0600); answers their paths.
    fn node_files(&self, id: u64) -> Result<(PathBuf, PathBuf)> {
        let cert_file = self.dir.join(format!("node-{id}.pem"));
        let key_file = self.dir.join(format!("node-{id}-key.pem"));
        if !cert_file.exists() {
            let key = rcgen::KeyPair::generate()?;
            let params =
                rcgen::CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".into()])?;
            let certificate = params.signed_by(&key, &self.certificate, &self.key)?;
            fs::write(&cert_file, certificate.pem())?;
            write_secret_file(&key_file, &key.serialize_pem())?;
        }
        Ok((cert_file, key_file))
    }

    fn trusted_by(&self, builder: reqwest::ClientBuilder) -> Result<reqwest::ClientBuilder> {
        Ok(builder
            .use_rustls_tls()
            .tls_built_in_root_certs(false)
            .add_root_certificate(reqwest::Certificate::from_pem(
                self.certificate.pem().as_bytes(),
            )?))
    }
}

/// `SECRET_BYTES` random bytes as hex, with `prefix`.
fn random_secret(prefix: &str) -> String {
    let bytes: [u8; SECRET_BYTES] = rand::random();
    let mut text = String::from(prefix);
    for byte in bytes {
        text.push_str(&format!("{byte:02x}"));
    }
    text
}

/// Writes `value` to a new file of mode 0600 (never readable by others, not even
/// while it is written).
fn write_secret_file(path: &Path, value: &str) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    writeln!(file, "{value}").with_context(|| format!("writing {}", path.display()))
}

/// A reqwest client builder that sends `token` as a bearer token on every request.
///
/// # Errors
/// A token a header cannot hold.
pub fn authorized_client(token: Option<&str>) -> Result<reqwest::ClientBuilder> {
    Ok(reqwest::Client::builder().default_headers(auth_headers(token)?))
}

/// `Authorization: Bearer TOKEN` (marked sensitive: never logged), or nothing.
///
/// # Errors
/// A token a header cannot hold.
pub fn auth_headers(token: Option<&str>) -> Result<reqwest::header::HeaderMap> {
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(token) = token {
        let mut value = reqwest::header::HeaderValue::from_str(&format!("Bearer {token}"))
            .context("the token is not a valid header value")?;
        value.set_sensitive(true);
        headers.insert(reqwest::header::AUTHORIZATION, value);
    }
    Ok(headers)
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
        let scheme = if options.tls { "https" } else { "http" };
        let ca = if options.tls {
            Some(TestCa::new(&dir.path().join("tls"))?)
        } else {
            None
        };
        let seeds: Vec<String> = layout
            .iter()
            .map(|(_, _, port)| format!("\"{scheme}://127.0.0.1:{port}\""))
            .collect();
        let (token, secret_files) = match options.security {
            Security::Secured => {
                let secret_file = dir.path().join("secret");
                let token_file = dir.path().join("token");
                write_secret_file(&secret_file, &random_secret(""))?;
                let token = random_secret("mq_admin_");
                write_secret_file(&token_file, &token)?;
                (Some(token), Some((secret_file, token_file)))
            }
            Security::Insecure => (None, None),
        };
        let mut http = authorized_client(token.as_deref())?
            .connect_timeout(Duration::from_secs(1))
            .timeout(Duration::from_secs(30));
        if let Some(ca) = &ca {
            http = ca.trusted_by(http)?;
        }
        let http = http.build()?;
        let mut cluster = Self {
            dir,
            binary: binary.to_path_buf(),
            options: options.clone(),
            nodes: BTreeMap::new(),
            http,
            token,
            secret_files,
            ca,
            mounts: Vec::new(),
        };
        for (id, group, port) in &layout {
            let peers: Vec<String> = layout
                .iter()
                .filter(|(_, g, _)| g == group)
                .map(|(id, _, port)| format!("\"{id}={scheme}://127.0.0.1:{port}\""))
                .collect();
            cluster.write_node(*id, group, *port, &peers, &seeds)?;
        }
        if let Some((id, mib)) = options.tmpfs_data {
            let data_dir = cluster.node(id).data_dir.clone();
            cluster.mounts.push(TmpfsMount::mount(&data_dir, mib)?);
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
        let scheme = if self.options.tls { "https" } else { "http" };
        let url = format!("{scheme}://127.0.0.1:{port}");
        let config = format!(
            "node_id = {id}\ngroup = \"{group}\"\nlisten = \"127.0.0.1:{port}\"\nadvertise_url = \"{url}\"\ndata_dir = \"{data}\"\npeers = [{peers}]\nseeds = [{seeds}]\n{extra}",
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

    /// The process id of a running node.
    pub fn pid(&self, id: u64) -> Option<u32> {
        self.nodes.get(&id)?.child.as_ref().map(Child::id)
    }

    /// The files holding the cluster secret and the admin token, when secured.
    pub fn secret_files(&self) -> Option<(&Path, &Path)> {
        self.secret_files
            .as_ref()
            .map(|(secret, token)| (secret.as_path(), token.as_path()))
    }

    /// Client library options that carry the cluster's admin token.
    pub fn client_options(&self) -> ClientOptions {
        ClientOptions {
            token: self.token.clone(),
            ca_file: self.ca.as_ref().map(TestCa::ca_file),
            ..ClientOptions::default()
        }
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
        let mut command = Command::new(&binary);
        command.arg("--config").arg(&node.config_path);
        // The node's own settings only: nothing of the caller's shell.
        for variable in [
            "BROKER_CLUSTER_SECRET",
            "BROKER_SECURITY_CLUSTER_SECRET_FILE",
            "BROKER_SECURITY_BOOTSTRAP_TOKEN_FILE",
            "BROKER_SECURITY_INSECURE",
            "BROKER_TLS_CERT_FILE",
            "BROKER_TLS_KEY_FILE",
            "BROKER_TLS_CA_FILE",
            "BROKER_FAULT",
        ] {
            command.env_remove(variable);
        }
        if let Some((_, switch)) = self.options.fault.filter(|(node, _)| *node == id) {
            command.env("BROKER_FAULT", switch);
        }
        if let Some(ca) = &self.ca {
            let (cert_file, key_file) = ca.node_files(id)?;
            command
                .env("BROKER_TLS_CERT_FILE", cert_file)
                .env("BROKER_TLS_KEY_FILE", key_file)
                .env("BROKER_TLS_CA_FILE", ca.ca_file());
        }
        match &self.secret_files {
            Some((secret_file, token_file)) => {
                command
                    .env("BROKER_SECURITY_CLUSTER_SECRET_FILE", secret_file)
                    .env("BROKER_SECURITY_BOOTSTRAP_TOKEN_FILE", token_file);
            }
            None => {
                command.arg("--insecure");
            }
        }
        let child = command
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

    /// Whether node `id`'s process (started by this harness) has exited, with its
    /// status. A process that replaced itself with `exec` keeps its PID and has not
    /// exited.
    pub fn exit_status(&mut self, id: u64) -> Option<std::process::ExitStatus> {
        let child = self.nodes.get_mut(&id)?.child.as_mut()?;
        child.try_wait().ok().flatten()
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
    ) -> Result<Vec<broker_proto::api::MessageView>> {
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
        let queues: broker_proto::api::QueuesResponse =
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

    /// The last `lines` lines of every node's log, for failure messages. Reads
    /// only the end of each log ([`LOG_TAIL_BYTES`]): every dropped cluster calls
    /// this, and a long test's logs run to megabytes.
    pub fn log_tails(&self, lines: usize) -> String {
        let mut out = String::new();
        for node in self.nodes.values() {
            let text = read_tail(&node.log_path, LOG_TAIL_BYTES);
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
        self.log_count(id, needle) > 0
    }

    /// How many times node `id`'s log holds `needle` (its runs append to one log).
    pub fn log_count(&self, id: u64, needle: &str) -> usize {
        fs::read_to_string(&self.node(id).log_path)
            .map(|text| text.matches(needle).count())
            .unwrap_or(0)
    }
}

/// How much of the end of a node's log [`TestCluster::log_tails`] reads.
const LOG_TAIL_BYTES: u64 = 256 * 1024;

/// The last `max` bytes of the file at `path` as text (a cut character at the
/// start is replaced), or nothing when it cannot be read.
fn read_tail(path: &Path, max: u64) -> String {
    use std::io::{Read, Seek, SeekFrom};
    let Ok(mut file) = fs::File::open(path) else {
        return String::new();
    };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let mut bytes = Vec::new();
    if file.seek(SeekFrom::Start(len.saturating_sub(max))).is_err()
        || file.take(max).read_to_end(&mut bytes).is_err()
    {
        return String::new();
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        let ids: Vec<u64> = self.nodes.keys().copied().collect();
        for id in ids {
            self.kill(id);
        }
        self.mounts.clear();
        // The test harness captures this and shows it only when the test fails —
        // including a test that returns an error, which a panic check misses: on a
        // CI machine the logs are all there is to diagnose from.
        eprintln!("--- node logs (last 60 lines each)\n{}", self.log_tails(60));
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_tail_reads_only_the_end() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("log");
        let text: String = (0..1000).map(|i| format!("line {i}\n")).collect();
        fs::write(&path, &text).expect("write");
        let tail = read_tail(&path, 20);
        assert_eq!(tail.len(), 20);
        assert!(text.ends_with(&tail));
        assert_eq!(tail.lines().last(), Some("line 999"));
        assert_eq!(read_tail(&path, 1 << 20), text, "a short file whole");
        assert_eq!(read_tail(&dir.path().join("none"), 20), "");
    }
}
