//! Open-loop pacing: every record has an *intended* send time fixed in advance by the target
//! rate, and latency is measured from that time, not from when the send actually happened. A
//! stall (a full buffer, a slow server, a descheduled thread) therefore shows up as latency of
//! every record that should have been sent during it, instead of silently lowering the offered
//! load (coordinated omission).
//!
//! With `P` producers sharing a total rate `R`, producer `j` sends its `i`-th record at
//! `start + (i * P + j) / R`: the producers interleave evenly and together offer exactly `R`.
//!
//! A producer never sends a record before its intended time. When it is ahead it sleeps at
//! least [`SLEEP_MIN`], then sends every record that has come due meanwhile: at hundreds of
//! thousands of records per second a sleep per record (4 µs apart) cost the load generator a
//! wake-up every ~60 µs (the kernel's timer slack), about half of its CPU time on a machine
//! it shares with the server. The records sent after such a sleep are late by at most
//! `SLEEP_MIN` plus the wake-up delay, and that lateness is in their latency. The clock is
//! read only for a record due after the last reading: records already due then go at once
//! (a clock read per record was a visible share of the thread at 400,000 records/s).

use std::cell::Cell;
use std::time::{Duration, Instant};

/// Shortest sleep of a producer ahead of its schedule.
pub const SLEEP_MIN: Duration = Duration::from_micros(250);

/// The schedule of one producer thread under an open-loop rate.
#[derive(Clone, Debug)]
pub struct Pacer {
    start: Instant,
    producer_index: u64,
    producer_count: u64,
    rate_per_second: f64,
    /// The latest clock reading: a record due by then needs no new reading.
    last_now: Cell<Instant>,
}

impl Pacer {
    /// The schedule of producer `producer_index` of `producer_count`, all sharing
    /// `rate_per_second` records per second, starting at `start`.
    pub fn new(start: Instant, slot: ProducerSlot, rate_per_second: f64) -> Pacer {
        Pacer {
            start,
            producer_index: slot.index,
            producer_count: slot.count.max(1),
            rate_per_second,
            last_now: Cell::new(start),
        }
    }

    /// When record `sequence` (0-based, this producer's own count) is meant to be sent.
    pub fn intended_time(&self, sequence: u64) -> Instant {
        self.start
            + intended_offset(
                sequence,
                ProducerSlot { index: self.producer_index, count: self.producer_count },
                self.rate_per_second,
            )
    }

    /// Blocks until record `sequence`'s intended time (at least [`SLEEP_MIN`] when it has
    /// to wait at all) and returns it. Returns at once when that time has passed (the record
    /// is late; its latency will include the lateness).
    pub fn wait_for(&self, sequence: u64) -> Instant {
        let intended = self.intended_time(sequence);
        if intended <= self.last_now.get() {
            return intended;
        }
        let now = Instant::now();
        self.last_now.set(now);
        if intended > now {
            std::thread::sleep((intended - now).max(SLEEP_MIN));
            self.last_now.set(Instant::now());
        }
        intended
    }
}

/// One producer's place among the producers sharing a rate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProducerSlot {
    /// 0-based index of this producer.
    pub index: u64,
    /// Number of producers.
    pub count: u64,
}

/// Offset from the start of record `sequence` of producer `slot` when `slot.count` producers
/// together send `rate_per_second` records per second. A non-positive rate means "as fast as
/// possible" and gives zero.
pub fn intended_offset(sequence: u64, slot: ProducerSlot, rate_per_second: f64) -> Duration {
    if rate_per_second <= 0.0 || !rate_per_second.is_finite() {
        return Duration::ZERO;
    }
    let global_sequence = sequence as f64 * slot.count.max(1) as f64 + slot.index as f64;
    Duration::from_secs_f64(global_sequence / rate_per_second)
}

/// How many records one producer of `slot` has been scheduled to send in the first `elapsed`
/// (records whose intended offset is `<= elapsed`).
pub fn scheduled_count(elapsed: Duration, slot: ProducerSlot, rate_per_second: f64) -> u64 {
    if rate_per_second <= 0.0 || !rate_per_second.is_finite() {
        return 0;
    }
    let global = (elapsed.as_secs_f64() * rate_per_second).floor();
    let count = slot.count.max(1) as f64;
    if global < slot.index as f64 {
        return 0;
    }
    ((global - slot.index as f64) / count).floor() as u64 + 1
}
