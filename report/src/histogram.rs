//! Latency histograms and their percentiles.

use std::time::Duration;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// Percentiles of a latency histogram, in microseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LatencySummary {
    /// Samples recorded.
    pub count: u64,
    /// Median.
    pub p50_us: u64,
    /// 95th percentile.
    pub p95_us: u64,
    /// 99th percentile.
    pub p99_us: u64,
    /// Largest sample.
    pub max_us: u64,
    /// Arithmetic mean.
    pub mean_us: f64,
}

/// A latency histogram in microseconds with 3 significant digits, from 1 µs to one hour; longer
/// latencies are recorded as one hour.
#[derive(Clone, Debug)]
pub struct LatencyHistogram(Histogram<u64>);

impl Default for LatencyHistogram {
    fn default() -> LatencyHistogram {
        let hour_us = 3_600_000_000;
        LatencyHistogram(
            Histogram::new_with_bounds(1, hour_us, 3).expect("valid bounds and precision"),
        )
    }
}

impl LatencyHistogram {
    /// Records one latency.
    pub fn record(&mut self, latency: Duration) {
        self.0
            .saturating_record(latency.as_micros().min(u64::MAX as u128) as u64);
    }

    /// The percentiles so far.
    pub fn summary(&self) -> LatencySummary {
        let h = &self.0;
        LatencySummary {
            count: h.len(),
            p50_us: h.value_at_quantile(0.50),
            p95_us: h.value_at_quantile(0.95),
            p99_us: h.value_at_quantile(0.99),
            max_us: h.max(),
            mean_us: h.mean(),
        }
    }
}

/// One report line: `name`, then p50, p95, p99 and max in milliseconds, and the count.
pub fn latency_line(name: &str, l: &LatencySummary) -> String {
    let ms = |us: u64| us as f64 / 1000.0;
    format!(
        "  {name:<20} p50 {:.1} ms  p95 {:.1} ms  p99 {:.1} ms  max {:.1} ms  (n={})",
        ms(l.p50_us),
        ms(l.p95_us),
        ms(l.p99_us),
        ms(l.max_us),
        l.count
    )
}
