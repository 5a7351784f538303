//! The leader's limit on what it sends a replica being added by a move (`partition reassign
//! --throttle`), so the copy does not starve producers. Pure: a token bucket per (partition,
//! follower), kept by the leader replica, owned by its core.
//!
//! The leader consults it only for a follower that the partition's move is adding and that is
//! not in the in-sync set yet (an in-sync follower is never throttled: acks `all` waits for
//! it). A fetch may read while the bucket holds a token, at most [`FetchThrottle::read_bytes_max`]
//! (a tenth of a second of the rate, at least [`READ_BYTES_MIN`]), and what it read is taken from
//! the bucket, which may go into debt by one read; an empty bucket answers "nothing before
//! [`FetchThrottle::ready_at`]", and the fetch waits until then (not for new records, which
//! would wake it at once). Over any interval the bytes sent stay within the rate times the
//! interval plus one read and the bucket's capacity (a tenth of a second of the rate).

use std::time::{Duration, Instant};

/// The smallest read a throttled fetch may make (one read returns whole batches anyway).
pub const READ_BYTES_MIN: u64 = 16 * 1024;

/// Time's worth of the rate a bucket holds at most, and one read takes at most.
const BURST: Duration = Duration::from_millis(100);

/// A token bucket of bytes.
#[derive(Clone, Debug)]
pub struct FetchThrottle {
    rate_bytes_per_second: u64,
    /// Bytes that may be sent now; negative after a read larger than what was left.
    tokens: i64,
    refilled_at: Instant,
}

impl FetchThrottle {
    /// A full bucket for `rate_bytes_per_second` (at least 1).
    pub fn new(rate_bytes_per_second: u64, now: Instant) -> FetchThrottle {
        let rate_bytes_per_second = rate_bytes_per_second.max(1);
        let mut throttle = FetchThrottle { rate_bytes_per_second, tokens: 0, refilled_at: now };
        throttle.tokens = throttle.capacity();
        throttle
    }

    /// The rate.
    pub fn rate(&self) -> u64 {
        self.rate_bytes_per_second
    }

    /// Changes the rate (a new move, or a new throttle), keeping the tokens.
    pub fn set_rate(&mut self, rate_bytes_per_second: u64, now: Instant) {
        self.refill(now);
        self.rate_bytes_per_second = rate_bytes_per_second.max(1);
        self.tokens = self.tokens.min(self.capacity());
    }

    fn capacity(&self) -> i64 {
        let burst = u128::from(self.rate_bytes_per_second) * BURST.as_millis() / 1000;
        i64::try_from(burst).unwrap_or(i64::MAX).max(1)
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.refilled_at);
        let earned = u128::from(self.rate_bytes_per_second) * elapsed.as_micros() / 1_000_000;
        let earned = i64::try_from(earned).unwrap_or(i64::MAX);
        if earned > 0 {
            self.tokens = self.tokens.saturating_add(earned).min(self.capacity());
            // Advance by the time those tokens took, keeping the fraction of the next one.
            let took = u128::try_from(earned).unwrap_or(u128::MAX) * 1_000_000
                / u128::from(self.rate_bytes_per_second);
            self.refilled_at += Duration::from_micros(u64::try_from(took).unwrap_or(u64::MAX));
        }
    }

    /// How many bytes a fetch may read now (0: none, wait until [`Self::ready_at`]).
    pub fn read_bytes_max(&mut self, now: Instant) -> u64 {
        self.refill(now);
        if self.tokens <= 0 {
            return 0;
        }
        let burst = u64::try_from(self.capacity()).unwrap_or(u64::MAX);
        burst.max(READ_BYTES_MIN)
    }

    /// Takes `bytes` sent from the bucket.
    pub fn consume(&mut self, bytes: u64) {
        self.tokens = self.tokens.saturating_sub(i64::try_from(bytes).unwrap_or(i64::MAX));
    }

    /// When the bucket holds a token again.
    pub fn ready_at(&self) -> Instant {
        if self.tokens > 0 {
            return self.refilled_at;
        }
        let missing = u128::try_from(1 - i128::from(self.tokens)).unwrap_or(u128::MAX);
        let micros = (missing * 1_000_000).div_ceil(u128::from(self.rate_bytes_per_second));
        self.refilled_at + Duration::from_micros(u64::try_from(micros).unwrap_or(u64::MAX))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reading as fast as allowed for 10 s at 2 MiB/s sends about 20 MiB.
    #[test]
    fn a_greedy_reader_gets_the_rate() {
        let rate = 2 << 20;
        let start = Instant::now();
        let mut throttle = FetchThrottle::new(rate, start);
        let mut now = start;
        let mut sent = 0u64;
        while now < start + Duration::from_secs(10) {
            let allowed = throttle.read_bytes_max(now);
            if allowed == 0 {
                let ready = throttle.ready_at();
                assert!(ready > now, "an empty bucket is ready later");
                now = ready;
                continue;
            }
            // Reads return whole batches: up to 64 KiB past what was allowed.
            let read = allowed + 64 * 1024;
            throttle.consume(read);
            sent += read;
        }
        let expected = rate * 10;
        assert!(sent >= expected * 9 / 10 && sent <= expected * 11 / 10, "sent {sent}");
    }

    #[test]
    fn rate_changes_keep_the_bucket_within_capacity() {
        let now = Instant::now();
        let mut throttle = FetchThrottle::new(10 << 20, now);
        throttle.set_rate(1 << 20, now);
        assert!(throttle.read_bytes_max(now) >= READ_BYTES_MIN);
        throttle.consume(1 << 20);
        assert_eq!(throttle.read_bytes_max(now), 0);
        assert!(throttle.ready_at() >= now + Duration::from_millis(900));
    }
}
