//! The versioned JSON reports. A report is self-describing: its `schema` and
//! `schema_version` name the layout (bumped on any incompatible change), the parameters it ran
//! with, the machine and commit, and the figures. [`RunReport`] is one workload run;
//! [`SuiteReport`] is `sluice-perf suite`: the machine's limits, the standard runs and every
//! Sluice figure beside its limit.

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::args::{SuiteArgs, WorkloadArgs};
use crate::error::PerfError;
use crate::histogram::LatencySummary;
use crate::limits::fio::FioResult;
use crate::limits::iperf::IperfResult;
use crate::machine::{GitInfo, MachineCpu, MachineInfo};
use crate::server_cpu::ProcessUsage;

/// `schema` of a [`RunReport`].
pub const RUN_SCHEMA: &str = "sluice-perf/run";
/// `schema` of a [`SuiteReport`].
pub const SUITE_SCHEMA: &str = "sluice-perf/suite";
/// Layout version of both report kinds.
pub const SCHEMA_VERSION: u32 = 1;

/// Which workload ran.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WorkloadKind {
    /// Producers only.
    Produce,
    /// Consumers reading what is there (catch-up).
    Consume,
    /// Producers and consumers at once; latency from produce to consume.
    E2e,
}

impl std::fmt::Display for WorkloadKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            WorkloadKind::Produce => "produce",
            WorkloadKind::Consume => "consume",
            WorkloadKind::E2e => "e2e",
        })
    }
}

/// The figures of one run (the measured part, after the warm-up).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RunResults {
    /// Records measured (acknowledged for produce, received for consume and e2e).
    pub records: u64,
    /// Value bytes of those records.
    pub bytes: u64,
    /// Records whose send or delivery failed.
    pub errors: u64,
    /// First error seen, if any.
    pub first_error: Option<String>,
    /// Records sent during the warm-up (not in any figure).
    pub warmup_records: u64,
    /// Seconds of the measured part.
    pub elapsed_seconds: f64,
    /// `records / elapsed_seconds`.
    pub records_per_second: f64,
    /// `bytes / elapsed_seconds`.
    pub bytes_per_second: f64,
    /// `bytes_per_second / 2^20`.
    pub mebibytes_per_second: f64,
    /// Target open-loop rate, when one was set.
    pub target_records_per_second: Option<f64>,
    /// Produce latency: intended send time (or send call without --rate) to acknowledgement.
    pub produce_latency: Option<LatencySummary>,
    /// End-to-end latency: consume time minus intended send time, one clock.
    pub e2e_latency: Option<LatencySummary>,
    /// Consumer poll latency: a poll call to its records (catch-up reads).
    pub poll_latency: Option<LatencySummary>,
}

impl RunResults {
    /// Fills the rates from `records`, `bytes` and `elapsed_seconds`.
    pub fn compute_rates(&mut self) {
        let seconds = self.elapsed_seconds.max(1e-9);
        self.records_per_second = self.records as f64 / seconds;
        self.bytes_per_second = self.bytes as f64 / seconds;
        self.mebibytes_per_second = self.bytes_per_second / (1024.0 * 1024.0);
    }
}

/// One workload run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunReport {
    /// [`RUN_SCHEMA`].
    pub schema: String,
    /// [`SCHEMA_VERSION`].
    pub schema_version: u32,
    /// Version of sluice-perf.
    pub tool_version: String,
    /// When the run ended, milliseconds since the Unix epoch.
    pub created_unix_ms: u64,
    /// Which workload.
    pub workload: WorkloadKind,
    /// Every parameter of the run.
    pub parameters: WorkloadArgs,
    /// The machine.
    pub machine: MachineInfo,
    /// The source.
    pub git: GitInfo,
    /// The figures.
    pub results: RunResults,
    /// CPU and memory of the server processes over the measured run.
    pub server_processes: Vec<ProcessUsage>,
    /// Where the whole machine's CPU time went over the run (absent in older reports, or
    /// without /proc/stat).
    #[serde(default)]
    pub machine_cpu: Option<MachineCpu>,
}

impl RunReport {
    /// A report stamped now with this machine and commit.
    pub fn new(
        workload: WorkloadKind,
        parameters: WorkloadArgs,
        results: RunResults,
        server_processes: Vec<ProcessUsage>,
        machine_cpu: Option<MachineCpu>,
    ) -> RunReport {
        RunReport {
            schema: RUN_SCHEMA.into(),
            schema_version: SCHEMA_VERSION,
            tool_version: env!("CARGO_PKG_VERSION").into(),
            created_unix_ms: unix_ms_now(),
            workload,
            parameters,
            machine: MachineInfo::probe(),
            git: GitInfo::probe(),
            results,
            server_processes,
            machine_cpu,
        }
    }

    /// Parses a report, checking its schema and version.
    pub fn from_json(text: &str) -> Result<RunReport, PerfError> {
        let report: RunReport = serde_json::from_str(text)
            .map_err(|error| PerfError::parse("run report", error.to_string()))?;
        check_schema(&report.schema, report.schema_version, RUN_SCHEMA)?;
        Ok(report)
    }
}

/// A measured limit, or why it could not be measured.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Measured<T> {
    /// The measurement.
    Ok(T),
    /// It could not run (tool missing, failed, skipped).
    Failed(String),
}

impl<T> Measured<T> {
    /// The measurement, if any.
    pub fn value(&self) -> Option<&T> {
        match self {
            Measured::Ok(value) => Some(value),
            Measured::Failed(_) => None,
        }
    }
}

impl<T> From<Result<T, PerfError>> for Measured<T> {
    fn from(result: Result<T, PerfError>) -> Self {
        match result {
            Ok(value) => Measured::Ok(value),
            Err(error) => Measured::Failed(error.to_string()),
        }
    }
}

fn not_in_this_report() -> Measured<FioResult> {
    Measured::Failed("not measured by the version that wrote this report".into())
}

/// The machine's limits.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Limits {
    /// fio 64 KiB sequential direct writes.
    pub fio_direct_write: Measured<FioResult>,
    /// fio 64 KiB sequential direct writes, fdatasync after each.
    pub fio_direct_write_fdatasync: Measured<FioResult>,
    /// fio 1 MiB sequential direct writes, 4 in flight, fdatasync after every 4 (absent from
    /// older reports).
    #[serde(default = "not_in_this_report")]
    pub fio_grouped_durable_write: Measured<FioResult>,
    /// fio 64 KiB sequential direct reads, 16 in flight (absent from older reports).
    #[serde(default = "not_in_this_report")]
    pub fio_direct_read: Measured<FioResult>,
    /// iperf3 single-stream loopback.
    pub iperf3_loopback: Measured<IperfResult>,
}

/// One named run of the suite.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SuiteRun {
    /// e.g. `produce-1-partition`.
    pub name: String,
    /// The run, or why it failed.
    pub report: Measured<RunReport>,
}

/// A Sluice figure beside the limit it is read against.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Comparison {
    /// What Sluice did, e.g. `produce 1 partition, acks all`.
    pub figure: String,
    /// The figure's value.
    pub value: f64,
    /// Unit of `value` and `limit_value`.
    pub unit: String,
    /// The limit, e.g. `iperf3 loopback`.
    pub limit: String,
    /// The limit's value.
    pub limit_value: f64,
    /// `value / limit_value` (for latencies: `limit_value / value`, so above 1 meets the target).
    pub ratio: f64,
}

/// `sluice-perf suite`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SuiteReport {
    /// [`SUITE_SCHEMA`].
    pub schema: String,
    /// [`SCHEMA_VERSION`].
    pub schema_version: u32,
    /// Version of sluice-perf.
    pub tool_version: String,
    /// When the suite ended, milliseconds since the Unix epoch.
    pub created_unix_ms: u64,
    /// The suite's parameters.
    pub parameters: SuiteArgs,
    /// The machine.
    pub machine: MachineInfo,
    /// The source.
    pub git: GitInfo,
    /// The machine's limits.
    pub limits: Limits,
    /// The Sluice runs.
    pub runs: Vec<SuiteRun>,
    /// Every Sluice figure beside its limit.
    pub comparisons: Vec<Comparison>,
}

impl SuiteReport {
    /// Parses a suite report, checking its schema and version.
    pub fn from_json(text: &str) -> Result<SuiteReport, PerfError> {
        let report: SuiteReport = serde_json::from_str(text)
            .map_err(|error| PerfError::parse("suite report", error.to_string()))?;
        check_schema(&report.schema, report.schema_version, SUITE_SCHEMA)?;
        Ok(report)
    }
}

fn check_schema(schema: &str, version: u32, expected: &str) -> Result<(), PerfError> {
    if schema != expected || version != SCHEMA_VERSION {
        return Err(PerfError::parse(
            "report",
            format!("schema {schema} v{version}, expected {expected} v{SCHEMA_VERSION}"),
        ));
    }
    Ok(())
}

/// Writes `value` as pretty JSON to `path` (through a temporary file and a rename).
pub fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<(), PerfError> {
    let text = serde_json::to_string_pretty(value)
        .map_err(|error| PerfError::parse("report", error.to_string()))?;
    if let Some(parent) = path.parent().filter(|parent| !parent.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .map_err(|error| PerfError::io(format!("create {}", parent.display()), error))?;
    }
    let temporary = path.with_extension("json.tmp");
    std::fs::write(&temporary, text + "\n")
        .map_err(|error| PerfError::io(format!("write {}", temporary.display()), error))?;
    std::fs::rename(&temporary, path)
        .map_err(|error| PerfError::io(format!("rename to {}", path.display()), error))
}

/// Milliseconds since the Unix epoch.
pub fn unix_ms_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_millis() as u64)
        .unwrap_or(0)
}

/// `YYYY-MM-DD` (UTC) of a Unix time in milliseconds.
pub fn utc_date(unix_ms: u64) -> String {
    // Civil-from-days (Howard Hinnant's algorithm), proleptic Gregorian calendar.
    let days = (unix_ms / 86_400_000) as i64 + 719_468;
    let era = days.div_euclid(146_097);
    let day_of_era = days.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 { month_index + 3 } else { month_index - 9 };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}")
}

/// `suite-<date>T<hhmm>Z-<commit>[-dirty].json`: the file name of a suite report.
pub fn suite_file_name(created_unix_ms: u64, git: &GitInfo) -> String {
    let dirty = if git.dirty { "-dirty" } else { "" };
    let minutes_of_day = (created_unix_ms / 60_000) % (24 * 60);
    format!(
        "suite-{}T{:02}{:02}Z-{}{dirty}.json",
        utc_date(created_unix_ms),
        minutes_of_day / 60,
        minutes_of_day % 60,
        git.short_commit()
    )
}
