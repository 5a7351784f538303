//! Live counters of a running workload and the progress line printed from them.
//!
//! Workload threads add to [`LiveStats`] (atomics, plus a mutex-guarded histogram touched once
//! per record); one reporter thread reads it every interval and prints, to stderr, the rate,
//! MiB/s and p99 so far: rewriting one line on a terminal, plain lines (5x less often) otherwise.
//! The reporter stops when [`Progress`] is dropped.

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::histogram::{format_micros, LatencyHistogram};

/// Counters shared by the workload threads and the reporter.
#[derive(Debug, Default)]
pub struct LiveStats {
    /// Records done (acknowledged or consumed), warm-up included.
    pub records: AtomicU64,
    /// Value bytes done, warm-up included.
    pub bytes: AtomicU64,
    /// Failed records.
    pub errors: AtomicU64,
    /// Whether the measured part has begun (after the warm-up).
    pub measuring: AtomicBool,
    /// Latencies of the measured part.
    latency: Mutex<LatencyHistogram>,
}

impl LiveStats {
    /// Counts `records` records of `bytes` bytes.
    pub fn add(&self, records: u64, bytes: u64) {
        self.records.fetch_add(records, Ordering::Relaxed);
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    /// The latency histogram (poisoning is ignored: a histogram is always consistent).
    pub fn latency(&self) -> MutexGuard<'_, LatencyHistogram> {
        self.latency.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The reporter thread; stops and prints a final newline when dropped.
#[derive(Debug)]
pub struct Progress {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Progress {
    /// Starts reporting `stats` of workload `label` every `interval` (5x that when stderr is
    /// not a terminal).
    pub fn start(label: &str, stats: Arc<LiveStats>, interval: Duration) -> Progress {
        let (stop, stopped) = mpsc::channel::<()>();
        let label = label.to_owned();
        let terminal = std::io::stderr().is_terminal();
        let interval = if terminal { interval } else { interval * 5 };
        let thread = std::thread::Builder::new()
            .name("perf-progress".into())
            .spawn(move || report_loop(&label, &stats, interval, terminal, &stopped))
            .ok();
        Progress { stop: Some(stop), thread }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn report_loop(
    label: &str,
    stats: &LiveStats,
    interval: Duration,
    terminal: bool,
    stopped: &mpsc::Receiver<()>,
) {
    let start = Instant::now();
    let mut last = (Instant::now(), 0u64, 0u64);
    let interval = interval.max(Duration::from_millis(50));
    // Only a timeout goes on; the sender dropping (or sending) stops the loop.
    while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(interval) {
        let now = Instant::now();
        let records = stats.records.load(Ordering::Relaxed);
        let bytes = stats.bytes.load(Ordering::Relaxed);
        let seconds = now.duration_since(last.0).as_secs_f64().max(1e-9);
        let line = ProgressLine {
            label,
            elapsed: now.duration_since(start),
            measuring: stats.measuring.load(Ordering::Relaxed),
            records_per_second: (records - last.1) as f64 / seconds,
            mebibytes_per_second: (bytes - last.2) as f64 / seconds / (1024.0 * 1024.0),
            records_total: records,
            errors: stats.errors.load(Ordering::Relaxed),
            p99_us: {
                let latency = stats.latency();
                (latency.count() > 0).then(|| latency.quantile_us(0.99))
            },
        }
        .to_string();
        last = (now, records, bytes);
        let mut stderr = std::io::stderr().lock();
        let _ =
            if terminal { write!(stderr, "\r\x1b[2K{line}") } else { writeln!(stderr, "{line}") };
        let _ = stderr.flush();
    }
    if terminal {
        let _ = writeln!(std::io::stderr());
    }
}

/// One progress line.
#[derive(Clone, Debug)]
pub struct ProgressLine<'a> {
    /// Workload name.
    pub label: &'a str,
    /// Since the start.
    pub elapsed: Duration,
    /// False during the warm-up.
    pub measuring: bool,
    /// Rate over the last interval.
    pub records_per_second: f64,
    /// Throughput over the last interval.
    pub mebibytes_per_second: f64,
    /// Records so far.
    pub records_total: u64,
    /// Errors so far.
    pub errors: u64,
    /// p99 latency of the measured part so far.
    pub p99_us: Option<u64>,
}

impl std::fmt::Display for ProgressLine<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let phase = if self.measuring { "" } else { " (warm-up)" };
        write!(
            f,
            "{}{phase} {:>6.1}s {:>10.0} records/s {:>8.1} MiB/s total {}",
            self.label,
            self.elapsed.as_secs_f64(),
            self.records_per_second,
            self.mebibytes_per_second,
            self.records_total
        )?;
        if let Some(p99_us) = self.p99_us {
            write!(f, " p99 {}", format_micros(p99_us))?;
        }
        if self.errors > 0 {
            write!(f, " errors {}", self.errors)?;
        }
        Ok(())
    }
}
