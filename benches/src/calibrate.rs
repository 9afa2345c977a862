//! Fitting the simulator to latencies measured on a real backend.
//!
//! In the simulator a broadcast waits for its publisher's publishing path (a fixed cost per
//! message plus size over bandwidth, one message after another; all copies leave together), then
//! each copy crosses a link with a delay drawn from a distribution. A fetch is a want and a
//! response over the links, the response leaving after the holder's serve delay and its serving
//! path (a cost per message and per byte like the publishing path's). So:
//! - the **publishing path** comes from the broadcast throughput at the highest concurrency
//!   measured, where the publisher is saturated: the time per broadcast at the smallest and
//!   largest sizes gives the cost per message and per byte; the **serving path** likewise from the
//!   fetch throughput;
//! - the smallest broadcast at concurrency 1, which waits for nothing but its own publishing and
//!   the link, gives the **link delay** (a constant: its p50 less the publishing time) and the
//!   publishing path's **spread** (the cost per message becomes log-normal, its shape from the p99,
//!   its median keeping the mean cost the throughput gave). Without a saturated publisher the link
//!   delay is a log-normal instead (median from the p50, shape from the p99);
//! - the **serve delay** comes from the smallest fetch at concurrency 1, less two link delays and
//!   the response's serving time, fitted the same way.
//!
//! Without cells above concurrency 1 the paths are free, and the growth of the broadcast median
//! with size gives the links a bandwidth instead. Everything else is a prediction to compare.

use std::time::Duration;

use sim::{Latency, LinkModel, SenderModel, SimConfig};

use crate::{latency::Operation, report::Cell};

/// z-score of the 99th percentile of a standard normal.
const Z99: f64 = 2.326;

/// The least delay a fit yields, in microseconds: a measured percentile never fits below it.
const FLOOR_US: f64 = 50.0;

/// `base` with the link model, sending paths and serve delay that reproduce `backend`'s latencies, each
/// broadcast measured at `subscribers` subscribers; `None` when the cells hold no broadcast of
/// `backend` at concurrency 1.
pub fn fit(
    cells: &[Cell],
    backend: &str,
    subscribers: usize,
    base: SimConfig,
) -> Option<SimConfig> {
    let of = |operation: Operation, concurrency: usize| -> Vec<&Cell> {
        let mut found: Vec<&Cell> = cells
            .iter()
            .filter(|c| {
                c.backend == backend
                    && c.operation == operation
                    && c.concurrency == concurrency
                    && c.samples > 0
            })
            .collect();
        found.sort_by_key(|c| c.size);
        found
    };
    let single = of(Operation::Broadcast, 1);
    let (smallest, largest) = (*single.first()?, *single.last()?);
    let saturated = |operation: Operation, copies: usize| {
        let busiest = cells
            .iter()
            .filter(|c| c.backend == backend && c.operation == operation)
            .map(|c| c.concurrency)
            .max()
            .filter(|&c| c > 1)?;
        Some(fit_path(&of(operation, busiest), copies))
    };
    let server = saturated(Operation::PutFetch, 1).unwrap_or_default();
    let publisher = saturated(Operation::Broadcast, subscribers).unwrap_or_default();
    let (publisher, delay, delay_us) = match publisher.per_message.is_zero() {
        true => {
            let (delay, delay_us) = log_normal(smallest, micros(&publisher, smallest.size));
            (publisher, delay, delay_us)
        }
        false => spread_on_publisher(publisher, smallest),
    };
    let bandwidth = match publisher.bandwidth {
        Some(_) => None,
        None => link_bandwidth(smallest, largest),
    };
    let serve_delay = of(Operation::PutFetch, 1).first().map(|fetch| {
        let fixed_us = 2.0 * delay_us + micros(&server, fetch.size);
        log_normal(fetch, fixed_us).0
    });
    Some(SimConfig {
        link: LinkModel {
            latency: delay,
            jitter: Duration::ZERO,
            loss: 0.0,
            bandwidth,
        },
        publisher,
        server,
        serve_delay: serve_delay.unwrap_or(base.serve_delay),
        ..base
    })
}

/// Microseconds a message of `size` bytes occupies `path`.
fn micros(path: &SenderModel, size: usize) -> f64 {
    path.occupancy(size) as f64 / 1e3
}

/// The sending path that gives the measured throughputs of saturated operations (`cells` by size),
/// each counted `copies` times (a broadcast once per subscriber).
fn fit_path(cells: &[&Cell], copies: usize) -> SenderModel {
    let per_operation_us = |c: &Cell| match c.throughput > 0.0 {
        true => 1e6 * copies.max(1) as f64 / c.throughput,
        false => 0.0,
    };
    let (Some(small), Some(large)) = (cells.first(), cells.last()) else {
        return SenderModel::default();
    };
    let (small_us, large_us) = (per_operation_us(small), per_operation_us(large));
    let bandwidth = match (large.size > small.size, large_us > small_us) {
        (true, true) => {
            Some(((large.size - small.size) as f64 / ((large_us - small_us) / 1e6)) as u64)
        }
        _ => None,
    };
    let per_byte_us = |size: usize| bandwidth.map_or(0.0, |b| size as f64 / b as f64 * 1e6);
    let per_message_us = (small_us - per_byte_us(small.size)).max(0.0);
    SenderModel {
        per_message: Duration::from_nanos((per_message_us * 1e3) as u64),
        bandwidth,
        sigma: 0.0,
    }
}

/// The widest spread a fit gives a sending path's cost per message.
const MAX_SIGMA: f64 = 1.5;

/// Gives the publishing path, whose `per_message` is the mean cost measured at saturation, the
/// spread of `cell` (the smallest broadcast at concurrency 1): its cost per message becomes
/// log-normal, with the shape that gives the cell's p99 and the median that keeps the mean, and the
/// link a constant delay that gives its p50. Returns the path, the link delay, and that delay in
/// microseconds.
fn spread_on_publisher(mean: SenderModel, cell: &Cell) -> (SenderModel, Latency, f64) {
    let mean_us = mean.per_message.as_nanos() as f64 / 1e3;
    let per_byte_us = micros(&mean, cell.size) - mean_us;
    let p50 = cell.p50_us as f64 - per_byte_us;
    let p99 = (cell.p99_us as f64 - per_byte_us).max(p50);
    // The median depends on the shape, the shape on the link's share of the p50, and that on the
    // median: a few rounds settle them (at the cap, for a spread no shape keeps the mean of).
    let (mut median_us, mut sigma, mut link_us) = (mean_us, 0.0, FLOOR_US);
    for _ in 0..32 {
        link_us = (p50 - median_us).max(FLOOR_US);
        let tail_us = (p99 - link_us).max(median_us);
        sigma = ((tail_us / median_us).ln() / Z99).min(MAX_SIGMA);
        median_us = mean_us * (-sigma * sigma / 2.0).exp();
    }
    let path = SenderModel {
        per_message: Duration::from_nanos((median_us * 1e3) as u64),
        sigma,
        ..mean
    };
    let link = Latency::constant(Duration::from_nanos((link_us * 1e3) as u64));
    (path, link, link_us)
}

/// A log-normal fitted to `cell`'s p50 and p99 once `fixed_us` (the part the model adds on its
/// own) is taken off both, or a constant when the spread is nil; with its median in microseconds.
fn log_normal(cell: &Cell, fixed_us: f64) -> (Latency, f64) {
    let p50 = (cell.p50_us as f64 - fixed_us).max(FLOOR_US);
    let p99 = (cell.p99_us as f64 - fixed_us).max(p50);
    let sigma = (p99 / p50).ln() / Z99;
    let median = Duration::from_nanos((p50 * 1e3) as u64);
    let latency = match sigma > 0.0 {
        true => Latency::LogNormal { median, sigma },
        false => Latency::Constant { value: median },
    };
    (latency, p50)
}

/// The link bandwidth that explains the growth of the broadcast median from `smallest` to
/// `largest` at concurrency 1, if it grows.
fn link_bandwidth(smallest: &Cell, largest: &Cell) -> Option<u64> {
    let extra_us = largest.p50_us.saturating_sub(smallest.p50_us) as f64;
    match (largest.size > smallest.size, extra_us > 0.0) {
        (true, true) => Some(((largest.size - smallest.size) as f64 / (extra_us / 1e6)) as u64),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cell(
        operation: Operation,
        size: usize,
        concurrency: usize,
        p50_us: u64,
        p99_us: u64,
    ) -> Cell {
        Cell {
            backend: "real".into(),
            operation,
            size,
            concurrency,
            samples: 100,
            p50_us,
            p95_us: p99_us,
            p99_us,
            max_us: p99_us,
            throughput: 0.0,
            lost: 0,
            cpu_us_per_sample: None,
        }
    }

    fn median_and_sigma(latency: Latency) -> (Duration, f64) {
        match latency {
            Latency::LogNormal { median, sigma } => (median, sigma),
            other => panic!("not log-normal: {other:?}"),
        }
    }

    #[test]
    fn at_concurrency_one_the_fit_recovers_delay_spread_and_link_bandwidth() {
        // 10 ms median, p99 at e^(0.5 z99) times it, and 1 MB/s: 1,000,000 bytes more take 1 s more.
        let p99 = (10_000.0 * (0.5 * Z99).exp()) as u64;
        let cells = [
            cell(Operation::Broadcast, 256, 1, 10_000, p99),
            cell(
                Operation::Broadcast,
                1_000_256,
                1,
                1_010_000,
                1_010_000 + p99,
            ),
        ];
        let config = fit(&cells, "real", 2, SimConfig::default()).expect("fits");
        let (median, sigma) = median_and_sigma(config.link.latency);
        assert_eq!(median, Duration::from_millis(10));
        assert!((sigma - 0.5).abs() < 0.01, "sigma {sigma}");
        assert_eq!(config.link.bandwidth, Some(1_000_000));
        assert_eq!(
            config.publisher,
            SenderModel::default(),
            "nothing saturated"
        );
        assert_eq!(config.server, SenderModel::default());
        assert!(
            fit(&cells, "other", 2, SimConfig::default()).is_none(),
            "no cells of that backend"
        );
    }

    #[test]
    fn saturated_cells_give_the_paths_and_fetches_the_serve_delay() {
        // The model to recover: publishing at 1 ms per message on average (log-normal, shape 0.5)
        // and 10 MB/s, serving at 5 ms and 40 MB/s, a 5 ms link, a 250 ms serve delay; two
        // subscribers.
        let publishing_us = |size: usize| 1_000.0 + size as f64 / 10.0;
        let median_us = 1_000.0 * (-0.5f64 * 0.5 / 2.0).exp();
        let spread = (0.5 * Z99).exp();
        let serving_us = |size: usize| 5_000.0 + size as f64 / 40.0;
        let saturated = |operation, size: usize, per_operation_us: f64, copies: f64| {
            let mut c = cell(operation, size, 64, 1, 1);
            c.throughput = copies * 1e6 / per_operation_us;
            c
        };
        let per_byte_us = 256.0 / 10.0;
        let single = |cost_us: f64| (5_000.0 + cost_us + per_byte_us) as u64;
        let fetch = (250_000.0 + 2.0 * 5_000.0 + serving_us(256)) as u64;
        let cells = [
            cell(
                Operation::Broadcast,
                256,
                1,
                single(median_us),
                single(median_us * spread),
            ),
            cell(Operation::PutFetch, 256, 1, fetch, fetch + 50_000),
            saturated(Operation::Broadcast, 256, publishing_us(256), 2.0),
            saturated(Operation::Broadcast, 1 << 20, publishing_us(1 << 20), 2.0),
            saturated(Operation::PutFetch, 256, serving_us(256), 1.0),
            saturated(Operation::PutFetch, 1 << 20, serving_us(1 << 20), 1.0),
        ];
        let config = fit(&cells, "real", 2, SimConfig::default()).expect("fits");
        let close = |path: &SenderModel, micros: u128, bandwidth: u64| {
            let per_message = path.per_message.as_micros();
            per_message.abs_diff(micros) <= 1
                && path
                    .bandwidth
                    .is_some_and(|b| b.abs_diff(bandwidth) <= bandwidth / 1000)
        };
        assert!(
            close(&config.publisher, median_us as u128, 10_000_000),
            "{:?}",
            config.publisher
        );
        assert!(
            (config.publisher.sigma - 0.5).abs() < 0.01,
            "{:?}",
            config.publisher
        );
        assert!(
            close(&config.server, 5_000, 40_000_000),
            "{:?}",
            config.server
        );
        let Latency::Constant { value: link } = config.link.latency else {
            panic!("the spread is the publisher's: {:?}", config.link.latency);
        };
        assert!(link.as_micros().abs_diff(5_000) <= 2, "link {link:?}");
        assert_eq!(
            config.link.bandwidth, None,
            "the publishing path carries the bytes"
        );
        let (serve, _) = median_and_sigma(config.serve_delay);
        assert!(serve.as_micros().abs_diff(250_000) <= 2, "serve {serve:?}");
    }
}
