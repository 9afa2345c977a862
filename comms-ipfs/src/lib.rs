//! The [`comms::Communication`] contract over a real IPFS daemon: broadcast over pubsub, fetch over
//! bitswap, through the daemon's HTTP RPC API. Built under the `comms-ipfs` issue; this crate is the
//! place it goes.

pub use comms;
