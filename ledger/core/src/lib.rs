//! The ledger's protocol core: signed blocks in a Merkle DAG, Byzantine-fault-tolerant ordering,
//! the mempool and proposer, and account state. Synchronous and free of IO: this crate depends on
//! no runtime, store or network backend, so the compiler keeps it so.
//!
//! Every validator proposes one block per round, referencing a quorum of the previous round's
//! blocks by CID; the blocks form a DAG whose causal histories are fixed by their hashes. A
//! deterministic rule ([`consensus`]) commits leader blocks, and everything a committed leader
//! references is ordered after it, so honest nodes commit the same sequence. Committed transactions
//! change the account [`state`].
//!
//! The [`Core`] is fed inputs (a block, a fetch result, a transaction, the time) and returns
//! [`Output`]s (broadcast this, fetch that, store and commit these). Where it needs old or parked
//! blocks it asks a [`Parking`] or [`Archive`] that a [`Store`] implements outside it. The `ledger`
//! crate drives it over a network backend and a store (RocksDB in `ledger-rocksdb`, or
//! [`MemoryStore`]). `ledger/DESIGN.md` has the data model and
//! the ordering rule's argument.

pub mod checkpoint;
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
pub mod state;
pub mod store;
pub mod tree;
pub mod types;
pub mod validate;

pub use crate::core::{ConfigError, Core, CoreConfig, CoreStats, Output, Standing, SubmitError};
pub use committee::Committee;
pub use crypto::{from_hex, hex, HexError, Keypair, PublicKey, Signature};
pub use error::{Error, ParentsError};
pub use state::{
    prove_stored_account, verify_account, Account, AccountProof, Executed, Outcome, State,
    StateRoot,
};
pub use store::{
    Archive, Base, Commit, Committed, MemoryParking, MemoryStore, Parking, Pruned, Start, Store,
    StoreError,
};
pub use types::{
    Allocation, Block, Checkpoint, Genesis, Payload, SignedBlock, SignedTransaction, Transaction,
    Validator,
};
