//! The ledger: its protocol core ([`ledger_core`], re-exported here whole) driven as a node over a
//! [`comms::Communication`] backend and a [`Store`].
//!
//! [`node`] runs the core in one task: inputs from the network, the store, the clock and handles;
//! outputs to the backend and the store. The store is RocksDB on a real node (`ledger-rocksdb`) or
//! a [`MemoryStore`] in a simulation; this crate links neither a database nor a backend.

pub use ledger_core::*;

pub mod node;

pub use node::{
    spawn, Exit, NodeConfig, NodeError, NodeHandle, ProvenAccount, Status, TxStatus, MIN_RETENTION,
    PRUNE_EVERY, REPLAY_SLICE,
};
