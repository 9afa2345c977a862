//! Byzantine validators for simulations and tests: [`Faulty`] wraps an honest node's backend to make
//! it equivocate or withhold; [`send_invalid_blocks`] replaces a validator by a stream of junk. A
//! network with at most f of them must still agree and make progress (`tests/agreement.rs`).

use std::{
    sync::atomic::{AtomicU64, Ordering},
    sync::Arc,
    time::Duration,
};

use async_trait::async_trait;
use bytes::Bytes;
use comms::{Cid, Codec, Communication, Error, Limits, PeerId, Subscription, Topic};
use serde::{Deserialize, Serialize};

use ledger::{codec::encode, Block, Keypair, Payload, SignedBlock};

/// How a faulty validator misbehaves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Behaviour {
    /// Signs a second, different block for every round it proposes in, and sends both.
    Equivocate,
    /// Sends half of its blocks to nobody, and serves no block to a fetch.
    Withhold,
    /// Runs no honest node; sends garbage, wrongly signed, wrong-chain and non-canonical blocks.
    Invalid,
}

impl std::str::FromStr for Behaviour {
    type Err = String;

    fn from_str(text: &str) -> Result<Behaviour, String> {
        match text {
            "equivocate" => Ok(Behaviour::Equivocate),
            "withhold" => Ok(Behaviour::Withhold),
            "invalid" => Ok(Behaviour::Invalid),
            _ => Err(format!(
                "{text:?}: expected equivocate, withhold or invalid"
            )),
        }
    }
}

/// A backend that makes an honest node misbehave (for [`Behaviour::Equivocate`] and
/// [`Behaviour::Withhold`]; an `Invalid` one behaves honestly here).
#[derive(Clone)]
pub struct Faulty<C> {
    inner: C,
    behaviour: Behaviour,
    key: Arc<Keypair>,
    sent: Arc<AtomicU64>,
}

impl<C: Communication> Faulty<C> {
    /// `inner` misbehaving as validator `key`.
    pub fn new(inner: C, behaviour: Behaviour, key: Keypair) -> Faulty<C> {
        Faulty {
            inner,
            behaviour,
            key: Arc::new(key),
            sent: Arc::new(AtomicU64::new(0)),
        }
    }

    /// The same block with another timestamp, signed again: an equivocation.
    fn twin(&self, bytes: &[u8]) -> Option<Bytes> {
        let mut block = SignedBlock::decode(bytes).ok()?.block;
        block.timestamp_ms ^= 0x5a5a;
        Some(Bytes::from(encode(&SignedBlock::sign(block, &self.key))))
    }
}

#[async_trait]
impl<C: Communication> Communication for Faulty<C> {
    fn local_peer(&self) -> PeerId {
        self.inner.local_peer()
    }

    fn limits(&self) -> Limits {
        self.inner.limits()
    }

    async fn broadcast(&self, topic: &Topic, data: Bytes) -> Result<(), Error> {
        match self.behaviour {
            Behaviour::Equivocate => {
                if let Some(twin) = self.twin(&data) {
                    self.inner.put(Codec::DagCbor, twin.clone()).await?;
                    self.inner.broadcast(topic, twin).await?;
                }
                self.inner.broadcast(topic, data).await
            }
            Behaviour::Withhold if self.sent.fetch_add(1, Ordering::Relaxed) % 2 == 0 => Ok(()),
            _ => self.inner.broadcast(topic, data).await,
        }
    }

    async fn subscribe(&self, topic: &Topic) -> Result<Subscription, Error> {
        self.inner.subscribe(topic).await
    }

    async fn put(&self, codec: Codec, data: Bytes) -> Result<Cid, Error> {
        match self.behaviour {
            Behaviour::Withhold => Ok(comms::cid_for(codec, &data)),
            _ => self.inner.put(codec, data).await,
        }
    }

    async fn fetch(&self, cid: &Cid, timeout: Duration) -> Result<Bytes, Error> {
        self.inner.fetch(cid, timeout).await
    }

    async fn peers(&self) -> Result<Vec<PeerId>, Error> {
        self.inner.peers().await
    }

    async fn topic_peers(&self, topic: &Topic) -> Result<Vec<PeerId>, Error> {
        self.inner.topic_peers(topic).await
    }
}

/// Sends a stream of invalid blocks as validator `author` until the task is dropped: garbage bytes,
/// a block signed with the wrong key, a block of another chain, a non-canonical encoding, a block
/// with parents that do not exist. `own_key` is the validator's real key.
pub async fn send_invalid_blocks<C: Communication>(
    peer: C,
    chain: Cid,
    author: u32,
    own_key: Keypair,
    topic: Topic,
) {
    let wrong_key = Keypair::from_secret([0xEE; 32]);
    for round in 0u64.. {
        let parents = vec![comms::cid_for(Codec::DagCbor, &round.to_be_bytes())];
        let block = |chain| Block {
            chain,
            author,
            round: round + 1,
            parents: parents.clone(),
            payload: Payload::Inline(vec![]),
            timestamp_ms: round,
            checkpoint: None,
        };
        let other_chain = comms::cid_for(Codec::DagCbor, b"another chain");
        let mut non_canonical = encode(&SignedBlock::sign(block(chain), &own_key));
        non_canonical.push(0);
        let junk: [Vec<u8>; 5] = [
            vec![0xff; 64],
            encode(&SignedBlock::sign(block(chain), &wrong_key)),
            encode(&SignedBlock::sign(block(other_chain), &own_key)),
            non_canonical,
            encode(&SignedBlock::sign(block(chain), &own_key)),
        ];
        for bytes in junk {
            let _ = peer.broadcast(&topic, Bytes::from(bytes)).await;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}
