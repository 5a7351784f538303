//! `fio` sequential direct I/O on a directory's filesystem: one job, `--direct=1`, fixed block
//! size, time based inside a bounded file (it wraps around and never grows past `file_bytes`).
//! Writes: `psync` engine, queue depth 1, optionally `--fdatasync=1` (a durable write per
//! block, the cost of acknowledging only what is on disk). *Grouped durable writes*: 1 MiB
//! blocks, 4 in flight (`libaio`), an fdatasync after every 4, into a file large enough that
//! the run does not wrap around (its blocks start unwritten, as a new log segment's do): the
//! device's bandwidth for durable sequential writes with group commit, what an SPU writing a
//! partition's rounds of several MiB and syncing each is bound by. Reads: `libaio`, queue
//! depth 16 (the device's sequential read bandwidth, what a consumer catching up on a log
//! larger than memory is bound by; fio lays the file out first). The scratch file is removed
//! afterwards.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::PerfError;

/// One fio run.
#[derive(Clone, Debug)]
pub struct FioConfig {
    /// Directory on the filesystem to measure (the data directory).
    pub directory: PathBuf,
    /// Bytes per write.
    pub block_bytes: u64,
    /// How long to write.
    pub runtime: Duration,
    /// Size of the scratch file (fio wraps around inside it).
    pub file_bytes: u64,
    /// `--fdatasync=N`: an fdatasync after every N writes; 0: none.
    pub fdatasync_every: u32,
    /// I/Os in flight: 1 runs the `psync` engine, more `libaio`.
    pub queue_depth: u32,
    /// Sequential reads instead of writes.
    pub read: bool,
}

/// Reads in flight for [`FioConfig::sequential_64k_reads`].
pub const READ_QUEUE_DEPTH: u32 = 16;
/// Writes in flight, and writes per fdatasync, for [`FioConfig::grouped_durable_writes`].
pub const GROUPED_WRITES: u32 = 4;

impl FioConfig {
    /// 64 KiB sequential direct writes for `runtime` in `directory`, in a 1 GiB file.
    pub fn sequential_64k(directory: &Path, runtime: Duration, fdatasync: bool) -> FioConfig {
        FioConfig {
            directory: directory.to_owned(),
            block_bytes: 64 * 1024,
            runtime,
            file_bytes: 1 << 30,
            fdatasync_every: u32::from(fdatasync),
            queue_depth: 1,
            read: false,
        }
    }

    /// 64 KiB sequential direct reads for `runtime` in `directory`, of a 1 GiB file,
    /// [`READ_QUEUE_DEPTH`] in flight.
    pub fn sequential_64k_reads(directory: &Path, runtime: Duration) -> FioConfig {
        FioConfig {
            read: true,
            queue_depth: READ_QUEUE_DEPTH,
            ..FioConfig::sequential_64k(directory, runtime, false)
        }
    }

    /// 1 MiB sequential direct writes, [`GROUPED_WRITES`] in flight and an fdatasync after
    /// every [`GROUPED_WRITES`], for `runtime` in `directory`, in a file of 3 GiB per second
    /// of runtime (at least 1 GiB; preallocated, so it costs no time), so that the writes do
    /// not wrap around onto written blocks. [`run`] keeps it within a quarter of the free
    /// space.
    pub fn grouped_durable_writes(directory: &Path, runtime: Duration) -> FioConfig {
        let per_second = 3u64 << 30;
        FioConfig {
            block_bytes: 1 << 20,
            file_bytes: ((runtime.as_secs_f64() * per_second as f64) as u64).max(1 << 30),
            fdatasync_every: GROUPED_WRITES,
            queue_depth: GROUPED_WRITES,
            ..FioConfig::sequential_64k(directory, runtime, false)
        }
    }
}

/// What fio measured.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct FioResult {
    /// fio's version string.
    pub fio_version: String,
    /// Bytes written (or read).
    pub bytes: u64,
    /// Time fio spent writing (or reading), milliseconds.
    pub runtime_ms: u64,
    /// `bytes / runtime`.
    pub bytes_per_second: f64,
    /// Writes (or reads) per second.
    pub iops: f64,
    /// 99th percentile completion latency of a write (or read), microseconds (0 when fio left
    /// it out).
    pub write_latency_p99_us: f64,
    /// 99th percentile fdatasync latency, microseconds (0 without `--fdatasync`).
    pub sync_latency_p99_us: f64,
}

/// Runs fio as configured and parses its JSON output.
pub fn run(config: &FioConfig) -> Result<FioResult, PerfError> {
    // fio would create a missing directory itself; measuring the wrong filesystem is worse.
    if !config.directory.is_dir() {
        return Err(PerfError::tool(
            "fio",
            format!("{} is not a directory", config.directory.display()),
        ));
    }
    let file = config.directory.join(format!("sluice-perf-fio-{}.dat", std::process::id()));
    let _scratch = ScratchFile(file.clone());
    let mut command = Command::new("fio");
    command.args(["--direct=1", "--time_based", "--output-format=json"]);
    command.args(if config.read {
        ["--name=seqread", "--rw=read"]
    } else {
        ["--name=seqwrite", "--rw=write"]
    });
    let queue_depth = config.queue_depth.max(1);
    command.arg(if queue_depth == 1 { "--ioengine=psync" } else { "--ioengine=libaio" });
    command.arg(format!("--iodepth={queue_depth}"));
    command.arg(format!("--bs={}", config.block_bytes));
    let free_quarter = free_bytes(&config.directory).map_or(u64::MAX, |free| free / 4);
    let file_bytes = config.file_bytes.min(free_quarter).max(config.block_bytes);
    command.arg(format!("--size={file_bytes}"));
    command.arg(format!("--runtime={}ms", config.runtime.as_millis().max(1)));
    command.arg(format!("--filename={}", file.display()));
    if config.fdatasync_every > 0 && !config.read {
        command.arg(format!("--fdatasync={}", config.fdatasync_every));
    }
    let output = command.output().map_err(|error| {
        PerfError::tool(
            "fio",
            format!("cannot run fio ({error}); install it with deploy/dev/setup"),
        )
    })?;
    if !output.status.success() {
        return Err(PerfError::tool(
            "fio",
            format!("{}: {}", output.status, String::from_utf8_lossy(&output.stderr).trim()),
        ));
    }
    parse(&String::from_utf8_lossy(&output.stdout))
}

/// Bytes available to unprivileged writers on `directory`'s filesystem.
fn free_bytes(directory: &Path) -> Option<u64> {
    let stats = rustix::fs::statvfs(directory).ok()?;
    Some(stats.f_bavail.saturating_mul(stats.f_frsize))
}

/// Parses fio's `--output-format=json` text (the first job's writes, or its reads when it
/// wrote nothing). fio may print notices before the JSON object; they are skipped.
pub fn parse(text: &str) -> Result<FioResult, PerfError> {
    let bad = |message: String| PerfError::parse("fio JSON output", message);
    let start = text.find('{').ok_or_else(|| bad("no JSON object".into()))?;
    let report: serde_json::Value =
        serde_json::from_str(&text[start..]).map_err(|error| bad(error.to_string()))?;
    let job = &report["jobs"][0];
    if let Some(error) = job["error"].as_i64().filter(|&error| error != 0) {
        return Err(bad(format!("the job failed with error {error}")));
    }
    let moved = |direction: &str| job[direction]["io_bytes"].as_u64().is_some_and(|b| b > 0);
    let direction = if moved("read") && !moved("write") { "read" } else { "write" };
    let write = &job[direction];
    let bytes = write["io_bytes"]
        .as_u64()
        .ok_or_else(|| bad(format!("no jobs[0].{direction}.io_bytes")))?;
    let runtime_ms =
        write["runtime"].as_u64().ok_or_else(|| bad(format!("no jobs[0].{direction}.runtime")))?;
    if runtime_ms == 0 || bytes == 0 {
        return Err(bad(format!("nothing measured: {bytes} bytes in {runtime_ms} ms")));
    }
    let percentile_us = |latency: &serde_json::Value| {
        latency["percentile"]["99.000000"].as_f64().map(|nanos| nanos / 1e3).unwrap_or(0.0)
    };
    Ok(FioResult {
        fio_version: report["fio version"].as_str().unwrap_or("unknown").to_owned(),
        bytes,
        runtime_ms,
        bytes_per_second: bytes as f64 * 1000.0 / runtime_ms as f64,
        iops: write["iops"].as_f64().unwrap_or(0.0),
        write_latency_p99_us: percentile_us(&write["clat_ns"]),
        sync_latency_p99_us: percentile_us(&job["sync"]["lat_ns"]),
    })
}

/// Removes a file when dropped.
struct ScratchFile(PathBuf);

impl Drop for ScratchFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}
