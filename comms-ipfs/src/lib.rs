//! The [`comms::Communication`] contract over a real IPFS daemon (kubo, or anything serving kubo's
//! `/api/v0` RPC): broadcast over pubsub, fetch over bitswap.
//!
//! | contract | RPC call |
//! |---|---|
//! | `broadcast` | `pubsub/pub` of a frame (topic as multibase base64url, data as a multipart file), and `block/put` of it, unpinned |
//! | `subscribe` | `pubsub/sub`, an ndjson stream decoded here (see [`pubsub`](crate::pubsub)) |
//! | `put` | `block/put?cid-codec=<codec>&mhtype=sha2-256&pin=true` (CIDv1; pinned against GC) |
//! | `keep` | one `block/put?cid-codec=<codec>&mhtype=sha2-256&pin=false` of several blocks, up to [`KEEP_CALL_BYTES`] |
//! | `release` | `pin/rm` of each CID (one not pinned is no error) |
//! | `fetch` | `block/get` with the daemon's own `timeout=`, re-hashed before it is returned |
//! | `peers`, `topic_peers` | `swarm/peers`, `pubsub/peers` |
//!
//! The daemon and the swarm behind it are not trusted: every fetched block is re-hashed
//! ([`comms::Error::CidMismatch`] otherwise), sizes are checked before sending and while receiving,
//! and a malformed reply is a typed error or a dropped, counted line, never a panic.
//!
//! Every call has a deadline, and transient failures (connection refused or reset, 5xx, a timed-out
//! attempt, a malformed reply) are retried with exponential backoff and jitter within it; permanent
//! ones (4xx, CID mismatch, too large) are not. Subscriptions re-open themselves, with backoff, when
//! the stream ends or the daemon stops listing the topic (a restarted daemon forgets its
//! subscriptions silently), reconnecting the known peers first. Retries, drops and subscription gaps
//! are counted in [`IpfsMetrics`].
//!
//! One backend per daemon: messages whose sender is the daemon's own peer ID are dropped as echoes.
//!
//! A backend publishes one message at a time, and the broadcasts that queue meanwhile go together as
//! one pubsub message. kubo loses a publisher's messages that its validator sees out of order, so
//! each pubsub message names the publisher's previous one on the topic, which the publisher also
//! stores, and a subscriber fetches the ones it did not receive (see [`publish`](crate::publish) and
//! [`repair`](crate::repair)).

mod config;
mod metrics;
mod peering;
mod publish;
mod pubsub;
mod repair;
mod rpc;
#[cfg(feature = "test-utils")]
pub mod testnet;

use std::{sync::Arc, time::Duration};

use async_trait::async_trait;
use bytes::Bytes;
use comms::{Cid, Codec, Communication, Error, Limits, Operation, PeerId, Subscription, Topic};
use ipfs_api_backend_hyper::{IpfsClient, TryFromUri};
use ipfs_api_prelude::request::{
    ApiRequest, BlockGet, Id, PinRm, PubsubLs, PubsubPeers, PubsubPub, Version,
};
use serde::{Deserialize, Serialize};
use tokio::task::JoinHandle;
use tracing::info;

use comms::contacts::ContactStore;
pub use config::{IpfsConfig, RetryPolicy};
pub use metrics::{IpfsMetrics, MetricsSnapshot};
use peering::Peering;
#[cfg(feature = "fuzzing")]
pub use pubsub::decode_stream;
use rpc::{Deadline, Failure, Rpc, Timed};

/// How long [`IpfsComms::remember_peers`] asks the daemon for its peers.
const REMEMBER_NOW_WITHIN: Duration = Duration::from_secs(1);

/// Why the backend could not start. Each says what to change.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// `api` is neither an http URL nor a multiaddr.
    #[error("invalid IPFS API address {api:?}: {reason}")]
    BadAddress { api: String, reason: String },
    /// The daemon did not answer.
    #[error(
        "the IPFS daemon at {api} is not reachable ({source}); is it running (`ipfs daemon`)?"
    )]
    Unreachable {
        api: String,
        #[source]
        source: Error,
    },
    /// The daemon answers, but pubsub is off.
    #[error(
        "pubsub is disabled on the IPFS daemon at {api} (version {version}: {detail}); turn it on \
         with `ipfs config --json Pubsub.Enabled true` and restart the daemon"
    )]
    PubsubDisabled {
        api: String,
        version: String,
        detail: String,
    },
    /// The contact store exists but cannot be read.
    #[error("cannot read the contact store {path}: {source}")]
    ContactStore {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The `Communication` contract over one IPFS daemon. Cheap to clone.
#[derive(Clone)]
pub struct IpfsComms {
    inner: Arc<Inner>,
}

struct Inner {
    rpc: Rpc,
    config: IpfsConfig,
    local: PeerId,
    version: String,
    metrics: Arc<IpfsMetrics>,
    peering: Arc<Peering>,
    contacts_task: JoinHandle<()>,
    /// Broadcasts, one `pubsub/pub` at a time on this daemon.
    publisher: Arc<publish::Publisher>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.contacts_task.abort();
    }
}

/// A reply holding a list of strings (`pubsub/ls`, `pubsub/peers`); kubo sends `null` for none.
#[derive(Deserialize)]
pub(crate) struct Strings {
    #[serde(rename = "Strings", default, deserialize_with = "null_as_empty")]
    pub strings: Vec<String>,
}

fn null_as_empty<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    Ok(Option::<Vec<String>>::deserialize(d)?.unwrap_or_default())
}

#[derive(Deserialize)]
struct VersionReply {
    #[serde(rename = "Version")]
    version: String,
    /// kubo's Go version: another daemon has none.
    #[serde(rename = "Golang")]
    golang: Option<String>,
}

#[derive(Deserialize)]
struct IdReply {
    #[serde(rename = "ID")]
    id: String,
}

/// `block/put` with the codec as kubo names it, `cid-codec` (since 0.13; the client crate still
/// sends `format`, which kubo keeps only for CIDv0).
#[derive(Serialize)]
struct BlockPut {
    #[serde(rename = "cid-codec")]
    cid_codec: &'static str,
    mhtype: &'static str,
    pin: bool,
}

impl BlockPut {
    fn new(codec: Codec, pin: bool) -> BlockPut {
        BlockPut {
            cid_codec: codec.name(),
            mhtype: "sha2-256",
            pin,
        }
    }
}

impl ApiRequest for BlockPut {
    const PATH: &'static str = "/block/put";
}

#[derive(Deserialize)]
struct PutReply {
    #[serde(rename = "Key")]
    key: String,
}

impl IpfsComms {
    /// Connects to the daemon with fresh metrics. See [`IpfsComms::connect_with`].
    pub async fn connect(config: IpfsConfig) -> Result<IpfsComms, StartError> {
        IpfsComms::connect_with(config, Arc::default()).await
    }

    /// Checks that the daemon is reachable and has pubsub on, learns its peer ID and version,
    /// connects it to the configured and remembered peers, and starts recording its peers.
    pub async fn connect_with(
        config: IpfsConfig,
        metrics: Arc<IpfsMetrics>,
    ) -> Result<IpfsComms, StartError> {
        let client = client_for(&config.api)?;
        let rpc = Rpc::new(client, config.retry, metrics.clone());
        let deadline = call_deadline(&config);
        let unreachable = |source| StartError::Unreachable {
            api: config.api.clone(),
            source,
        };
        let version: VersionReply = rpc
            .call(Operation::Peers, deadline, |_| rpc.json(Version, None))
            .await
            .map_err(unreachable)?;
        let id: IdReply = rpc
            .call(Operation::Peers, deadline, |_| {
                rpc.json(Id { peer: None }, None)
            })
            .await
            .map_err(unreachable)?;
        rpc.call(Operation::Subscribe, deadline, |_| {
            rpc.json::<_, Strings>(PubsubLs, None)
        })
        .await
        .map_err(|error| StartError::PubsubDisabled {
            api: config.api.clone(),
            version: version.version.clone(),
            detail: error.to_string(),
        })?;

        let store = match &config.contact_store {
            Some(path) => {
                let store =
                    ContactStore::open(path).map_err(|source| StartError::ContactStore {
                        path: path.clone(),
                        source,
                    })?;
                info!(path = %path.display(), contacts = store.addresses().len(), "opened the contact store");
                Some(store)
            }
            None => None,
        };
        let peering = Arc::new(Peering::new(
            rpc.clone(),
            deadline,
            config.peers.clone(),
            store,
        ));
        let connected = peering.connect_all().await;
        let contacts_task = tokio::spawn(remember_peers(peering.clone(), config.contact_refresh));
        info!(api = %config.api, version = %version.version, peer = %id.id, connected, "connected to the IPFS daemon");
        if version.golang.is_none() {
            tracing::warn!(version = %version.version, "the daemon is not kubo, the only one tested: it is spoken to as kubo");
        }
        let daemon = RpcDaemon {
            rpc: rpc.clone(),
            deadline,
            metrics: metrics.clone(),
        };
        let limit = config.limits.max_message_bytes;
        let publisher = publish::shared(&config.api, Arc::new(daemon), limit);
        Ok(IpfsComms {
            inner: Arc::new(Inner {
                rpc,
                local: PeerId::new(id.id),
                version: version.version,
                metrics,
                peering,
                contacts_task,
                publisher,
                config,
            }),
        })
    }

    /// The daemon's version, as it reported it at start.
    pub fn daemon_version(&self) -> &str {
        &self.inner.version
    }

    /// This backend's counters.
    pub fn metrics(&self) -> &Arc<IpfsMetrics> {
        &self.inner.metrics
    }

    /// Asks the daemon to connect to `address` (a multiaddr ending in `/p2p/<peer id>`).
    pub async fn connect_peer(&self, address: &str) -> Result<(), Error> {
        self.inner.peering.connect(address).await
    }

    /// Records the connected peers in the contact store now (it also happens periodically), asking
    /// the daemon for at most [`REMEMBER_NOW_WITHIN`]: at shutdown the daemon may be stopping too,
    /// and the periodic record is at most `contact_refresh` old anyway.
    pub async fn remember_peers(&self) {
        let deadline = Deadline {
            total: REMEMBER_NOW_WITHIN,
            attempt: REMEMBER_NOW_WITHIN,
        };
        self.inner.peering.remember_connected(Some(deadline)).await;
    }

    fn deadline(&self) -> Deadline {
        call_deadline(&self.inner.config)
    }
}

fn call_deadline(config: &IpfsConfig) -> Deadline {
    Deadline {
        total: config.call_timeout,
        attempt: config.call_timeout / 2,
    }
}

/// The client for an http URL or a multiaddr such as kubo writes to `$IPFS_PATH/api`.
pub(crate) fn client_for(api: &str) -> Result<IpfsClient, StartError> {
    let bad = |reason: String| StartError::BadAddress {
        api: api.to_owned(),
        reason,
    };
    if api.starts_with('/') {
        IpfsClient::from_multiaddr_str(api).map_err(|error| bad(error.to_string()))
    } else if api.starts_with("http://") {
        <IpfsClient as TryFromUri>::from_str(api).map_err(|error| bad(error.to_string()))
    } else {
        Err(bad("expected http://host:port or a multiaddr".into()))
    }
}

async fn remember_peers(peering: Arc<Peering>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    loop {
        tick.tick().await;
        peering.remember_connected(None).await;
    }
}

#[async_trait]
impl Communication for IpfsComms {
    fn local_peer(&self) -> PeerId {
        self.inner.local.clone()
    }

    fn limits(&self) -> Limits {
        self.inner.config.limits
    }

    async fn broadcast(&self, topic: &Topic, data: Bytes) -> Result<(), Error> {
        self.limits().check_message(data.len())?;
        self.inner.publisher.broadcast(topic, data).await
    }

    async fn subscribe(&self, topic: &Topic) -> Result<Subscription, Error> {
        let inner = &self.inner;
        let context = pubsub::Context {
            rpc: inner.rpc.clone(),
            local: inner.local.clone(),
            limits: inner.config.limits,
            metrics: inner.metrics.clone(),
            peering: inner.peering.clone(),
            call: self.deadline(),
            resubscribe: inner.config.resubscribe,
            check_every: inner.config.subscription_check,
            queue: inner.config.subscriber_queue,
        };
        pubsub::subscribe(context, topic.clone()).await
    }

    async fn put(&self, codec: Codec, data: Bytes) -> Result<Cid, Error> {
        self.limits().check_block(data.len())?;
        let inner = &self.inner;
        let cid = comms::cid_for(codec, &data);
        let block = std::slice::from_ref(&data);
        put_blocks(&inner.rpc, self.deadline(), codec, block, &[cid], true)
            .await
            .map(|()| cid)
    }

    /// `pin/rm` of each CID; the daemon's refusal of one that is not pinned is no error.
    async fn release(&self, cids: Vec<Cid>) -> Result<(), Error> {
        let rpc = &self.inner.rpc;
        for cid in cids {
            let key = cid.to_string();
            rpc.call(Operation::Put, self.deadline(), |_| async {
                let request = PinRm {
                    key: &key,
                    recursive: true,
                };
                match rpc.json::<_, serde_json::Value>(request, None).await {
                    Err(Failure::Refused(why)) if why.to_string().contains("not pinned") => Ok(()),
                    other => other.map(|_| ()),
                }
            })
            .await?;
        }
        Ok(())
    }

    /// `block/put` of several blocks in one call, unpinned, in calls of at most
    /// [`KEEP_CALL_BYTES`].
    async fn keep(&self, codec: Codec, blocks: Vec<Bytes>) -> Result<(), Error> {
        for block in &blocks {
            self.limits().check_block(block.len())?;
        }
        let inner = &self.inner;
        let mut rest = &blocks[..];
        while !rest.is_empty() {
            let mut take = 1;
            let mut bytes = rest[0].len();
            while take < rest.len() && bytes + rest[take].len() <= KEEP_CALL_BYTES {
                bytes += rest[take].len();
                take += 1;
            }
            let (call, later) = rest.split_at(take);
            let cids: Vec<Cid> = call.iter().map(|b| comms::cid_for(codec, b)).collect();
            let deadline = self.deadline();
            put_blocks(&inner.rpc, deadline, codec, call, &cids, false).await?;
            rest = later;
        }
        Ok(())
    }

    async fn fetch(&self, cid: &Cid, timeout: Duration) -> Result<Bytes, Error> {
        let inner = &self.inner;
        let limit = self.limits().max_block_bytes;
        fetch_block(&inner.rpc, &inner.metrics, cid, timeout, limit).await
    }

    async fn peers(&self) -> Result<Vec<PeerId>, Error> {
        let connected = self.inner.peering.connected().await?;
        Ok(connected
            .into_iter()
            .map(|(peer, _)| PeerId::new(peer))
            .collect())
    }

    async fn topic_peers(&self, topic: &Topic) -> Result<Vec<PeerId>, Error> {
        let rpc = &self.inner.rpc;
        let request = || PubsubPeers {
            topic: Some(topic.as_str().as_bytes()),
        };
        let reply: Strings = rpc
            .call(Operation::Peers, self.deadline(), |_| {
                rpc.json(request(), None)
            })
            .await?;
        Ok(reply.strings.into_iter().map(PeerId::new).collect())
    }
}

/// The RPC calls the publishing queue makes.
struct RpcDaemon {
    rpc: Rpc,
    deadline: Deadline,
    metrics: Arc<IpfsMetrics>,
}

#[async_trait]
impl publish::Daemon for RpcDaemon {
    async fn publish(&self, topic: &Topic, frame: Bytes) -> Result<(), Error> {
        let request = || PubsubPub {
            topic: topic.as_str().as_bytes(),
        };
        let rpc = &self.rpc;
        rpc.call(Operation::Broadcast, self.deadline, |_| {
            rpc.empty(request(), Some(&frame))
        })
        .await
    }

    /// Unpinned: the frame is for receivers that lose it, and goes at the daemon's next `repo gc`.
    async fn store(&self, frame: Bytes, cid: Cid) {
        let (block, cids) = (std::slice::from_ref(&frame), [cid]);
        let stored = put_blocks(&self.rpc, self.deadline, Codec::Raw, block, &cids, false);
        if let Err(error) = stored.await {
            metrics::bump(&self.metrics.frame_puts_failed);
            tracing::warn!(%error, "could not store a published frame; a receiver that lost it cannot fetch it");
        }
    }
}

/// The most bytes of blocks that one call of [`IpfsComms`]'s `keep` sends.
pub const KEEP_CALL_BYTES: usize = 4 << 20;

/// One `block/put` of every block of `blocks` under `codec`, pinned or not, checking that the
/// daemon reports `expected`, their CIDs, in order.
async fn put_blocks(
    rpc: &Rpc,
    deadline: Deadline,
    codec: Codec,
    blocks: &[Bytes],
    expected: &[Cid],
    pin: bool,
) -> Result<(), Error> {
    let request = || BlockPut::new(codec, pin);
    rpc.call(Operation::Put, deadline, |_| async {
        let replies: Vec<PutReply> = rpc.json_each(request(), blocks).await?;
        if replies.len() != expected.len() {
            return Err(Failure::Transient(
                metrics::RetryCause::Malformed,
                format!(
                    "block/put of {} blocks replied with {} keys",
                    expected.len(),
                    replies.len()
                )
                .into(),
            ));
        }
        for (cid, reply) in expected.iter().zip(&replies) {
            check_stored(cid, &reply.key)?;
        }
        Ok(())
    })
    .await
}

/// `block/get` of `cid` within `timeout`, its bytes (at most `limit`) re-hashed and checked.
pub(crate) async fn fetch_block(
    rpc: &Rpc,
    metrics: &IpfsMetrics,
    cid: &Cid,
    timeout: Duration,
    limit: usize,
) -> Result<Bytes, Error> {
    comms::check_supported(cid)?;
    let hash = &cid.to_string();
    let deadline = Deadline {
        total: timeout,
        attempt: timeout,
    };
    rpc.call(Operation::Fetch, deadline, |budget| async move {
        let request = Timed::new(BlockGet { hash }, budget);
        let data = rpc.bytes(request, limit).await?;
        comms::verify(cid, &data).map_err(|error| {
            metrics::bump(&metrics.cid_mismatches);
            tracing::warn!(%cid, %error, "the daemon returned a block that does not match its CID");
            Failure::Permanent(error)
        })?;
        Ok(data)
    })
    .await
}

/// The daemon must have stored the block under the CID we computed; anything else (CIDv0, another
/// codec, another hash) means it did not do what was asked.
fn check_stored(expected: &Cid, key: &str) -> Result<Cid, Failure> {
    let stored: Cid = key.parse().map_err(|error| {
        Failure::Transient(
            metrics::RetryCause::Malformed,
            format!("block/put replied with a key that is no CID ({error}): {key:?}").into(),
        )
    })?;
    if stored == *expected {
        Ok(stored)
    } else {
        Err(Failure::Permanent(Error::CidMismatch {
            expected: Box::new(*expected),
            actual: Box::new(stored),
        }))
    }
}
