//! An embedded IPFS peer: the node speaks libp2p itself, in-process, rather than through a kubo
//! daemon's RPC: the transport (TCP, noise, yamux), identify and ping, broadcast over gossipsub
//! and fetch over bitswap, both interoperating with kubo. Gossipsub is configured as kubo's
//! go-libp2p-pubsub expects:
//!
//! - messages signed by the peer's key and validated strictly (kubo's `StrictSign`);
//! - the message ID computed as Go computes it by default, the `from` peer's bytes followed by the
//!   sequence number's eight big-endian bytes (rust-libp2p's default hashes differently, and then
//!   gossip's IHAVE/IWANT never match a Go peer's);
//! - sequence numbers that rise across restarts: rust-libp2p starts them at the wall clock in
//!   nanoseconds and counts up, and kubo drops a peer's message whose number is not above the last
//!   one it saw from it;
//! - 1 MiB the largest message ([`comms::Limits`]), and topic names as they are (no hashing).
//!
//! identify advertises `/meshsub/1.1.0`, which kubo waits to see before it opens a pubsub stream.
//! Blocks go over bitswap 1.2.0 of our own (see `bitswap`), from a blockstore in RocksDB (or in
//! memory, for tests). Connections are bounded ([`P2pConfig`]: handshakes in progress, connections
//! in, connections per peer, the handshake's time). [`P2pPeer`] is a [`comms::Communication`]
//! backend and passes its conformance suite.
//!
//! One task owns the libp2p swarm and runs one loop (commands from [`P2pPeer`] handles, swarm
//! events); a handle talks to it over a channel.

mod bitswap;
mod config;
mod gossip;
mod key;
mod metrics;
mod peer;
mod store;

pub use config::P2pConfig;
pub use key::load_or_create_key;
pub use libp2p::identity::Keypair;
pub use metrics::{P2pMetrics, P2pSnapshot};
pub use peer::P2pPeer;
pub use store::{BlockStore, MemoryBlocks, RocksBlocks, StoreError};

/// Why the embedded peer failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum P2pError {
    /// A listen or peer address that is not a multiaddr.
    #[error("{address:?} is not a multiaddr: {reason}")]
    Address { address: String, reason: String },
    /// The transport could not be set up or could not listen.
    #[error("transport: {0}")]
    Transport(String),
    /// The blockstore could not be opened.
    #[error("blockstore: {0}")]
    Store(String),
    /// The contact store could not be read.
    #[error("the contact store {path}: {reason}")]
    ContactStore {
        path: std::path::PathBuf,
        reason: String,
    },
    /// The peer's identity could not be read or written.
    #[error("the peer key {path}: {reason}")]
    Key {
        path: std::path::PathBuf,
        reason: String,
    },
}
