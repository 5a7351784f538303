//! The four abuse workloads: set up (cluster, topic, probe), measure a baseline, abuse,
//! measure again, check the servers.

use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sluice_client::{Acks, Cluster, ProducerConfig, ProducerRecord, TopicSpec};

use super::probe::Probe;
use super::raw::{self, Garbage};
use super::{
    AbuseArgs, AbuseReport, AbuseWorkload, CommonArgs, FloodArgs, GarbageArgs, IdleArgs,
    ServerSample, SlowConsumerArgs, Target, REPORT_VERSION,
};
use crate::error::PerfError;
use crate::workload::topic::wait_for_leaders;

/// Partition of the probe.
const PROBE_PARTITION: u32 = 0;
/// Partition the abusers use (preloaded, flooded).
const ABUSED_PARTITION: u32 = 1;
/// Partitions of a created topic.
const TOPIC_PARTITIONS: u32 = 2;
/// How often the SPU's RSS is sampled while slow consumers are connected.
const RSS_SAMPLE_INTERVAL: Duration = Duration::from_millis(200);
/// Records each flood producer sends per value buffer refill (none: the value is reused).
const PRELOAD_RECORD_BYTES: usize = 1024;
/// Pause after opening idle connections before the held window: the servers accept and set up
/// thousands of connections after the clients' connects returned (the kernel's backlog), and
/// that burst is not what an idle connection costs.
const IDLE_SETTLE: Duration = Duration::from_secs(3);
/// The SC's public frame limit: a half frame to it announces less.
const SC_FRAME_BYTES_MAX: u32 = 1024 * 1024;
/// Name prefix of the SC's public-connection threads (`sc-admin-<peer>`, cut to 15 bytes).
const SC_CONNECTION_THREAD: &str = "sc-admin";

/// Runs the workload of `args` and returns its report.
pub fn run(args: &AbuseArgs) -> Result<AbuseReport, PerfError> {
    let limit = raw::raise_open_files_limit();
    eprintln!("open files limit of this process: {limit}");
    let mut report = AbuseReport {
        version: REPORT_VERSION,
        parameters: args.clone(),
        probe: Vec::new(),
        servers: Vec::new(),
        figures: Vec::new(),
        problems: Vec::new(),
    };
    let common = match &args.workload {
        AbuseWorkload::Idle(args) => &args.common,
        AbuseWorkload::Garbage(args) => &args.common,
        AbuseWorkload::SlowConsumer(args) => &args.common,
        AbuseWorkload::Flood(args) => &args.common,
    };
    let setup = Setup::new(common)?;
    match &args.workload {
        AbuseWorkload::Idle(args) => idle(&setup, args, &mut report)?,
        AbuseWorkload::Garbage(args) => garbage(&setup, args, &mut report)?,
        AbuseWorkload::SlowConsumer(args) => slow_consumer(&setup, args, &mut report)?,
        AbuseWorkload::Flood(args) => flood(&setup, args, &mut report)?,
    }
    setup.check_alive(&mut report);
    if let Some(error) = setup.probe.first_error() {
        eprintln!("probe error (first): {error}");
    }
    Ok(report)
}

/// The cluster, the probe and the servers' addresses and PIDs.
struct Setup {
    common: CommonArgs,
    cluster: Cluster,
    probe: Probe,
    spu_address: SocketAddr,
    abused_address: SocketAddr,
    sc_address: SocketAddr,
    spu_pid: Option<u32>,
    sc_pid: Option<u32>,
}

impl Setup {
    fn new(common: &CommonArgs) -> Result<Setup, PerfError> {
        let sc_text = common.sc.split(',').next().unwrap_or_default().trim().to_string();
        if sc_text.starts_with("consul://") {
            return Err(PerfError::InvalidParameters(
                "abuse needs the SC's host:port (it connects to it without the SDK)".into(),
            ));
        }
        let sc_address = raw::resolve(&sc_text)?;
        let cluster = crate::connection::connect(&common.sc)?;
        if common.create_topic {
            let spec = TopicSpec::computed(TOPIC_PARTITIONS, 1);
            match cluster.admin().create_topic(&common.topic, spec) {
                Ok(()) => {}
                Err(sluice_client::ClientError::Server {
                    code: sluice_client::ErrorCode::TopicAlreadyExists,
                    ..
                }) => eprintln!("topic {:?} exists; reusing it", common.topic),
                Err(error) => return Err(error.into()),
            }
        }
        let partitions =
            wait_for_leaders(&cluster, &common.topic, crate::workload::topic::TOPIC_READY_TIMEOUT)?;
        if partitions < TOPIC_PARTITIONS {
            return Err(PerfError::InvalidParameters(format!(
                "topic {:?} has {partitions} partitions; abuse needs {TOPIC_PARTITIONS} (probe, abused)",
                common.topic
            )));
        }
        let metadata = cluster.metadata();
        let route = |partition| {
            metadata.route(&common.topic, partition).map_err(|error| {
                PerfError::Timeout(format!("partition {partition} has no route: {error:?}"))
            })
        };
        let probe_route = route(PROBE_PARTITION)?;
        let abused_route = route(ABUSED_PARTITION)?;
        // The shared public port of the probe's leader: what a plain client would dial.
        let spu_address = metadata
            .spus
            .get(&probe_route.spu)
            .map(|spu| {
                let endpoint = &spu.public_endpoint;
                if endpoint.host.contains(':') {
                    format!("[{}]:{}", endpoint.host, endpoint.port)
                } else {
                    format!("{}:{}", endpoint.host, endpoint.port)
                }
            })
            .unwrap_or_else(|| probe_route.address.clone());
        let (state_spu, state_sc) = pids_from_state(common.cluster_state.as_deref());
        let probe = Probe::start(&cluster, &common.topic, PROBE_PARTITION, common.probe_rate)?;
        Ok(Setup {
            common: common.clone(),
            spu_address: raw::resolve(&spu_address)?,
            abused_address: raw::resolve(&abused_route.address)?,
            sc_address,
            spu_pid: common.spu_pid.or(state_spu),
            sc_pid: common.sc_pid.or(state_sc),
            cluster,
            probe,
        })
    }

    fn address(&self, target: Target) -> SocketAddr {
        match target {
            Target::Spu => self.spu_address,
            Target::Sc => self.sc_address,
        }
    }

    fn pid(&self, target: Target) -> Option<u32> {
        match target {
            Target::Spu => self.spu_pid,
            Target::Sc => self.sc_pid,
        }
    }

    /// Samples the servers' RSS and threads as `phase`.
    fn sample(&self, report: &mut AbuseReport, targets: &[Target], phase: &str) {
        for &server in targets {
            if let Some(sample) = self.sample_one(server, phase) {
                report.servers.push(sample);
            }
        }
    }

    fn sample_one(&self, server: Target, phase: &str) -> Option<ServerSample> {
        let pid = self.pid(server)?;
        Some(ServerSample {
            server,
            phase: phase.into(),
            rss_mib: raw::resident_bytes(pid)? as f64 / f64::from(1 << 20),
            threads: raw::threads(pid).unwrap_or(0),
            descriptors: raw::open_descriptors(pid).unwrap_or(0),
        })
    }

    /// Records a problem for every server that is gone.
    fn check_alive(&self, report: &mut AbuseReport) {
        for server in [Target::Spu, Target::Sc] {
            if let Some(pid) = self.pid(server) {
                if !raw::alive(pid) {
                    report.problems.push(format!("the {server} (pid {pid}) is not running"));
                }
            }
        }
    }

    /// A last probe window, after the abuse: the probe must still get its records.
    fn after_window(&self, report: &mut AbuseReport) {
        let after = self.probe.window("after", self.common.window.min(Duration::from_secs(5)));
        if after.received == 0 {
            report.problems.push("the probe received nothing after the abuse".into());
        }
        report.probe.push(after);
    }
}

/// PIDs of the SPU (the first) and the SC from a local cluster state file.
fn pids_from_state(path: Option<&std::path::Path>) -> (Option<u32>, Option<u32>) {
    let path =
        match path.map(std::path::Path::to_path_buf).or_else(crate::server_cpu::default_state_file)
        {
            Some(path) => path,
            None => return (None, None),
        };
    let Ok(text) = std::fs::read_to_string(path) else { return (None, None) };
    let Ok(value) = serde_json::from_str::<serde_json::Value>(&text) else { return (None, None) };
    let processes = value.get("processes").and_then(serde_json::Value::as_array);
    let pid_of = |role: &str| {
        processes?
            .iter()
            .find(|process| process.get("role").and_then(serde_json::Value::as_str) == Some(role))
            .and_then(|process| process.get("pid")?.as_u64())
            .and_then(|pid| u32::try_from(pid).ok())
    };
    (pid_of("spu"), pid_of("sc"))
}

fn targets_or_both(targets: &[Target]) -> Vec<Target> {
    if targets.is_empty() {
        vec![Target::Spu, Target::Sc]
    } else {
        targets.to_vec()
    }
}

fn idle(setup: &Setup, args: &IdleArgs, report: &mut AbuseReport) -> Result<(), PerfError> {
    let targets = targets_or_both(&args.targets);
    setup.sample(report, &targets, "before");
    report.probe.push(setup.probe.window("baseline", setup.common.window));
    let mut held: Vec<(Target, Vec<TcpStream>)> = Vec::new();
    for &target in &targets {
        let started = Instant::now();
        let (streams, error) = raw::open(setup.address(target), args.connections);
        let seconds = started.elapsed().as_secs_f64();
        eprintln!(
            "{target}: {} of {} connections opened in {seconds:.1} s",
            streams.len(),
            args.connections
        );
        if let Some(error) = error {
            report.problems.push(format!(
                "{target}: {} of {} connections failed to open: {error}",
                args.connections - streams.len(),
                args.connections
            ));
        }
        report.figure(format!("{target} connections opened"), streams.len() as f64, "");
        held.push((target, streams));
    }
    std::thread::sleep(IDLE_SETTLE);
    // The SC serves each connection on a thread that wakes now and then to check for shutdown:
    // those wake-ups cost every idle connection CPU (and the probe latency).
    let sc_pid = setup.pid(Target::Sc).filter(|_| targets.contains(&Target::Sc));
    let wakeups_before = sc_pid.and_then(|pid| raw::thread_wakeups(pid, SC_CONNECTION_THREAD));
    let held_since = Instant::now();
    report.probe.push(setup.probe.window("idle held", setup.common.window));
    let wakeups_after = sc_pid.and_then(|pid| raw::thread_wakeups(pid, SC_CONNECTION_THREAD));
    if let (Some((threads, before)), Some((_, after))) = (wakeups_before, wakeups_after) {
        let per_second = after.saturating_sub(before) as f64
            / threads.max(1) as f64
            / held_since.elapsed().as_secs_f64();
        report.figure("sc wake-ups per idle connection per second", per_second, "/s");
    }
    let before = report.servers.clone();
    setup.sample(report, &targets, "idle held");
    for (target, streams) in &held {
        let descriptors = |samples: &[ServerSample], phase: &str| {
            samples
                .iter()
                .find(|sample| sample.server == *target && sample.phase == phase)
                .map(|sample| sample.descriptors as f64)
        };
        if let (Some(idle), Some(held_now)) =
            (descriptors(&before, "before"), descriptors(&report.servers, "idle held"))
        {
            let per_connection = (held_now - idle) / streams.len().max(1) as f64;
            report.figure(format!("{target} descriptors per idle connection"), per_connection, "");
        }
    }
    for (target, streams) in &mut held {
        let open = raw::count_open(streams);
        report.figure(format!("{target} connections still open after the hold"), open as f64, "");
        if open < streams.len() {
            report
                .problems
                .push(format!("{target} closed {} idle connections", streams.len() - open));
        }
    }
    drop(held);
    std::thread::sleep(Duration::from_secs(2));
    setup.sample(report, &targets, "closed");
    setup.after_window(report);
    Ok(())
}

fn garbage(setup: &Setup, args: &GarbageArgs, report: &mut AbuseReport) -> Result<(), PerfError> {
    let targets = targets_or_both(&args.targets);
    let kinds = if args.kinds.is_empty() {
        vec![Garbage::Random, Garbage::HalfFrame, Garbage::Oversized]
    } else {
        args.kinds.clone()
    };
    setup.sample(report, &targets, "before");
    report.probe.push(setup.probe.window("baseline", setup.common.window));
    for &kind in &kinds {
        let mut sent: Vec<(Target, Vec<TcpStream>)> = Vec::new();
        let sent_at = Instant::now();
        for &target in &targets {
            let claimed = match target {
                Target::Spu => args.claimed_bytes,
                Target::Sc => args.claimed_bytes.min(SC_FRAME_BYTES_MAX - 64),
            };
            let bytes = raw::garbage_bytes(kind, claimed, args.random_bytes, args.seed);
            let (mut streams, error) = raw::open(setup.address(target), args.connections);
            if let Some(error) = error {
                report.problems.push(format!("{target} {kind}: connect failed: {error}"));
            }
            raw::send_all(&mut streams, &bytes);
            sent.push((target, streams));
        }
        for (target, streams) in &mut sent {
            // The peak while the server holds (or drops) what was sent.
            let mut peak: Option<ServerSample> = None;
            let phase = format!("{kind} peak");
            let (closed, last) = raw::wait_closed(streams, sent_at, args.close_wait, || {
                if let Some(sample) = setup.sample_one(*target, &phase) {
                    if peak.as_ref().is_none_or(|peak| sample.rss_mib > peak.rss_mib) {
                        peak = Some(sample);
                    }
                }
            });
            report.servers.extend(peak);
            let seconds = last.map_or(0.0, |last| last.as_secs_f64());
            eprintln!("{target} {kind}: {closed} of {} closed by the server ({seconds:.2} s for the last)", streams.len());
            report.figure(
                format!("{target} {kind}: connections closed by the server"),
                closed as f64,
                &format!("of {}", streams.len()),
            );
            report.figure(
                format!("{target} {kind}: time from sending to the last close"),
                seconds,
                "s",
            );
            if closed < streams.len() && kind != Garbage::HalfFrame {
                report.problems.push(format!(
                    "{target} {kind}: {} connections still open after {:?}",
                    streams.len() - closed,
                    args.close_wait
                ));
            }
        }
    }
    setup.sample(report, &targets, "after");
    setup.after_window(report);
    Ok(())
}

fn slow_consumer(
    setup: &Setup,
    args: &SlowConsumerArgs,
    report: &mut AbuseReport,
) -> Result<(), PerfError> {
    preload(setup, args.preload_bytes)?;
    setup.sample(report, &[Target::Spu], "before");
    report.probe.push(setup.probe.window("baseline", setup.common.window));
    let requests =
        raw::fetch_requests(&setup.common.topic, ABUSED_PARTITION, args.fetches, args.fetch_bytes)?;
    let (mut streams, error) = raw::open(setup.abused_address, args.connections);
    if let Some(error) = error {
        report.problems.push(format!("slow consumers: connect failed: {error}"));
    }
    // Non-blocking, so that a full socket does not stop us: what the server has not taken
    // stays unsent, as a client that stopped reading would leave it.
    let mut requested = 0usize;
    for stream in &mut streams {
        let _ = stream.set_nonblocking(true);
        requested += write_some(stream, &requests);
    }
    report.figure("slow consumers", streams.len() as f64, "connections");
    report.figure("fetch request bytes the SPU took", requested as f64, "bytes");
    let peak = std::sync::Mutex::new(None::<ServerSample>);
    let during = setup.probe.measure("slow consumers", || {
        let end = Instant::now() + setup.common.window;
        while Instant::now() < end {
            if let Some(sample) = setup.sample_one(Target::Spu, "peak during") {
                let mut peak = peak.lock().unwrap_or_else(|p| p.into_inner());
                if peak.as_ref().is_none_or(|peak| sample.rss_mib > peak.rss_mib) {
                    *peak = Some(sample);
                }
            }
            std::thread::sleep(RSS_SAMPLE_INTERVAL);
        }
    });
    report.probe.push(during);
    report.servers.extend(peak.into_inner().unwrap_or_else(|p| p.into_inner()));
    let open = raw::count_open(&mut streams);
    report.figure("slow consumers still connected", open as f64, "");
    drop(streams);
    std::thread::sleep(Duration::from_secs(2));
    setup.sample(report, &[Target::Spu], "after");
    setup.after_window(report);
    Ok(())
}

/// Writes what the socket takes now; returns the byte count.
fn write_some(stream: &mut TcpStream, bytes: &[u8]) -> usize {
    use std::io::Write;
    let mut written = 0;
    while written < bytes.len() {
        match stream.write(&bytes[written..]) {
            Ok(0) | Err(_) => break,
            Ok(count) => written += count,
        }
    }
    written
}

/// Produces `bytes` of 1 KiB records to the abused partition (acks leader), waits for them.
fn preload(setup: &Setup, bytes: u64) -> Result<(), PerfError> {
    let producer = setup
        .cluster
        .producer(ProducerConfig { acks: Acks::Leader, ..ProducerConfig::default() })?;
    let value = crate::workload::filler_value(PRELOAD_RECORD_BYTES);
    let records = bytes / PRELOAD_RECORD_BYTES as u64;
    let started = Instant::now();
    for _ in 0..records {
        let record =
            ProducerRecord::new(&setup.common.topic, &value).with_partition(ABUSED_PARTITION);
        producer.send_with_callback(&record, |_| {})?;
    }
    producer.flush()?;
    eprintln!("preloaded {records} records in {:.1} s", started.elapsed().as_secs_f64());
    Ok(())
}

fn flood(setup: &Setup, args: &FloodArgs, report: &mut AbuseReport) -> Result<(), PerfError> {
    report.probe.push(setup.probe.window("baseline", setup.common.window));
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let producer =
        setup.cluster.producer(ProducerConfig { acks: Acks::All, ..ProducerConfig::default() })?;
    let flooding = {
        let (stop, sent, failed) = (Arc::clone(&stop), Arc::clone(&sent), Arc::clone(&failed));
        let topic = setup.common.topic.clone();
        let value = crate::workload::filler_value(args.record_size);
        std::thread::Builder::new()
            .name("flood".into())
            .spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let record =
                        ProducerRecord::new(&topic, &value).with_partition(ABUSED_PARTITION);
                    let counter = Arc::clone(&failed);
                    let outcome = producer.send_with_callback(&record, move |result| {
                        if result.is_err() {
                            counter.fetch_add(1, Ordering::Relaxed);
                        }
                    });
                    if outcome.is_err() {
                        failed.fetch_add(1, Ordering::Relaxed);
                    } else {
                        sent.fetch_add(1, Ordering::Relaxed);
                    }
                }
                let _ = producer.flush();
            })
            .map_err(|error| PerfError::io("spawn the flood producer", error))?
    };
    let started = Instant::now();
    let before = sent.load(Ordering::Relaxed);
    // The flood's first second fills its buffers: the window starts after it.
    std::thread::sleep(Duration::from_secs(1));
    let during = setup.probe.window("flood", setup.common.window);
    let records = sent.load(Ordering::Relaxed) - before;
    let seconds = started.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    let _ = flooding.join();
    report.probe.push(during);
    let mib = records as f64 * args.record_size as f64 / f64::from(1 << 20);
    report.figure("flood rate", (mib / seconds * 10.0).round() / 10.0, "MiB/s");
    report.figure("flood records failed", failed.load(Ordering::Relaxed) as f64, "");
    setup.after_window(report);
    Ok(())
}
