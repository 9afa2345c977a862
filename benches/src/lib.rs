//! Benchmarks: the latency harness (`latency`, `report`, and `raw`, the IPFS baseline) behind the
//! `latency` binary, and the
//! simulator's scale (`benches/sim_scale.rs`).

pub mod calibrate;
pub mod latency;
pub mod raw;
pub mod report;
