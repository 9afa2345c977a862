//! The ledger core: signed blocks in a Merkle DAG, Byzantine-fault-tolerant ordering, account state.
//!
//! Every validator proposes one block per round, referencing a quorum of the previous round's
//! blocks by CID; the blocks form a DAG whose causal histories are fixed by their hashes. A
//! deterministic rule ([`consensus`]) commits leader blocks, and everything a committed leader
//! references is ordered after it, so honest nodes commit the same sequence. Committed transactions
//! change the account [`state`]. The ledger talks to the network only through
//! [`comms::Communication`] and never names a backend. `DESIGN.md` has the data model and the
//! ordering rule's argument.

pub mod codec;
pub mod committee;
pub mod consensus;
pub mod core;
pub mod crypto;
pub mod dag;
#[cfg(test)]
mod dag_builder;
pub mod devnet;
mod error;
pub mod log_limit;
pub mod node;
pub mod state;
pub mod storage;
pub mod types;
pub mod validate;

pub use crate::core::{
    Archive, Commit, Core, CoreConfig, CoreStats, MemoryParking, Output, Parking, Standing,
    SubmitError,
};
pub use committee::Committee;
pub use crypto::{from_hex, HexError, Keypair, PublicKey, Signature};
pub use error::{Error, ParentsError};
pub use node::{hex, spawn, NodeConfig, NodeError, NodeHandle, Status, TxStatus, REPLAY_SLICE};
pub use state::{Account, Executed, Outcome, State};
pub use storage::{Committed, Storage, StoreParking};
pub use types::{
    Allocation, Block, Genesis, Payload, SignedBlock, SignedTransaction, Transaction, Validator,
};
