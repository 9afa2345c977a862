//! SVG charts (plotters, no fonts needed: the SVG viewer renders the text), in one style: a white
//! canvas, a caption, labelled axes, and a legend on a translucent box.

use std::{ops::Range, path::Path};

use plotters::{
    coord::{ranged1d::AsRangedCoord, Shift},
    prelude::*,
};

/// Why a chart could not be drawn or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
#[error("drawing the chart {path}: {message}")]
pub struct ChartError {
    /// The file being written.
    pub path: String,
    /// What plotters said.
    pub message: String,
}

/// An SVG file being drawn.
pub struct Svg<'a> {
    path: &'a Path,
    area: DrawingArea<SVGBackend<'a>, Shift>,
}

impl<'a> Svg<'a> {
    /// A white canvas of `width` by `height` pixels, to be written to `path`.
    pub fn new(path: &'a Path, width: u32, height: u32) -> Result<Svg<'a>, ChartError> {
        let svg = Svg {
            path,
            area: SVGBackend::new(path, (width, height)).into_drawing_area(),
        };
        svg.area.fill(&WHITE).map_err(|e| svg.error(e))?;
        Ok(svg)
    }

    /// The whole canvas, to split into panels.
    pub fn area(&self) -> &DrawingArea<SVGBackend<'a>, Shift> {
        &self.area
    }

    /// An error of this chart.
    pub fn error(&self, error: impl std::fmt::Display) -> ChartError {
        ChartError {
            path: self.path.display().to_string(),
            message: error.to_string(),
        }
    }

    /// Writes the file.
    pub fn finish(self) -> Result<(), ChartError> {
        self.area.present().map_err(|e| self.error(e))
    }
}

/// A chart drawn on a panel (`'b`) of an SVG file (`'a`), over coordinates `X` and `Y`.
pub type Chart<'b, 'a, X, Y> = ChartContext<'b, SVGBackend<'a>, Cartesian2d<X, Y>>;

/// A panel of `svg` with `caption`, axes over `x` and `y` described by `x_desc` and `y_desc`.
pub fn axes<'a, 'b, X, Y>(
    svg: &Svg<'a>,
    panel: &'b DrawingArea<SVGBackend<'a>, Shift>,
    caption: &str,
    (x, x_desc): (X, &str),
    (y, y_desc): (Y, &str),
) -> Result<Chart<'b, 'a, X::CoordDescType, Y::CoordDescType>, ChartError>
where
    X: AsRangedCoord,
    Y: AsRangedCoord,
    X::CoordDescType: plotters::coord::ranged1d::ValueFormatter<X::Value>,
    Y::CoordDescType: plotters::coord::ranged1d::ValueFormatter<Y::Value>,
{
    let mut chart = ChartBuilder::on(panel)
        .caption(caption, ("sans-serif", 18))
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(x, y)
        .map_err(|e| svg.error(e))?;
    chart
        .configure_mesh()
        .x_desc(x_desc)
        .y_desc(y_desc)
        .draw()
        .map_err(|e| svg.error(e))?;
    Ok(chart)
}

/// Draws the legend of `chart`'s labelled series.
pub fn legend<'a, 'b, X, Y>(
    svg: &Svg<'a>,
    chart: &mut Chart<'b, 'a, X, Y>,
) -> Result<(), ChartError>
where
    'a: 'b,
    X: Ranged,
    Y: Ranged,
{
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(|e| svg.error(e))
}

/// Each transaction's commit latency (seconds) against when it committed (seconds since the
/// start, described by `x_desc`), with the median of each second as a line.
pub fn latency_over_time(
    path: &Path,
    title: &str,
    x_desc: &str,
    samples: &[(f64, f64)],
) -> Result<(), ChartError> {
    let x_max = samples.iter().map(|s| s.0).fold(1.0, f64::max);
    let y_max = samples.iter().map(|s| s.1 * 1000.0).fold(1.0, f64::max) * 1.05;
    let svg = Svg::new(path, 1000, 500)?;
    let (x, y): (Range<f64>, Range<f64>) = (0.0..x_max, 0.0..y_max);
    let mut chart = axes(
        &svg,
        svg.area(),
        title,
        (x, x_desc),
        (y, "commit latency (ms)"),
    )?;
    let points = samples
        .iter()
        .map(|&(x, y)| Circle::new((x, y * 1000.0), 2, BLUE.mix(0.3).filled()));
    chart
        .draw_series(points)
        .map_err(|e| svg.error(e))?
        .label("a transaction")
        .legend(|(x, y)| Circle::new((x + 10, y), 3, BLUE.filled()));
    chart
        .draw_series(LineSeries::new(
            medians_per_second(samples),
            RED.stroke_width(2),
        ))
        .map_err(|e| svg.error(e))?
        .label("median of each second")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], RED.stroke_width(2)));
    legend(&svg, &mut chart)?;
    drop(chart);
    svg.finish()
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
