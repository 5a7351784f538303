//! The workloads: produce, consume (catch-up) and end-to-end.
//!
//! Every produced value starts with [`TIMESTAMP_BYTES`] bytes: the record's intended send time
//! on the system-wide monotonic clock (`CLOCK_MONOTONIC`, nanoseconds, little endian). A
//! consumer on the same machine subtracts it from its own reading of the same clock, so the
//! end-to-end latency needs no clock synchronisation and includes any lateness of the sender.

pub mod consume;
pub mod keys;
pub mod produce;
pub mod run;
pub mod topic;

use std::time::{Duration, Instant};

/// Bytes at the start of each value holding its intended send time.
pub const TIMESTAMP_BYTES: usize = 8;

/// Nanoseconds on `CLOCK_MONOTONIC` (one clock for every process of this machine).
pub fn monotonic_nanos() -> u64 {
    let mut time = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `time` is a valid, writable timespec; CLOCK_MONOTONIC always exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut time) };
    time.tv_sec as u64 * 1_000_000_000 + time.tv_nsec as u64
}

/// Writes `send_nanos` into the first [`TIMESTAMP_BYTES`] of `value` (which must be at least
/// that long; shorter values are left as they are).
pub fn stamp_value(value: &mut [u8], send_nanos: u64) {
    if let Some(prefix) = value.get_mut(..TIMESTAMP_BYTES) {
        prefix.copy_from_slice(&send_nanos.to_le_bytes());
    }
}

/// The send time stamped in `value`, if it is long enough.
pub fn value_send_nanos(value: &[u8]) -> Option<u64> {
    let prefix: [u8; TIMESTAMP_BYTES] = value.get(..TIMESTAMP_BYTES)?.try_into().ok()?;
    Some(u64::from_le_bytes(prefix))
}

/// A value of `size` bytes of a fixed filler pattern (not all zeroes, so a codec does not
/// collapse it), to be stamped per record.
pub fn filler_value(size: usize) -> Vec<u8> {
    (0..size).map(|index| (index % 251) as u8).collect()
}

/// The clock of one run: its start (on both `Instant` and the raw monotonic clock, read
/// together) and the end of its warm-up.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    /// Start of the run.
    pub start: Instant,
    /// [`monotonic_nanos`] at `start`.
    pub start_nanos: u64,
    /// Wall clock at `start`, milliseconds since the Unix epoch (records' create times).
    pub start_unix_ms: i64,
    /// End of the warm-up (`start` when there is none).
    pub warmup_end: Instant,
}

impl Clock {
    /// A clock starting now, warming up for `warmup`.
    pub fn start_now(warmup: Duration) -> Clock {
        let start = Instant::now();
        let start_nanos = monotonic_nanos();
        let start_unix_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |since| i64::try_from(since.as_millis()).unwrap_or(i64::MAX));
        Clock { start, start_nanos, start_unix_ms, warmup_end: start + warmup }
    }

    /// `instant` on the wall clock in milliseconds since the Unix epoch: the create time of a
    /// record meant to be sent then (no clock read per record).
    pub fn unix_ms_at(&self, instant: Instant) -> i64 {
        let since = instant.saturating_duration_since(self.start).as_millis();
        self.start_unix_ms.saturating_add(i64::try_from(since).unwrap_or(i64::MAX))
    }

    /// `instant` on the raw monotonic clock (instants before the start map to it).
    pub fn nanos_at(&self, instant: Instant) -> u64 {
        self.start_nanos + self.since_start_nanos(instant)
    }

    /// Nanoseconds from the start to `instant` (0 before the start).
    pub fn since_start_nanos(&self, instant: Instant) -> u64 {
        u64::try_from(instant.saturating_duration_since(self.start).as_nanos()).unwrap_or(u64::MAX)
    }
}
