//! Latency of the two operations of [`Communication`], measured the same way on every backend:
//! broadcast-to-delivery at every subscriber, and put-on-one-peer to fetch-on-another.
//!
//! At concurrency `c`, `c` operations start together and the next `c` start when all of them are
//! done (or their bound ran out: those count as lost). The first `warmup` operations are not
//! recorded. Times are the tokio clock's, so under a simulator's paused clock they are virtual.

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex},
    time::Duration,
};

use bytes::Bytes;
use comms::{Codec, Communication, Topic};
use futures::future::join_all;
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use tokio::{sync::mpsc, time::Instant};

/// Which operation a measurement is of.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Operation {
    /// From `broadcast` on one peer to the message's arrival on each subscriber.
    Broadcast,
    /// From `put` on one peer to the end of `fetch` of the same CID on another.
    PutFetch,
}

/// How much to measure per cell.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Plan {
    /// Operations recorded per cell (broadcasts count once per subscriber reached).
    pub samples: usize,
    /// Operations run first and not recorded.
    pub warmup: usize,
    /// How long one batch may take before its missing results count as lost.
    #[serde(with = "humantime_serde")]
    pub bound: Duration,
}

/// One cell's samples.
pub struct Measured {
    /// Latencies in microseconds.
    pub histogram: Histogram<u64>,
    /// Wall (or virtual) time of the recorded part.
    pub elapsed: Duration,
    /// Results that did not arrive within the bound.
    pub lost: u64,
}

impl Measured {
    fn new() -> Measured {
        Measured {
            histogram: Histogram::new_with_bounds(1, 3_600_000_000, 3)
                .expect("valid histogram bounds"),
            elapsed: Duration::ZERO,
            lost: 0,
        }
    }

    fn record(&mut self, latency: Duration) {
        self.histogram
            .saturating_record(latency.as_micros().max(1) as u64);
    }
}

/// `size` bytes that no other call returns: `id` first, then a cheap pseudo-random fill (so no
/// backend can deduplicate or compress its way to a better figure).
pub fn payload(id: u64, size: usize) -> Bytes {
    let mut data = Vec::with_capacity(size.max(8));
    data.extend_from_slice(&id.to_be_bytes());
    let mut state = id.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    while data.len() < size {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        data.extend_from_slice(&state.to_le_bytes());
    }
    data.truncate(size.max(8));
    Bytes::from(data)
}

/// The subscribers' side of broadcast measurements: one reader task per subscription reports each
/// arrival's latency. Kept across cells, so a backend's subscriptions are set up once.
pub struct Listeners {
    sent: Arc<Mutex<HashMap<u64, Instant>>>,
    arrived: mpsc::UnboundedReceiver<(u64, Duration)>,
    readers: Vec<tokio::task::JoinHandle<()>>,
}

impl Listeners {
    /// Starts reading `subscriptions`, one per subscriber.
    pub fn new(subscriptions: Vec<comms::Subscription>) -> Listeners {
        let sent: Arc<Mutex<HashMap<u64, Instant>>> = Arc::default();
        let (arrivals, arrived) = mpsc::unbounded_channel();
        let readers = subscriptions
            .into_iter()
            .map(|mut subscription| {
                let (sent, arrivals) = (sent.clone(), arrivals.clone());
                tokio::spawn(async move {
                    while let Some(message) = subscription.recv().await {
                        let Some(id) = message.data.get(..8).and_then(|b| b.try_into().ok()) else {
                            continue;
                        };
                        let id = u64::from_be_bytes(id);
                        if let Some(at) = lock(&sent).get(&id).copied() {
                            let _ = arrivals.send((id, at.elapsed()));
                        }
                    }
                })
            })
            .collect();
        Listeners {
            sent,
            arrived,
            readers,
        }
    }
}

impl Drop for Listeners {
    fn drop(&mut self) {
        self.readers.iter().for_each(|r| r.abort());
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Broadcast-to-delivery latency from `publisher` to every subscriber of `listeners` on `topic`,
/// for messages numbered from `first_id` (unique across calls). The publisher's backend must
/// already know the subscribers.
pub async fn broadcast<C: Communication + ?Sized>(
    publisher: &C,
    listeners: &mut Listeners,
    topic: &Topic,
    size: usize,
    concurrency: usize,
    plan: Plan,
    first_id: u64,
) -> anyhow::Result<Measured> {
    let subscribers = listeners.readers.len().max(1);
    let mut measured = Measured::new();
    let mut phases = Phases::new(
        plan.warmup.div_ceil(subscribers),
        plan.samples.div_ceil(subscribers),
    );
    let mut next = first_id;
    while let Some(recording) = phases.next_batch(concurrency) {
        let batch: Vec<u64> = (next..next + concurrency as u64).collect();
        next += concurrency as u64;
        let sends = batch.iter().map(|&id| {
            let data = payload(id, size);
            let sent = listeners.sent.clone();
            async move {
                lock(&sent).insert(id, Instant::now());
                publisher.broadcast(topic, data).await
            }
        });
        for result in join_all(sends).await {
            result?;
        }
        let wanted: HashSet<u64> = batch.iter().copied().collect();
        let expected = batch.len() * subscribers;
        let mut got = 0;
        let deadline = Instant::now() + plan.bound;
        while got < expected {
            match tokio::time::timeout_at(deadline, listeners.arrived.recv()).await {
                Ok(Some((id, latency))) if wanted.contains(&id) => {
                    got += 1;
                    if recording {
                        measured.record(latency);
                    }
                }
                Ok(Some(_)) => {} // late from an earlier batch, already counted as lost
                Ok(None) | Err(_) => break,
            }
        }
        if recording {
            measured.lost += (expected - got) as u64;
        }
        let mut sent = lock(&listeners.sent);
        batch.iter().for_each(|id| {
            sent.remove(id);
        });
    }
    measured.elapsed = phases.recorded_for();
    Ok(measured)
}

/// Warm-up batches, then recorded ones, until each phase has at least its count of operations.
struct Phases {
    warmup: usize,
    record: usize,
    started: Option<Instant>,
}

impl Phases {
    fn new(warmup: usize, record: usize) -> Phases {
        Phases {
            warmup,
            record,
            started: None,
        }
    }

    /// Whether the next batch of `size` is recorded; `None` when done.
    fn next_batch(&mut self, size: usize) -> Option<bool> {
        if self.warmup > 0 {
            self.warmup = self.warmup.saturating_sub(size);
            return Some(false);
        }
        if self.record == 0 {
            return None;
        }
        self.record = self.record.saturating_sub(size);
        self.started.get_or_insert_with(Instant::now);
        Some(true)
    }

    /// How long the recorded batches took.
    fn recorded_for(&self) -> Duration {
        self.started.map_or(Duration::ZERO, |s| s.elapsed())
    }
}

/// Put-on-`putter` to fetched-on-`fetcher` latency of fresh `size`-byte raw blocks.
pub async fn put_fetch<C: Communication + ?Sized>(
    putter: &C,
    fetcher: &C,
    size: usize,
    concurrency: usize,
    plan: Plan,
    first_id: u64,
) -> anyhow::Result<Measured> {
    let mut measured = Measured::new();
    let mut phases = Phases::new(plan.warmup, plan.samples);
    let mut next = first_id;
    while let Some(recording) = phases.next_batch(concurrency) {
        let batch = next..next + concurrency as u64;
        next += concurrency as u64;
        let operations = batch.map(|id| async move {
            let data = payload(id, size);
            let begun = Instant::now();
            let cid = putter.put(Codec::Raw, data).await?;
            fetcher.fetch(&cid, plan.bound).await?;
            anyhow::Ok(begun.elapsed())
        });
        for result in join_all(operations).await {
            match result {
                Ok(latency) if recording => measured.record(latency),
                Ok(_) => {}
                Err(error) if recording => {
                    tracing::debug!(%error, "a put-fetch failed");
                    measured.lost += 1;
                }
                Err(_) => {}
            }
        }
    }
    measured.elapsed = phases.recorded_for();
    Ok(measured)
}
