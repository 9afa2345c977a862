//! The `Communication` contract: the only way the ledger talks to the world.
//!
//! Two operations carry everything: **broadcast** a message to the peers subscribed to a topic, and
//! **fetch** a block by its content identifier (CID) from whichever peer has it. Backends implement
//! [`Communication`]; the ledger is written against the trait and never names a backend. Two
//! backends exist: `comms-ipfs` (an IPFS daemon: pubsub for broadcast, bitswap for fetch) and `sim`
//! (a deterministic in-memory network with virtual time).
//!
//! # Semantics every backend keeps
//!
//! Broadcast is a datagram service, like the gossipsub it abstracts:
//! - **Best effort.** A message may be lost (link loss, a partition, a full subscriber queue, a daemon
//!   restart). Nothing is retransmitted. A layer that needs reliability re-announces, as the ledger
//!   does by re-broadcasting its heads.
//! - **Duplicates are possible** (a gossip overlay, a resubscription), so receivers must be idempotent.
//! - **No ordering**, neither across senders nor between two messages of one sender.
//! - **No echo.** A peer's own subscriptions never receive the messages it broadcasts itself.
//! - **Subscriptions start when [`Communication::subscribe`] returns** on the subscriber's side; how
//!   long until remote publishers know of it is backend-specific: [`Communication::topic_peers`] tells
//!   a publisher which peers it currently knows to be subscribed.
//! - **Unsubscribe by dropping** the [`Subscription`]. The stream ends (`None`) when the backend closes.
//! - `from` is the transport's claim of the sender, not authenticated: sign what must be trusted.
//!
//! Blocks are content-addressed and immutable:
//! - [`Communication::put`] stores a block locally under CIDv1 (sha2-256, codec `raw` or `dag-cbor`),
//!   makes it available to peers, keeps it from garbage collection, and returns its CID. Putting the
//!   same bytes twice is harmless and yields the same CID on every backend.
//! - [`Communication::keep`] stores copies of blocks that another peer made available first, so that
//!   they are fetchable from here too: several per call where the backend can, and not kept from
//!   garbage collection for their own sake (an IPFS daemon's collector still keeps what a pinned
//!   block links).
//! - [`Communication::fetch`] returns the bytes of a CID from the local store or any reachable peer,
//!   **after verifying** that they hash to that CID ([`Error::CidMismatch`] otherwise). It never waits
//!   past its `timeout`: a CID nobody serves ends in [`Error::Timeout`], since absence cannot be proven
//!   in a peer-to-peer network.
//!
//! Sizes are bounded by [`Limits`] (1 MiB each by default): an oversized broadcast or put is refused
//! with [`Error::TooLarge`] before anything is sent, and an oversized message or block received from a
//! peer is dropped.
//!
//! # Testing a backend
//! With the `test-utils` feature, [`conformance`] holds the contract as generic async tests; every
//! backend runs all of them through [`conformance_tests!`].

pub mod config;
pub mod contacts;
mod content;
mod counters;
mod error;
pub mod frame;
mod subscription;
mod types;

#[cfg(feature = "test-utils")]
pub mod conformance;

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
pub use cid::Cid;

pub use content::{check_supported, cid_for, verify, Codec, SHA2_256};
pub use counters::bump;
pub use error::{BoxError, Error, Operation, SizeKind};
pub use subscription::Subscription;
pub use types::{Limits, Message, PeerId, Topic};

/// Broadcast messages and fetch blocks by CID. See the crate docs for the exact semantics.
#[async_trait]
pub trait Communication: Send + Sync + 'static {
    /// This peer's identity, as other peers see it in [`Message::from`].
    fn local_peer(&self) -> PeerId;

    /// The size limits this backend enforces.
    fn limits(&self) -> Limits;

    /// Sends `data` to the peers subscribed to `topic` (best effort; never to ourselves).
    async fn broadcast(&self, topic: &Topic, data: Bytes) -> Result<(), Error>;

    /// Starts receiving the messages other peers broadcast on `topic`.
    async fn subscribe(&self, topic: &Topic) -> Result<Subscription, Error>;

    /// Stores a block locally, makes it available to peers, and returns its CID.
    async fn put(&self, codec: Codec, data: Bytes) -> Result<Cid, Error>;

    /// Stores copies of blocks that another peer made available first (with [`put`]), so that
    /// they stay available from here too: in one call where the backend can, and not pinned, since
    /// this peer is not their first source. Fails when any of them could not be stored. By default,
    /// a `put` of each.
    ///
    /// [`put`]: Communication::put
    async fn keep(&self, codec: Codec, blocks: Vec<Bytes>) -> Result<(), Error> {
        for block in blocks {
            self.put(codec, block).await?;
        }
        Ok(())
    }

    /// Lets go of blocks this peer [`put`]: they are no longer kept from garbage collection for
    /// their own sake (the backend's collector may remove them; copies elsewhere stay). A CID not
    /// held so is no error. By default nothing: a backend that keeps everything.
    ///
    /// [`put`]: Communication::put
    async fn release(&self, cids: Vec<Cid>) -> Result<(), Error> {
        let _ = cids;
        Ok(())
    }

    /// The verified bytes of `cid`, from the local store or a peer, within `timeout`.
    async fn fetch(&self, cid: &Cid, timeout: Duration) -> Result<Bytes, Error>;

    /// The peers this one is connected to now.
    async fn peers(&self) -> Result<Vec<PeerId>, Error>;

    /// The connected peers known to be subscribed to `topic` (who a broadcast would reach now).
    async fn topic_peers(&self, topic: &Topic) -> Result<Vec<PeerId>, Error>;
}

#[async_trait]
impl<T: Communication + ?Sized> Communication for std::sync::Arc<T> {
    fn local_peer(&self) -> PeerId {
        (**self).local_peer()
    }

    fn limits(&self) -> Limits {
        (**self).limits()
    }

    async fn broadcast(&self, topic: &Topic, data: Bytes) -> Result<(), Error> {
        (**self).broadcast(topic, data).await
    }

    async fn subscribe(&self, topic: &Topic) -> Result<Subscription, Error> {
        (**self).subscribe(topic).await
    }

    async fn put(&self, codec: Codec, data: Bytes) -> Result<Cid, Error> {
        (**self).put(codec, data).await
    }

    async fn keep(&self, codec: Codec, blocks: Vec<Bytes>) -> Result<(), Error> {
        (**self).keep(codec, blocks).await
    }

    async fn release(&self, cids: Vec<Cid>) -> Result<(), Error> {
        (**self).release(cids).await
    }

    async fn fetch(&self, cid: &Cid, timeout: Duration) -> Result<Bytes, Error> {
        (**self).fetch(cid, timeout).await
    }

    async fn peers(&self) -> Result<Vec<PeerId>, Error> {
        (**self).peers().await
    }

    async fn topic_peers(&self, topic: &Topic) -> Result<Vec<PeerId>, Error> {
        (**self).topic_peers(topic).await
    }
}
