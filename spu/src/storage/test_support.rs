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
///
/// Like an SPU core (its background tick, [`BACKGROUND_TICK`]), the executor wakes at least
/// once a tick while `body` runs. The storage model test, whose executor had nothing else to
/// wake it, stalled for good in CI runs on a loaded host (once in a crash-and-reopen step,
/// once in a truncation; its executor asleep in `io_cqring_wait`, glommio's blocking thread
/// idle), which 300,000 seeds here never did (200,000 on a quiet host, 100,000 beside a
/// workspace build): a missed wake-up of the executor is the likely cause, not proven. On an SPU core such a miss would cost at most one tick; the tests now see
/// the same, and the model test's watchdog still aborts, with every thread's user and kernel
/// stack, on an operation that waits more than a minute.
///
/// [`BACKGROUND_TICK`]: crate::server::process::BACKGROUND_TICK
pub fn run<G, F, T>(body: G) -> T
where
    G: FnOnce() -> F,
    F: std::future::Future<Output = T>,
{
    let ticked = move || {
        let body = body();
        async move {
            let ticker = glommio::spawn_local(async {
                loop {
                    glommio::timer::sleep(crate::server::process::BACKGROUND_TICK).await;
                }
            });
            let output = body.await;
            drop(ticker);
            output
        }
    };
    match crate::storage::runtime::run_local("storage-test", 4 << 20, ticked) {
        Ok(value) => value,
        Err(error) => panic!("{error}"),
    }
}
