//! Fitting the simulator's link model to latencies measured on a real backend.
//!
//! The simulator delivers a broadcast after one link delay plus the payload's transfer time (size
//! over bandwidth). So the smallest payload's broadcast latencies give the delay distribution, fitted
//! as a log-normal (median from p50, shape from p99/p50), and the growth of the median with size
//! gives the bandwidth. Fetch latency is not fitted: it is a prediction to compare.

use std::time::Duration;

use sim::{Latency, LinkModel};

use crate::{latency::Operation, report::Cell};

/// z-score of the 99th percentile of a standard normal.
const Z99: f64 = 2.326;

/// The link model that reproduces `backend`'s broadcast latencies at concurrency 1, or `None`
/// when the cells do not hold at least one size of them.
pub fn fit_link(cells: &[Cell], backend: &str) -> Option<LinkModel> {
    let mut broadcasts: Vec<&Cell> = cells
        .iter()
        .filter(|c| {
            c.backend == backend
                && c.operation == Operation::Broadcast
                && c.concurrency == 1
                && c.samples > 0
        })
        .collect();
    broadcasts.sort_by_key(|c| c.size);
    let smallest = broadcasts.first()?;
    let largest = broadcasts.last()?;
    let median_us = smallest.p50_us.max(1) as f64;
    let sigma = ((smallest.p99_us.max(1) as f64 / median_us).ln() / Z99).max(0.0);
    let extra_us = largest.p50_us.saturating_sub(smallest.p50_us) as f64;
    let bandwidth = match (largest.size > smallest.size, extra_us > 0.0) {
        (true, true) => Some(((largest.size - smallest.size) as f64 / (extra_us / 1e6)) as u64),
        _ => None,
    };
    let median = Duration::from_micros(median_us as u64);
    Some(LinkModel {
        latency: match sigma > 0.0 {
            true => Latency::LogNormal { median, sigma },
            false => Latency::Constant { value: median },
        },
        jitter: Duration::ZERO,
        loss: 0.0,
        bandwidth,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cell(size: usize, p50_us: u64, p99_us: u64) -> Cell {
        Cell {
            backend: "real".into(),
            operation: Operation::Broadcast,
            size,
            concurrency: 1,
            samples: 100,
            p50_us,
            p95_us: p99_us,
            p99_us,
            max_us: p99_us,
            throughput: 0.0,
            lost: 0,
        }
    }

    #[test]
    fn the_fit_recovers_delay_spread_and_bandwidth() {
        // 10 ms median, p99 at e^(0.5 z99) times it, and 1 MB/s: 1,000,000 bytes more take 1 s more.
        let p99 = (10_000.0 * (0.5 * Z99).exp()) as u64;
        let cells = [
            cell(256, 10_000, p99),
            cell(1_000_256, 1_010_000, 1_010_000 + p99),
        ];
        let link = fit_link(&cells, "real").expect("fits");
        match link.latency {
            Latency::LogNormal { median, sigma } => {
                assert_eq!(median, Duration::from_millis(10));
                assert!((sigma - 0.5).abs() < 0.01, "sigma {sigma}");
            }
            other => panic!("not log-normal: {other:?}"),
        }
        assert_eq!(link.bandwidth, Some(1_000_000));
        assert!(
            fit_link(&cells, "other").is_none(),
            "no cells of that backend"
        );
    }
}
