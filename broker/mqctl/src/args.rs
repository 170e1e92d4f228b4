//! The command line of `mqctl`: global flags and every subcommand, with clap's
//! derive API. Each subcommand maps onto one or a few endpoints of shared/API.md.

use std::path::PathBuf;
use std::time::Duration;

use clap::builder::RangedU64ValueParser;
use clap::{ArgGroup, Args, Parser, Subcommand};

use broker_proto::acl::{Action, Permission, ResourcePattern};
use broker_proto::receive::{
    MAX_INVISIBLE_MS, MAX_RECEIVE_MESSAGES, MAX_RECEIVE_WAIT_MS, MIN_INVISIBLE_MS,
};
use broker_proto::units::{parse_bytes, parse_duration};

/// The default node: the first node of `scripts/cluster.sh start`.
pub const DEFAULT_SERVER: &str = "http://127.0.0.1:18081";

#[derive(Parser, Debug)]
#[command(
    name = "mqctl",
    version,
    about = "Command line client of the broker's HTTP/JSON API",
    after_help = "Any node answers every command; several --server URLs give failover.\n\
                  A secured cluster (the default) wants a token: export MQ_TOKEN=$(scripts/cluster.sh token)\n\
                  (the environment, or --token-file, keeps it off the command line, which every local\n\
                  user can read). A --tls cluster also wants --ca-file DIR/tls/ca.pem (or MQ_CA_FILE).\n\
                  Exit status: 0 success, 1 a request failed, 2 a bad command line."
)]
pub struct Cli {
    /// Node base URLs, comma-separated (any node serves every command).
    #[arg(long, global = true, env = "MQ_SERVER", value_delimiter = ',', default_value = DEFAULT_SERVER)]
    pub server: Vec<String>,
    /// Limit on one request, e.g. 500ms, 15s (a long poll adds its wait).
    #[arg(long, global = true, default_value = "15s", value_parser = parse_duration)]
    pub timeout: Duration,
    /// Print JSON instead of tables (`tail` prints one JSON message per line).
    #[arg(long, global = true)]
    pub json: bool,
    /// Bearer token sent on every request (prefer the environment variable: a
    /// command line is visible to every local user).
    #[arg(
        long,
        global = true,
        env = "MQ_TOKEN",
        hide_env_values = true,
        conflicts_with = "token_file"
    )]
    pub token: Option<String>,
    /// Read the bearer token from the first line of this file, e.g. the cluster
    /// directory's `token` written by `scripts/cluster.sh start`.
    #[arg(long, global = true, env = "MQ_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
    /// PEM CA certificate that signs the nodes' certificates, for `https://` servers
    /// (`scripts/cluster.sh start --tls` writes DIR/tls/ca.pem).
    #[arg(long, global = true, env = "MQ_CA_FILE")]
    pub ca_file: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Create, list, describe and delete topics.
    #[command(subcommand)]
    Topic(TopicCommand),
    /// The broker groups serving a topic, with leaders and replicas.
    Routes(TopicArg),
    /// Send one message, a file (one message per line) or N generated messages.
    Send(SendArgs),
    /// Pull each queue once (or one queue) from an offset, with optional long polling.
    Pull(PullArgs),
    /// Print the last messages of every queue (or one); -f follows with long polling.
    Tail(TailArgs),
    /// Consumer group offsets: show, commit, reset by time.
    #[command(subcommand)]
    Group(GroupCommand),
    /// Receive messages leased to a consumer group (lease-based consumption): they
    /// stay invisible to the group's other receivers until acked or the lease ends.
    Receive(ReceiveArgs),
    /// Ack received messages by their receipt handles: the group never receives them
    /// again. Exits 1 unless every handle is OK.
    Ack(AckArgs),
    /// Give a received message back (change-invisible): at once (the default), or
    /// after --invisible-ms. Prints the new receipt handle.
    Nack(NackArgs),
    /// Find messages by id or by key.
    #[command(subcommand)]
    Query(QueryCommand),
    /// Broker groups and nodes; add or remove a node; transfer leadership.
    #[command(subcommand)]
    Cluster(ClusterCommand),
    /// Users, their permissions, quotas and tokens (needs an admin token).
    #[command(subcommand, after_help = PERMISSION_HELP)]
    User(UserCommand),
    /// Transactions: commit or roll back one by id, or take a producer group's
    /// checks (open transactions offered for resolution). Send one with
    /// `send --transaction PRODUCER_GROUP`.
    #[command(subcommand)]
    Tx(TxCommand),
}

#[derive(Subcommand, Debug)]
pub enum TxCommand {
    /// Commit a transaction: its messages become visible in their topic, once.
    Commit(TxIdArg),
    /// Roll back a transaction: its messages are discarded.
    Rollback(TxIdArg),
    /// Take the checks offered to a producer group (each offer goes to one
    /// caller: resolve what this prints with `tx commit` or `tx rollback`).
    Checks(TxChecksArgs),
}

#[derive(Args, Debug)]
pub struct TxIdArg {
    /// The transaction id, as the send printed it.
    pub transaction_id: String,
}

#[derive(Args, Debug)]
pub struct TxChecksArgs {
    pub producer_group: String,
    /// Wait up to this long for a check (long polling; at most 30s).
    #[arg(long, default_value = "0s", value_parser = parse_duration)]
    pub wait: Duration,
    /// The broker group whose transactions to check (default: the answering
    /// node's). A cluster of several groups keeps each transaction in the group
    /// that stored it.
    #[arg(long, value_name = "GROUP")]
    pub broker_group: Option<String>,
}

#[derive(Args, Debug)]
pub struct TopicArg {
    pub topic: String,
}

#[derive(Subcommand, Debug)]
pub enum TopicCommand {
    /// Create a topic, or update its settings (PUT /v1/topics/{topic}).
    Create(TopicCreateArgs),
    /// Every topic with its queue counts, permission and groups.
    List,
    /// A topic's settings, routes and queues.
    Describe(TopicArg),
    /// Delete a topic from every group serving it.
    Delete(TopicArg),
}

#[derive(Args, Debug)]
pub struct TopicCreateArgs {
    pub topic: String,
    /// Read and write queue count (each group has this many queues).
    #[arg(long)]
    pub queues: Option<u32>,
    /// Read queue count (overrides --queues).
    #[arg(long)]
    pub read_queues: Option<u32>,
    /// Write queue count (overrides --queues).
    #[arg(long)]
    pub write_queues: Option<u32>,
    /// Permission bits: 6 read+write, 4 read only, 2 write only.
    #[arg(long)]
    pub perm: Option<u8>,
    /// Broker groups to create the topic in (comma-separated; default: every group).
    #[arg(long = "group", value_delimiter = ',')]
    pub groups: Vec<String>,
}

#[derive(Args, Debug)]
#[command(group(ArgGroup::new("source").required(true).args(["body", "file", "bulk"])))]
pub struct SendArgs {
    pub topic: String,
    /// The message body (UTF-8 text).
    pub body: Option<String>,
    /// Send every non-empty line of this file as a message (`-` reads stdin).
    #[arg(long, short = 'f')]
    pub file: Option<PathBuf>,
    /// Send N generated messages ("message-<i>" padded to --size) and report msgs/s.
    #[arg(long, value_name = "N")]
    pub bulk: Option<u64>,
    /// Body size of each bulk message, e.g. 100, 1KiB.
    #[arg(long, default_value = "100", value_parser = parse_bytes)]
    pub size: u64,
    /// Messages per request for --file and --bulk (at most 256, the dedup window).
    #[arg(long, default_value_t = 32)]
    pub batch: u32,
    /// Requests in flight for --bulk.
    #[arg(long, default_value_t = 4)]
    pub concurrency: u32,
    /// Tag of every message (filterable on pull).
    #[arg(long)]
    pub tags: Option<String>,
    /// Key of every message (repeat for several; queryable with `query key`).
    #[arg(long = "key")]
    pub keys: Vec<String>,
    /// User property KEY=VALUE (repeat for several).
    #[arg(long = "property", value_parser = parse_property)]
    pub properties: Vec<(String, String)>,
    /// Pin the queue (per broker group; see --group).
    #[arg(long)]
    pub queue_id: Option<u32>,
    /// Pick the queue by hash of this key (ordered messages).
    #[arg(long, conflicts_with = "queue_id")]
    pub sharding_key: Option<String>,
    /// Send to this broker group (default: the receiving node's, or in turn).
    #[arg(long)]
    pub group: Option<String>,
    /// Deliver later: delay level 1-18 (1s 5s 10s 30s 1m 2m ... 2h by default).
    #[arg(long, conflicts_with_all = ["deliver_at", "delay"])]
    pub delay_level: Option<u32>,
    /// Timer message: visible at this time, in epoch milliseconds (up to the
    /// broker's consumer.max_delay ahead, 7 days by default).
    #[arg(long, conflicts_with = "delay")]
    pub deliver_at: Option<u64>,
    /// Timer message: visible this long after it is stored (`90s`, `15m`, `2h`,
    /// `3d`; up to consumer.max_delay).
    #[arg(long, value_parser = parse_delay)]
    pub delay: Option<u64>,
    /// Send the message (or the file's lines) as one transaction of this
    /// producer group: invisible until `mqctl tx commit ID`. Prints the id.
    #[arg(long, value_name = "PRODUCER_GROUP", conflicts_with_all = ["bulk", "delay_level", "deliver_at", "delay", "group"])]
    pub transaction: Option<String>,
}

/// Parses a duration into milliseconds.
fn parse_delay(text: &str) -> Result<u64, String> {
    let duration = parse_duration(text)?;
    u64::try_from(duration.as_millis()).map_err(|_| format!("`{text}` is too long"))
}

/// Parses `KEY=VALUE`.
fn parse_property(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_string(), value.to_string())),
        _ => Err(format!("`{text}` is not KEY=VALUE")),
    }
}

/// Which queues a pull or tail reads.
#[derive(Args, Debug, Clone)]
pub struct QueueSelection {
    pub topic: String,
    /// Only this queue id (default: every queue of every group).
    #[arg(long, short = 'q')]
    pub queue: Option<u32>,
    /// Only this broker group's queues.
    #[arg(long)]
    pub group: Option<String>,
    /// Tag filter: `TagA` or `TagA||TagB`.
    #[arg(long)]
    pub tags: Option<String>,
}

#[derive(Args, Debug)]
pub struct PullArgs {
    #[command(flatten)]
    pub queues: QueueSelection,
    /// Start offset in each selected queue (default: the queue's first offset).
    #[arg(long)]
    pub offset: Option<u64>,
    /// Most messages per queue (1..=1024).
    #[arg(long, default_value_t = 32)]
    pub max: u32,
    /// Long polling: how long the broker may wait for a message, in ms (max 30000).
    #[arg(long, default_value_t = 0)]
    pub wait_ms: u64,
}

#[derive(Args, Debug)]
pub struct TailArgs {
    #[command(flatten)]
    pub queues: QueueSelection,
    /// Keep following: long-poll every selected queue and print messages as they come.
    #[arg(long, short = 'f')]
    pub follow: bool,
    /// Start this many messages before each queue's end.
    #[arg(long, short = 'n', default_value_t = 10)]
    pub last: u64,
    /// Start at this offset in each selected queue instead (overrides --last).
    #[arg(long)]
    pub offset: Option<u64>,
    /// Print at most this many messages (with -f: stop following after them).
    #[arg(long)]
    pub count: Option<u64>,
    /// Long polling wait of each request while following, in ms (max 30000).
    #[arg(long, default_value_t = 10_000)]
    pub wait_ms: u64,
}

#[derive(Args, Debug)]
pub struct ReceiveArgs {
    /// The consumer group.
    pub group: String,
    pub topic: String,
    /// Most messages (1..=256).
    #[arg(
        long,
        default_value_t = 16,
        value_parser = RangedU64ValueParser::<usize>::new().range(1..=MAX_RECEIVE_MESSAGES as u64)
    )]
    pub max: usize,
    /// How long the messages stay leased, in ms (1000..=43200000); unacked, they
    /// are delivered again after it.
    #[arg(
        long,
        default_value_t = 30_000,
        value_parser = clap::value_parser!(u64).range(MIN_INVISIBLE_MS..=MAX_INVISIBLE_MS)
    )]
    pub invisible_ms: u64,
    /// Long polling: how long the broker may wait for a message, in ms (max 30000).
    #[arg(
        long,
        default_value_t = 0,
        value_parser = clap::value_parser!(u64).range(..=MAX_RECEIVE_WAIT_MS)
    )]
    pub wait_ms: u64,
    /// Tag filter: `TagA` or `TagA||TagB`.
    #[arg(long)]
    pub tags: Option<String>,
    /// Each queue's messages in order, one leased run of a queue at a time.
    #[arg(long)]
    pub fifo: bool,
    /// Ack the messages once printed (exits 1 unless every ack is OK).
    #[arg(long)]
    pub ack: bool,
}

#[derive(Args, Debug)]
pub struct AckArgs {
    /// The consumer group.
    pub group: String,
    /// Receipt handles, as `receive` printed them.
    #[arg(required = true, value_name = "HANDLE")]
    pub handles: Vec<String>,
}

#[derive(Args, Debug)]
pub struct NackArgs {
    /// The consumer group.
    pub group: String,
    /// The receipt handle, as `receive` printed it.
    pub handle: String,
    /// Deliver the message again after this many ms: 0 (at once) or
    /// 1000..=43200000 (until then the new handle can still ack it).
    #[arg(long, default_value_t = 0, value_parser = parse_invisible_change_ms)]
    pub invisible_ms: u64,
}

/// Parses a change-invisible duration: 0 or a lease's bounds.
fn parse_invisible_change_ms(text: &str) -> Result<u64, String> {
    let ms: u64 = text
        .parse()
        .map_err(|e| format!("`{text}` is not a number of ms: {e}"))?;
    if ms == 0 || (MIN_INVISIBLE_MS..=MAX_INVISIBLE_MS).contains(&ms) {
        Ok(ms)
    } else {
        Err(format!(
            "{ms} is neither 0 nor {MIN_INVISIBLE_MS}..={MAX_INVISIBLE_MS}"
        ))
    }
}

#[derive(Subcommand, Debug)]
pub enum GroupCommand {
    /// A consumer group's committed offsets and lag per queue.
    Offsets(GroupOffsetsArgs),
    /// Commit an offset for one queue (--force moves it backwards).
    Commit(GroupCommitArgs),
    /// Move a consumer group's offsets to the first message stored at or after a
    /// time (or to the earliest / latest offset) in every queue of a topic.
    Reset(GroupResetArgs),
    /// Give a message back: it comes again through %RETRY%<group> after a growing
    /// delay, or goes to %DLQ%<group> (--dead-letter, or after 16 give-backs).
    Retry(GroupRetryArgs),
}

#[derive(Args, Debug)]
pub struct GroupRetryArgs {
    /// The consumer group.
    pub group: String,
    pub topic: String,
    pub queue: u32,
    /// The message's queue offset.
    pub offset: u64,
    /// Come back after this delay level instead of the growing one.
    #[arg(long, conflicts_with = "dead_letter")]
    pub delay_level: Option<u32>,
    /// Straight to the dead-letter topic.
    #[arg(long)]
    pub dead_letter: bool,
    /// The broker group owning the queue (needed when several serve the topic).
    #[arg(long)]
    pub broker_group: Option<String>,
}

#[derive(Args, Debug)]
pub struct GroupOffsetsArgs {
    /// The consumer group.
    pub group: String,
    /// Only this topic.
    #[arg(long)]
    pub topic: Option<String>,
    /// The answering node's own copy, without confirming with its leader that it
    /// is up to date (works on a node cut off from its leader; may miss recent
    /// commits).
    #[arg(long)]
    pub stale: bool,
}

#[derive(Args, Debug)]
pub struct GroupCommitArgs {
    /// The consumer group.
    pub group: String,
    pub topic: String,
    pub queue: u32,
    pub offset: u64,
    /// Store the offset even if it is behind the committed one.
    #[arg(long)]
    pub force: bool,
    /// The broker group owning the queue (needed when several serve the topic).
    #[arg(long)]
    pub broker_group: Option<String>,
}

#[derive(Args, Debug)]
#[command(group(ArgGroup::new("target").required(true).args(["timestamp", "ago", "earliest", "latest"])))]
pub struct GroupResetArgs {
    /// The consumer group.
    pub group: String,
    pub topic: String,
    /// Unix time in milliseconds.
    #[arg(long)]
    pub timestamp: Option<u64>,
    /// A time this long before now, e.g. 10m, 2h.
    #[arg(long, value_parser = parse_duration)]
    pub ago: Option<Duration>,
    /// Each queue's first offset.
    #[arg(long)]
    pub earliest: bool,
    /// Each queue's end (skip everything stored so far).
    #[arg(long)]
    pub latest: bool,
    /// Only this queue id.
    #[arg(long, short = 'q')]
    pub queue: Option<u32>,
    /// Only this broker group's queues.
    #[arg(long)]
    pub broker_group: Option<String>,
}

#[derive(Subcommand, Debug)]
pub enum QueryCommand {
    /// One message by its id (the id names its group: any node answers).
    Id(QueryIdArgs),
    /// Messages of a topic carrying a key, optionally in a store-time range.
    Key(QueryKeyArgs),
}

#[derive(Args, Debug)]
pub struct QueryIdArgs {
    pub msg_id: String,
}

#[derive(Args, Debug)]
pub struct QueryKeyArgs {
    pub topic: String,
    pub key: String,
    /// Stored at or after this Unix time in ms.
    #[arg(long)]
    pub begin: Option<u64>,
    /// Stored at or before this Unix time in ms.
    #[arg(long)]
    pub end: Option<u64>,
    /// Most messages returned.
    #[arg(long)]
    pub max: Option<u32>,
}

#[derive(Subcommand, Debug)]
pub enum ClusterCommand {
    /// Every broker group with its nodes: role, term, log indexes, lag.
    Status,
    /// Add a node to a group: it joins as a learner and becomes a voter once caught
    /// up. Waits for the join to end (up to --wait) and prints how it ended.
    AddNode(AddNodeArgs),
    /// Remove a node from a group.
    RemoveNode(RemoveNodeArgs),
    /// Hand a group's leadership to another voter.
    TransferLeader(TransferLeaderArgs),
    /// After a rolling upgrade of every node of a group: start using what the new
    /// build adds (queue claims). Refused while a voter runs an older build; no
    /// older build can join or be downgraded to afterwards.
    FinalizeUpgrade(FinalizeUpgradeArgs),
}

#[derive(Args, Debug)]
pub struct FinalizeUpgradeArgs {
    /// The broker group, e.g. broker-a.
    pub group: String,
}

#[derive(Args, Debug)]
pub struct AddNodeArgs {
    /// The broker group, e.g. broker-a.
    pub group: String,
    /// The new node's id (never reuse the id of a wiped node).
    pub node_id: u64,
    /// The new node's base URL as the other nodes reach it.
    pub address: String,
    /// Follow the join this long (0: print it as started and return). The leader
    /// ends a join by itself within its `control.join_timeout`.
    #[arg(long, default_value = "10m", value_parser = parse_duration)]
    pub wait: Duration,
}

#[derive(Args, Debug)]
pub struct RemoveNodeArgs {
    pub group: String,
    pub node_id: u64,
}

#[derive(Args, Debug)]
pub struct TransferLeaderArgs {
    pub group: String,
    /// The node id to lead next.
    pub to: u64,
}

/// How `--permission` reads, shown under `mqctl user --help`.
pub const PERMISSION_HELP: &str = concat!(
    "Permissions: --permission RESOURCE=ACTIONS, repeated.\n",
    "  RESOURCE  topic:NAME, group:NAME (a consumer group) or cluster; a NAME ending in * is a prefix\n",
    "  ACTIONS   comma-separated: pub (send), sub (consume: pull, receive, ack, offsets),\n",
    "            admin (topics, resets); admin on cluster allows everything, users included\n",
    "Examples:\n",
    "  mqctl user create orders-svc --permission topic:orders=pub --send-messages-per-s 1000\n",
    "  mqctl user create billing --permission topic:orders=sub --permission 'group:billing*=sub'\n",
    "  mqctl user update billing --permission topic:orders=sub,pub   # keeps its quotas\n",
    "  mqctl user rotate billing   # prints the new token once; the old one stops working",
);

#[derive(Subcommand, Debug)]
pub enum UserCommand {
    /// Create a user and print its token (shown only this once).
    #[command(after_help = PERMISSION_HELP)]
    Create(UserCreateArgs),
    /// Every user with its permissions and quotas (never tokens).
    List,
    /// One user's permissions, quotas and times.
    Show(UserNameArg),
    /// Change a user's permissions or quotas; what is not named stays as it is.
    #[command(after_help = PERMISSION_HELP)]
    Update(UserUpdateArgs),
    /// Delete a user: its token stops working on every node within seconds.
    Delete(UserNameArg),
    /// Issue a new token for a user and print it once; the old one stops working.
    Rotate(UserNameArg),
}

#[derive(Args, Debug)]
pub struct UserNameArg {
    pub name: String,
}

/// Quotas on a user's sends (absent: unlimited).
#[derive(Args, Debug, Default)]
pub struct QuotaArgs {
    /// Messages per second the user may send (over it: 429 RATE_LIMITED).
    #[arg(long, value_name = "N")]
    pub send_messages_per_s: Option<u64>,
    /// Body bytes per second the user may send, e.g. 1000000, 1MiB.
    #[arg(long, value_name = "BYTES", value_parser = parse_bytes)]
    pub send_bytes_per_s: Option<u64>,
}

#[derive(Args, Debug)]
pub struct UserCreateArgs {
    /// The user's name (letters, digits, `_`, `-`, `%`, `|`).
    pub name: String,
    /// A grant, RESOURCE=ACTIONS, e.g. topic:orders=pub,sub (repeat for more).
    #[arg(long = "permission", value_name = "RESOURCE=ACTIONS", value_parser = parse_permission)]
    pub permissions: Vec<Permission>,
    #[command(flatten)]
    pub quotas: QuotaArgs,
}

#[derive(Args, Debug)]
pub struct UserUpdateArgs {
    pub name: String,
    /// Replace every permission with these (repeat for more).
    #[arg(long = "permission", value_name = "RESOURCE=ACTIONS", value_parser = parse_permission)]
    pub permissions: Vec<Permission>,
    /// Remove every permission (the token then only passes /health and /ready).
    #[arg(long, conflicts_with = "permissions")]
    pub no_permissions: bool,
    #[command(flatten)]
    pub quotas: QuotaArgs,
    /// Remove both quotas (unlimited sends).
    #[arg(long, conflicts_with_all = ["send_messages_per_s", "send_bytes_per_s"])]
    pub no_quotas: bool,
}

/// Parses `RESOURCE=ACTIONS`: `topic:orders=pub,sub`, `group:billing*=sub`,
/// `cluster=admin`.
pub fn parse_permission(text: &str) -> Result<Permission, String> {
    let (resource, actions) = text
        .rsplit_once('=')
        .ok_or_else(|| format!("`{text}` is not RESOURCE=ACTIONS (e.g. topic:orders=pub,sub)"))?;
    let resource = ResourcePattern::try_from(resource.to_string())?;
    let mut parsed = Vec::new();
    for word in actions.split(',').map(str::trim).filter(|w| !w.is_empty()) {
        let action = match word {
            "pub" => Action::Pub,
            "sub" => Action::Sub,
            "admin" => Action::Admin,
            other => return Err(format!("`{other}` is not an action: pub, sub or admin")),
        };
        if !parsed.contains(&action) {
            parsed.push(action);
        }
    }
    if parsed.is_empty() {
        return Err(format!("`{text}` names no action (pub, sub, admin)"));
    }
    Ok(Permission {
        resource,
        actions: parsed,
    })
}
