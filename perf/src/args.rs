//! Command-line parameters of the workloads and the suite. The same structs are written into
//! every JSON report (`parameters`), so a report says exactly how it was produced.

use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use clap::{Args, ValueEnum};
use serde::{Deserialize, Serialize};

/// Default SC public address (`sluice-sc`'s default public port).
pub const SC_ADDRESS_DEFAULT: &str = "127.0.0.1:9003";

/// Acknowledgement level of produced records.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AckLevel {
    /// Do not wait for the leader.
    None,
    /// Durable on the leader.
    Leader,
    /// Durable on every in-sync replica.
    #[default]
    All,
}

/// Which committed view consumers read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IsolationLevel {
    /// Up to the high watermark (replicated and durable).
    #[default]
    Committed,
    /// Up to the leader's log end offset.
    Uncommitted,
}

/// How record keys are chosen.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum KeyDistribution {
    /// No key: the producer's sticky partitioner spreads batches over partitions.
    #[default]
    None,
    /// Key = the record's sequence number (every key distinct, spread by hash).
    Sequential,
    /// Key drawn uniformly from `keys` distinct values (seeded, reproducible).
    Uniform {
        /// Number of distinct keys.
        keys: u64,
    },
}

impl FromStr for KeyDistribution {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "none" => Ok(KeyDistribution::None),
            "sequential" => Ok(KeyDistribution::Sequential),
            _ => {
                let keys = text
                    .strip_prefix("uniform:")
                    .and_then(|keys| keys.parse::<u64>().ok())
                    .filter(|&keys| keys > 0)
                    .ok_or_else(|| {
                        format!("{text:?}: expected none, sequential or uniform:N (N > 0)")
                    })?;
                Ok(KeyDistribution::Uniform { keys })
            }
        }
    }
}

/// Parses `20`, `20s`, `500ms`, `2m` or `1.5s` into a duration.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, scale) = if let Some(number) = text.strip_suffix("ms") {
        (number, 1e-3)
    } else if let Some(number) = text.strip_suffix('s') {
        (number, 1.0)
    } else if let Some(number) = text.strip_suffix('m') {
        (number, 60.0)
    } else {
        (text, 1.0)
    };
    let value: f64 = number.trim().parse().map_err(|_| format!("{text:?} is not a duration"))?;
    if !value.is_finite() || value < 0.0 {
        return Err(format!("{text:?} is not a duration"));
    }
    Ok(Duration::from_secs_f64(value * scale))
}

/// Parameters shared by `produce`, `consume` and `e2e`.
#[derive(Args, Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WorkloadArgs {
    /// SC public address(es), `host:port[,host:port...]`, or `consul://AGENT/CLUSTER` (the
    /// SCs of CLUSTER whose Consul checks pass, the active one first).
    #[arg(long, env = "SLUICE_SC", default_value = SC_ADDRESS_DEFAULT)]
    pub sc: String,
    /// Topic to produce to / consume from.
    #[arg(long, default_value = "sluice-perf")]
    pub topic: String,
    /// Create the topic first (an existing topic is reused as it is).
    #[arg(long)]
    pub create_topic: bool,
    /// Partitions of a created topic.
    #[arg(long, default_value_t = 1)]
    pub partitions: u32,
    /// Replication factor of a created topic.
    #[arg(long, default_value_t = 1)]
    pub replication: u16,
    /// Minimum in-sync replicas of a created topic: fewer in sync and acks `all` is refused
    /// (`NotEnoughReplicas`); at least 1 and at most --replication.
    #[arg(long, default_value_t = 1)]
    #[serde(default = "min_in_sync_default")]
    pub min_in_sync: u16,
    /// Records to measure (after the warm-up). Default when no --duration: 100000.
    #[arg(long, conflicts_with = "duration")]
    pub records: Option<u64>,
    /// Measure for this long after the warm-up (`30`, `30s`, `500ms`, `2m`).
    #[arg(long, value_parser = parse_duration)]
    #[serde(with = "duration_seconds_option")]
    pub duration: Option<Duration>,
    /// Run this long before measuring (not counted in any figure).
    #[arg(long, value_parser = parse_duration, default_value = "0s")]
    #[serde(with = "duration_seconds")]
    pub warmup: Duration,
    /// Bytes of each record's value.
    #[arg(long, default_value_t = 1024)]
    pub record_size: usize,
    /// Producer threads (each with its own producer).
    #[arg(long, default_value_t = 1)]
    pub producers: u32,
    /// Consumer threads (partitions are shared out among them).
    #[arg(long, default_value_t = 1)]
    pub consumers: u32,
    /// Producer batch size in bytes.
    #[arg(long, default_value_t = 64 * 1024)]
    pub batch_bytes: usize,
    /// Producer linger in milliseconds.
    #[arg(long, default_value_t = 5)]
    pub linger_ms: u64,
    /// Produce requests in flight per partition (the producer's `max_in_flight`, 1 to 16).
    #[arg(long, default_value_t = sluice_client::ProducerConfig::default().max_in_flight)]
    pub max_in_flight: usize,
    /// Acknowledgement level.
    #[arg(long, value_enum, default_value_t = AckLevel::All)]
    pub acks: AckLevel,
    /// Produce without idempotence (no producer id or sequence in batches), to compare.
    #[arg(long)]
    #[serde(default)]
    pub no_idempotence: bool,
    /// Open-loop target rate in records/s over all producers (latency measured from each
    /// record's intended send time). Without it producers send as fast as they can.
    #[arg(long)]
    pub rate: Option<f64>,
    /// Keys: none, sequential or uniform:N.
    #[arg(long, default_value = "none")]
    pub key_distribution: KeyDistribution,
    /// Consumers' isolation.
    #[arg(long, value_enum, default_value_t = IsolationLevel::Committed)]
    pub isolation: IsolationLevel,
    /// Seed of the key generator.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Write the JSON report to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Server process to account CPU for (repeatable). Default: PIDs of --cluster-state.
    #[arg(long = "server-pid")]
    pub server_pids: Vec<u32>,
    /// Local cluster state file listing server PIDs [default: ~/.sluice/local/cluster.json
    /// when it exists].
    #[arg(long)]
    pub cluster_state: Option<PathBuf>,
    /// Give up on records not delivered or consumed this long after the last send.
    #[arg(long, value_parser = parse_duration, default_value = "60s")]
    #[serde(with = "duration_seconds")]
    pub drain_timeout: Duration,
    /// Live progress interval (terminal); plain lines when not a terminal are 5x apart.
    #[arg(long, value_parser = parse_duration, default_value = "1s")]
    #[serde(with = "duration_seconds")]
    pub progress_interval: Duration,
}

/// `min_in_sync` of reports written before the flag existed.
fn min_in_sync_default() -> u16 {
    1
}

/// Records measured when neither --records nor --duration is given.
pub const RECORDS_DEFAULT: u64 = 100_000;

impl WorkloadArgs {
    /// How long or how many records the measured part lasts.
    pub fn length(&self) -> RunLength {
        match (self.records, self.duration) {
            (_, Some(duration)) => RunLength::Duration(duration),
            (Some(records), None) => RunLength::Records(records),
            (None, None) => RunLength::Records(RECORDS_DEFAULT),
        }
    }

    /// Checks combinations clap cannot express.
    pub fn validate(&self) -> Result<(), String> {
        if self.producers == 0 || self.consumers == 0 {
            return Err("--producers and --consumers must be at least 1".into());
        }
        if self.partitions == 0 || self.replication == 0 {
            return Err("--partitions and --replication must be at least 1".into());
        }
        if self.min_in_sync == 0 || self.min_in_sync > self.replication {
            return Err("--min-in-sync must be at least 1 and at most --replication".into());
        }
        if self.rate.is_some_and(|rate| !(rate > 0.0 && rate.is_finite())) {
            return Err("--rate must be a positive number of records per second".into());
        }
        if self.record_size < crate::workload::TIMESTAMP_BYTES {
            return Err(format!(
                "--record-size must be at least {} (the send timestamp)",
                crate::workload::TIMESTAMP_BYTES
            ));
        }
        if self.records == Some(0) {
            return Err("--records must be at least 1".into());
        }
        Ok(())
    }
}

/// The measured part of a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunLength {
    /// This many records.
    Records(u64),
    /// This long.
    Duration(Duration),
}

/// Parameters of `sluice-perf suite`.
#[derive(Args, Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SuiteArgs {
    /// Data directory of the local cluster, and where fio writes and reads its scratch file (at
    /// most 3 GiB per second of --limit-duration and a quarter of the free space, removed after
    /// each measurement). Default: a fresh directory under /tmp, removed afterwards.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Measured time of each Sluice run (after its warm-up).
    #[arg(long, value_parser = parse_duration, default_value = "20s")]
    #[serde(with = "duration_seconds")]
    pub duration: Duration,
    /// Warm-up of each Sluice run.
    #[arg(long, value_parser = parse_duration, default_value = "3s")]
    #[serde(with = "duration_seconds")]
    pub warmup: Duration,
    /// Time of each fio and iperf3 measurement.
    #[arg(long, value_parser = parse_duration, default_value = "10s")]
    #[serde(with = "duration_seconds")]
    pub limit_duration: Duration,
    /// Bytes of each record.
    #[arg(long, default_value_t = 1024)]
    pub record_size: usize,
    /// Producer threads of the produce runs.
    #[arg(long, default_value_t = 1)]
    pub producers: u32,
    /// SPU cores [default: all].
    #[arg(long)]
    pub cores: Option<u32>,
    /// Directory of the JSON report.
    #[arg(long, default_value = "perf/results")]
    pub results_dir: PathBuf,
    /// Directory holding `sluice-sc` and `sluice-spu` [default: next to this binary, then PATH].
    #[arg(long)]
    pub bin_dir: Option<PathBuf>,
    /// Skip fio and iperf3 (only the Sluice runs; the ratios are left out).
    #[arg(long)]
    pub skip_limits: bool,
    /// Which groups of runs: `standard` (one SPU with --cores: produce to 1 and 2 partitions,
    /// catch-up, e2e, 100 partitions) and `replicated` (three SPUs of one core each: produce
    /// to 1 partition at RF 1 and at RF 3 with acks all and min in-sync 2, e2e at half the RF 3
    /// rate, then 100 partitions at RF 3 for the SPUs' resident set). Comma-separated.
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = [RunGroup::Standard, RunGroup::Replicated])]
    #[serde(default = "run_groups_default")]
    pub runs: Vec<RunGroup>,
    /// Partitions of the many-partition runs (the memory target is stated for 100; smaller
    /// only to try the suite quickly).
    #[arg(long, default_value_t = 100)]
    #[serde(default = "many_partitions_default")]
    pub many_partitions: u32,
}

/// A group of the suite's runs, each on its own local cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunGroup {
    /// One SPU: produce 1 and 2 partitions, catch-up, e2e, 100 partitions.
    Standard,
    /// Three SPUs: RF 1 against RF 3 (acks all), e2e at RF 3, 100 partitions at RF 3.
    Replicated,
}

fn run_groups_default() -> Vec<RunGroup> {
    vec![RunGroup::Standard]
}

fn many_partitions_default() -> u32 {
    100
}

/// Parameters of `sluice-perf failover`.
#[derive(Args, Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FailoverArgs {
    /// Leader `kill -9`s (each restarted and back in sync before the next event).
    #[arg(long, default_value_t = 50)]
    pub leader_kills: u32,
    /// Leader `SIGSTOP`s (each continued with `SIGCONT` once a successor acknowledged).
    #[arg(long, default_value_t = 5)]
    pub leader_stops: u32,
    /// Follower `kill -9`s (each restarted after the stall window).
    #[arg(long, default_value_t = 10)]
    pub follower_kills: u32,
    /// Records per second of the one producer (acks all, idempotent); the first-ack figure
    /// is late by up to one interval.
    #[arg(long, default_value_t = 1000.0)]
    pub rate: f64,
    /// Bytes of each record.
    #[arg(long, default_value_t = 256)]
    pub record_size: usize,
    /// Producer linger in milliseconds.
    #[arg(long, default_value_t = 1)]
    pub linger_ms: u64,
    /// How long after a follower kill the longest time without an acknowledgement is looked
    /// for.
    #[arg(long, value_parser = parse_duration, default_value = "3s")]
    #[serde(with = "duration_seconds")]
    pub stall_window: Duration,
    /// Give up (and fail the command) when no record sent after a fault is acknowledged this
    /// long after it.
    #[arg(long, value_parser = parse_duration, default_value = "30s")]
    #[serde(with = "duration_seconds")]
    pub event_timeout: Duration,
    /// The SC's heartbeat timeout (`sluice-sc --heartbeat-timeout-ms`), which bounds the
    /// detection of a stopped SPU [default: the SC's, 2000].
    #[arg(long)]
    pub sc_heartbeat_timeout_ms: Option<u64>,
    /// Data directory of the local cluster [default: a fresh one under /tmp, removed after].
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Directory holding `sluice-sc` and `sluice-spu` [default: next to this binary, then PATH].
    #[arg(long)]
    pub bin_dir: Option<PathBuf>,
    /// Write the report (every event and the summary) to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// Serde for a [`Duration`] as fractional seconds.
pub mod duration_seconds {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    /// Writes seconds.
    pub fn serialize<S: Serializer>(duration: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_f64(duration.as_secs_f64())
    }

    /// Reads seconds.
    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
        let seconds = f64::deserialize(deserializer)?;
        Duration::try_from_secs_f64(seconds).map_err(serde::de::Error::custom)
    }
}

/// Serde for an optional [`Duration`] as fractional seconds or null.
pub mod duration_seconds_option {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    /// Writes seconds or null.
    pub fn serialize<S: Serializer>(
        duration: &Option<Duration>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        match duration {
            Some(duration) => serializer.serialize_some(&duration.as_secs_f64()),
            None => serializer.serialize_none(),
        }
    }

    /// Reads seconds or null.
    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<Duration>, D::Error> {
        let seconds = Option::<f64>::deserialize(deserializer)?;
        seconds
            .map(|seconds| Duration::try_from_secs_f64(seconds).map_err(serde::de::Error::custom))
            .transpose()
    }
}
