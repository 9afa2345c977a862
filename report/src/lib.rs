//! What the simulator, the main job (`simulate`), the node's load client (`ledger-node load`) and
//! the benchmarks report with: latency histograms in microseconds and their percentiles, one-line
//! summaries, and SVG charts in one style. A small crate of its own, so that the node's binary
//! reports as the simulator does without linking the simulator.

pub mod chart;
mod histogram;

pub use histogram::{latency_line, LatencyHistogram, LatencySummary};
