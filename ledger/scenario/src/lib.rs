//! Networks of ledger nodes over the simulator, in virtual time: one builder for `simulate`, the
//! agreement and determinism tests and the benchmarks.
//!
//! A [`Network`] is `n` validators on [`sim`] peers, the last of them [`byzantine`] if asked, each
//! honest one's commits recorded from its start through every restart. The driver (a test, the
//! `simulate` command) owns the clock: it submits load from [`Accounts`], partitions, heals,
//! crashes and restarts validators, then [`Network::finish`]es and checks the histories with
//! [`agreement::check`]: pairwise prefix-consistent, heights consecutive, and no node stalled.
//!
//! Keys and genesis come from [`ledger::devnet`] under the network's seed, so a run is its seed and
//! its settings.

mod accounts;
pub mod agreement;
pub mod byzantine;
mod commit_log;
pub mod failing_store;
mod network;

pub use accounts::Accounts;
pub use commit_log::{CommitLog, CommitLogError, TimedCommit};
pub use network::{Error, Finished, Network, NetworkBuilder, OpenStore};
