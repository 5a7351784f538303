//! Storage append/read benchmark against fio on the same filesystem.
//!
//! `cargo bench -p sluice-spu --bench storage_append` appends 1 KiB records in 16 KiB and 64 KiB
//! batches to a fresh replica log, acknowledging each batch when *written* and, separately, when
//! *durable* (fdatasync per acknowledgement), reads the log back, and runs fio sequential
//! O_DIRECT writes of the same block size (`--fdatasync=1` for the durable case) in the same
//! directory. Prints MB/s for both and the ratio, plus "raw glommio": the bare runtime write
//! path (one aligned DMA write of the block per ack, no log), which separates the engine's cost
//! from the runtime's.
//!
//! Environment: `SLUICE_BENCH_DIR` (default: a fresh directory under the system temp dir),
//! `SLUICE_BENCH_SECONDS` (measured seconds per case, default 4; one more second warms up).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use sluice_proto::ids::{LeaderEpoch, TimestampMs};
use sluice_spu::storage::runtime::run_local;
use sluice_spu::storage::test_support::make_batch;
use sluice_spu::storage::{LogConfig, ReplicaLog, SegmentFileCache};

const RECORD_BYTES: usize = 1024;
/// Per-record overhead of the v2 format for a 1 KiB value without key or headers.
const RECORD_OVERHEAD_BYTES: usize = 10;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Ack {
    Written,
    Durable,
}

struct Measured {
    bytes: u64,
    elapsed: Duration,
}

impl Measured {
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
    while start.elapsed() < duration {
        let appended = log.append(batch, LeaderEpoch(1)).await.expect("append");
        match ack {
            Ack::Written => log.wait_written(&appended).await.expect("written"),
            Ack::Durable => log.wait_durable(&appended).await.expect("durable"),
        }
        bytes += batch.len() as u64;
    }
    Measured { bytes, elapsed: start.elapsed() }
}

fn sluice_case(
    directory: &Path,
    batch_bytes: usize,
    ack: Ack,
    seconds: u64,
) -> (Measured, Measured) {
    let directory = directory.to_path_buf();
    run_local("bench", 32 << 20, move || async move {
        let _ = std::fs::remove_dir_all(&directory);
        let config =
            LogConfig { free_bytes_min: 0, free_space_ratio_min: 0.0, ..LogConfig::default() };
        let log =
            ReplicaLog::open(&directory, config, SegmentFileCache::default()).await.expect("open");
        let mut batch = batch_of(batch_bytes);
        append_for(&log, &mut batch, ack, Duration::from_secs(1)).await; // warm-up
        let appended = append_for(&log, &mut batch, ack, Duration::from_secs(seconds)).await;
        log.sync().await.expect("sync");
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
        let read = Measured { bytes, elapsed: start.elapsed() };
        log.close().await.expect("close");
        drop(log);
        let _ = std::fs::remove_dir_all(&directory);
        (appended, read)
    })
    .expect("glommio executor (ulimit -l)")
}

fn fio_case(directory: &Path, block_bytes: usize, ack: Ack, seconds: u64) -> Option<f64> {
    std::fs::create_dir_all(directory).ok()?;
    let file = directory.join("fio.dat");
    let mut command = Command::new("fio");
    command.args([
        "--name=seqwrite",
        "--rw=write",
        "--direct=1",
        "--ioengine=psync",
        "--iodepth=1",
        "--size=4G",
        "--time_based",
        "--ramp_time=1",
        "--output-format=json",
    ]);
    command.arg(format!("--bs={block_bytes}"));
    command.arg(format!("--runtime={seconds}"));
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
    let _ = std::fs::remove_file(&file);
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).ok()?;
    let bytes_per_second = report["jobs"][0]["write"]["bw_bytes"].as_f64()?;
    Some(bytes_per_second / 1e6)
}

/// Diagnostic: the bare runtime write path (one aligned glommio DMA write per block, optional
/// fdatasync) without the log, to separate runtime cost from engine cost.
fn raw_runtime_case(directory: &Path, block_bytes: usize, ack: Ack, seconds: u64) -> Measured {
    use sluice_spu::storage::runtime::DirectFile;
    let path = directory.join("raw.dat");
    std::fs::create_dir_all(directory).unwrap();
    run_local("raw", 32 << 20, move || async move {
        let file = DirectFile::open_or_create(&path).await.unwrap();
        file.preallocate(4 << 30).await.unwrap();
        let start = Instant::now();
        let mut position = 0u64;
        while start.elapsed() < Duration::from_secs(seconds) {
            let mut buffer = file.alloc_buffer(block_bytes);
            buffer.as_mut_slice().fill(0x5a);
            file.write_at(buffer, position).await.unwrap();
            if ack == Ack::Durable {
                file.sync_data().await.unwrap();
            }
            position += block_bytes as u64;
        }
        let elapsed = start.elapsed();
        let _ = std::fs::remove_file(&path);
        Measured { bytes: position, elapsed }
    })
    .unwrap()
}

fn main() {
    if std::env::args().any(|arg| arg == "--list") {
        return; // `cargo test --benches` probes with --list
    }
    let seconds: u64 =
        std::env::var("SLUICE_BENCH_SECONDS").ok().and_then(|v| v.parse().ok()).unwrap_or(4);
    let base: PathBuf = std::env::var("SLUICE_BENCH_DIR").map(PathBuf::from).unwrap_or_else(|_| {
        std::env::temp_dir().join(format!("sluice-bench-{}", std::process::id()))
    });
    println!("storage bench in {} ({seconds} s per case after 1 s warm-up)", base.display());
    println!(
        "{:>7} {:>8} | {:>12} {:>10} {:>6} | {:>14} | {:>10} | {:>7}",
        "batch",
        "ack",
        "sluice MB/s",
        "fio MB/s",
        "ratio",
        "raw glommio MB/s",
        "read MB/s",
        "batches"
    );
    for batch_bytes in [16 * 1024, 64 * 1024] {
        for ack in [Ack::Written, Ack::Durable] {
            let (append, read) = sluice_case(&base.join("log"), batch_bytes, ack, seconds);
            let actual_batch = batch_of(batch_bytes).len();
            let fio =
                fio_case(&base, actual_batch.next_multiple_of(4096).min(batch_bytes), ack, seconds);
            let raw = raw_runtime_case(&base, batch_bytes, ack, seconds);
            let sluice = append.megabytes_per_second();
            let ratio = fio.map_or("n/a".to_string(), |fio| format!("{:.2}", sluice / fio));
            println!(
                "{:>6}K {:>8} | {:>12.1} {:>10} {:>6} | {:>16.1} | {:>10.1} | {:>7}",
                batch_bytes / 1024,
                if ack == Ack::Durable { "durable" } else { "written" },
                sluice,
                fio.map_or("n/a".to_string(), |fio| format!("{fio:.1}")),
                ratio,
                raw.megabytes_per_second(),
                read.megabytes_per_second(),
                append.bytes / actual_batch as u64,
            );
        }
    }
    let _ = std::fs::remove_dir_all(&base);
}
