//! Benchmarks: the latency harness (`latency`, `report`, and `raw`, the IPFS baseline) behind the
//! `latency` binary, and the
//! simulator's scale (`benches/sim_scale.rs`); [`memory_kib`] for the scale benchmarks.

pub mod calibrate;
pub mod latency;
pub mod raw;
pub mod report;

/// The CPU time (user + system) that this process and the processes `pids` have used so far,
/// from `/proc/<pid>/stat` (Linux; clock ticks, 10 ms at the usual 100 Hz; exited threads
/// included). None where it cannot be read.
pub fn cpu_time(pids: &[u32]) -> Option<std::time::Duration> {
    const TICKS_PER_SECOND: u64 = 100;
    let mut ticks = 0;
    let own = std::process::id();
    for pid in std::iter::once(own).chain(pids.iter().copied()) {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // After the command's closing parenthesis: state is field 3, utime 14, stime 15.
        let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
        let (user, system) = (fields.get(11)?, fields.get(12)?);
        ticks += user.parse::<u64>().ok()? + system.parse::<u64>().ok()?;
    }
    Some(std::time::Duration::from_millis(
        ticks * 1000 / TICKS_PER_SECOND,
    ))
}

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
