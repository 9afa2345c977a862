//! SVG charts (plotters, no fonts needed: the SVG viewer renders the text).

use std::path::Path;

use anyhow::Context;
use plotters::prelude::*;

/// Each transaction's commit latency (seconds) against when it committed (seconds since the
/// start, described by `x_desc`), with the median of each second as a line.
pub fn latency_over_time(
    path: &Path,
    title: &str,
    x_desc: &str,
    samples: &[(f64, f64)],
) -> anyhow::Result<()> {
    let x_max = samples.iter().map(|s| s.0).fold(1.0, f64::max);
    let y_max = samples.iter().map(|s| s.1 * 1000.0).fold(1.0, f64::max) * 1.05;
    let area = SVGBackend::new(path, (1000, 500)).into_drawing_area();
    area.fill(&WHITE).map_err(chart_error)?;
    let mut chart = ChartBuilder::on(&area)
        .caption(title, ("sans-serif", 20))
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..x_max, 0.0..y_max)
        .map_err(chart_error)?;
    chart
        .configure_mesh()
        .x_desc(x_desc)
        .y_desc("commit latency (ms)")
        .draw()
        .map_err(chart_error)?;
    let points = samples
        .iter()
        .map(|&(x, y)| Circle::new((x, y * 1000.0), 2, BLUE.mix(0.3).filled()));
    chart
        .draw_series(points)
        .map_err(chart_error)?
        .label("a transaction")
        .legend(|(x, y)| Circle::new((x + 10, y), 3, BLUE.filled()));
    chart
        .draw_series(LineSeries::new(
            medians_per_second(samples),
            RED.stroke_width(2),
        ))
        .map_err(chart_error)?
        .label("median of each second")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], RED.stroke_width(2)));
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(chart_error)?;
    area.present()
        .map_err(chart_error)
        .with_context(|| format!("writing {}", path.display()))
}

/// The median latency (ms) of the samples committed in each whole second, at the second's middle.
fn medians_per_second(samples: &[(f64, f64)]) -> Vec<(f64, f64)> {
    let mut by_second: std::collections::BTreeMap<u64, Vec<f64>> = Default::default();
    for &(x, y) in samples {
        by_second.entry(x as u64).or_default().push(y * 1000.0);
    }
    by_second
        .into_iter()
        .map(|(second, mut ys)| {
            ys.sort_by(f64::total_cmp);
            (second as f64 + 0.5, ys[ys.len() / 2])
        })
        .collect()
}

fn chart_error(error: impl std::fmt::Display) -> anyhow::Error {
    anyhow::anyhow!("drawing the chart: {error}")
}
