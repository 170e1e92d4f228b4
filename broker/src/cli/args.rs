//! The command line of `mqctl`: global flags and every subcommand, with clap's
//! derive API. Each subcommand maps onto one or a few endpoints of shared/API.md.

use std::path::PathBuf;
use std::time::Duration;

use clap::{ArgGroup, Args, Parser, Subcommand};

use crate::units::{parse_bytes, parse_duration};

/// The default node: the first node of `scripts/cluster.sh start`.
pub const DEFAULT_SERVER: &str = "http://127.0.0.1:18081";

#[derive(Parser, Debug)]
#[command(
    name = "mqctl",
    version,
    about = "Command line client of the broker's HTTP/JSON API",
    after_help = "Any node answers every command; several --server URLs give failover.\n\
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
    /// Find messages by id or by key.
    #[command(subcommand)]
    Query(QueryCommand),
    /// Broker groups and nodes; add or remove a node; transfer leadership.
    #[command(subcommand)]
    Cluster(ClusterCommand),
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
    #[arg(long)]
    pub delay_level: Option<u32>,
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
    /// Add a node to a group: it joins as a learner and becomes a voter once caught up.
    AddNode(AddNodeArgs),
    /// Remove a node from a group.
    RemoveNode(RemoveNodeArgs),
    /// Hand a group's leadership to another voter.
    TransferLeader(TransferLeaderArgs),
}

#[derive(Args, Debug)]
pub struct AddNodeArgs {
    /// The broker group, e.g. broker-a.
    pub group: String,
    /// The new node's id (never reuse the id of a wiped node).
    pub node_id: u64,
    /// The new node's base URL as the other nodes reach it.
    pub address: String,
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
