//! Latency histograms: an HDR histogram of microseconds (3 significant digits, 1 µs to one hour)
//! and the summary every report carries (p50 / p90 / p99 / p99.9 / p99.99 / max).
//!
//! Values above the trackable maximum are clamped to it and counted in
//! [`LatencyHistogram::clamped_count`] so an outlier is visible instead of lost. Recording never
//! allocates after construction.

use std::time::Duration;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// Largest latency the histogram tracks exactly: one hour, in microseconds.
pub const LATENCY_US_MAX: u64 = 3_600_000_000;
/// Significant decimal digits kept for every value (0.1% relative error).
const SIGNIFICANT_DIGITS: u8 = 3;

/// A latency histogram in microseconds.
#[derive(Clone, Debug)]
pub struct LatencyHistogram {
    histogram: Histogram<u64>,
    clamped_count: u64,
}

impl Default for LatencyHistogram {
    fn default() -> Self {
        LatencyHistogram::new()
    }
}

impl LatencyHistogram {
    /// An empty histogram.
    pub fn new() -> LatencyHistogram {
        let histogram = Histogram::new_with_bounds(1, LATENCY_US_MAX, SIGNIFICANT_DIGITS)
            .expect("constant bounds are valid");
        LatencyHistogram { histogram, clamped_count: 0 }
    }

    /// Records one latency (sub-microsecond values count as 1 µs).
    pub fn record(&mut self, latency: Duration) {
        let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.record_us(micros);
    }

    /// Records one latency in microseconds.
    pub fn record_us(&mut self, latency_us: u64) {
        let value = latency_us.clamp(1, LATENCY_US_MAX);
        if value != latency_us.max(1) {
            self.clamped_count += 1;
        }
        self.histogram.saturating_record(value);
    }

    /// Adds every value of `other`.
    pub fn merge(&mut self, other: &LatencyHistogram) {
        // Same bounds on both sides: adding cannot fail.
        self.histogram.add(&other.histogram).expect("histograms share their bounds");
        self.clamped_count += other.clamped_count;
    }

    /// Number of values recorded.
    pub fn count(&self) -> u64 {
        self.histogram.len()
    }

    /// Values that were above [`LATENCY_US_MAX`] and recorded as it.
    pub fn clamped_count(&self) -> u64 {
        self.clamped_count
    }

    /// The value at `quantile` (0.0 ..= 1.0) in microseconds; 0 when empty.
    pub fn quantile_us(&self, quantile: f64) -> u64 {
        if self.histogram.is_empty() {
            return 0;
        }
        self.histogram.value_at_quantile(quantile)
    }

    /// Forgets every value.
    pub fn clear(&mut self) {
        self.histogram.reset();
        self.clamped_count = 0;
    }

    /// The report's view of this histogram.
    pub fn summary(&self) -> LatencySummary {
        let empty = self.histogram.is_empty();
        LatencySummary {
            count: self.count(),
            min_us: if empty { 0 } else { self.histogram.min() },
            mean_us: if empty { 0.0 } else { self.histogram.mean() },
            p50_us: self.quantile_us(0.50),
            p90_us: self.quantile_us(0.90),
            p99_us: self.quantile_us(0.99),
            p99_9_us: self.quantile_us(0.999),
            p99_99_us: self.quantile_us(0.9999),
            max_us: if empty { 0 } else { self.histogram.max() },
            clamped_count: self.clamped_count,
        }
    }
}

/// Latency percentiles of one run, in microseconds (HDR: each value within 0.1% of the truth).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LatencySummary {
    /// Values recorded.
    pub count: u64,
    /// Smallest value.
    pub min_us: u64,
    /// Arithmetic mean.
    pub mean_us: f64,
    /// Median.
    pub p50_us: u64,
    /// 90th percentile.
    pub p90_us: u64,
    /// 99th percentile.
    pub p99_us: u64,
    /// 99.9th percentile.
    pub p99_9_us: u64,
    /// 99.99th percentile.
    pub p99_99_us: u64,
    /// Largest value.
    pub max_us: u64,
    /// Values above the histogram's range (one hour), recorded as its maximum.
    pub clamped_count: u64,
}

impl LatencySummary {
    /// The percentiles as (label, microseconds) pairs, in table order.
    pub fn rows(&self) -> [(&'static str, u64); 6] {
        [
            ("p50", self.p50_us),
            ("p90", self.p90_us),
            ("p99", self.p99_us),
            ("p99.9", self.p99_9_us),
            ("p99.99", self.p99_99_us),
            ("max", self.max_us),
        ]
    }
}

/// Formats microseconds for people: `850 µs`, `4.21 ms`, `1.50 s`.
pub fn format_micros(micros: u64) -> String {
    if micros < 1_000 {
        format!("{micros} µs")
    } else if micros < 1_000_000 {
        format!("{:.2} ms", micros as f64 / 1e3)
    } else {
        format!("{:.2} s", micros as f64 / 1e6)
    }
}
