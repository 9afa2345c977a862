//! The ledger core: signed blocks in a Merkle DAG, Byzantine-fault-tolerant ordering, account state.
//!
//! It talks to the network only through [`comms::Communication`] and never names a backend; its
//! tests run over the `sim` backend. The data model and ordering rule are built under the ledger
//! issue; this crate is the place they go.

pub use comms;
