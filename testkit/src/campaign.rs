//! `sluice-faults`: a fault campaign against the namespace cluster.
//!
//! It runs `sluice-perf check` (acks `all`, idempotent, tailing readers) from the client
//! namespace for `--duration`, and meanwhile injects the faults of its [`Schedule`] one at a
//! time ([`Injector::inject`]: apply, hold, heal, wait until healthy, gap). Near the end it heals
//! everything and lets the check produce on a healthy cluster, then waits for the check's final
//! read. The verdict is the check's; the report adds every fault injected, the counts per kind
//! and, from the check's acknowledgement timeline, how long each fault kept its partitions from
//! accepting acks `all` ([`recovery`]).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use clap::Parser;
use serde::Serialize;

use crate::error::TestkitError;
use crate::inject::{Injected, Injector};
use crate::netns::{self, Netns, Role};
use crate::recovery::{self, Percentiles};
use crate::schedule::{FaultKind, FaultMix, Schedule};

/// `sluice-faults` options.
#[derive(Clone, Debug, Parser)]
#[command(
    name = "sluice-faults",
    about = "Runs `sluice-perf check` against the namespace cluster of deploy/netns/up while \
             injecting faults drawn from a seed (kill -9 and SIGSTOP of SPUs, SCs and Consul \
             servers, network partitions, one-way loss, netem, full disks); heals the cluster, \
             reads everything back and exits 1 if any acknowledged record was lost, duplicated, \
             reordered or read at another offset. Usually run through deploy/faults/run."
)]
pub struct CampaignArgs {
    /// Seed of the schedule (printed; a failing campaign is replayed with it) [default: random].
    #[arg(long)]
    pub seed: Option<u64>,
    /// How long the check produces at most (`90s`, `10m`); faults stop `--quiet` before its
    /// end.
    #[arg(long, value_parser = parse_duration, default_value = "120s")]
    pub duration: Duration,
    /// Faults and their weight per round, e.g. `leader-kill:5,sc-kill,netem`; `all` is every
    /// kind once. Kinds: leader-kill, follower-kill, spu-pause, sc-kill, sc-pause, consul-kill,
    /// consul-pause, leader-isolated, sc-isolated, consul-minority, one-way, netem, disk-full.
    #[arg(long, default_value = "all")]
    pub faults: FaultMix,
    /// Stop after this many rounds of the mix (every kind as often as its weight), let the
    /// check produce `--quiet` more on the healthy cluster and end it early; 0: inject until
    /// `--duration` (less the quiet time) runs out.
    #[arg(long, default_value_t = 0)]
    pub rounds: u64,
    /// Time the check produces on the healed cluster at the end, before its final read.
    #[arg(long, value_parser = parse_duration, default_value = "15s")]
    pub quiet: Duration,
    /// Partitions of the checked topic (replication 3, min in-sync 2).
    #[arg(long, default_value_t = 6)]
    pub partitions: u32,
    /// Records per second over every producer.
    #[arg(long, default_value_t = 600)]
    pub rate: u64,
    /// Producers of the check.
    #[arg(long, default_value_t = 2)]
    pub producers: u32,
    /// Longest wait for the cluster to be healthy after a fault is healed.
    #[arg(long, value_parser = parse_duration, default_value = "60s")]
    pub settle: Duration,
    /// Directory of sluice-perf [default: the directory of this program].
    #[arg(long)]
    pub bin_dir: Option<PathBuf>,
    /// Write the campaign's report (faults, recovery times, the check's counts) as JSON here
    /// [default: <state dir>/faults-<seed>/report.json].
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// The campaign's report.
#[derive(Clone, Debug, Serialize)]
pub struct CampaignReport {
    /// The seed.
    pub seed: u64,
    /// The check's verdict: nothing lost, duplicated, inconsistent, reordered or aborted.
    pub valid: bool,
    /// The check's total counts (`analysis.total` of its report).
    pub counts: serde_json::Value,
    /// Every fault injected.
    pub faults: Vec<Injected>,
    /// Faults per kind.
    pub injected_per_kind: BTreeMap<FaultKind, usize>,
    /// Recovery times per kind (ms until the affected partitions accepted acks `all` again).
    pub recovery_per_kind: BTreeMap<FaultKind, Percentiles>,
    /// Faults after which the cluster was not healthy within `--settle`.
    pub unsettled: usize,
    /// Processes that exited on their own and were started again (as a unit's `Restart=`
    /// would), e.g. an SC that lost its Consul session.
    pub supervisor_restarts: u64,
    /// Where the check's files are.
    pub directory: PathBuf,
}

/// Runs the campaign; the report, or why it could not run.
pub fn run_campaign(args: &CampaignArgs) -> Result<CampaignReport, TestkitError> {
    let seed = args.seed.unwrap_or_else(rand::random);
    eprintln!("faults: seed {seed} (replay with --seed {seed})");
    let netns = Netns::from_env();
    for (host, _, role) in netns::HOSTS {
        if role != Role::Client && !netns.alive(host) && netns.recorded(host).is_none() {
            return Err(TestkitError::NoCluster {
                dir: netns.dir.clone(),
                reason: format!("{host} has no recorded process"),
            });
        }
    }
    let directory = netns.dir.join(format!("faults-{seed}"));
    std::fs::create_dir_all(&directory).map_err(|error| TestkitError::io(&directory, error))?;
    // A replay's files replace the last run's of the seed.
    for name in ["stop", "check.json", "timeline.txt"] {
        let _ = std::fs::remove_file(directory.join(name));
    }
    let topic = format!("faults-{seed}");
    let mut injector = Injector::new(netns.clone(), &topic);
    // Whatever an interrupted campaign left.
    injector.heal_everything()?;

    let mut check = start_check(args, &netns, &topic, &directory)?;
    let started = Instant::now();
    // The topic exists and the producers run.
    netns::wait_until("the checked topic to be healthy", Duration::from_secs(60), || {
        injector
            .partitions()
            .is_ok_and(|views| !views.is_empty() && views.iter().all(|v| v.healthy()))
    })?;
    std::thread::sleep(Duration::from_secs(3));

    let quiet_end = args.quiet;
    let per_round: u64 = args.faults.0.iter().map(|&(_, weight)| u64::from(weight)).sum();
    let mut injected = Vec::new();
    for fault in Schedule::new(seed, args.faults.clone()) {
        if args.rounds > 0 && fault.index >= args.rounds * per_round {
            break;
        }
        // The fault, its heal and some settling must end before the quiet end.
        let needed = started.elapsed() + fault.hold + Duration::from_secs(5);
        if needed + quiet_end > args.duration {
            break;
        }
        if let Ok(Some(status)) = check.try_wait() {
            return Err(TestkitError::Command {
                command: "sluice-perf check".into(),
                message: format!(
                    "exited early ({status}); see {}",
                    directory.join("check.log").display()
                ),
            });
        }
        match injector.inject(&fault, args.settle) {
            Ok(record) => injected.push(record),
            Err(TestkitError::NotInjectable { fault: kind, reason }) => {
                eprintln!("faults: #{} {kind} skipped: {reason}", fault.index);
            }
            Err(error) => {
                eprintln!("faults: #{} {}: {error}; healing everything", fault.index, fault.kind);
                injector.heal_everything()?;
            }
        }
        std::thread::sleep(fault.gap);
    }
    eprintln!("faults: {} faults injected; healing and letting the check finish", injected.len());
    injector.heal_everything()?;
    injector.wait_healthy(Duration::from_secs(120))?;
    if args.rounds > 0 {
        std::thread::sleep(quiet_end);
        let stop_file = directory.join("stop");
        std::fs::write(&stop_file, b"").map_err(|error| TestkitError::io(&stop_file, error))?;
    }

    let status = wait_child(&mut check, args.duration + Duration::from_secs(600))?;
    let report_path = directory.join("check.json");
    let report: serde_json::Value = std::fs::read(&report_path)
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .ok_or_else(|| TestkitError::Command {
            command: "sluice-perf check".into(),
            message: format!(
                "{status}, no report in {}; see {}",
                report_path.display(),
                directory.join("check.log").display()
            ),
        })?;
    let timeline_path = directory.join("timeline.txt");
    let timeline = std::fs::read_to_string(&timeline_path)
        .map_err(|error| TestkitError::io(&timeline_path, error))?;
    let acks = recovery::parse_timeline(&timeline).map_err(|reason| TestkitError::Command {
        command: "sluice-perf check --timeline".into(),
        message: reason,
    })?;
    let mut samples: BTreeMap<FaultKind, Vec<u64>> = BTreeMap::new();
    let mut injected_per_kind = BTreeMap::new();
    for record in &mut injected {
        record.recovery_ms =
            recovery::recovery_ms(&acks, record.injected_unix_ms, &record.partitions);
        *injected_per_kind.entry(record.fault.kind).or_insert(0) += 1;
        if let Some(ms) = record.recovery_ms {
            samples.entry(record.fault.kind).or_default().push(ms);
        }
    }
    let recovery_per_kind = samples
        .into_iter()
        .filter_map(|(kind, values)| Some((kind, recovery::percentiles(&values)?)))
        .collect();
    let unsettled = injected.iter().filter(|record| record.healthy_after_heal_ms.is_none()).count();
    Ok(CampaignReport {
        seed,
        valid: report["valid"].as_bool() == Some(true) && status.success(),
        counts: report["analysis"]["total"].clone(),
        faults: injected,
        injected_per_kind,
        recovery_per_kind,
        unsettled,
        supervisor_restarts: injector.supervised(),
        directory,
    })
}

fn start_check(
    args: &CampaignArgs,
    netns: &Netns,
    topic: &str,
    directory: &std::path::Path,
) -> Result<Child, TestkitError> {
    let bin_dir = match &args.bin_dir {
        Some(dir) => dir.clone(),
        None => std::env::current_exe()
            .ok()
            .and_then(|exe| exe.parent().map(PathBuf::from))
            .unwrap_or_default(),
    };
    let perf = bin_dir.join("sluice-perf");
    if !perf.is_file() {
        return Err(TestkitError::InvalidArgument(format!(
            "no sluice-perf in {}: build it (cargo build -p sluice-perf) or pass --bin-dir",
            bin_dir.display()
        )));
    }
    let log_path = directory.join("check.log");
    let log =
        std::fs::File::create(&log_path).map_err(|error| TestkitError::io(&log_path, error))?;
    let log_err = log.try_clone().map_err(|error| TestkitError::io(&log_path, error))?;
    let seconds = |duration: Duration| format!("{}s", duration.as_secs());
    let mut command = Command::new("ip");
    command
        .args(["netns", "exec", &Netns::namespace("client")])
        .arg(&perf)
        .args(["check", "--create-topic", "--replication", "3", "--min-in-sync", "2", "--tail"])
        .args(["--sc", &netns.sc_addresses(), "--topic", topic])
        .args(["--partitions", &args.partitions.to_string()])
        .args(["--producers", &args.producers.to_string()])
        .args(["--rate", &args.rate.to_string()])
        .args(["--duration", &seconds(args.duration)])
        .args(["--delivery-timeout", "60s", "--read-timeout", "180s"])
        .arg("--json")
        .arg(directory.join("check.json"))
        .arg("--timeline")
        .arg(directory.join("timeline.txt"))
        .arg("--stop-file")
        .arg(directory.join("stop"))
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log_err);
    eprintln!("faults: {command:?}");
    command.spawn().map_err(|error| TestkitError::Command {
        command: format!("{command:?}"),
        message: error.to_string(),
    })
}

fn wait_child(
    child: &mut Child,
    deadline: Duration,
) -> Result<std::process::ExitStatus, TestkitError> {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().map_err(|error| TestkitError::Command {
            command: "sluice-perf check".into(),
            message: error.to_string(),
        })? {
            return Ok(status);
        }
        if start.elapsed() >= deadline {
            let _ = child.kill();
            return Err(TestkitError::Timeout {
                what: "sluice-perf check to finish".into(),
                seconds: deadline.as_secs(),
            });
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The campaign as text: every fault, the counts per kind with recovery percentiles, the
/// check's counts and the verdict.
pub fn summary(report: &CampaignReport) -> String {
    let mut text = String::new();
    let _ = writeln!(
        text,
        "{:>4} {:<16} {:<14} {:>7} {:>11} {:>12}",
        "#", "fault", "target", "hold s", "recovery ms", "healthy ms"
    );
    for record in &report.faults {
        let ms = |value: Option<u64>| value.map_or_else(|| "-".to_string(), |v| v.to_string());
        let _ = writeln!(
            text,
            "{:>4} {:<16} {:<14} {:>7.1} {:>11} {:>12}",
            record.fault.index,
            record.fault.kind.name(),
            record.target,
            record.fault.hold.as_secs_f64(),
            ms(record.recovery_ms),
            ms(record.healthy_after_heal_ms)
        );
    }
    let _ = writeln!(
        text,
        "\n{:<16} {:>8} {:>8} {:>8} {:>8}",
        "fault", "count", "p50 ms", "p99 ms", "max ms"
    );
    for (kind, count) in &report.injected_per_kind {
        match report.recovery_per_kind.get(kind) {
            Some(p) => {
                let _ = writeln!(
                    text,
                    "{:<16} {:>8} {:>8} {:>8} {:>8}",
                    kind.name(),
                    count,
                    p.p50,
                    p.p99,
                    p.max
                );
            }
            None => {
                let _ = writeln!(
                    text,
                    "{:<16} {:>8} {:>8} {:>8} {:>8}",
                    kind.name(),
                    count,
                    "-",
                    "-",
                    "-"
                );
            }
        }
    }
    let count = |name: &str| report.counts[name].as_u64().unwrap_or(0);
    let _ = writeln!(
        text,
        "\nrecords: {} sent, {} acknowledged, {} failed, {} unknown ({} of them read), {} read",
        count("sent"),
        count("acknowledged"),
        count("failed"),
        count("unknown"),
        count("unknown_read"),
        count("read")
    );
    let _ = writeln!(
        text,
        "violations: {} lost, {} duplicated, {} inconsistent offsets, {} reordered, {} aborted reads, {} unexpected",
        count("lost"),
        count("duplicated"),
        count("inconsistent_offsets"),
        count("reordered"),
        count("aborted_reads"),
        count("unexpected")
    );
    if report.supervisor_restarts > 0 {
        let _ = writeln!(
            text,
            "{} processes exited on their own and were started again (systemd's Restart=)",
            report.supervisor_restarts
        );
    }
    if report.unsettled > 0 {
        let _ =
            writeln!(text, "{} faults left the cluster unhealthy past --settle", report.unsettled);
    }
    let _ = writeln!(
        text,
        "verdict: {} (seed {}; files in {})",
        if report.valid { "VALID" } else { "INVALID" },
        report.seed,
        report.directory.display()
    );
    text
}

/// `30s`, `2m`, `1h`, `500ms` or plain seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, unit) =
        text.split_at(text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len()));
    let value: u64 = number.parse().map_err(|_| format!("bad duration {text:?}: e.g. 90s, 10m"))?;
    match unit {
        "" | "s" => Ok(Duration::from_secs(value)),
        "ms" => Ok(Duration::from_millis(value)),
        "m" => Ok(Duration::from_secs(value * 60)),
        "h" => Ok(Duration::from_secs(value * 3600)),
        _ => Err(format!("bad duration unit in {text:?}: s, ms, m or h")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("7"), Ok(Duration::from_secs(7)));
        assert!(parse_duration("7x").is_err());
        assert!(parse_duration("s").is_err());
    }
}
