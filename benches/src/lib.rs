//! Benchmarks: the latency harness (`latency`, `report`, and `raw`, the IPFS baseline) behind the
//! `latency` binary, and the
//! simulator's scale (`benches/sim_scale.rs`); [`memory_kib`] for the scale benchmarks.

pub mod calibrate;
pub mod latency;
pub mod raw;
pub mod report;

/// A memory figure of this process from `/proc/self/status` (`"VmRSS:"`, `"VmHWM:"`), in KiB.
pub fn memory_kib(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    line[field.len()..]
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}
