//! The latency harness's results: one [`Cell`] per backend, operation, size and concurrency, as a
//! terminal table, JSON, and an SVG chart.

use std::path::Path;

use ::report::chart::{self, Svg};
use plotters::prelude::*;
use serde::{Deserialize, Serialize};

use crate::latency::{Measured, Operation};

/// The figures of one cell.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Cell {
    pub backend: String,
    pub operation: Operation,
    pub size: usize,
    pub concurrency: usize,
    pub samples: u64,
    pub p50_us: u64,
    pub p95_us: u64,
    pub p99_us: u64,
    pub max_us: u64,
    /// Recorded operations per second (deliveries, for broadcast).
    pub throughput: f64,
    pub lost: u64,
    /// CPU time per recorded sample (per delivery, for broadcast), in microseconds: this
    /// process's and the backend's daemons', where measured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_us_per_sample: Option<f64>,
}

impl Cell {
    pub fn new(
        backend: &str,
        operation: Operation,
        size: usize,
        concurrency: usize,
        measured: &Measured,
    ) -> Cell {
        let h = &measured.histogram;
        let seconds = measured.elapsed.as_secs_f64();
        Cell {
            backend: backend.to_string(),
            operation,
            size,
            concurrency,
            samples: h.len(),
            p50_us: h.value_at_quantile(0.50),
            p95_us: h.value_at_quantile(0.95),
            p99_us: h.value_at_quantile(0.99),
            max_us: h.max(),
            throughput: match seconds > 0.0 {
                true => h.len() as f64 / seconds,
                false => 0.0,
            },
            lost: measured.lost,
            cpu_us_per_sample: (measured.cpu)
                .filter(|_| !h.is_empty())
                .map(|cpu| cpu.as_micros() as f64 / h.len() as f64),
        }
    }
}

/// Bytes in binary units, short.
pub fn size_name(bytes: usize) -> String {
    match bytes {
        b if b >= 1 << 20 && b % (1 << 20) == 0 => format!("{} MiB", b >> 20),
        b if b >= 1 << 10 && b % (1 << 10) == 0 => format!("{} KiB", b >> 10),
        b => format!("{b} B"),
    }
}

/// The table, one row per cell.
pub fn print_table(cells: &[Cell]) {
    println!(
        "{:<10} {:<10} {:>8} {:>5} {:>7} {:>9} {:>9} {:>9} {:>9} {:>10} {:>5} {:>9}",
        "backend",
        "operation",
        "size",
        "conc",
        "samples",
        "p50 ms",
        "p95 ms",
        "p99 ms",
        "max ms",
        "ops/s",
        "lost",
        "cpu us/op"
    );
    let ms = |us: u64| us as f64 / 1000.0;
    for c in cells {
        let operation = operation_name(c.operation);
        println!(
            "{:<10} {:<10} {:>8} {:>5} {:>7} {:>9.2} {:>9.2} {:>9.2} {:>9.2} {:>10.1} {:>5} {:>9}",
            c.backend,
            operation,
            size_name(c.size),
            c.concurrency,
            c.samples,
            ms(c.p50_us),
            ms(c.p95_us),
            ms(c.p99_us),
            ms(c.max_us),
            c.throughput,
            c.lost,
            c.cpu_us_per_sample
                .map_or("-".to_string(), |cpu| format!("{cpu:.0}"))
        );
    }
}

/// How `ours` compares with `baseline` in one cell: the quotient of each percentile.
#[derive(Clone, Debug, Serialize)]
pub struct Ratio {
    pub operation: Operation,
    pub size: usize,
    pub concurrency: usize,
    pub p50: f64,
    pub p95: f64,
    pub p99: f64,
}

/// `ours`/`baseline` for every cell both backends measured.
pub fn ratios(cells: &[Cell], ours: &str, baseline: &str) -> Vec<Ratio> {
    let quotient = |a: u64, b: u64| a as f64 / b.max(1) as f64;
    cells
        .iter()
        .filter(|c| c.backend == ours)
        .filter_map(|c| {
            let base = cells.iter().find(|b| {
                b.backend == baseline
                    && (b.operation, b.size, b.concurrency) == (c.operation, c.size, c.concurrency)
            })?;
            Some(Ratio {
                operation: c.operation,
                size: c.size,
                concurrency: c.concurrency,
                p50: quotient(c.p50_us, base.p50_us),
                p95: quotient(c.p95_us, base.p95_us),
                p99: quotient(c.p99_us, base.p99_us),
            })
        })
        .collect()
}

/// The ratios as a table.
pub fn print_ratios(ratios: &[Ratio], ours: &str, baseline: &str, goal: &str) {
    println!("\n{ours} / {baseline} (goal: {goal})");
    println!(
        "{:<10} {:>8} {:>5} {:>7} {:>7} {:>7}",
        "operation", "size", "conc", "p50", "p95", "p99"
    );
    for r in ratios {
        println!(
            "{:<10} {:>8} {:>5} {:>7.3} {:>7.3} {:>7.3}",
            operation_name(r.operation),
            size_name(r.size),
            r.concurrency,
            r.p50,
            r.p95,
            r.p99
        );
    }
}

/// `predicted` (a simulator) next to `measured` (a real backend), cell by cell.
pub fn print_comparison(cells: &[Cell], predicted: &str, measured: &str) {
    println!("\n{predicted} (predicted) against {measured} (measured), milliseconds");
    println!(
        "{:<10} {:>8} {:>5} {:>10} {:>10} {:>10} {:>10}",
        "operation", "size", "conc", "p50 real", "p50 sim", "p99 real", "p99 sim"
    );
    let ms = |us: u64| us as f64 / 1000.0;
    for real in cells.iter().filter(|c| c.backend == measured) {
        let Some(sim) = cells.iter().find(|c| {
            c.backend == predicted
                && (c.operation, c.size, c.concurrency)
                    == (real.operation, real.size, real.concurrency)
        }) else {
            continue;
        };
        println!(
            "{:<10} {:>8} {:>5} {:>10.2} {:>10.2} {:>10.2} {:>10.2}",
            operation_name(real.operation),
            size_name(real.size),
            real.concurrency,
            ms(real.p50_us),
            ms(sim.p50_us),
            ms(real.p99_us),
            ms(sim.p99_us)
        );
    }
}

fn operation_name(operation: Operation) -> &'static str {
    match operation {
        Operation::Broadcast => "broadcast",
        Operation::PutFetch => "put-fetch",
    }
}

/// Latency percentiles (p50 solid, p99 dashed) by payload size at concurrency `concurrency`, one
/// colour per backend; broadcast on the left, put-fetch on the right.
pub fn plot(path: &Path, cells: &[Cell], concurrency: usize) -> anyhow::Result<()> {
    let svg = Svg::new(path, 1200, 500)?;
    let (left, right) = svg.area().split_horizontally(600);
    let mut backends: Vec<&str> = cells.iter().map(|c| c.backend.as_str()).collect();
    backends.sort_unstable();
    backends.dedup();
    for (panel, operation, title) in [
        (&left, Operation::Broadcast, "broadcast to delivery"),
        (&right, Operation::PutFetch, "put to fetched elsewhere"),
    ] {
        let chosen: Vec<&Cell> = cells
            .iter()
            .filter(|c| c.operation == operation && c.concurrency == concurrency)
            .collect();
        if chosen.is_empty() {
            continue;
        }
        let x_min = chosen.iter().map(|c| c.size).min().unwrap_or(1) as f64;
        let x_max = chosen.iter().map(|c| c.size).max().unwrap_or(2) as f64;
        let y_max = chosen.iter().map(|c| c.p99_us).max().unwrap_or(1) as f64 / 1000.0;
        let mut chart = chart::axes(
            &svg,
            panel,
            &format!("{title}, concurrency {concurrency}"),
            ((x_min * 0.8..x_max * 1.25).log_scale(), "payload bytes"),
            ((0.001f64..y_max * 1.5).log_scale(), "latency (ms)"),
        )?;
        for (i, backend) in backends.iter().enumerate() {
            let colour = Palette99::pick(i).to_rgba();
            let mut line: Vec<&&Cell> = chosen.iter().filter(|c| c.backend == *backend).collect();
            line.sort_by_key(|c| c.size);
            let p50 = line
                .iter()
                .map(|c| (c.size as f64, c.p50_us.max(1) as f64 / 1000.0));
            chart
                .draw_series(LineSeries::new(p50, colour.stroke_width(2)))
                .map_err(|e| svg.error(e))?
                .label(format!("{backend} p50"))
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], colour));
            let p99: Vec<(f64, f64)> = line
                .iter()
                .map(|c| (c.size as f64, c.p99_us.max(1) as f64 / 1000.0))
                .collect();
            chart
                .draw_series(DashedLineSeries::new(p99, 6, 4, colour.stroke_width(1)))
                .map_err(|e| svg.error(e))?
                .label(format!("{backend} p99 (dashed)"))
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], colour));
        }
        chart::legend(&svg, &mut chart)?;
    }
    Ok(svg.finish()?)
}
