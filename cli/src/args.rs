//! The command line: every command, flag and help text of `sluice` (clap derive).
//!
//! Parsing only; nothing here talks to a cluster. Values that need more than clap's built-in
//! parsers (durations like `7d`, sizes like `1GiB`, times like `2024-05-01T10:00:00Z`) are
//! parsed by [`crate::units`] so that a bad value is refused with a message before any
//! connection is made.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::units;

/// Default SC public address when neither `--sc` nor `SLUICE_SC` is given.
pub const SC_ADDRESS_DEFAULT: &str = "127.0.0.1:9003";

const ABOUT: &str = "Sluice: a persistent, replicated streaming platform";

const LONG_ABOUT: &str = "\
Sluice: a persistent, replicated streaming platform.

`sluice` starts a local cluster, manages topics, SPUs and SPU groups, and produces and
consumes records. Every command that talks to a cluster goes to the Streaming Controller (SC)
named by --sc (or SLUICE_SC, default 127.0.0.1:9003).

TLS: --tls-ca turns TLS on for every connection (SC and SPUs) and names the CA bundle the
servers' certificates must chain to; servers are verified by the host of the address dialled.
--tls-cert and --tls-key present a client certificate (its name is your identity) to servers
that ask for one. A client file (--config FILE, TOML) can hold the same settings:

  sc = \"127.0.0.1:9003\"
  tls_ca = \"tls/ca.pem\"        # relative to the file's directory
  tls_cert = \"tls/admin.pem\"
  tls_key = \"tls/admin.key\"

Precedence: flag, then environment variable, then file, then default. `sluice cluster start
--local --tls` writes such a file for its admin identity.";

const AFTER_HELP: &str = "\
Quick start:
  sluice cluster start --local              # an SC and one SPU on this machine
  sluice topic create greetings --partitions 2
  echo hello | sluice produce greetings
  sluice consume greetings -B -d            # prints: hello
  sluice cluster stop

Run `sluice <command> --help` for the flags and examples of each command.";

/// `sluice`, the command-line tool.
#[derive(Debug, Parser)]
#[command(name = "sluice", version, about = ABOUT, long_about = LONG_ABOUT,
    after_help = AFTER_HELP, propagate_version = true)]
pub struct Cli {
    /// SC public address(es), `host:port[,host:port...]`, tried in order; or
    /// `consul://AGENT/CLUSTER`: every SC of CLUSTER whose Consul checks pass, the active one
    /// first (ACL token from CONSUL_HTTP_TOKEN).
    /// [default: the --config file's `sc`, else 127.0.0.1:9003]
    #[arg(long, global = true, env = "SLUICE_SC", value_name = "HOST:PORT[,..]")]
    pub sc: Option<String>,
    /// Client configuration file (TOML: `sc`, `tls_ca`, `tls_cert`, `tls_key`, `token`); flags and
    /// environment variables override its values.
    #[arg(long, global = true, env = "SLUICE_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Use TLS, trusting the servers' certificates signed by this PEM CA bundle.
    #[arg(long, global = true, env = "SLUICE_TLS_CA", value_name = "PEM")]
    pub tls_ca: Option<PathBuf>,
    /// PEM client certificate presented to servers that ask for one (with --tls-key).
    #[arg(long, global = true, env = "SLUICE_TLS_CERT", value_name = "PEM")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, global = true, env = "SLUICE_TLS_KEY", value_name = "PEM")]
    pub tls_key: Option<PathBuf>,
    /// Access token (`slu_...`, from `sluice token create`): every connection authenticates
    /// with it and acts as `User:<token name>` [default: the --config file's `token`].
    #[arg(long, global = true, env = "SLUICE_TOKEN", hide_env_values = true, value_name = "TOKEN")]
    pub token: Option<String>,
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// Every top-level command.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Start, inspect and stop a local cluster (an SC and SPUs as background processes).
    #[command(subcommand)]
    Cluster(ClusterCommand),
    /// Create, list, describe and delete topics.
    #[command(subcommand)]
    Topic(TopicCommand),
    /// List partitions with their leader, replicas and offsets.
    #[command(subcommand)]
    Partition(PartitionCommand),
    /// List, register and unregister SPUs (Streaming Processing Units).
    #[command(subcommand)]
    Spu(SpuCommand),
    /// Create, list and delete SPU groups (templates for managed SPUs).
    #[command(subcommand, name = "spu-group")]
    SpuGroup(SpuGroupCommand),
    /// Append records to a topic, one record per input line.
    #[command(after_help = PRODUCE_EXAMPLES)]
    Produce(ProduceArgs),
    /// Read records from a topic and print them, one per line.
    #[command(after_help = CONSUME_EXAMPLES)]
    Consume(ConsumeArgs),
    /// Add, remove and list ACL bindings (enforced when the SC runs with --authorization).
    #[command(subcommand)]
    Acl(crate::security::AclCommand),
    /// Create, revoke and list access tokens.
    #[command(subcommand)]
    Token(crate::security::TokenCommand),
}

/// How list and describe commands print.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// Aligned columns for people.
    #[default]
    Table,
    /// JSON, for scripts (`jq`).
    Json,
    /// YAML.
    Yaml,
}

/// The `-O` flag shared by list and describe commands.
#[derive(Clone, Copy, Debug, Args)]
pub struct OutputArgs {
    /// Output format.
    #[arg(short = 'O', long = "output", value_enum, default_value_t = OutputFormat::Table)]
    pub format: OutputFormat,
}

// ---------------------------------------------------------------------------------------------
// cluster

const CLUSTER_START_EXAMPLES: &str = "\
Examples:
  sluice cluster start --local
  sluice cluster start --local --spus 2 --cores 1 --data-dir /tmp/sluice
  sluice cluster start --local --metadata consul --consul-addr http://127.0.0.1:8500

Processes: `sluice-sc` and `sluice-spu` are taken from the directory of `sluice` itself, then
from PATH (override with SLUICE_SC_BIN and SLUICE_SPU_BIN). Their logs go to DIR/logs/ and their
PIDs and addresses to DIR/cluster.json. Starting again on the same data directory after `stop`
reattaches the topics and records kept there.

When part of the cluster in DIR still runs (an SPU or the SC was stopped, killed or crashed),
start brings back only what is not running, with the settings recorded in DIR/cluster.json
(store, addresses, SPU ids and cores); the flags of this start apply only to settings that
were not recorded. With Consul, a new SC is a standby until Consul releases the lock of an SC
that died (a few seconds); start waits for that election, up to --timeout.";

const CLUSTER_SPU_STOP_EXAMPLES: &str = "\
Examples:
  sluice cluster spu stop 5002
  sluice cluster spu stop 5002 --timeout 10s --data-dir /tmp/sluice

The SPU syncs and leaves; the SC moves the leadership of its partitions to in-sync replicas
on other SPUs (see `sluice partition list`). `sluice cluster start --local` starts it again;
it catches up and rejoins the in-sync sets.";

const CLUSTER_SPU_KILL_EXAMPLES: &str = "\
Examples:
  sluice cluster spu kill 5002            # like kill -9: a crash
  sluice partition list                   # new leaders, leader epochs bumped
  sluice cluster start --local            # starts SPU 5002 again; it catches up

Watching a failover on one machine: start a cluster with --spus 3, create a topic with
--replication 3 --min-in-sync 2, produce, kill the SPU that leads a partition, and list the
partitions again.";

/// `sluice cluster ...`
#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// Start an SC and SPUs on this machine and wait until every SPU is online.
    #[command(after_help = CLUSTER_START_EXAMPLES)]
    Start(ClusterStartArgs),
    /// Show the local cluster's processes and SPUs.
    #[command(after_help = "Example:\n  sluice cluster status --data-dir /tmp/sluice -O json")]
    Status(ClusterStatusArgs),
    /// Stop the local cluster's processes (by their recorded PIDs); data is kept.
    #[command(after_help = "Example:\n  sluice cluster stop --data-dir /tmp/sluice")]
    Stop(ClusterStopArgs),
    /// Stop or kill one SPU of the local cluster, e.g. to watch a failover.
    #[command(subcommand)]
    Spu(ClusterSpuCommand),
    /// Even replicas and leaders over every core of every SPU (after SPUs were added, or to
    /// empty SPUs with --drain): print the plan and its balance report, then carry it out
    /// with partition reassignment (or only print it with --dry-run).
    #[command(after_help = CLUSTER_REBALANCE_EXAMPLES)]
    Rebalance(ClusterRebalanceArgs),
    /// Restart the local cluster's SPUs one at a time without losing availability: move
    /// leadership off an SPU, stop it (SIGTERM), start it, wait until every partition is fully
    /// in sync, then the next.
    #[command(name = "rolling-restart", after_help = CLUSTER_ROLLING_RESTART_EXAMPLES)]
    RollingRestart(ClusterRollingRestartArgs),
    /// Create a throwaway CA and certificates for an SC, SPUs and client identities (for
    /// tests and trials; production certificates come from your own PKI).
    #[command(after_help = CLUSTER_CERTS_EXAMPLES)]
    Certs(ClusterCertsArgs),
}

const CLUSTER_CERTS_EXAMPLES: &str = "\
Examples:
  sluice cluster certs --out ./tls --cluster prod --spus 5001,5002 --sc-host sc1.example.com
  sluice cluster certs --out ./tls --spus 5001 --sc-host 10.0.0.5 --client admin --client app

Writes DIR/ca.pem and DIR/ca.key (the CA: keep ca.key private; a second run with the same DIR
reuses it), DIR/sc.pem and sc.key (names sc.CLUSTER, each --sc-host, localhost and
127.0.0.1), DIR/spu-N.pem and spu-N.key per SPU (names spu-N.CLUSTER, each --spu-host,
localhost and 127.0.0.1) and DIR/NAME.pem and NAME.key per --client (name NAME). Keys are
mode 0600. Then, for example:
  sluice-sc --tls-cert DIR/sc.pem --tls-key DIR/sc.key --tls-ca DIR/ca.pem --tls-client-auth optional
  sluice --tls-ca DIR/ca.pem --tls-cert DIR/admin.pem --tls-key DIR/admin.key topic list";

/// `sluice cluster certs`
#[derive(Clone, Debug, Args)]
pub struct ClusterCertsArgs {
    /// Directory to write the files to (created if missing).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Cluster name, as the SC's --cluster: certificates name `sc.CLUSTER` and
    /// `spu-N.CLUSTER`.
    #[arg(long, default_value = "default")]
    pub cluster: String,
    /// SPU ids to issue certificates for.
    #[arg(long, value_delimiter = ',', value_name = "ID,ID,..")]
    pub spus: Vec<i32>,
    /// Host names or IP addresses clients dial the SC by (repeatable).
    #[arg(long, value_name = "HOST")]
    pub sc_host: Vec<String>,
    /// Host names or IP addresses clients dial the SPUs by (repeatable; the same for all).
    #[arg(long, value_name = "HOST")]
    pub spu_host: Vec<String>,
    /// Client identities to issue certificates for (repeatable) [default: admin].
    #[arg(long, value_name = "NAME")]
    pub client: Vec<String>,
    /// Validity of the certificates, e.g. `365d`.
    #[arg(long, value_name = "DURATION", default_value = "365d", value_parser = units::parse_duration)]
    pub validity: std::time::Duration,
}

const CLUSTER_REBALANCE_EXAMPLES: &str = "\
Examples:
  sluice cluster rebalance --dry-run                    # plan table and balance report
  sluice cluster rebalance --throttle 50                # carry it out, 50 MiB/s per new replica
  sluice cluster rebalance --dry-run -O json > plan.json
  sluice cluster rebalance --dry-run --drain 5003       # empty SPU 5003 (decommission)

The SC plans from its current metadata: the SPUs online (with their cores and racks) and every
partition's replicas (the first is the preferred leader). The plan evens replicas per core and
preferred leaders per core over every core of every SPU with few replica moves (a moved replica
copies its partition's data; changing only which replica leads is cheap and preferred), keeps
each partition's replicas on distinct SPUs and never on fewer racks, and never makes the
balance worse. The report shows replicas and leaders per SPU, min-max per core and per SPU
before and after, the replica moves and the fewest moves any plan would need.

Without --dry-run every partition of the plan is moved the way `sluice partition reassign`
moves one (new replicas join as followers and catch up, leadership moves where the plan says,
then the old replicas leave), and the command waits, printing progress, until every move has
ended (--no-wait returns at once; follow with `sluice partition reassign --status`). Producers
and consumers keep working; nothing acknowledged is lost.

With --dry-run -O json the output is a plan file, {\"partitions\": [...]} with one entry per
partition to move:
  {\"topic\": \"orders\", \"partition\": 0, \"replicas\": [{\"spu\": 5004, \"core\": 1}, ...]}
replicas preferred leader first, each on the core the planner counted on; this is the input of
`sluice partition reassign --plan FILE` (edit it first if you like). -O yaml prints the whole
plan and report.";

const CLUSTER_ROLLING_RESTART_EXAMPLES: &str = "\
Examples:
  sluice cluster rolling-restart
  sluice cluster rolling-restart --data-dir /tmp/sluice --step-timeout 2m
  # A datacenter cluster under systemd (upgrade: install the new binary in the start command):
  sluice --sc consul://127.0.0.1:8500/prod cluster rolling-restart \\
    --stop-command 'ssh {host} sudo systemctl stop sluice-spu' \\
    --start-command 'ssh {host} sudo systemctl start sluice-spu'

For each SPU of the local cluster (or, with --stop-command and --start-command, of the cluster
--sc names; --spus picks some) in id order: the SC moves the leadership of every partition
the SPU leads to another in-sync replica and holds it off the SPU (so the periodic
preferred-leader restore does not hand it back); the SPU is stopped with SIGTERM (SIGKILL only
after --stop-timeout) and started again with its recorded settings; then the command waits
until every partition has all its replicas in its in-sync set, releases the hold, and asks the
SC to restore preferred leaders. Progress is printed at every step. The commands run with
`sh -c` after {id} and {host} (the SPU's public host) are replaced; each must exit 0, and the
start command may return before the SPU is up (the command waits for it). A partition with one
replica is unavailable while its SPU restarts; with replicas on several SPUs producers and
consumers keep going (acks all needs --min-in-sync replicas in sync).";

/// `sluice cluster rebalance`
#[derive(Clone, Debug, Args)]
pub struct ClusterRebalanceArgs {
    /// Only plan and print; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// SPU to empty (repeatable): the plan moves every replica off it.
    #[arg(long, value_name = "SPU")]
    pub drain: Vec<i32>,
    /// Fetch rate limit of each replica being added, MiB/s [default: unlimited].
    #[arg(long, value_name = "MIB_PER_SECOND", conflicts_with = "dry_run")]
    pub throttle: Option<f64>,
    /// Start the moves and return (follow them with `partition reassign --status`).
    #[arg(long, conflicts_with = "dry_run")]
    pub no_wait: bool,
    /// Output format: table (plan and report), json (the plan file), yaml (plan and report).
    #[command(flatten)]
    pub output: OutputArgs,
}

/// `sluice cluster rolling-restart`
#[derive(Clone, Debug, Args)]
pub struct ClusterRollingRestartArgs {
    /// Data directory.
    #[command(flatten)]
    pub data_dir: DataDirArgs,
    /// Longest wait for one SPU's step (leaders moved, restarted, every partition in sync),
    /// e.g. `2m`.
    #[arg(long, value_name = "DURATION", default_value = "2m", value_parser = units::parse_duration)]
    pub step_timeout: std::time::Duration,
    /// Longest wait for a clean exit after SIGTERM before SIGKILL, e.g. `30s` (local cluster).
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = units::parse_duration)]
    pub stop_timeout: std::time::Duration,
    /// Stops one SPU of a cluster that is not the local one, e.g. `ssh {host} sudo systemctl
    /// stop sluice-spu`; with --start-command, the SPUs registered with the SC --sc names are
    /// restarted instead of the local cluster's.
    #[arg(long, value_name = "COMMAND", requires = "start_command")]
    pub stop_command: Option<String>,
    /// Starts the SPU again (after an upgrade, install the new binary here first).
    #[arg(long, value_name = "COMMAND", requires = "stop_command")]
    pub start_command: Option<String>,
    /// Restart only these SPUs (default: every SPU), with --stop-command.
    #[arg(long, value_delimiter = ',', value_name = "ID,ID,..", requires = "stop_command")]
    pub spus: Vec<i32>,
}

/// `sluice cluster spu ...`
#[derive(Debug, Subcommand)]
pub enum ClusterSpuCommand {
    /// Stop one SPU of the local cluster: SIGTERM, then SIGKILL if it has not exited within
    /// --timeout.
    #[command(after_help = CLUSTER_SPU_STOP_EXAMPLES)]
    Stop(ClusterSpuStopArgs),
    /// Kill one SPU of the local cluster at once with SIGKILL, like `kill -9` (a crash: no
    /// sync, connections dropped).
    #[command(after_help = CLUSTER_SPU_KILL_EXAMPLES)]
    Kill(ClusterSpuKillArgs),
}

/// `sluice cluster spu stop`
#[derive(Clone, Debug, Args)]
pub struct ClusterSpuStopArgs {
    /// The SPU's id (`sluice cluster status` lists them).
    pub id: i32,
    /// Data directory.
    #[command(flatten)]
    pub data_dir: DataDirArgs,
    /// Longest wait for a clean exit after SIGTERM before SIGKILL, e.g. `30s`.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = units::parse_duration)]
    pub timeout: std::time::Duration,
}

/// `sluice cluster spu kill`
#[derive(Clone, Debug, Args)]
pub struct ClusterSpuKillArgs {
    /// The SPU's id (`sluice cluster status` lists them).
    pub id: i32,
    /// Data directory.
    #[command(flatten)]
    pub data_dir: DataDirArgs,
}

/// Which metadata store the local SC uses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum MetadataStore {
    /// JSON files in the data directory (nothing else needed).
    #[default]
    Embedded,
    /// A Consul agent (`--consul-addr`).
    Consul,
}

/// The data directory flag shared by the cluster commands.
#[derive(Clone, Debug, Args)]
pub struct DataDirArgs {
    /// Data directory of the local cluster [default: ~/.sluice/local].
    #[arg(long, env = "SLUICE_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
}

/// `sluice cluster start`
#[derive(Clone, Debug, Args)]
pub struct ClusterStartArgs {
    /// Start the cluster on this machine (the only mode so far; multi-host clusters are started
    /// with the units in deploy/).
    #[arg(long)]
    pub local: bool,
    /// Number of SPUs [default: 1, or as many as the data directory already has].
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub spus: Option<u16>,
    /// CPU cores per SPU [default: the machine's CPUs divided by --spus, at least 1].
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub cores: Option<u16>,
    /// Data directory.
    #[command(flatten)]
    pub data_dir: DataDirArgs,
    /// Metadata store of the SC.
    #[arg(long, value_enum, default_value_t = MetadataStore::Embedded)]
    pub metadata: MetadataStore,
    /// Consul agent address for `--metadata consul`.
    #[arg(long, value_name = "URL", default_value = "http://127.0.0.1:8500")]
    pub consul_addr: String,
    /// Address of the SC's public API (clients, admin); port 0 picks a free port.
    #[arg(long, value_name = "HOST:PORT", default_value = SC_ADDRESS_DEFAULT)]
    pub sc_public_address: String,
    /// Address SPUs connect to at the SC; port 0 picks a free port.
    #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:9004")]
    pub sc_private_address: String,
    /// Id of the first SPU (the SPU group's first id); the others follow.
    #[arg(long, default_value_t = 5001)]
    pub first_spu_id: i32,
    /// Longest wait for the SC and every SPU to come up, e.g. `60s`, `2m`.
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = units::parse_duration)]
    pub timeout: std::time::Duration,
    /// TLS on every listener with a throwaway CA and certificates written to DIR/tls/ (mutual
    /// TLS between the SC and the SPUs, client certificates optional), authorization on (ACLs
    /// enforced at the SC and the SPUs), and DIR/client.toml for the `admin` client identity, a
    /// superuser: use it with `sluice --config DIR/client.toml ...`. Everyone else needs ACLs
    /// (`sluice acl add`) and a certificate or a token (`sluice token create`).
    #[arg(long)]
    pub tls: bool,
}

/// `sluice cluster status`
#[derive(Clone, Debug, Args)]
pub struct ClusterStatusArgs {
    /// Data directory.
    #[command(flatten)]
    pub data_dir: DataDirArgs,
    /// Output format.
    #[command(flatten)]
    pub output: OutputArgs,
}

/// `sluice cluster stop`
#[derive(Clone, Debug, Args)]
pub struct ClusterStopArgs {
    /// Data directory.
    #[command(flatten)]
    pub data_dir: DataDirArgs,
    /// Longest wait for a clean exit after SIGTERM before SIGKILL, e.g. `30s`.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = units::parse_duration)]
    pub timeout: std::time::Duration,
}

// ---------------------------------------------------------------------------------------------
// topic

const TOPIC_CREATE_EXAMPLES: &str = "\
Examples:
  sluice topic create orders
  sluice topic create orders --partitions 6 --replication 2
  sluice topic create orders --partitions 4 --replication 3 --min-in-sync 2
  sluice topic create logs --retention-time 7d --retention-bytes 10GiB --segment-bytes 256MiB
  sluice topic create orders --partitions 3 --dry-run

Unset values take the SC's defaults (sluice-sc --topic-partitions and friends). The command
returns once every partition has an online leader (see --no-wait).

Replication: each partition has --replication copies on different SPUs; acks `all` returns
once every in-sync replica has the record durably, and needs at least --min-in-sync of them
in sync. If a leader fails, an in-sync replica takes over without losing acknowledged
records; --unclean-election trades that guarantee for availability.";

/// `sluice topic ...`
#[derive(Debug, Subcommand)]
pub enum TopicCommand {
    /// Create a topic.
    #[command(after_help = TOPIC_CREATE_EXAMPLES)]
    Create(TopicCreateArgs),
    /// List topics.
    #[command(after_help = "Examples:\n  sluice topic list\n  sluice topic list -O json")]
    List(ListArgs),
    /// Show a topic's settings and its partitions.
    #[command(after_help = "Examples:\n  sluice topic describe orders\n  \
        sluice topic describe orders -O yaml")]
    Describe(TopicDescribeArgs),
    /// Delete a topic: its replicas stop and each SPU removes their files after its
    /// `--deleted-retention-ms` (60 s by default).
    #[command(after_help = "Example:\n  sluice topic delete orders")]
    Delete(TopicNameArgs),
    /// Add partitions to a topic. New partitions are placed like a new topic's (over every
    /// core of every SPU); existing partitions never move. Keyed records may then go to
    /// another partition than before (the key hash is taken modulo the new count).
    #[command(after_help = TOPIC_ALTER_EXAMPLES)]
    Alter(TopicAlterArgs),
}

const TOPIC_ALTER_EXAMPLES: &str = "\
Examples:
  sluice topic alter orders --partitions 12

Partitions are only ever added (the new count must be larger). Producers and consumers pick
the new partitions up through their metadata watch, without a restart. Records with a key
are placed by hash(key) modulo the partition count, as in Kafka: after the change a key may
go to a different partition than its earlier records, so per-key order holds only from then
on.";

/// `sluice topic alter`
#[derive(Clone, Debug, Args)]
pub struct TopicAlterArgs {
    /// Topic name.
    pub name: String,
    /// The new partition count: larger than the current one.
    #[arg(short, long)]
    pub partitions: u32,
}

/// `sluice topic create`
#[derive(Clone, Debug, Args)]
pub struct TopicCreateArgs {
    /// Topic name: 1 to 249 characters of [a-zA-Z0-9._-].
    pub name: String,
    /// Number of partitions [default: the SC's, 1 unless configured].
    #[arg(short, long)]
    pub partitions: Option<u32>,
    /// Copies of each partition, on different SPUs [default: the SC's, 1 unless configured].
    #[arg(short, long, visible_alias = "replication-factor")]
    pub replication: Option<u16>,
    /// Acks `all` needs this many in-sync replicas, 1 to the replication factor [default: 1].
    /// With fewer in sync, acks `all` produce is refused (and retried by producers) while
    /// acks `leader` and reads go on.
    #[arg(long)]
    pub min_in_sync: Option<u16>,
    /// When no in-sync replica is online, let an out-of-sync replica become leader, so the
    /// partition serves again sooner. It MAY LOSE ACKNOWLEDGED RECORDS: the new leader lacks
    /// what it had not copied, and the others truncate to it. Off by default (the partition
    /// stays offline until an in-sync replica returns).
    #[arg(long)]
    pub unclean_election: bool,
    /// Remove sealed segments older than this, e.g. `7d`, `12h`, `30m` [default: keep].
    #[arg(long, value_name = "DURATION", value_parser = units::parse_duration)]
    pub retention_time: Option<std::time::Duration>,
    /// Remove the oldest sealed segments while a partition is larger, e.g. `10GiB`.
    #[arg(long, value_name = "BYTES", value_parser = units::parse_bytes)]
    pub retention_bytes: Option<u64>,
    /// Roll to a new segment past this size, e.g. `256MiB` [default: the SC's, 1 GiB].
    #[arg(long, value_name = "BYTES", value_parser = units::parse_bytes)]
    pub segment_bytes: Option<u64>,
    /// Place replicas without regard to racks.
    #[arg(long)]
    pub ignore_rack: bool,
    /// Validate only; create nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Return once the SC accepted the topic, without waiting for its partitions to be online.
    #[arg(long)]
    pub no_wait: bool,
    /// Longest wait for every partition to be online, e.g. `30s`.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = units::parse_duration)]
    pub wait_timeout: std::time::Duration,
}

/// A command taking only a topic name.
#[derive(Clone, Debug, Args)]
pub struct TopicNameArgs {
    /// Topic name.
    pub name: String,
}

/// `sluice topic describe`
#[derive(Clone, Debug, Args)]
pub struct TopicDescribeArgs {
    /// Topic name.
    pub name: String,
    /// Output format.
    #[command(flatten)]
    pub output: OutputArgs,
}

/// A list command: only the output format.
#[derive(Clone, Copy, Debug, Args)]
pub struct ListArgs {
    /// Output format.
    #[command(flatten)]
    pub output: OutputArgs,
}

// ---------------------------------------------------------------------------------------------
// partition

const PARTITION_LIST_EXAMPLES: &str = "\
Examples:
  sluice partition list
  sluice partition list --topic orders -O json

One row per replica; the partition's status, leader, leader epoch and high watermark (HW) on
its first row. STATE is leader, in sync, out of sync (not in the in-sync set: it does not
count for acks all) or offline (its SPU is offline). LEO is the replica's log end offset and
LAG how many records it is behind the leader, as the leader last reported them. STATUS is
online, leader offline (an election is pending) or offline (no in-sync replica is online).";

const PARTITION_REBALANCE_EXAMPLES: &str = "\
Examples:
  sluice partition rebalance-leaders
  sluice partition rebalance-leaders --topic orders

Each partition's preferred replica is the first of its replicas. After a failover the
replicas that took over keep leading when the preferred one returns; this moves leadership
back wherever the preferred replica is online and in sync, so no SPU is left leading
everything. Partitions whose preferred replica is offline or still catching up are listed
as not moved.";

/// `sluice partition ...`
#[derive(Debug, Subcommand)]
pub enum PartitionCommand {
    /// List partitions: status, leader and leader epoch, high watermark, and each replica's
    /// state (in sync or not), log end offset and lag.
    #[command(after_help = PARTITION_LIST_EXAMPLES)]
    List(PartitionListArgs),
    /// Move leadership back to each partition's preferred replica where it is in sync.
    #[command(name = "rebalance-leaders", after_help = PARTITION_REBALANCE_EXAMPLES)]
    RebalanceLeaders(PartitionRebalanceArgs),
    /// Move a partition's replicas to other SPUs (or many partitions with a plan file), show
    /// the progress of moves, or cancel one.
    #[command(after_help = PARTITION_REASSIGN_EXAMPLES)]
    Reassign(PartitionReassignArgs),
}

const PARTITION_REASSIGN_EXAMPLES: &str = "\
Examples:
  sluice partition reassign orders 0 --to-spus 4,5,6
  sluice partition reassign orders 0 --to-spus 4,5,6 --throttle 20 --wait
  sluice partition reassign --plan moves.json --throttle 50
  sluice partition reassign --status
  sluice partition reassign orders 0 --cancel

How a move goes (as Kafka's reassignment): the SPUs of the target that do not host the
partition yet get a replica, which copies the leader's log as a follower (at most --throttle
MiB/s each, so producers are not starved); once every target replica is in sync, leadership
moves to the first target replica if the leader is not in the target; then the partition
shrinks to the target and the other SPUs drop their replicas. Nothing acknowledged is lost:
a replica is dropped only when every target replica holds everything acknowledged. The move
is stored by the SC, so it carries on after an SC or SPU restart; the command returns once
the move is stored (--wait follows it to the end).

--status lists each moving partition: for every replica being added, its log end offset
against the leader's high watermark, and how many of the target replicas are in sync.

Plan file (JSON): {\"partitions\": [{\"topic\": \"orders\", \"partition\": 0,
\"replicas\": [4, 5, 6]}]}; a replica may also be {\"spu\": 4, \"core\": 1}. Without a core the
SC keeps the core of an SPU that hosts the partition already, else takes its least-loaded
core.";

/// `sluice partition reassign`
#[derive(Clone, Debug, Args)]
pub struct PartitionReassignArgs {
    /// Topic of the partition to move.
    #[arg(required_unless_present_any = ["plan", "status"])]
    pub topic: Option<String>,
    /// The partition to move.
    #[arg(required_unless_present_any = ["plan", "status"])]
    pub partition: Option<u32>,
    /// The target SPUs, preferred leader first (the replication factor may change, to no
    /// less than the topic's min-in-sync).
    #[arg(long, value_delimiter = ',', value_name = "ID,ID,..",
        required_unless_present_any = ["plan", "status", "cancel"], conflicts_with_all = ["plan", "status", "cancel"])]
    pub to_spus: Vec<i32>,
    /// Move many partitions: a JSON plan file (see below).
    #[arg(long, value_name = "FILE", conflicts_with_all = ["status", "cancel"])]
    pub plan: Option<std::path::PathBuf>,
    /// Show the moves in progress and their progress, then exit.
    #[arg(long, conflicts_with = "cancel")]
    pub status: bool,
    /// Cancel the partition's move: back to the replicas it started from (same protocol).
    #[arg(long)]
    pub cancel: bool,
    /// Fetch rate limit of each replica being added, MiB/s [default: unlimited].
    #[arg(long, value_name = "MIB_PER_SECOND")]
    pub throttle: Option<f64>,
    /// Follow the moves until they complete, printing progress.
    #[arg(long)]
    pub wait: bool,
    /// Output format (of --status).
    #[command(flatten)]
    pub output: OutputArgs,
}

/// `sluice partition list`
#[derive(Clone, Debug, Args)]
pub struct PartitionListArgs {
    /// Only this topic's partitions.
    #[arg(long, short)]
    pub topic: Option<String>,
    /// Output format.
    #[command(flatten)]
    pub output: OutputArgs,
}

/// `sluice partition rebalance-leaders`
#[derive(Clone, Debug, Args)]
pub struct PartitionRebalanceArgs {
    /// Only this topic's partitions [default: every topic's].
    #[arg(long, short)]
    pub topic: Option<String>,
    /// Output format.
    #[command(flatten)]
    pub output: OutputArgs,
}

// ---------------------------------------------------------------------------------------------
// spu

const SPU_REGISTER_EXAMPLES: &str = "\
Example:
  sluice spu register --id 7 --public-address 10.0.0.7:9005 --private-address 10.0.0.7:9006
  sluice-spu --id 7 --sc 10.0.0.1:9004        # then start it on that host

A custom SPU must be registered before it can connect; managed SPUs come from SPU groups.";

/// `sluice spu ...`
#[derive(Debug, Subcommand)]
pub enum SpuCommand {
    /// List SPUs with their endpoints, status and cores.
    #[command(after_help = "Examples:\n  sluice spu list\n  sluice spu list -O json")]
    List(ListArgs),
    /// Register a custom SPU (one you start yourself with `sluice-spu --id N`).
    #[command(after_help = SPU_REGISTER_EXAMPLES)]
    Register(SpuRegisterArgs),
    /// Unregister a custom SPU.
    #[command(after_help = "Example:\n  sluice spu unregister --id 7")]
    Unregister(SpuUnregisterArgs),
    /// Move every replica off an SPU, then unregister it.
    #[command(after_help = SPU_DECOMMISSION_EXAMPLES)]
    Decommission(SpuDecommissionArgs),
}

const SPU_DECOMMISSION_EXAMPLES: &str = "\
Examples:
  sluice spu decommission 3
  sluice spu decommission 3 --throttle 50

For every partition with a replica on the SPU, the SC picks a replacement the way it places
new replicas (another SPU, another rack where possible, the least-loaded core) and moves the
replica there (see `sluice partition reassign --help`). The command follows the moves and
unregisters the SPU once no partition names it; stop the SPU process afterwards. It is
refused, moving nothing, when the remaining SPUs are fewer than some partition's replication
factor. Interrupted, it can be run again: moves already stored go on and are not started
twice. A managed SPU (of an SPU group) is emptied but not unregistered: shrink its group.";

/// `sluice spu decommission`
#[derive(Clone, Copy, Debug, Args)]
pub struct SpuDecommissionArgs {
    /// The SPU's id.
    pub id: i32,
    /// Fetch rate limit of each replica being added, MiB/s [default: unlimited].
    #[arg(long, value_name = "MIB_PER_SECOND")]
    pub throttle: Option<f64>,
    /// Start the moves and return; do not wait to unregister the SPU.
    #[arg(long)]
    pub no_wait: bool,
}

/// `sluice spu register`
#[derive(Clone, Debug, Args)]
pub struct SpuRegisterArgs {
    /// Globally unique SPU id.
    #[arg(long)]
    pub id: i32,
    /// Where clients reach it, `host:port`.
    #[arg(long, value_name = "HOST:PORT")]
    pub public_address: String,
    /// Where other SPUs reach it, `host:port`.
    #[arg(long, value_name = "HOST:PORT")]
    pub private_address: String,
    /// Rack (failure domain) for rack-aware replica placement.
    #[arg(long)]
    pub rack: Option<String>,
}

/// `sluice spu unregister`
#[derive(Clone, Copy, Debug, Args)]
pub struct SpuUnregisterArgs {
    /// The SPU's id.
    #[arg(long)]
    pub id: i32,
}

// ---------------------------------------------------------------------------------------------
// spu-group

const SPU_GROUP_CREATE_EXAMPLES: &str = "\
Examples:
  sluice spu-group create main --replicas 3
  sluice spu-group create rack-b --replicas 2 --first-id 6001 --rack b

The SC generates managed SPUs with ids FIRST-ID .. FIRST-ID+REPLICAS-1; start each with
`sluice-spu --id N`.";

/// `sluice spu-group ...`
#[derive(Debug, Subcommand)]
pub enum SpuGroupCommand {
    /// Create an SPU group.
    #[command(after_help = SPU_GROUP_CREATE_EXAMPLES)]
    Create(SpuGroupCreateArgs),
    /// List SPU groups.
    #[command(after_help = "Examples:\n  sluice spu-group list\n  sluice spu-group list -O yaml")]
    List(ListArgs),
    /// Delete an SPU group (and its managed SPUs).
    #[command(after_help = "Example:\n  sluice spu-group delete main")]
    Delete(SpuGroupDeleteArgs),
}

/// `sluice spu-group create`
#[derive(Clone, Debug, Args)]
pub struct SpuGroupCreateArgs {
    /// Group name.
    pub name: String,
    /// Number of SPUs.
    #[arg(long, default_value_t = 1)]
    pub replicas: u16,
    /// Id of the first SPU.
    #[arg(long, default_value_t = 5001)]
    pub first_id: i32,
    /// Rack of every SPU of the group.
    #[arg(long)]
    pub rack: Option<String>,
    /// Data directory of the group's SPUs.
    #[arg(long, value_name = "DIR")]
    pub log_dir: Option<String>,
    /// Disk space reserved per SPU, e.g. `100GiB`.
    #[arg(long, value_name = "BYTES", value_parser = units::parse_bytes)]
    pub size: Option<u64>,
}

/// `sluice spu-group delete`
#[derive(Clone, Debug, Args)]
pub struct SpuGroupDeleteArgs {
    /// Group name.
    pub name: String,
}

// ---------------------------------------------------------------------------------------------
// produce / consume

const PRODUCE_EXAMPLES: &str = "\
Examples:
  echo 'hello' | sluice produce greetings
  sluice produce orders --file orders.txt --acks leader
  printf 'user-1=login\\nuser-2=logout\\n' | sluice produce events --key-separator '='
  sluice produce orders --partition 2 --compression zstd < lines.txt

Each line (without its line ending) is one record's value. With --key-separator, the text
before the first separator is the key (records with one key land in one partition) and the rest
the value. The command returns once every record is acknowledged per --acks.";

/// Acknowledgement level of `produce`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum AcksArg {
    /// Do not wait for the leader.
    None,
    /// Durable on the leader.
    Leader,
    /// Durable on every in-sync replica.
    #[default]
    All,
}

/// Batch compression of `produce`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum CompressionArg {
    /// Uncompressed.
    #[default]
    None,
    /// gzip.
    Gzip,
    /// Snappy.
    Snappy,
    /// LZ4.
    Lz4,
    /// Zstandard.
    Zstd,
}

/// `sluice produce`
#[derive(Clone, Debug, Args)]
pub struct ProduceArgs {
    /// Topic to append to.
    pub topic: String,
    /// Send every record to this partition [default: by key, else spread evenly].
    #[arg(short, long)]
    pub partition: Option<u32>,
    /// Split each line at the first SEP into key and value.
    #[arg(long, value_name = "SEP")]
    pub key_separator: Option<String>,
    /// When a record counts as written.
    #[arg(long, value_enum, default_value_t = AcksArg::All)]
    pub acks: AcksArg,
    /// Read lines from this file instead of standard input.
    #[arg(short, long, value_name = "FILE")]
    pub file: Option<PathBuf>,
    /// Compress batches with this codec (the topic stores them as sent).
    #[arg(long, value_enum, default_value_t = CompressionArg::None)]
    pub compression: CompressionArg,
    /// Print each record's partition and offset to standard error.
    #[arg(short, long)]
    pub verbose: bool,
}

const CONSUME_EXAMPLES: &str = "\
Examples:
  sluice consume greetings -B -d              # everything so far, then exit
  sluice consume orders                       # new records as they arrive (Ctrl-C to stop)
  sluice consume orders -p 1 --offset 100 -n 10
  sluice consume orders --from-time 1h        # records of the last hour
  sluice consume orders --from-time 2024-05-01T10:00:00Z -d
  sluice consume orders -B -d --format '{partition}:{offset} {key}={value}'

--format placeholders: {key} {value} {offset} {partition} {timestamp} (ms since the Unix
epoch); \\t and \\n are a tab and a new line. Without --partition every partition is read
(in order within each partition).";

/// Which records a consumer sees.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum IsolationArg {
    /// Only records held by every in-sync replica (up to the high watermark).
    #[default]
    Committed,
    /// Everything the leader has (up to its log end offset).
    Uncommitted,
}

/// `sluice consume`
#[derive(Clone, Debug, Args)]
pub struct ConsumeArgs {
    /// Topic to read.
    pub topic: String,
    /// Read only this partition [default: every partition].
    #[arg(short, long)]
    pub partition: Option<u32>,
    /// Start at the beginning of the log [default: new records only].
    #[arg(short = 'B', long = "from-beginning", conflicts_with_all = ["offset", "from_time"])]
    pub from_beginning: bool,
    /// Start at this offset (needs one partition: --partition, or a one-partition topic).
    #[arg(long, conflicts_with = "from_time")]
    pub offset: Option<i64>,
    /// Start at the first record at or after this time: RFC 3339 (`2024-05-01T10:00:00Z`),
    /// milliseconds since the Unix epoch, or an age like `15m` (that long ago).
    #[arg(long, value_name = "TIME", value_parser = units::parse_time_ms)]
    pub from_time: Option<i64>,
    /// Stop after this many records.
    #[arg(short = 'n', long = "count")]
    pub count: Option<u64>,
    /// Stop at the end of the log instead of waiting for new records.
    #[arg(short = 'd', long = "disable-continuous")]
    pub stop_at_end: bool,
    /// Which records to see.
    #[arg(long, value_enum, default_value_t = IsolationArg::Committed)]
    pub isolation: IsolationArg,
    /// Print each record with this template [default: `{value}`].
    #[arg(long, value_name = "TEMPLATE")]
    pub format: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn parses_a_consume_line() {
        let cli = Cli::try_parse_from([
            "sluice", "--sc", "h:1", "consume", "t", "-B", "-d", "-n", "5", "-p", "2",
        ])
        .unwrap();
        assert_eq!(cli.sc.as_deref(), Some("h:1"));
        let Command::Consume(args) = cli.command else { panic!("not consume") };
        assert!(args.from_beginning && args.stop_at_end);
        assert_eq!((args.count, args.partition), (Some(5), Some(2)));
    }

    #[test]
    fn beginning_and_offset_conflict() {
        let result = Cli::try_parse_from(["sluice", "consume", "t", "-B", "--offset", "3"]);
        assert!(result.is_err());
    }

    #[test]
    fn cluster_spu_commands_parse() {
        let cli = Cli::try_parse_from(["sluice", "cluster", "spu", "kill", "5002"]).unwrap();
        let Command::Cluster(ClusterCommand::Spu(ClusterSpuCommand::Kill(args))) = cli.command
        else {
            panic!("not cluster spu kill")
        };
        assert_eq!((args.id, args.data_dir.data_dir), (5002, None));
        let cli = Cli::try_parse_from([
            "sluice",
            "cluster",
            "spu",
            "stop",
            "5001",
            "--timeout",
            "5s",
            "--data-dir",
            "/d",
        ])
        .unwrap();
        let Command::Cluster(ClusterCommand::Spu(ClusterSpuCommand::Stop(args))) = cli.command
        else {
            panic!("not cluster spu stop")
        };
        assert_eq!(args.id, 5001);
        assert_eq!(args.timeout, std::time::Duration::from_secs(5));
        assert_eq!(args.data_dir.data_dir, Some(PathBuf::from("/d")));
        assert!(Cli::try_parse_from(["sluice", "cluster", "spu", "kill"]).is_err(), "id needed");
        assert!(Cli::try_parse_from(["sluice", "cluster", "spu", "kill", "x"]).is_err());
    }

    #[test]
    fn partition_commands_parse() {
        let cli = Cli::try_parse_from(["sluice", "partition", "rebalance-leaders", "-t", "orders"])
            .unwrap();
        let Command::Partition(PartitionCommand::RebalanceLeaders(args)) = cli.command else {
            panic!("not rebalance-leaders")
        };
        assert_eq!(args.topic.as_deref(), Some("orders"));
        assert_eq!(args.output.format, OutputFormat::Table);
        let cli = Cli::try_parse_from(["sluice", "partition", "rebalance-leaders", "-O", "json"])
            .unwrap();
        let Command::Partition(PartitionCommand::RebalanceLeaders(args)) = cli.command else {
            panic!("not rebalance-leaders")
        };
        assert_eq!((args.topic, args.output.format), (None, OutputFormat::Json));
        assert!(Cli::try_parse_from(["sluice", "partition", "rebalance-leaders", "extra"]).is_err());
    }

    #[test]
    fn topic_create_units() {
        let cli = Cli::try_parse_from([
            "sluice",
            "topic",
            "create",
            "t",
            "--retention-time",
            "7d",
            "--segment-bytes",
            "1MiB",
        ])
        .unwrap();
        let Command::Topic(TopicCommand::Create(args)) = cli.command else { panic!() };
        assert_eq!(args.retention_time, Some(std::time::Duration::from_secs(7 * 86_400)));
        assert_eq!(args.segment_bytes, Some(1 << 20));
    }
}
