//! `sluice-perf failover`: how long acks-`all` produce stops when a replica fails, on a local
//! cluster this command starts (3 SPUs of 1 core each, one SC), for a topic of 1 partition at
//! RF 3 with min in-sync 2.
//!
//! One producer sends records at a steady rate (`--rate`, acks `all`, idempotent) for the
//! whole command. Each *event* first waits until the partition is healthy (all 3 replicas in
//! sync and a record sent after that acknowledged), then:
//!
//! - **leader kill**: `kill -9` of the leader's SPU; the figure is the time from the kill to
//!   the acknowledgement of the first record *sent after the kill* (which only the successor
//!   can acknowledge); beside it, when this client's metadata named a new leader. The SPU is
//!   started again on its data and the event ends when it is back in sync.
//! - **leader stop**: `SIGSTOP` of the leader's SPU (a hung process: its connections stay
//!   open, so only the SC's heartbeat timeout notices); same figure; then `SIGCONT`.
//! - **follower kill**: `kill -9` of an in-sync follower's SPU; the figure is the longest time
//!   without any acknowledgement in the `--stall-window` after the kill (acks `all` waits for
//!   every in-sync replica until the SC removes the dead one from the set).
//!
//! Progress goes to stderr (`leader kill 3/50: ...`), the summary table (p50 / p99 / max per
//! kind, against issue 18's targets) to stdout, every sample to `--json`.
//!
//! The SC's periodic move of leadership back to preferred replicas is off in this cluster
//! (`--leader-rebalance-interval-ms=0`): it would move the leader at random points of the
//! events; a planned move is not a failure.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use sluice_client::{
    Acks, ClientConfig, ClientError, Cluster, DeliveryListener, ProducerConfig, ProducerRecord,
    RecordMetadata, SpuId, TopicSpec,
};

use crate::args::FailoverArgs;
use crate::cluster::{LocalCluster, LocalClusterConfig};
use crate::error::PerfError;
use crate::machine::{GitInfo, MachineInfo};
use crate::pacing::{Pacer, ProducerSlot};
use crate::report::unix_ms_now;
use crate::workload::filler_value;

/// `schema` of a [`FailoverReport`].
pub const FAILOVER_SCHEMA: &str = "sluice-perf/failover";
/// Layout version of [`FailoverReport`].
pub const FAILOVER_SCHEMA_VERSION: u32 = 1;
/// The topic the command creates.
const TOPIC: &str = "perf-failover";
/// SPUs, replication factor and minimum in-sync replicas of issue 18's failover figures.
const SPUS: u32 = 3;
const REPLICATION: u16 = 3;
const MIN_IN_SYNC: u16 = 2;
/// Issue 18's targets: a leader kill's successor acknowledges within 1 s at p99; a stopped
/// leader within the SC's heartbeat timeout + 1 s; a follower kill stalls produce at most 1 s.
const LEADER_KILL_P99_TARGET: Duration = Duration::from_secs(1);
const STOP_MARGIN_TARGET: Duration = Duration::from_secs(1);
const FOLLOWER_STALL_TARGET: Duration = Duration::from_secs(1);
/// The SC's default heartbeat timeout (`sluice-sc --heartbeat-timeout-ms`).
const SC_HEARTBEAT_TIMEOUT_DEFAULT_MS: u64 = 2_000;
/// Longest wait for a restarted replica to be back in sync.
const IN_SYNC_TIMEOUT: Duration = Duration::from_secs(120);
/// How often the in-sync set is read from the SC while waiting.
const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// What kind of fault an event injects.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultKind {
    /// `kill -9` of the leader's SPU, restarted afterwards.
    LeaderKill,
    /// `SIGSTOP` of the leader's SPU, `SIGCONT` afterwards.
    LeaderStop,
    /// `kill -9` of an in-sync follower's SPU, restarted afterwards.
    FollowerKill,
}

impl FaultKind {
    fn label(self) -> &'static str {
        match self {
            FaultKind::LeaderKill => "leader kill -9",
            FaultKind::LeaderStop => "leader SIGSTOP",
            FaultKind::FollowerKill => "follower kill -9",
        }
    }
}

/// One event's figures.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FailoverSample {
    /// The fault.
    pub kind: FaultKind,
    /// The SPU it hit.
    pub spu: i32,
    /// The leader before the fault.
    pub leader_before: i32,
    /// The leader once the event was over.
    pub leader_after: i32,
    /// Fault to the first acknowledgement of a record sent after it, milliseconds.
    pub first_ack_ms: f64,
    /// Fault to this client's metadata naming another leader (leader faults only), ms.
    pub new_leader_seen_ms: Option<f64>,
    /// Longest time without any acknowledgement from the fault to the end of the stall
    /// window (follower kills) or to the first acknowledgement (leader faults), ms.
    pub longest_gap_ms: f64,
    /// Fault to the replica being back in sync (restart or continue included), ms.
    pub back_in_sync_ms: f64,
}

/// Percentiles of one kind's figure.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FailoverSummary {
    /// The fault.
    pub kind: FaultKind,
    /// Which figure: `first_ack_ms` or `longest_gap_ms`.
    pub figure: String,
    /// Events.
    pub count: usize,
    /// Median, ms.
    pub p50_ms: f64,
    /// 99th percentile (nearest rank), ms.
    pub p99_ms: f64,
    /// Largest, ms.
    pub max_ms: f64,
    /// The target it is read against, ms.
    pub target_ms: f64,
    /// What the target bounds: `p99` or `max`.
    pub target_of: String,
    /// Whether that statistic is within the target.
    pub met: bool,
}

/// `sluice-perf failover --json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FailoverReport {
    /// [`FAILOVER_SCHEMA`].
    pub schema: String,
    /// [`FAILOVER_SCHEMA_VERSION`].
    pub schema_version: u32,
    /// When it was written, ms since the Unix epoch.
    pub created_unix_ms: u64,
    /// The command's flags.
    pub parameters: FailoverArgs,
    /// The machine.
    pub machine: MachineInfo,
    /// The commit.
    pub git: GitInfo,
    /// Every event.
    pub samples: Vec<FailoverSample>,
    /// Per kind and figure.
    pub summaries: Vec<FailoverSummary>,
    /// Records acknowledged over the whole command.
    pub records_acknowledged: u64,
    /// Records whose delivery failed (none expected: the producer retries for 120 s).
    pub errors: u64,
    /// The first failure.
    pub first_error: Option<String>,
}

/// Acknowledgements as the producer's listener sees them, for the event being measured.
#[derive(Debug)]
struct AckWatch {
    start: Instant,
    state: Mutex<AckState>,
    changed: Condvar,
}

#[derive(Debug, Default)]
struct AckState {
    /// The fault of the event being measured, ns after `start`.
    mark: Option<u64>,
    /// First acknowledgement of a record sent at or after `mark`, ns after `start`.
    first_ack_after_mark: Option<u64>,
    /// Latest acknowledgement of any record, ns after `start`.
    last_ack: u64,
    /// Longest time without an acknowledgement since `mark`, ns.
    longest_gap: u64,
    acknowledged: u64,
    errors: u64,
    first_error: Option<String>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl AckWatch {
    fn nanos(&self, instant: Instant) -> u64 {
        u64::try_from(instant.saturating_duration_since(self.start).as_nanos()).unwrap_or(u64::MAX)
    }

    /// Starts measuring an event whose fault happened at `fault`.
    fn mark(&self, fault: Instant) {
        let mut state = lock(&self.state);
        state.mark = Some(self.nanos(fault));
        state.first_ack_after_mark = None;
        state.longest_gap = 0;
    }

    /// Waits until a record sent after the mark is acknowledged; returns when, or `None` at
    /// `deadline`.
    fn wait_first_ack(&self, deadline: Instant) -> Option<Instant> {
        let mut state = lock(&self.state);
        loop {
            if let Some(nanos) = state.first_ack_after_mark {
                return Some(self.start + Duration::from_nanos(nanos));
            }
            let left = deadline.checked_duration_since(Instant::now())?;
            state = self.changed.wait_timeout(state, left).map(|(state, _)| state).ok()?;
        }
    }

    /// Longest time without an acknowledgement from the mark until `now` (an ongoing gap
    /// counts up to `now`).
    fn longest_gap(&self, now: Instant) -> Duration {
        let state = lock(&self.state);
        let Some(mark) = state.mark else { return Duration::ZERO };
        let ongoing = self.nanos(now).saturating_sub(state.last_ack.max(mark));
        Duration::from_nanos(state.longest_gap.max(ongoing))
    }
}

impl DeliveryListener for AckWatch {
    fn delivered(&self, tag: u64, result: Result<RecordMetadata, ClientError>) {
        self.delivered_batch(&mut std::iter::once((tag, result)));
    }

    fn delivered_batch(
        &self,
        records: &mut dyn Iterator<Item = (u64, Result<RecordMetadata, ClientError>)>,
    ) {
        let now = self.nanos(Instant::now());
        let mut state = lock(&self.state);
        let mut acknowledged = false;
        for (sent_nanos, result) in records {
            match result {
                Ok(_) => {
                    state.acknowledged += 1;
                    acknowledged = true;
                    if state.mark.is_some_and(|mark| sent_nanos >= mark)
                        && state.first_ack_after_mark.is_none()
                    {
                        state.first_ack_after_mark = Some(now);
                    }
                }
                Err(error) => {
                    state.errors += 1;
                    state.first_error.get_or_insert_with(|| error.to_string());
                }
            }
        }
        if acknowledged {
            if let Some(mark) = state.mark {
                let gap = now.saturating_sub(state.last_ack.max(mark));
                state.longest_gap = state.longest_gap.max(gap);
            }
            state.last_ack = now;
        }
        drop(state);
        self.changed.notify_all();
    }
}

/// Runs the command; returns its report (also written to `--json` by the caller).
pub fn run_failover(args: &FailoverArgs) -> Result<FailoverReport, PerfError> {
    if !(args.rate > 0.0 && args.rate.is_finite()) {
        return Err(PerfError::InvalidParameters("--rate must be positive".into()));
    }
    let data_dir = match &args.data_dir {
        Some(path) => path.clone(),
        None => std::env::temp_dir().join(format!(
            "sluice-perf-failover-{}-{}",
            std::process::id(),
            unix_ms_now()
        )),
    };
    let heartbeat_timeout_ms =
        args.sc_heartbeat_timeout_ms.unwrap_or(SC_HEARTBEAT_TIMEOUT_DEFAULT_MS);
    let mut sc_flags = vec!["--leader-rebalance-interval-ms=0".to_owned()];
    sc_flags.extend(args.sc_heartbeat_timeout_ms.map(|ms| format!("--heartbeat-timeout-ms={ms}")));
    eprintln!("failover: starting {SPUS} SPUs (1 core each) and an SC in {}", data_dir.display());
    let mut local = LocalCluster::start(&LocalClusterConfig {
        data_dir: data_dir.join("cluster"),
        cores: Some(1),
        bin_dir: args.bin_dir.clone(),
        spus: SPUS,
        sc_flags,
        spu_flags: Vec::new(),
    })?;
    let outcome = measure(args, &mut local, heartbeat_timeout_ms);
    drop(local);
    if args.data_dir.is_none() {
        let _ = std::fs::remove_dir_all(&data_dir);
    }
    outcome
}

fn measure(
    args: &FailoverArgs,
    local: &mut LocalCluster,
    heartbeat_timeout_ms: u64,
) -> Result<FailoverReport, PerfError> {
    let client = Cluster::connect(ClientConfig::new(&local.sc_public_address))?;
    let spec =
        TopicSpec { min_in_sync_replicas: MIN_IN_SYNC, ..TopicSpec::computed(1, REPLICATION) };
    client.admin().create_topic(TOPIC, spec)?;
    wait_in_sync(&client, usize::from(REPLICATION), IN_SYNC_TIMEOUT)?;
    let watch = Arc::new(AckWatch {
        start: Instant::now(),
        state: Mutex::new(AckState::default()),
        changed: Condvar::new(),
    });
    let stop = AtomicBool::new(false);
    let config = ProducerConfig {
        acks: Acks::All,
        linger: Duration::from_millis(args.linger_ms),
        ..ProducerConfig::default()
    };
    let producer = client.producer_with_listener(config, Arc::clone(&watch) as _)?;
    let mut samples = Vec::new();
    let events = std::thread::scope(|scope| {
        let sender = scope.spawn(|| produce_steadily(&producer, args, &watch, &stop));
        let events = run_events(args, local, &client, &watch, &mut samples);
        stop.store(true, Ordering::Relaxed);
        let sent = sender.join().unwrap_or_else(|_| {
            Err(PerfError::InvalidParameters("the producer thread panicked".into()))
        });
        events.and(sent)
    });
    let state = lock(&watch.state);
    let summaries = summarize(&samples, heartbeat_timeout_ms);
    let report = FailoverReport {
        schema: FAILOVER_SCHEMA.into(),
        schema_version: FAILOVER_SCHEMA_VERSION,
        created_unix_ms: unix_ms_now(),
        parameters: args.clone(),
        machine: MachineInfo::probe(),
        git: GitInfo::probe(),
        samples,
        summaries,
        records_acknowledged: state.acknowledged,
        errors: state.errors,
        first_error: state.first_error.clone(),
    };
    events.map(|()| report)
}

/// Sends records at `--rate` until `stop`, each tagged with its send time; then flushes.
fn produce_steadily(
    producer: &sluice_client::Producer,
    args: &FailoverArgs,
    watch: &AckWatch,
    stop: &AtomicBool,
) -> Result<(), PerfError> {
    let value = filler_value(args.record_size);
    let pacer = Pacer::new(Instant::now(), ProducerSlot { index: 0, count: 1 }, args.rate);
    for sequence in 0u64.. {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        pacer.wait_for(sequence);
        // The actual send time: a record sent after a fault cannot be acknowledged by the
        // replica that failed.
        let sent = watch.nanos(Instant::now());
        let record = ProducerRecord {
            topic: TOPIC,
            partition: Some(0),
            key: None,
            value: Some(&value),
            headers: &[],
            timestamp: None,
        };
        if let Err(error) = producer.send_tagged(&record, sent) {
            if !error.is_retriable() {
                return Err(error.into());
            }
        }
    }
    producer.flush()?;
    Ok(())
}

fn run_events(
    args: &FailoverArgs,
    local: &mut LocalCluster,
    client: &Cluster,
    watch: &AckWatch,
    samples: &mut Vec<FailoverSample>,
) -> Result<(), PerfError> {
    for (kind, count) in [
        (FaultKind::LeaderKill, args.leader_kills),
        (FaultKind::LeaderStop, args.leader_stops),
        (FaultKind::FollowerKill, args.follower_kills),
    ] {
        for index in 1..=count {
            let sample = event(kind, index, args, local, client, watch)?;
            eprintln!(
                "{} {index}/{count}: SPU {}, first ack after {:.1} ms (new leader seen after \
                 {}), longest gap {:.1} ms, back in sync after {:.0} ms",
                kind.label(),
                sample.spu,
                sample.first_ack_ms,
                sample.new_leader_seen_ms.map_or("-".into(), |ms| format!("{ms:.1} ms")),
                sample.longest_gap_ms,
                sample.back_in_sync_ms,
            );
            samples.push(sample);
        }
    }
    Ok(())
}

/// The partition's leader and in-sync set as the SC stores them.
fn partition_state(client: &Cluster) -> Result<(SpuId, Vec<SpuId>), PerfError> {
    let partitions = client.admin().list_partitions(Some(TOPIC))?;
    let entry = partitions
        .into_iter()
        .find(|entry| entry.key.partition.0 == 0)
        .ok_or_else(|| PerfError::Timeout(format!("{TOPIC} has no partition 0")))?;
    Ok((entry.spec.leader, entry.status.in_sync_replicas))
}

fn wait_in_sync(client: &Cluster, count: usize, timeout: Duration) -> Result<(), PerfError> {
    let deadline = Instant::now() + timeout;
    loop {
        if partition_state(client).is_ok_and(|(_, in_sync)| in_sync.len() >= count) {
            return Ok(());
        }
        if Instant::now() >= deadline {
            let state = partition_state(client);
            return Err(PerfError::Timeout(format!(
                "{count} in-sync replicas of {TOPIC}-0 not within {timeout:?} (now {state:?})"
            )));
        }
        std::thread::sleep(POLL_INTERVAL);
    }
}

fn millis(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e3
}

fn event(
    kind: FaultKind,
    index: u32,
    args: &FailoverArgs,
    local: &mut LocalCluster,
    client: &Cluster,
    watch: &AckWatch,
) -> Result<FailoverSample, PerfError> {
    // Healthy first: every replica in sync, and the producer's records acknowledged.
    wait_in_sync(client, usize::from(REPLICATION), IN_SYNC_TIMEOUT)?;
    watch.mark(Instant::now());
    watch.wait_first_ack(Instant::now() + args.event_timeout).ok_or_else(|| {
        PerfError::Timeout(format!(
            "no acknowledgement within {:?} before the event",
            args.event_timeout
        ))
    })?;
    let (leader, in_sync) = partition_state(client)?;
    let epoch_before =
        client.metadata().partition(TOPIC, 0).map(|partition| partition.leader_epoch);
    let target = match kind {
        FaultKind::LeaderKill | FaultKind::LeaderStop => leader,
        FaultKind::FollowerKill => {
            let followers: Vec<SpuId> = in_sync.into_iter().filter(|spu| *spu != leader).collect();
            followers[index as usize % followers.len()]
        }
    };
    match kind {
        FaultKind::LeaderKill | FaultKind::FollowerKill => local.kill_spu(target.0)?,
        FaultKind::LeaderStop => local.signal_spu(target.0, libc::SIGSTOP)?,
    }
    let fault = Instant::now();
    watch.mark(fault);
    let deadline = fault + args.event_timeout;
    let mut new_leader_seen = None;
    if kind != FaultKind::FollowerKill {
        new_leader_seen = client
            .wait_for_metadata(args.event_timeout, |snapshot| {
                let partition = snapshot.partition(TOPIC, 0)?;
                (partition.leader != leader && Some(partition.leader_epoch) > epoch_before)
                    .then(Instant::now)
            })
            .map(|seen| seen.saturating_duration_since(fault));
    }
    let first_ack = watch.wait_first_ack(deadline);
    let longest_gap = match kind {
        FaultKind::FollowerKill => {
            std::thread::sleep(
                deadline.min(fault + args.stall_window).saturating_duration_since(Instant::now()),
            );
            watch.longest_gap(Instant::now())
        }
        _ => watch.longest_gap(first_ack.unwrap_or_else(Instant::now)),
    };
    match kind {
        FaultKind::LeaderKill | FaultKind::FollowerKill => local.restart_spu(target.0)?,
        FaultKind::LeaderStop => local.signal_spu(target.0, libc::SIGCONT)?,
    }
    let Some(first_ack) = first_ack else {
        return Err(PerfError::Timeout(format!(
            "{} {index}: no record sent after the fault acknowledged within {:?}",
            kind.label(),
            args.event_timeout
        )));
    };
    wait_in_sync(client, usize::from(REPLICATION), IN_SYNC_TIMEOUT)?;
    let back_in_sync = fault.elapsed();
    let (leader_after, _) = partition_state(client)?;
    Ok(FailoverSample {
        kind,
        spu: target.0,
        leader_before: leader.0,
        leader_after: leader_after.0,
        first_ack_ms: millis(first_ack.saturating_duration_since(fault)),
        new_leader_seen_ms: new_leader_seen.map(millis),
        longest_gap_ms: millis(longest_gap),
        back_in_sync_ms: millis(back_in_sync),
    })
}

/// The nearest-rank `quantile` of sorted `values`.
fn nearest_rank(sorted: &[f64], quantile: f64) -> f64 {
    let rank = (quantile * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// p50 / p99 / max of each kind's headline figure, against issue 18's targets.
pub fn summarize(samples: &[FailoverSample], heartbeat_timeout_ms: u64) -> Vec<FailoverSummary> {
    let stop_target = Duration::from_millis(heartbeat_timeout_ms) + STOP_MARGIN_TARGET;
    let mut summaries = Vec::new();
    for (kind, figure, target, target_of) in [
        (FaultKind::LeaderKill, "first_ack_ms", LEADER_KILL_P99_TARGET, "p99"),
        (FaultKind::LeaderStop, "first_ack_ms", stop_target, "max"),
        (FaultKind::FollowerKill, "longest_gap_ms", FOLLOWER_STALL_TARGET, "max"),
        (FaultKind::FollowerKill, "first_ack_ms", FOLLOWER_STALL_TARGET, "max"),
    ] {
        let mut values: Vec<f64> =
            samples
                .iter()
                .filter(|sample| sample.kind == kind)
                .map(|sample| {
                    if figure == "first_ack_ms" {
                        sample.first_ack_ms
                    } else {
                        sample.longest_gap_ms
                    }
                })
                .collect();
        if values.is_empty() {
            continue;
        }
        values.sort_by(f64::total_cmp);
        let (p50_ms, p99_ms) = (nearest_rank(&values, 0.5), nearest_rank(&values, 0.99));
        let max_ms = values[values.len() - 1];
        let target_ms = millis(target);
        let checked = if target_of == "p99" { p99_ms } else { max_ms };
        summaries.push(FailoverSummary {
            kind,
            figure: figure.into(),
            count: values.len(),
            p50_ms,
            p99_ms,
            max_ms,
            target_ms,
            target_of: target_of.into(),
            met: checked <= target_ms,
        });
    }
    summaries
}

/// The summary as a plain-text table.
pub fn summary_table(report: &FailoverReport) -> String {
    use std::fmt::Write;
    let mut text = String::new();
    let _ = writeln!(
        text,
        "{:<18} {:<15} {:>6} {:>10} {:>10} {:>10} {:>16} {:>5}",
        "fault", "figure", "events", "p50 ms", "p99 ms", "max ms", "target ms", "met"
    );
    for summary in &report.summaries {
        let figure = match summary.figure.as_str() {
            "first_ack_ms" => "first ack",
            _ => "longest stall",
        };
        let _ = writeln!(
            text,
            "{:<18} {:<15} {:>6} {:>10.1} {:>10.1} {:>10.1} {:>16} {:>5}",
            summary.kind.label(),
            figure,
            summary.count,
            summary.p50_ms,
            summary.p99_ms,
            summary.max_ms,
            format!("{} <= {:.0}", summary.target_of, summary.target_ms),
            if summary.met { "yes" } else { "NO" },
        );
    }
    for kind in [FaultKind::LeaderKill, FaultKind::LeaderStop] {
        let mut seen: Vec<f64> = report
            .samples
            .iter()
            .filter(|sample| sample.kind == kind)
            .filter_map(|sample| sample.new_leader_seen_ms)
            .collect();
        if seen.is_empty() {
            continue;
        }
        seen.sort_by(f64::total_cmp);
        let _ = writeln!(
            text,
            "{}: the client's metadata named the new leader after p50 {:.1} ms, p99 {:.1} ms, \
             max {:.1} ms",
            kind.label(),
            nearest_rank(&seen, 0.5),
            nearest_rank(&seen, 0.99),
            seen[seen.len() - 1]
        );
    }
    let _ = writeln!(
        text,
        "records acknowledged {}, failed {}{}",
        report.records_acknowledged,
        report.errors,
        report.first_error.as_deref().map_or(String::new(), |error| format!(" (first: {error})"))
    );
    text
}
