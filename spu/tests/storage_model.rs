//! Randomized model test: seeded sequences of append, wait, roll, truncate, retention,
//! simulated crash (cut, zero or corrupt the non-durable tail of the active segment), reopen and
//! read, checked against a plain in-memory model.
//!
//! `SLUICE_TEST_SEED=<n>` runs one seed; `SLUICE_MODEL_SEEDS=<count>` changes how many, and
//! `SLUICE_MODEL_FIRST_SEED=<n>` where they start (default: from the time of day);
//! `SLUICE_MODEL_STALL_SECS=<n>` how long one operation may take before the test aborts with
//! every thread's stack (default 60).

use std::os::unix::fs::FileExt;
use std::path::Path;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sluice_proto::ids::{LeaderEpoch, Offset, TimestampMs};
use sluice_proto::record::validate_batch;
use sluice_spu::storage::test_support::{make_batch, run};
use sluice_spu::storage::{LogConfig, ReplicaLog, SegmentFileCache, StorageError};

const SEEDS_DEFAULT: u64 = 2000;
/// An operation taking longer than this is reported (seed, operation) and the test aborted:
/// once, under a loaded full test run, this test ran past nextest's 360 s limit without saying
/// where, and the same seeds passed when rerun.
const STALL_LIMIT: std::time::Duration = std::time::Duration::from_secs(60);

/// What the test is doing now, for the stall watchdog: (seed, operation index, operation
/// number drawn, when it began).
static PROGRESS: std::sync::Mutex<Option<(u64, usize, u32, std::time::Instant)>> =
    std::sync::Mutex::new(None);
/// The kernel thread id of the thread running the executor (0 until it starts).
static EXECUTOR_TID: std::sync::atomic::AtomicI64 = std::sync::atomic::AtomicI64::new(0);

fn progress(seed: u64, index: usize, operation: u32) {
    let mut progress = PROGRESS.lock().unwrap_or_else(|poison| poison.into_inner());
    *progress = Some((seed, index, operation, std::time::Instant::now()));
}

/// Aborts the process, naming the seed and operation and printing every thread's stack (with
/// gdb, when installed), when one operation stalls. The executor thread's stack comes last, on
/// standard error after the seeds, so a log that keeps only its tail still shows it.
fn start_stall_watchdog() {
    std::thread::spawn(|| loop {
        std::thread::sleep(std::time::Duration::from_secs(1));
        let stalled = *PROGRESS.lock().unwrap_or_else(|poison| poison.into_inner());
        if let Some((seed, index, operation, since)) = stalled {
            let limit = std::env::var("SLUICE_MODEL_STALL_SECS")
                .ok()
                .and_then(|secs| secs.parse().ok())
                .map_or(STALL_LIMIT, std::time::Duration::from_secs);
            if since.elapsed() > limit {
                let stacks = std::process::Command::new("gdb")
                    .args(["-p", &std::process::id().to_string(), "-batch", "-ex"])
                    .arg("thread apply all bt 60")
                    .output()
                    .map(|output| String::from_utf8_lossy(&output.stdout).into_owned())
                    .unwrap_or_else(|error| format!("(gdb not run: {error})"));
                let tid = EXECUTOR_TID.load(std::sync::atomic::Ordering::Relaxed);
                let marker = format!("(LWP {tid})");
                let (executor, others): (Vec<&str>, Vec<&str>) =
                    stacks.split("\nThread ").partition(|part| part.contains(&marker));
                eprintln!("---- other threads ----\n{}", others.join("\nThread "));
                // The kernel side of every thread, io_uring's workers (iou-wrk) included: gdb
                // cannot see what a worker is blocked on.
                for task in std::fs::read_dir("/proc/self/task").into_iter().flatten().flatten() {
                    let path = task.path();
                    let comm = std::fs::read_to_string(path.join("comm")).unwrap_or_default();
                    let stack = std::fs::read_to_string(path.join("stack")).unwrap_or_default();
                    eprintln!("---- kernel stack of {:?} {}{stack}", task.file_name(), comm);
                }
                // /proc says where the kernel has the executor thread waiting.
                let kernel = std::fs::read_to_string(format!("/proc/self/task/{tid}/stack"))
                    .unwrap_or_default();
                let wchan = std::fs::read_to_string(format!("/proc/self/task/{tid}/wchan"))
                    .unwrap_or_default();
                let state = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat"))
                    .unwrap_or_default();
                eprintln!(
                    "---- executor thread {tid}: stat {state} wchan {wchan}\n{kernel}\nThread {}",
                    executor.join("\nThread ")
                );
                eprintln!(
                    "model test stalled: seed {seed}, operation #{index} (drawn {operation}) has \
                     run for {:?}; replay with SLUICE_TEST_SEED={seed} SLUICE_MODEL_VERBOSE=1",
                    since.elapsed()
                );
                std::process::abort();
            }
        }
    });
}
const OPERATIONS_PER_SEED: usize = 30;

#[derive(Clone)]
struct ModelBatch {
    base: Offset,
    next: Offset,
    bytes: Vec<u8>,
}

#[derive(Default)]
struct Model {
    /// Every batch still in the files, including ones below `log_start`.
    batches: Vec<ModelBatch>,
    log_start: Offset,
}

impl Model {
    fn end(&self) -> Offset {
        self.batches.last().map_or(self.log_start, |batch| batch.next.max(self.log_start))
    }
    /// Batches a read from `start` may return, in order.
    fn from(&self, start: Offset) -> impl Iterator<Item = &ModelBatch> {
        self.batches.iter().filter(move |batch| batch.next > start)
    }
}

fn config(rng: &mut StdRng) -> LogConfig {
    LogConfig {
        segment_bytes_max: rng.gen_range(4..32) * 1024,
        index_interval_bytes: rng.gen_range(1..8) * 256,
        write_buffer_bytes: rng.gen_range(1..4) * 4096,
        // Small fills and allocation steps make rounds meet the zero-fill task mid-segment.
        zero_fill_bytes: [0, 4096, 8192, 16384, 8 << 20][rng.gen_range(0..5)],
        preallocate_bytes: [0, 4096, 16384, 64 << 20][rng.gen_range(0..4)],
        free_bytes_min: 0,
        free_space_ratio_min: 0.0,
        ..LogConfig::default()
    }
}

fn fail(seed: u64, message: String) -> ! {
    panic!("model test failed with SLUICE_TEST_SEED={seed}: {message}")
}

fn check_read(log: &ReplicaLog, model: &Model, interval: u64, rng: &mut StdRng, seed: u64) {
    let end = model.end();
    let start = Offset(rng.gen_range(model.log_start.0..=end.0));
    let budget = rng.gen_range(1..4000u64);
    let upper = Offset(rng.gen_range(start.0..=end.0));
    let mut out = Vec::new();
    let copied = match log.read_into(start, budget, upper, &mut out) {
        Ok(copied) => copied,
        Err(error) => fail(seed, format!("read {start} budget {budget} upper {upper}: {error}")),
    };
    // The greedy answer: whole batches from the one holding `start`, at least one, none past
    // `upper`, no more than `budget` bytes past the first. The log may stop short of it where
    // the offset index has no entry: by less than one index interval plus one batch.
    let mut expected = Vec::new();
    let mut boundaries = vec![(0usize, start)];
    for batch in model.from(start) {
        if batch.next > upper
            || (!expected.is_empty() && expected.len() as u64 + batch.bytes.len() as u64 > budget)
        {
            break;
        }
        expected.extend_from_slice(&batch.bytes);
        boundaries.push((expected.len(), batch.next));
        if expected.len() as u64 >= budget {
            break;
        }
    }
    let (want_len, want_next) = *boundaries.last().expect("one boundary at least");
    let stop = boundaries.iter().position(|(len, _)| *len == out.len());
    let aligned =
        stop.is_some_and(|at| boundaries[at].1 == copied.next_offset) && expected.starts_with(&out);
    let omitted_batch_max = stop
        .map_or(0, |at| boundaries[at..].windows(2).map(|w| w[1].0 - w[0].0).max().unwrap_or(0));
    let short = want_len - out.len().min(want_len);
    let acceptable = aligned
        && (out.is_empty() == expected.is_empty())
        && (short == 0 || (short as u64) < interval + omitted_batch_max as u64);
    if !acceptable {
        fail(
            seed,
            format!(
                "read {start} budget {budget} upper {upper}: got {} bytes to {}, want {want_len} \
                 to {want_next} (short by at most an index interval of {interval} plus a batch)",
                out.len(),
                copied.next_offset,
            ),
        );
    }
    if start < model.log_start || model.log_start > Offset(0) {
        let below = Offset(model.log_start.0 - 1);
        if below.0 >= 0
            && !matches!(log.read(below, 10, end), Err(StorageError::OffsetOutOfRange { .. }))
        {
            fail(seed, format!("read below log start {} was not out of range", model.log_start));
        }
    }
}

fn check_whole_log(log: &ReplicaLog, model: &Model, seed: u64) {
    if log.log_end_offset() != model.end() || log.log_start_offset() != model.log_start {
        fail(
            seed,
            format!(
                "log [{}, {}) but model [{}, {})",
                log.log_start_offset(),
                log.log_end_offset(),
                model.log_start,
                model.end()
            ),
        );
    }
    let mut out = Vec::new();
    let mut cursor = model.log_start;
    while cursor < model.end() {
        match log.read_into(cursor, 1 << 20, model.end(), &mut out) {
            Ok(copied) => cursor = copied.next_offset,
            Err(error) => fail(seed, format!("full read at {cursor}: {error}")),
        }
    }
    let expected: Vec<u8> =
        model.from(model.log_start).flat_map(|batch| batch.bytes.clone()).collect();
    if out != expected {
        fail(seed, format!("full read differs: {} bytes vs model {}", out.len(), expected.len()));
    }
}

/// Damages the active segment after its durable end the way a crash can: cut, zeros, a flipped
/// byte. Returns nothing; the caller reopens and reconciles.
/// A flipped byte never lands in a header's partition-leader-epoch field (bytes 12..16): the
/// record-batch format leaves it outside the CRC, so no reader can detect such a flip.
fn crash_damage(
    directory: &Path,
    active_base: Offset,
    durable_position: u64,
    batch_starts: &[u64],
    rng: &mut StdRng,
) {
    let path = directory.join(format!("{:020}.log", active_base.0));
    let file = std::fs::OpenOptions::new().write(true).open(&path).expect("active segment exists");
    let length = file.metadata().unwrap().len();
    if length <= durable_position {
        return;
    }
    let mut point = rng.gen_range(durable_position..=length);
    if let Some(start) = batch_starts.iter().rev().find(|start| **start <= point) {
        if (12..16).contains(&(point - start)) {
            point = start + 16;
        }
    }
    let mode = rng.gen_range(0..3);
    if std::env::var("SLUICE_MODEL_VERBOSE").is_ok() {
        eprintln!("crash damage mode {mode} at {point} (durable position {durable_position}, length {length})");
    }
    match mode {
        0 => file.set_len(point).unwrap(),
        1 => file.write_all_at(&vec![0u8; (length - point) as usize], point).unwrap(),
        _ => {
            if point < length {
                file.write_all_at(&[rng.gen()], point).unwrap();
            }
        }
    }
}

async fn run_seed(seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    let dir = match std::env::var("SLUICE_MODEL_DIR") {
        Ok(base) => tempfile::tempdir_in(base).unwrap(),
        // tmpfs takes O_DIRECT (Linux >= 6.6) and makes fdatasync cheap, so thousands of seeds
        // fit in the default run; the other storage tests cover ext4.
        Err(_) if Path::new("/dev/shm").is_dir() => tempfile::tempdir_in("/dev/shm").unwrap(),
        Err(_) => tempfile::tempdir().unwrap(),
    };
    let config = config(&mut rng);
    let open = |config: LogConfig| {
        let path = dir.path().to_path_buf();
        async move { ReplicaLog::open(&path, config, SegmentFileCache::new(3)).await }
    };
    let mut log = open(config.clone()).await.unwrap_or_else(|e| fail(seed, format!("open: {e}")));
    let mut model = Model::default();
    let mut epoch = LeaderEpoch(1);
    let verbose = std::env::var("SLUICE_MODEL_VERBOSE").is_ok();
    for index in 0..OPERATIONS_PER_SEED {
        let operation = rng.gen_range(0..100);
        progress(seed, index, operation);
        if verbose {
            eprintln!(
                "op {operation}: model [{}, {}) log [{}, {}) durable {}",
                model.log_start,
                model.end(),
                log.log_start_offset(),
                log.log_end_offset(),
                log.durable_end_offset()
            );
        }
        match operation {
            0..=44 => {
                let count = rng.gen_range(1..6);
                let mut last = None;
                for _ in 0..count {
                    let records = rng.gen_range(1..5);
                    let mut batch = make_batch(
                        records,
                        rng.gen_range(0..400),
                        TimestampMs(rng.gen_range(0..1000)),
                        rng.gen(),
                    );
                    let appended = log
                        .append(&mut batch, epoch)
                        .await
                        .unwrap_or_else(|e| fail(seed, format!("append: {e}")));
                    if appended.base_offset != model.end() {
                        fail(
                            seed,
                            format!("append got {} want {}", appended.base_offset, model.end()),
                        );
                    }
                    model.batches.push(ModelBatch {
                        base: appended.base_offset,
                        next: appended.next_offset,
                        bytes: batch,
                    });
                    last = Some(appended);
                }
                if let Some(appended) = last {
                    let result = match rng.gen_range(0..3) {
                        0 => log.wait_durable(&appended).await,
                        1 => log.wait_written(&appended).await,
                        _ => Ok(()),
                    };
                    result.unwrap_or_else(|e| fail(seed, format!("wait: {e}")));
                }
            }
            45..=49 => log.roll().await.unwrap_or_else(|e| fail(seed, format!("roll: {e}"))),
            50..=57 => {
                let target = Offset(rng.gen_range(model.log_start.0..=model.end().0));
                if verbose {
                    eprintln!(
                        "truncate to {target}, segments {:?} model {:?}",
                        log.segment_bases(),
                        model.batches.iter().map(|b| (b.base.0, b.next.0)).collect::<Vec<_>>()
                    );
                }
                log.truncate_to(target)
                    .await
                    .unwrap_or_else(|e| fail(seed, format!("truncate {target}: {e}")));
                if target >= model.end() {
                    // Nothing at or after the end: no-op.
                } else if target <= model.log_start {
                    // At or below the log start the log restarts empty at `target`.
                    model.batches.clear();
                    model.log_start = target;
                } else {
                    // The cut is at the boundary of the batch holding `target`, which may lie
                    // below the log start: the start then follows the cut.
                    let cut = model
                        .batches
                        .iter()
                        .find(|batch| batch.next > target)
                        .map_or(model.end(), |batch| batch.base);
                    model.batches.retain(|batch| batch.next <= target);
                    model.log_start = model.log_start.min(cut);
                }
                epoch = epoch.next();
            }
            58..=63 => {
                log.flush().await.unwrap_or_else(|e| fail(seed, format!("flush: {e}")));
                let target = Offset(rng.gen_range(model.log_start.0..=model.end().0));
                if verbose {
                    eprintln!("delete before {target}");
                }
                log.delete_before(target)
                    .unwrap_or_else(|e| fail(seed, format!("delete_before {target}: {e}")));
                // Batches below the start stay in the model: they may still sit in the active
                // segment's file, which the crash step needs to know.
                model.log_start = model.log_start.max(target);
            }
            64..=71 => {
                // Simulated crash: drop without closing, damage the non-durable tail, reopen.
                let durable = log.durable_end_offset();
                let active_base = *log.segment_bases().last().unwrap();
                let durable_position: u64 = model
                    .batches
                    .iter()
                    .filter(|batch| batch.base >= active_base && batch.next <= durable)
                    .map(|batch| batch.bytes.len() as u64)
                    .sum();
                if verbose {
                    eprintln!(
                        "crash: segments {:?} model {:?}",
                        log.segment_bases(),
                        model
                            .batches
                            .iter()
                            .map(|b| (b.base.0, b.next.0, b.bytes.len()))
                            .collect::<Vec<_>>()
                    );
                }
                drop(log);
                let mut batch_starts = Vec::new();
                let mut position = 0;
                for batch in model.batches.iter().filter(|batch| batch.base >= active_base) {
                    batch_starts.push(position);
                    position += batch.bytes.len() as u64;
                }
                crash_damage(dir.path(), active_base, durable_position, &batch_starts, &mut rng);
                log = open(config.clone())
                    .await
                    .unwrap_or_else(|e| fail(seed, format!("reopen after crash: {e}")));
                let end = log.log_end_offset();
                if end < durable {
                    fail(seed, format!("lost durable data: end {end} < durable {durable}"));
                }
                if end != active_base
                    && !model.batches.iter().any(|batch| batch.next == end || batch.base == end)
                {
                    fail(seed, format!("recovered end {end} is not a batch boundary of the model"));
                }
                model.batches.retain(|batch| batch.next <= end);
                model.log_start = model.log_start.min(end);
                if model.end() != end {
                    fail(
                        seed,
                        format!("recovered end {end} but model prefix ends at {}", model.end()),
                    );
                }
                check_whole_log(&log, &model, seed);
            }
            72..=77 => {
                log.close().await.unwrap_or_else(|e| fail(seed, format!("close: {e}")));
                log = open(config.clone())
                    .await
                    .unwrap_or_else(|e| fail(seed, format!("reopen: {e}")));
                check_whole_log(&log, &model, seed);
            }
            _ => {
                log.flush().await.unwrap_or_else(|e| fail(seed, format!("flush: {e}")));
                check_read(&log, &model, config.index_interval_bytes, &mut rng, seed);
            }
        }
    }
    log.flush().await.unwrap_or_else(|e| fail(seed, format!("flush: {e}")));
    check_whole_log(&log, &model, seed);
    for batch in &model.batches {
        debug_assert!(validate_batch(&batch.bytes, usize::MAX).is_ok());
    }
}

#[test]
fn random_operation_sequences_match_the_model() {
    let (first, count) = match std::env::var("SLUICE_TEST_SEED") {
        Ok(seed) => (seed.parse::<u64>().expect("SLUICE_TEST_SEED is a number"), 1),
        Err(_) => {
            let count = std::env::var("SLUICE_MODEL_SEEDS")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(SEEDS_DEFAULT);
            let first = std::env::var("SLUICE_MODEL_FIRST_SEED")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| {
                    std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .unwrap()
                        .as_secs()
                        % 1_000_000
                        * 1000
                });
            (first, count)
        }
    };
    eprintln!("model test: seeds {first}..{} (SLUICE_TEST_SEED=<n> to replay one)", first + count);
    start_stall_watchdog();
    run(move || async move {
        // SAFETY: gettid has no preconditions.
        let tid = unsafe { libc::gettid() };
        EXECUTOR_TID.store(i64::from(tid), std::sync::atomic::Ordering::Relaxed);
        for seed in first..first + count {
            // Named before it runs: a seed that hangs is the last one printed.
            if seed % 100 == 0 || count <= 100 {
                eprintln!("seed {seed}");
            }
            run_seed(seed).await;
        }
    });
}
