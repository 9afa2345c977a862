//! `simulate`: a network of ledger validators over the embedded simulator, in one process and in
//! virtual time, under load and faults, with a report, a JSON file and a chart. The main job, run as
//! `ledger-simulate` (this package's binary).
//!
//! It links no database (stores of validators that crash are in memory, outside the nodes) and no
//! IPFS client, so that it builds from nothing in minutes with only a Rust toolchain.

mod run;
mod schedule;

pub use run::{main, Args};
