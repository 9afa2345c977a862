//! A `Communication` backend wrapped to measure what the ledger asks of it: broadcasts, received
//! messages, fetch latency and failures. Works over any backend, so `/metrics` reads the same on IPFS
//! and in the simulator.

use std::{sync::Arc, time::Duration};

use async_trait::async_trait;
use bytes::Bytes;
use comms::{Cid, Codec, Communication, Error, Limits, PeerId, Subscription, Topic};
use futures::StreamExt;
use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, histogram::Histogram},
    registry::Registry,
};
use tokio::time::Instant;

/// The label of a failed operation: the `comms::Error` kind.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabel {
    pub operation: &'static str,
    pub kind: &'static str,
}

/// The counters and histograms, shared by every clone of a [`Metered`] backend.
#[derive(Clone, Debug)]
pub struct CommsMetrics {
    broadcasts: Counter,
    broadcast_bytes: Counter,
    received: Counter,
    received_bytes: Counter,
    fetches: Counter,
    fetch_seconds: Histogram,
    puts: Counter,
    kept: Counter,
    errors: Family<ErrorLabel, Counter>,
}

impl Default for CommsMetrics {
    fn default() -> CommsMetrics {
        // 1 ms to about 33 s, doubling.
        let buckets = prometheus_client::metrics::histogram::exponential_buckets(0.001, 2.0, 16);
        CommsMetrics {
            broadcasts: Counter::default(),
            broadcast_bytes: Counter::default(),
            received: Counter::default(),
            received_bytes: Counter::default(),
            fetches: Counter::default(),
            fetch_seconds: Histogram::new(buckets),
            puts: Counter::default(),
            kept: Counter::default(),
            errors: Family::default(),
        }
    }
}

impl CommsMetrics {
    /// Registers every metric (under `comms_`).
    pub fn register(&self, registry: &mut Registry) {
        let r = registry.sub_registry_with_prefix("comms");
        r.register("broadcasts", "Messages broadcast", self.broadcasts.clone());
        r.register(
            "broadcast_bytes",
            "Bytes broadcast",
            self.broadcast_bytes.clone(),
        );
        r.register(
            "messages_received",
            "Messages received on subscriptions",
            self.received.clone(),
        );
        r.register(
            "received_bytes",
            "Bytes received on subscriptions",
            self.received_bytes.clone(),
        );
        r.register("fetches", "Fetches that succeeded", self.fetches.clone());
        r.register(
            "fetch_seconds",
            "Latency of successful fetches by CID",
            self.fetch_seconds.clone(),
        );
        r.register("puts", "Blocks made available", self.puts.clone());
        r.register(
            "kept",
            "Copies kept of blocks that other peers made available",
            self.kept.clone(),
        );
        r.register(
            "errors",
            "Failed operations, by operation and error kind",
            self.errors.clone(),
        );
    }

    fn failed(&self, operation: &'static str, error: &Error) {
        let kind = error_kind(error);
        self.errors
            .get_or_create(&ErrorLabel { operation, kind })
            .inc();
    }
}

/// A stable short name of a `comms::Error`, for a label.
pub fn error_kind(error: &Error) -> &'static str {
    match error {
        Error::Timeout { .. } => "timeout",
        Error::NotFound { .. } => "not_found",
        Error::CidMismatch { .. } => "cid_mismatch",
        Error::UnsupportedCid { .. } => "unsupported_cid",
        Error::TooLarge { .. } => "too_large",
        Error::InvalidTopic { .. } => "invalid_topic",
        Error::Unavailable { .. } => "unavailable",
        Error::Closed => "closed",
        _ => "other",
    }
}

/// A backend `C`, measured into shared [`CommsMetrics`].
#[derive(Clone, Debug)]
pub struct Metered<C> {
    inner: C,
    metrics: Arc<CommsMetrics>,
}

impl<C> Metered<C> {
    pub fn new(inner: C, metrics: Arc<CommsMetrics>) -> Metered<C> {
        Metered { inner, metrics }
    }
}

#[async_trait]
impl<C: Communication> Communication for Metered<C> {
    fn local_peer(&self) -> PeerId {
        self.inner.local_peer()
    }

    fn limits(&self) -> Limits {
        self.inner.limits()
    }

    async fn broadcast(&self, topic: &Topic, data: Bytes) -> Result<(), Error> {
        let len = data.len() as u64;
        let result = self.inner.broadcast(topic, data).await;
        match &result {
            Ok(()) => {
                self.metrics.broadcasts.inc();
                self.metrics.broadcast_bytes.inc_by(len);
            }
            Err(error) => self.metrics.failed("broadcast", error),
        }
        result
    }

    async fn subscribe(&self, topic: &Topic) -> Result<Subscription, Error> {
        let subscription = self
            .inner
            .subscribe(topic)
            .await
            .inspect_err(|error| self.metrics.failed("subscribe", error))?;
        let metrics = self.metrics.clone();
        let messages = futures::stream::unfold(subscription, |mut s| async move {
            s.recv().await.map(|message| (message, s))
        })
        .inspect(move |message| {
            metrics.received.inc();
            metrics.received_bytes.inc_by(message.data.len() as u64);
        });
        Ok(Subscription::new(topic.clone(), messages))
    }

    async fn put(&self, codec: Codec, data: Bytes) -> Result<Cid, Error> {
        let result = self.inner.put(codec, data).await;
        match &result {
            Ok(_) => {
                self.metrics.puts.inc();
            }
            Err(error) => self.metrics.failed("put", error),
        }
        result
    }

    async fn keep(&self, codec: Codec, blocks: Vec<Bytes>) -> Result<(), Error> {
        let count = blocks.len() as u64;
        let result = self.inner.keep(codec, blocks).await;
        match &result {
            Ok(()) => {
                self.metrics.kept.inc_by(count);
            }
            Err(error) => self.metrics.failed("keep", error),
        }
        result
    }

    async fn fetch(&self, cid: &Cid, timeout: Duration) -> Result<Bytes, Error> {
        let started = Instant::now();
        let result = self.inner.fetch(cid, timeout).await;
        match &result {
            Ok(_) => {
                self.metrics.fetches.inc();
                self.metrics
                    .fetch_seconds
                    .observe(started.elapsed().as_secs_f64());
            }
            Err(error) => self.metrics.failed("fetch", error),
        }
        result
    }

    async fn peers(&self) -> Result<Vec<PeerId>, Error> {
        self.inner.peers().await
    }

    async fn topic_peers(&self, topic: &Topic) -> Result<Vec<PeerId>, Error> {
        self.inner.topic_peers(topic).await
    }
}
