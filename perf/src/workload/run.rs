//! The three workloads from parameters to report: connect, prepare the topic, start the server
//! accounting and the progress line, run the threads, and turn their totals into a
//! [`RunReport`].

use std::sync::Arc;
use std::time::{Duration, Instant};

use sluice_client::{Acks, Cluster, Partitioner, ProducerConfig};

use super::consume::{ConsumeMode, ConsumePlan, ConsumeState, ConsumeTotals, RunningConsumers};
use super::produce::{run_producers, ProducePlan, ProduceState, ProduceTotals};
use super::topic::{connect, prepare_topic};
use super::Clock;
use crate::args::{AckLevel, KeyDistribution, RunLength, WorkloadArgs};
use crate::error::PerfError;
use crate::machine::CpuTimes;
use crate::progress::{LiveStats, Progress};
use crate::report::{RunReport, RunResults, WorkloadKind};
use crate::server_cpu::{default_state_file, pids_from_state_file, ServerWatch};

/// How often an end-to-end run checks whether the consumers have caught up.
const DRAIN_POLL_INTERVAL: Duration = Duration::from_millis(10);

/// Runs `kind` as `args` say and returns its report (also written to `--json` by the caller).
pub fn run(kind: WorkloadKind, args: &WorkloadArgs) -> Result<RunReport, PerfError> {
    args.validate().map_err(PerfError::InvalidParameters)?;
    let cluster = connect(args)?;
    let partitions = prepare_topic(&cluster, args)?;
    let watch = ServerWatch::start(&server_pids(args)?);
    let cpu_start = CpuTimes::sample();
    let stats = Arc::new(LiveStats::default());
    let progress = Progress::start(&kind.to_string(), Arc::clone(&stats), args.progress_interval);
    let results = match kind {
        WorkloadKind::Produce => produce(&cluster, args, &stats),
        WorkloadKind::Consume => consume(&cluster, args, partitions, &stats),
        WorkloadKind::E2e => end_to_end(&cluster, args, partitions, &stats),
    };
    drop(progress);
    let server_processes = watch.finish();
    let machine_cpu =
        cpu_start.zip(CpuTimes::sample()).and_then(|(start, end)| start.usage_until(&end));
    Ok(RunReport::new(kind, args.clone(), results?, server_processes, machine_cpu))
}

/// `--server-pid` values, else the PIDs of the cluster state file (given or default).
fn server_pids(args: &WorkloadArgs) -> Result<Vec<u32>, PerfError> {
    if !args.server_pids.is_empty() {
        return Ok(args.server_pids.clone());
    }
    match args.cluster_state.clone().or_else(default_state_file) {
        Some(path) if args.cluster_state.is_some() => pids_from_state_file(&path),
        // The default file may belong to a cluster that is not the one measured: best effort.
        Some(path) => Ok(pids_from_state_file(&path).unwrap_or_default()),
        None => Ok(Vec::new()),
    }
}

/// The producer settings of `args`.
pub fn producer_config(args: &WorkloadArgs) -> ProducerConfig {
    ProducerConfig {
        acks: match args.acks {
            AckLevel::None => Acks::None,
            AckLevel::Leader => Acks::Leader,
            AckLevel::All => Acks::All,
        },
        batch_bytes: args.batch_bytes,
        linger: Duration::from_millis(args.linger_ms),
        max_in_flight: args.max_in_flight,
        idempotence: !args.no_idempotence,
        partitioner: match args.key_distribution {
            KeyDistribution::None => Partitioner::Sticky,
            _ => Partitioner::Murmur2Key,
        },
        delivery_timeout: args.drain_timeout.max(Duration::from_secs(1)),
        ..ProducerConfig::default()
    }
}

fn produce_plan(args: &WorkloadArgs, clock: Clock, live: bool) -> ProducePlan {
    ProducePlan {
        topic: args.topic.clone(),
        record_size: args.record_size,
        keys: args.key_distribution,
        seed: args.seed,
        producers: args.producers,
        rate: args.rate,
        length: args.length(),
        clock,
        drain_timeout: args.drain_timeout,
        live,
    }
}

fn produce(
    cluster: &Cluster,
    args: &WorkloadArgs,
    stats: &Arc<LiveStats>,
) -> Result<RunResults, PerfError> {
    let clock = Clock::start_now(args.warmup);
    let plan = produce_plan(args, clock, true);
    let state = ProduceState::new(&plan, Arc::clone(stats));
    run_producers(cluster, &producer_config(args), &plan, &state)?;
    let totals = state.totals();
    let mut results = produce_results(&totals, clock, args);
    results.produce_latency = Some(stats.latency().summary());
    Ok(results)
}

fn produce_results(totals: &ProduceTotals, clock: Clock, args: &WorkloadArgs) -> RunResults {
    let end = totals.last_ack.unwrap_or(clock.warmup_end);
    let mut results = RunResults {
        records: totals.records,
        bytes: totals.bytes,
        errors: totals.errors,
        first_error: totals.first_error.clone(),
        warmup_records: totals.warmup_records,
        elapsed_seconds: end.saturating_duration_since(clock.warmup_end).as_secs_f64(),
        target_records_per_second: args.rate,
        ..RunResults::default()
    };
    results.compute_rates();
    results
}

fn consume(
    cluster: &Cluster,
    args: &WorkloadArgs,
    partitions: u32,
    stats: &Arc<LiveStats>,
) -> Result<RunResults, PerfError> {
    let clock = Clock::start_now(args.warmup);
    let length = match (args.records, args.duration) {
        (_, Some(duration)) => Some(RunLength::Duration(duration)),
        (Some(records), None) => Some(RunLength::Records(records)),
        (None, None) => None,
    };
    let plan = consume_plan(args, partitions, clock, ConsumeMode::CatchUp { length });
    let state = ConsumeState::new(Arc::clone(stats));
    let running = RunningConsumers::start(cluster, &plan, &state)?;
    while !running.finished() {
        std::thread::sleep(DRAIN_POLL_INTERVAL);
    }
    let totals = running.join()?;
    let mut results = consume_results(&totals, clock.warmup_end);
    results.poll_latency = Some(totals.poll_latency.summary());
    Ok(results)
}

fn consume_plan(
    args: &WorkloadArgs,
    partitions: u32,
    clock: Clock,
    mode: ConsumeMode,
) -> ConsumePlan {
    ConsumePlan {
        topic: args.topic.clone(),
        partitions,
        consumers: args.consumers,
        isolation: args.isolation,
        mode,
        clock,
    }
}

fn consume_results(totals: &ConsumeTotals, measure_start: Instant) -> RunResults {
    let elapsed_seconds = match totals.first_and_last {
        Some((first, last)) => {
            last.saturating_duration_since(measure_start.min(first)).as_secs_f64()
        }
        None => 0.0,
    };
    let mut results = RunResults {
        records: totals.records,
        bytes: totals.bytes,
        warmup_records: totals.warmup_records,
        elapsed_seconds,
        ..RunResults::default()
    };
    results.compute_rates();
    results
}

fn end_to_end(
    cluster: &Cluster,
    args: &WorkloadArgs,
    partitions: u32,
    stats: &Arc<LiveStats>,
) -> Result<RunResults, PerfError> {
    // The consumers take their positions before anything is produced: nothing is missed. The
    // run's clock starts once they are ready, and they learn its warm-up end then.
    let consume_state = ConsumeState::new(Arc::clone(stats));
    let consume_clock = Clock::start_now(Duration::ZERO);
    let plan = consume_plan(args, partitions, consume_clock, ConsumeMode::EndToEnd);
    let consumers = RunningConsumers::start(cluster, &plan, &consume_state)?;
    let clock = Clock::start_now(args.warmup);
    consume_state.set_warmup_end_nanos(clock.nanos_at(clock.warmup_end));
    let plan = produce_plan(args, clock, false);
    let produce_state = ProduceState::new(&plan, Arc::clone(stats));
    let produced = run_producers(cluster, &producer_config(args), &plan, &produce_state);
    let produce_totals = produce_state.totals();
    // Every measured record acknowledged must arrive; give up after the drain timeout.
    let deadline = Instant::now() + args.drain_timeout;
    while produced.is_ok()
        && consume_state.measured_records() < produce_totals.records
        && Instant::now() < deadline
    {
        std::thread::sleep(DRAIN_POLL_INTERVAL);
    }
    let consume_totals = consumers.join()?;
    produced?;
    let mut results = consume_results(&consume_totals, clock.warmup_end);
    results.errors = produce_totals.errors;
    results.first_error = produce_totals.first_error.clone();
    results.target_records_per_second = args.rate;
    results.e2e_latency = Some(stats.latency().summary());
    results.produce_latency = Some(produce_totals.latency.summary());
    if consume_totals.records < produce_totals.records {
        let missing = produce_totals.records - consume_totals.records;
        results.errors += missing;
        results.first_error.get_or_insert_with(|| {
            format!("{missing} acknowledged records not consumed within {:?}", args.drain_timeout)
        });
    }
    Ok(results)
}
