//! `sluice-perf`: produce, consume and end-to-end load against a Sluice cluster, with HDR
//! latency percentiles, live progress and a versioned JSON report; `suite` measures the
//! machine's limits and Sluice's standard runs side by side.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use sluice_perf::abuse::AbuseArgs;
use sluice_perf::args::{FailoverArgs, SuiteArgs, WorkloadArgs};
use sluice_perf::check::run::{run_check, CheckArgs};
use sluice_perf::failover::{run_failover, summary_table};
use sluice_perf::report::{write_json, WorkloadKind};
use sluice_perf::suite::run_suite;
use sluice_perf::table;
use sluice_perf::workload::run::run;

#[derive(Parser)]
#[command(name = "sluice-perf", version, about = "Sluice's load generator")]
struct Cli {
    /// Client configuration file (TOML: `sc`, `tls_ca`, `tls_cert`, `tls_key`, `token`, as `sluice
    /// --config`); flags and environment variables override it, and its `sc` applies when
    /// --sc is not given.
    #[arg(long, global = true, env = "SLUICE_CONFIG", value_name = "FILE")]
    config: Option<std::path::PathBuf>,
    /// Use TLS towards a running cluster, trusting servers signed by this PEM CA bundle
    /// (clusters sluice-perf starts itself are plaintext).
    #[arg(long, global = true, env = "SLUICE_TLS_CA", value_name = "PEM")]
    tls_ca: Option<std::path::PathBuf>,
    /// PEM client certificate presented to servers that ask for one (with --tls-key).
    #[arg(long, global = true, env = "SLUICE_TLS_CERT", value_name = "PEM")]
    tls_cert: Option<std::path::PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, global = true, env = "SLUICE_TLS_KEY", value_name = "PEM")]
    tls_key: Option<std::path::PathBuf>,
    /// Access token (`slu_...`, from `sluice token create`) for a cluster with authorization.
    #[arg(long, global = true, env = "SLUICE_TOKEN", hide_env_values = true, value_name = "TOKEN")]
    token: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Producers only: throughput and produce latency (to acknowledgement).
    Produce(WorkloadArgs),
    /// Catch-up consumers from the beginning: throughput.
    Consume(WorkloadArgs),
    /// Producers and consumers at once: end-to-end latency (consume time minus send time).
    E2e(WorkloadArgs),
    /// The machine's limits (fio, iperf3) and the standard Sluice runs side by side.
    ///
    /// Runs on local clusters it starts: 1 SPU (standard runs) and 3 SPUs of 1 core
    /// (replicated runs: RF 3 against RF 1, e2e at RF 3, 100 partitions at RF 3 for memory).
    /// The JSON report goes under --results-dir.
    Suite(SuiteArgs),
    /// Writes unique values (acks all, idempotent), records every send's outcome, reads
    /// everything back and reports lost, duplicated, inconsistent, reordered, aborted and
    /// unexpected records per partition; exits 1 on any violation. Run it while faults are
    /// injected (`sluice cluster spu kill ID` on a local cluster) to see that nothing
    /// acknowledged is lost.
    Check(CheckArgs),
    /// Failover figures: kill -9 / SIGSTOP of the leader, kill -9 of a follower.
    ///
    /// On a local cluster it starts (3 SPUs of 1 core, RF 3, min in-sync 2), producing with
    /// acks all throughout: kill -9 of the leader (time from the kill to the first record sent
    /// after it acknowledged by the successor), SIGSTOP of the leader (the same, found by the
    /// SC's heartbeat timeout), kill -9 of a follower (longest time without an
    /// acknowledgement); progress per event on stderr, p50 / p99 / max against issue 18's
    /// targets on stdout. Exits non-zero when a target is missed or a record failed.
    Failover(FailoverArgs),
    /// Hostile and careless clients beside a well-behaved probe: idle connections by the
    /// thousand, garbage and half frames, slow consumers, a flooding producer.
    ///
    /// Against a running cluster (`sluice cluster start --local`, or --sc): each workload
    /// measures the probe's end-to-end latency without and with the abuse in the same run and
    /// the servers' RSS (from /proc, PIDs from --spu-pid / --sc-pid or the local cluster's
    /// state file). Exits non-zero when a server died, the probe stopped receiving, or a
    /// connection that must be closed was not.
    Abuse(AbuseArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    sluice_perf::connection::set_settings(sluice_client::ClientSettings {
        sc: None,
        config: cli.config,
        tls_ca: cli.tls_ca,
        tls_cert: cli.tls_cert,
        tls_key: cli.tls_key,
        token: cli.token,
    });
    let outcome = match cli.command {
        Command::Produce(args) => workload(WorkloadKind::Produce, &args),
        Command::Consume(args) => workload(WorkloadKind::Consume, &args),
        Command::E2e(args) => workload(WorkloadKind::E2e, &args),
        Command::Suite(args) => suite(&args),
        Command::Check(args) => check(&args),
        Command::Failover(args) => failover(&args),
        Command::Abuse(args) => abuse(&args),
    };
    match outcome {
        Ok(code) => code,
        Err(error) => {
            eprintln!("sluice-perf: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn workload(kind: WorkloadKind, args: &WorkloadArgs) -> anyhow::Result<ExitCode> {
    let report = run(kind, args)?;
    print!("{}", table::run_table(&report));
    if let Some(path) = &args.json {
        write_json(path, &report)?;
        eprintln!("report written to {}", path.display());
    }
    if report.results.errors > 0 {
        eprintln!("sluice-perf: {} records failed", report.results.errors);
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

fn check(args: &CheckArgs) -> anyhow::Result<ExitCode> {
    let report = run_check(args)?;
    print!("{}", sluice_perf::check::table(&report.analysis));
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&report)?;
        std::fs::write(path, text + "\n")
            .map_err(|error| anyhow::anyhow!("cannot write {}: {error}", path.display()))?;
        eprintln!("report written to {}", path.display());
    }
    if report.valid {
        println!("verdict: valid (no lost, duplicated, inconsistent, reordered, aborted or unexpected record)");
        Ok(ExitCode::SUCCESS)
    } else {
        println!("verdict: INVALID: {} violations", report.analysis.total.violations());
        for example in &report.analysis.examples {
            println!("  {} (partition {}): {}", example.kind, example.partition, example.detail);
        }
        Ok(ExitCode::FAILURE)
    }
}

fn failover(args: &FailoverArgs) -> anyhow::Result<ExitCode> {
    let report = run_failover(args)?;
    print!("{}", summary_table(&report));
    if let Some(path) = &args.json {
        write_json(path, &report)?;
        eprintln!("report written to {}", path.display());
    }
    let missed = report.summaries.iter().any(|summary| !summary.met);
    Ok(if missed || report.errors > 0 { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}

fn suite(args: &SuiteArgs) -> anyhow::Result<ExitCode> {
    let (report, path) = run_suite(args)?;
    println!("{}", table::limits_table(&report.limits));
    println!("{}", table::comparison_table(&report.comparisons));
    for run in &report.runs {
        match &run.report {
            sluice_perf::report::Measured::Failed(why) => println!("{}: FAILED: {why}", run.name),
            sluice_perf::report::Measured::Ok(measured) => {
                if measured.results.errors > 0 {
                    println!(
                        "{}: {} records failed ({}): the figures count only the others",
                        run.name,
                        measured.results.errors,
                        measured.results.first_error.as_deref().unwrap_or("no message")
                    );
                }
                let steal = measured.machine_cpu.map_or(0.0, |cpu| cpu.steal_percent);
                if steal > sluice_perf::machine::STEAL_PERCENT_DISTURBED {
                    println!(
                        "{}: the hypervisor took {steal:.1}% of the CPUs' time (steal): a busy \
                         host, not only Sluice, is in its figures",
                        run.name
                    );
                }
            }
        }
    }
    eprintln!("report written to {}", path.display());
    let failed = report.runs.iter().any(|run| run.report.value().is_none());
    Ok(if failed { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}

fn abuse(args: &AbuseArgs) -> anyhow::Result<ExitCode> {
    let report = sluice_perf::abuse::run(args)?;
    print!("{}", report.table());
    let json = match &args.workload {
        sluice_perf::abuse::AbuseWorkload::Idle(args) => &args.common.json,
        sluice_perf::abuse::AbuseWorkload::Garbage(args) => &args.common.json,
        sluice_perf::abuse::AbuseWorkload::SlowConsumer(args) => &args.common.json,
        sluice_perf::abuse::AbuseWorkload::Flood(args) => &args.common.json,
    };
    if let Some(path) = json {
        write_json(path, &report)?;
        eprintln!("report written to {}", path.display());
    }
    Ok(if report.problems.is_empty() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}
