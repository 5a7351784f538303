//! Server CPU per GB of fetch responses: zero-copy (`sendfile`) against copying, in one run.
//!
//! `cargo bench -p sluice-spu --bench fetch_zero_copy` writes a replica log of
//! `SLUICE_BENCH_LOG_MIB` (default 1024) MiB through `ReplicaLog`, then serves the whole log to
//! a reader in a separate process (this binary re-executed, so the reader's CPU is not the
//! server's) over a loopback TCP connection, as a consumer would see it: fetch responses of at
//! most `fetch bytes` each, built with `FetchResponseWriter` and sent with `send_plan`. Modes
//! take turns (`SLUICE_BENCH_ROUNDS`, default 3, per mode and case) so that machine load hits
//! both alike. The server's CPU is `getrusage(RUSAGE_SELF)` user + system around each round
//! (one glommio executor thread; loopback delivery work done in the sender's context counts
//! too, for both modes alike). The log is in the page cache for every round (the first round
//! of each case is a discarded warm-up), so the figure is the send path's cost, not the disk's.
//!
//! Prints, per case and mode: GB sent, GB/s, server CPU seconds per GB, reader CPU seconds per
//! GB, and the ratio copy / zero-copy of server CPU per GB.
//!
//! Environment: `SLUICE_BENCH_DIR` (default: the system temp dir), `SLUICE_BENCH_LOG_MIB`,
//! `SLUICE_BENCH_ROUNDS`, `SLUICE_BENCH_FETCH_KIB` (comma list, default `1024,64`).

use std::io::Read;
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Instant;

use futures_lite::AsyncWriteExt;
use glommio::net::TcpListener;
use sluice_proto::api::fetch::FetchPartitionHeader;
use sluice_proto::api::splice::FetchResponseWriter;
use sluice_proto::api::{ApiKey, ApiVersion};
use sluice_proto::error_code::ErrorCode;
use sluice_proto::frame::FrameHeader;
use sluice_proto::ids::{CorrelationId, LeaderEpoch, Offset, PartitionId, TimestampMs};
use sluice_proto::object::TopicName;
use sluice_spu::server::zero_copy::{send_plan, SendMode, SendStats};
use sluice_spu::storage::runtime::run_local;
use sluice_spu::storage::test_support::make_batch;
use sluice_spu::storage::{FileSlice, LogConfig, ReplicaLog, SegmentFileCache};

/// Env var that turns this binary into the reader child: the address to read from.
const READER_ENV: &str = "SLUICE_BENCH_FETCH_READER";
/// Records per appended batch and bytes per record: 64 KiB batches.
const BATCH_RECORDS: usize = 64;
const RECORD_BYTES: usize = 1024;
/// Locked memory is often limited to 8 MiB; the bench needs little registered memory.
const IO_MEMORY_BYTES: usize = 2 << 20;

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|value| value.parse().ok()).unwrap_or(default)
}

/// The reader child: reads until EOF with a 1 MiB buffer, prints the byte count.
fn reader_main(address: &str) {
    let mut stream = TcpStream::connect(address).expect("reader connects");
    let mut buffer = vec![0u8; 1 << 20];
    let mut total: u64 = 0;
    loop {
        match stream.read(&mut buffer) {
            Ok(0) => break,
            Ok(count) => total += count as u64,
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => {}
            Err(error) => panic!("reader: {error}"),
        }
    }
    println!("{total}");
}

/// Kills the reader child if a round panics.
struct ReaderChild(Option<Child>);

impl Drop for ReaderChild {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn spawn_reader(address: SocketAddr) -> ReaderChild {
    let child = Command::new(std::env::current_exe().expect("current exe"))
        .env(READER_ENV, address.to_string())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn reader");
    ReaderChild(Some(child))
}

/// Seconds of user + system CPU for `who` (RUSAGE_SELF or RUSAGE_CHILDREN).
fn cpu_seconds(who: libc::c_int) -> f64 {
    // SAFETY: an all-zero rusage is a valid value; getrusage writes into the struct we own.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    assert_eq!(unsafe { libc::getrusage(who, &mut usage) }, 0, "getrusage");
    let seconds = |time: libc::timeval| time.tv_sec as f64 + time.tv_usec as f64 / 1e6;
    seconds(usage.ru_utime) + seconds(usage.ru_stime)
}

async fn write_log(directory: &Path, log_bytes: u64) -> ReplicaLog {
    let config = LogConfig {
        segment_bytes_max: 256 << 20,
        free_bytes_min: 0,
        free_space_ratio_min: 0.0,
        ..LogConfig::default()
    };
    let log =
        ReplicaLog::open(directory, config, SegmentFileCache::default()).await.expect("open log");
    let template = make_batch(BATCH_RECORDS, RECORD_BYTES, TimestampMs(1_000), 7);
    let mut written = 0;
    while written < log_bytes {
        let mut batch = template.clone();
        log.append(&mut batch, LeaderEpoch(0)).await.expect("append");
        written += batch.len() as u64;
    }
    log.flush().await.expect("flush");
    log
}

/// One round's measurements.
#[derive(Default, Clone, Copy)]
struct Round {
    bytes: u64,
    wall_seconds: f64,
    server_cpu_seconds: f64,
    reader_cpu_seconds: f64,
    writable_waits: u64,
}

/// Serves the whole log to a fresh reader process in responses of at most `fetch_bytes`.
async fn serve_round(log: &ReplicaLog, fetch_bytes: u64, mode: SendMode) -> Round {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let mut reader = spawn_reader(listener.local_addr().expect("address"));
    let mut stream = listener.accept().await.expect("accept");
    stream.set_nodelay(true).expect("nodelay");
    let topic = TopicName::new("bench").expect("topic");
    let frame = FrameHeader {
        api_key: ApiKey::Fetch,
        api_version: ApiVersion(0),
        correlation_id: CorrelationId(1),
    };
    let end = log.log_end_offset();
    let mut buffer = Vec::with_capacity(4096);
    let mut totals = SendStats::default();
    let (cpu_before, children_before, started) =
        (cpu_seconds(libc::RUSAGE_SELF), cpu_seconds(libc::RUSAGE_CHILDREN), Instant::now());
    let mut next = Offset(0);
    while next < end {
        let read = log.read(next, fetch_bytes, end).expect("read");
        next = read.next_offset;
        buffer.clear();
        let mut writer = FetchResponseWriter::begin(&mut buffer, &frame);
        writer.topic(&topic).expect("topic");
        let header = FetchPartitionHeader {
            partition: PartitionId(0),
            error_code: ErrorCode::None,
            high_watermark: end,
            last_stable_offset: end,
            log_end_offset: end,
            log_start_offset: Offset(0),
        };
        writer.partition_to_splice(&header, read.bytes as u32);
        let plan = writer.finish().expect("plan");
        let spliced: [&[FileSlice]; 1] = [&read.slices];
        let stats = send_plan(&mut stream, &buffer, &plan, &spliced, mode).await.expect("send");
        totals.bytes_sent += stats.bytes_sent;
        totals.writable_waits += stats.writable_waits;
    }
    stream.close().await.expect("close");
    drop(stream);
    let cpu_after = cpu_seconds(libc::RUSAGE_SELF);
    let child = reader.0.take().expect("reader child");
    let output = child.wait_with_output().expect("reader exits");
    let wall_seconds = started.elapsed().as_secs_f64();
    assert!(output.status.success(), "reader failed");
    let received: u64 =
        String::from_utf8_lossy(&output.stdout).trim().parse().expect("reader prints a count");
    assert_eq!(received, totals.bytes_sent, "reader got every byte");
    Round {
        bytes: totals.bytes_sent,
        wall_seconds,
        server_cpu_seconds: cpu_after - cpu_before,
        reader_cpu_seconds: cpu_seconds(libc::RUSAGE_CHILDREN) - children_before,
        writable_waits: totals.writable_waits,
    }
}

fn add(total: &mut Round, round: Round) {
    total.bytes += round.bytes;
    total.wall_seconds += round.wall_seconds;
    total.server_cpu_seconds += round.server_cpu_seconds;
    total.reader_cpu_seconds += round.reader_cpu_seconds;
    total.writable_waits += round.writable_waits;
}

fn report(case: &str, mode: SendMode, total: &Round) -> f64 {
    let gigabytes = total.bytes as f64 / 1e9;
    let server_per_gb = total.server_cpu_seconds / gigabytes;
    println!(
        "{case:>14} {:>9}: {gigabytes:7.2} GB {:6.2} GB/s  server CPU {server_per_gb:.3} s/GB  \
         reader CPU {:.3} s/GB  writable waits {}",
        format!("{mode:?}"),
        gigabytes / total.wall_seconds,
        total.reader_cpu_seconds / gigabytes,
        total.writable_waits,
    );
    server_per_gb
}

fn main() {
    if let Ok(address) = std::env::var(READER_ENV) {
        reader_main(&address);
        return;
    }
    let log_bytes = env_number("SLUICE_BENCH_LOG_MIB", 1024) << 20;
    let rounds = env_number("SLUICE_BENCH_ROUNDS", 3).max(1);
    let fetch_kib: Vec<u64> = std::env::var("SLUICE_BENCH_FETCH_KIB")
        .unwrap_or_else(|_| "1024,64".into())
        .split(',')
        .filter_map(|value| value.trim().parse().ok())
        .collect();
    let base = std::env::var_os("SLUICE_BENCH_DIR").map_or_else(std::env::temp_dir, Into::into);
    let scratch = tempfile::Builder::new()
        .prefix("sluice-fetch-bench-")
        .tempdir_in(base)
        .expect("scratch directory");
    let directory = scratch.path().join("bench-0");
    let result = run_local("fetch-bench", IO_MEMORY_BYTES, || async move {
        let started = Instant::now();
        let log = write_log(&directory, log_bytes).await;
        println!(
            "log: {} MiB in {} segments, written in {:.1} s; rounds per mode: {rounds}",
            log.size_bytes() >> 20,
            log.segment_count(),
            started.elapsed().as_secs_f64()
        );
        for kib in &fetch_kib {
            let case = format!("fetch {kib} KiB");
            let fetch_bytes = kib << 10;
            // Warm-up: brings the log into the page cache and the socket path up to speed.
            serve_round(&log, fetch_bytes, SendMode::Copy).await;
            let mut totals = [Round::default(); 2];
            for _ in 0..rounds {
                for (index, mode) in [SendMode::ZeroCopy, SendMode::Copy].into_iter().enumerate() {
                    add(&mut totals[index], serve_round(&log, fetch_bytes, mode).await);
                }
            }
            let zero_copy = report(&case, SendMode::ZeroCopy, &totals[0]);
            let copy = report(&case, SendMode::Copy, &totals[1]);
            println!("{case:>14}: server CPU per GB, copy / zero-copy = {:.2}", copy / zero_copy);
        }
    });
    if let Err(error) = result {
        eprintln!("fetch_zero_copy bench cannot start: {error} (raise `ulimit -l`)");
        std::process::exit(1);
    }
}
