//! The ledger: its protocol core ([`ledger_core`], re-exported here whole) driven as a node over a
//! [`comms::Communication`] backend, with a RocksDB store.
//!
//! [`node`] runs the core in one task: inputs from the network, the store, the clock and handles;
//! outputs to the backend and the store. [`storage`] keeps blocks, commits and state on disk, and
//! answers the core's questions about parked and old blocks. The ledger never names a backend.

pub use ledger_core::*;

pub mod node;
pub mod storage;

pub use node::{spawn, NodeConfig, NodeError, NodeHandle, Status, TxStatus, REPLAY_SLICE};
pub use storage::{Committed, Storage, StoreError, StoreParking};
