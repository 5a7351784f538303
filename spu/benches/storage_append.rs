//! Storage append/read benchmark against fio on the same filesystem.
//!
//! `cargo bench -p sluice-spu --bench storage_append` appends 1 KiB records in 16 KiB and 64 KiB
//! batches to a fresh replica log, acknowledging each batch when *written* and, separately, when
//! *durable* (fdatasync per acknowledgement), reads the log back, and runs fio sequential
//! O_DIRECT writes of the same block size (`--fdatasync=1` for the durable case) in the same
//! directory. Prints MB/s for both and the ratio, plus "raw glommio": the bare runtime write
//! path (one aligned DMA write of the block per ack, no log), which separates the engine's cost
//! from the runtime's. The log, fio and the raw path take turns in slices (the machine's load
//! varies: taking turns makes it hit all three alike; the ratio is the figure that matters);
//! every fio and raw slice writes a fresh preallocated file, as the log appends into fresh
//! preallocated segment space.
//!
//! Environment: `SLUICE_BENCH_DIR` (default: a fresh directory under the system temp dir),
//! `SLUICE_BENCH_SECONDS` (measured seconds per contender and case, default 4; one more
//! second warms the log up), `SLUICE_BENCH_ROUNDS` (slices the seconds are cut into, default 4),
//! `SLUICE_BENCH_CASES` (only the cases whose name contains it, e.g. `64K durable`),
//! `SLUICE_BENCH_SKIP` (`fio`, `raw` or `fio,raw`: leave those comparisons out).
//!
//! Disk use is bounded: every file a case creates stays under [`CASE_BYTES_MAX`] (fio and the
//! raw case wrap around inside a file of that size; the log uses retention to stay under it),
//! each case deletes its files when it ends, also on panic (a drop guard), and the bench refuses
//! to start unless the volume has [`FREE_BYTES_REQUIRED`] free.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use sluice_proto::ids::{LeaderEpoch, TimestampMs};
use sluice_spu::storage::runtime::run_local;
use sluice_spu::storage::test_support::make_batch;
use sluice_spu::storage::{LogConfig, ReplicaLog, SegmentFileCache};

const RECORD_BYTES: usize = 1024;
/// Most bytes one case keeps on disk at a time (cases run one after another).
const CASE_BYTES_MAX: u64 = 2 << 30;
/// Segment size of the benchmarked log: rolls happen during the run, as in production.
const SEGMENT_BYTES: u64 = 512 << 20;
/// Retained log bytes: sealed segments beyond this are deleted while appending, so the log
/// (retained + active + the one being sealed) stays within [`CASE_BYTES_MAX`].
const RETENTION_BYTES: u64 = CASE_BYTES_MAX - 2 * SEGMENT_BYTES;
/// Free space the bench insists on: one case's files plus headroom left for everyone else.
const FREE_BYTES_REQUIRED: u64 = CASE_BYTES_MAX + (4 << 30);

/// Removes a file or directory tree when dropped, so a panicking case leaves nothing behind.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        if self.0.is_dir() {
            let _ = std::fs::remove_dir_all(&self.0);
        } else {
            let _ = std::fs::remove_file(&self.0);
        }
    }
}

/// Exits with a clear message unless `directory`'s volume has enough free space.
fn check_free_space(directory: &Path) {
    let space = sluice_spu::storage::disk_guard::volume_space(directory)
        .unwrap_or_else(|error| panic!("cannot stat {}: {error}", directory.display()));
    if space.free_bytes < FREE_BYTES_REQUIRED {
        eprintln!(
            "refusing to run: {} has {} MiB free, the bench needs {} MiB (set SLUICE_BENCH_DIR \
             to a roomier volume)",
            directory.display(),
            space.free_bytes >> 20,
            FREE_BYTES_REQUIRED >> 20
        );
        std::process::exit(2);
    }
}
/// Per-record overhead of the v2 format for a 1 KiB value without key or headers.
const RECORD_OVERHEAD_BYTES: usize = 10;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Ack {
    Written,
    Durable,
}

#[derive(Default)]
struct Measured {
    bytes: u64,
    elapsed: Duration,
}

impl Measured {
    fn add(&mut self, other: Measured) {
        self.bytes += other.bytes;
        self.elapsed += other.elapsed;
    }

    fn megabytes_per_second(&self) -> f64 {
        self.bytes as f64 / self.elapsed.as_secs_f64() / 1e6
    }
}

/// A batch of 1 KiB records whose total size is close to (not over) `batch_bytes`.
fn batch_of(batch_bytes: usize) -> Vec<u8> {
    let records = (batch_bytes - 61) / (RECORD_BYTES + RECORD_OVERHEAD_BYTES);
    make_batch(records, RECORD_BYTES, TimestampMs(1), 0x5a)
}

async fn append_for(log: &ReplicaLog, batch: &mut [u8], ack: Ack, duration: Duration) -> Measured {
    let start = Instant::now();
    let mut bytes = 0u64;
    let mut segments = log.segment_count();
    while start.elapsed() < duration {
        if log.segment_count() != segments {
            log.apply_retention().expect("retention");
            segments = log.segment_count();
        }
        let appended = log.append(batch, LeaderEpoch(1)).await.expect("append");
        match ack {
            Ack::Written => log.wait_written(&appended).await.expect("written"),
            Ack::Durable => log.wait_durable(&appended).await.expect("durable"),
        }
        bytes += batch.len() as u64;
    }
    Measured { bytes, elapsed: start.elapsed() }
}

/// One case: the log, fio and the raw runtime path take turns in `rounds` slices of
/// `slice`, so that the machine's varying load hits all three alike (the ratio is what
/// matters). Every slice of fio and of the raw path writes a fresh file, as the log appends
/// into fresh space. Returns (log appends, log read-back, fio, raw).
fn run_case(
    directory: &Path,
    batch_bytes: usize,
    ack: Ack,
    slice: Duration,
    rounds: u32,
    skip: &str,
) -> (Measured, Measured, Option<Measured>, Option<Measured>) {
    let directory = directory.to_path_buf();
    let (with_fio, with_raw) = (!skip.contains("fio"), !skip.contains("raw"));
    let log_directory = directory.join("log");
    let _scratch = Scratch(log_directory.clone());
    run_local("bench", 32 << 20, move || async move {
        let _ = std::fs::remove_dir_all(&log_directory);
        let config = LogConfig {
            free_bytes_min: 0,
            free_space_ratio_min: 0.0,
            segment_bytes_max: SEGMENT_BYTES,
            retention_bytes: Some(RETENTION_BYTES),
            ..LogConfig::default()
        };
        let log = ReplicaLog::open(&log_directory, config, SegmentFileCache::default())
            .await
            .expect("open");
        let mut batch = batch_of(batch_bytes);
        append_for(&log, &mut batch, ack, Duration::from_secs(1)).await; // warm-up
        let fio_block_bytes = batch.len().next_multiple_of(4096).min(batch_bytes);
        let mut appended = Measured::default();
        let mut fio = with_fio.then(Measured::default);
        let mut raw = with_raw.then(Measured::default);
        for _ in 0..rounds {
            appended.add(append_for(&log, &mut batch, ack, slice).await);
            if let Some(total) = fio.as_mut() {
                match fio_slice(&directory, fio_block_bytes, ack, slice) {
                    Some(measured) => total.add(measured),
                    None => fio = None,
                }
            }
            if let Some(total) = raw.as_mut() {
                total.add(raw_runtime_slice(&directory, batch_bytes, ack, slice).await);
            }
        }
        log.sync().await.expect("sync");
        assert!(log.size_bytes() <= CASE_BYTES_MAX, "retention must bound the log");
        let read = read_back(&log);
        log.close().await.expect("close");
        (appended, read, fio, raw)
    })
    .expect("glommio executor (ulimit -l)")
}

fn read_back(log: &ReplicaLog) -> Measured {
    let mut buffer = Vec::with_capacity(2 << 20);
    let end = log.log_end_offset();
    let mut cursor = log.log_start_offset();
    let start = Instant::now();
    let mut bytes = 0;
    while cursor < end {
        buffer.clear();
        let copied = log.read_into(cursor, 1 << 20, end, &mut buffer).expect("read");
        bytes += copied.bytes;
        cursor = copied.next_offset;
    }
    Measured { bytes, elapsed: start.elapsed() }
}

/// fio writing a fresh file for `slice` (blocks the executor; nothing else runs on it).
fn fio_slice(directory: &Path, block_bytes: usize, ack: Ack, slice: Duration) -> Option<Measured> {
    let file = directory.join("fio.dat");
    let _scratch = Scratch(file.clone());
    let mut command = Command::new("fio");
    command.args([
        "--name=seqwrite",
        "--rw=write",
        "--direct=1",
        "--ioengine=psync",
        "--iodepth=1",
        // time_based wraps around inside the file: it never grows past this.
        "--size=2G",
        "--time_based",
        "--output-format=json",
    ]);
    command.arg(format!("--bs={block_bytes}"));
    command.arg(format!("--runtime={}ms", slice.as_millis()));
    command.arg(format!("--filename={}", file.display()));
    if ack == Ack::Durable {
        command.arg("--fdatasync=1");
    }
    let output = match command.output() {
        Ok(output) => output,
        Err(error) => {
            eprintln!("fio not runnable ({error}); apt-get install -y fio");
            return None;
        }
    };
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).ok()?;
    let write = &report["jobs"][0]["write"];
    let bytes = write["io_bytes"].as_u64()?;
    let elapsed = Duration::from_millis(write["runtime"].as_u64()?);
    Some(Measured { bytes, elapsed })
}

/// Diagnostic: the bare runtime write path (one aligned glommio DMA write per block, optional
/// fdatasync) without the log, to separate runtime cost from engine cost.
async fn raw_runtime_slice(
    directory: &Path,
    block_bytes: usize,
    ack: Ack,
    slice: Duration,
) -> Measured {
    use sluice_spu::storage::runtime::DirectFile;
    let path = directory.join("raw.dat");
    let _scratch = Scratch(path.clone());
    let file = DirectFile::open_or_create(&path).await.unwrap();
    file.preallocate(CASE_BYTES_MAX).await.unwrap();
    let start = Instant::now();
    let mut bytes = 0u64;
    while start.elapsed() < slice {
        let mut buffer = file.alloc_buffer(block_bytes);
        buffer.as_mut_slice().fill(0x5a);
        // Wraps around inside the preallocated file.
        let position = bytes % (CASE_BYTES_MAX - block_bytes as u64);
        file.write_at(buffer, position - position % block_bytes as u64).await.unwrap();
        if ack == Ack::Durable {
            file.sync_data().await.unwrap();
        }
        bytes += block_bytes as u64;
    }
    let elapsed = start.elapsed();
    file.close().await.unwrap();
    Measured { bytes, elapsed }
}

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|value| value.parse().ok()).unwrap_or(default)
}

fn main() {
    if !std::env::args().any(|arg| arg == "--bench") {
        // `cargo test --benches`/`--all-targets` runs this without --bench: stay quick.
        println!("storage_append: run with `cargo bench -p sluice-spu --bench storage_append`");
        return;
    }
    let seconds = env_number("SLUICE_BENCH_SECONDS", 4).max(1);
    let rounds = env_number("SLUICE_BENCH_ROUNDS", 4).clamp(1, 1000) as u32;
    let slice = Duration::from_secs(seconds) / rounds;
    let base: PathBuf = std::env::var("SLUICE_BENCH_DIR").map(PathBuf::from).unwrap_or_else(|_| {
        std::env::temp_dir().join(format!("sluice-bench-{}", std::process::id()))
    });
    std::fs::create_dir_all(&base).expect("create the bench directory");
    let _scratch = Scratch(base.clone());
    check_free_space(&base);
    println!(
        "storage bench in {}: {seconds} s per contender and case after 1 s warm-up, taking turns \
         in {rounds} slices",
        base.display()
    );
    println!(
        "{:>7} {:>8} | {:>12} {:>10} {:>6} | {:>16} | {:>10} | {:>7}",
        "batch",
        "ack",
        "sluice MB/s",
        "fio MB/s",
        "ratio",
        "raw glommio MB/s",
        "read MB/s",
        "batches"
    );
    let only = std::env::var("SLUICE_BENCH_CASES").unwrap_or_default();
    let skip = std::env::var("SLUICE_BENCH_SKIP").unwrap_or_default();
    for batch_bytes in [16 * 1024, 64 * 1024] {
        for ack in [Ack::Written, Ack::Durable] {
            let ack_name = if ack == Ack::Durable { "durable" } else { "written" };
            if !format!("{}K {ack_name}", batch_bytes / 1024).contains(only.as_str()) {
                continue;
            }
            let (append, read, fio, raw) = run_case(&base, batch_bytes, ack, slice, rounds, &skip);
            let sluice = append.megabytes_per_second();
            let fio = fio.map(|fio| fio.megabytes_per_second());
            let na = || "n/a".to_string();
            println!(
                "{:>6}K {:>8} | {:>12.1} {:>10} {:>6} | {:>16} | {:>10.1} | {:>7}",
                batch_bytes / 1024,
                ack_name,
                sluice,
                fio.map_or_else(na, |fio| format!("{fio:.1}")),
                fio.map_or_else(na, |fio| format!("{:.2}", sluice / fio)),
                raw.map_or_else(na, |raw| format!("{:.1}", raw.megabytes_per_second())),
                read.megabytes_per_second(),
                append.bytes / batch_of(batch_bytes).len() as u64,
            );
        }
    }
}
