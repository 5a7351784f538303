//! Helpers shared by the storage tests and benchmarks (not part of the server API).

use std::cell::Cell;

use sluice_proto::ids::TimestampMs;
use sluice_proto::record::BatchBuilder;

use crate::storage::log::Clock;

/// A valid batch of `record_count` records of `value_bytes` each, all stamped `timestamp`.
pub fn make_batch(
    record_count: usize,
    value_bytes: usize,
    timestamp: TimestampMs,
    fill: u8,
) -> Vec<u8> {
    let mut builder = BatchBuilder::new();
    let value = vec![fill; value_bytes];
    for _ in 0..record_count {
        builder.push_record(timestamp, None, Some(&value), &[]).expect("test record fits");
    }
    builder.finish().to_vec()
}

/// A clock the test moves by hand.
#[derive(Default)]
pub struct ManualClock {
    now: Cell<i64>,
}

impl ManualClock {
    /// Starts at `now_ms`.
    pub fn new(now_ms: i64) -> ManualClock {
        ManualClock { now: Cell::new(now_ms) }
    }
    /// Sets the time.
    pub fn set(&self, now_ms: i64) {
        self.now.set(now_ms);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> TimestampMs {
        TimestampMs(self.now.get())
    }
}

/// Runs `body` on a fresh single-threaded executor; panics with a clear message when the
/// runtime cannot start (locked memory too low).
pub fn run<G, F, T>(body: G) -> T
where
    G: FnOnce() -> F,
    F: std::future::Future<Output = T>,
{
    match crate::storage::runtime::run_local("storage-test", 4 << 20, body) {
        Ok(value) => value,
        Err(error) => panic!("{error}"),
    }
}
