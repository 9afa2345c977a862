//! Latency of the two operations of [`Communication`], measured the same way on every backend:
//! broadcast-to-delivery at every subscriber, and put-on-one-peer to fetch-on-another.
//!
//! At concurrency `c`, `c` operations start together and the next `c` start when all of them are
//! done (or their bound ran out: those count as lost). The first `warmup` operations are not
//! recorded. A cell advances a batch at a time ([`Batches`]), so that backends can take turns.
//! Times are the tokio clock's, so under a simulator's paused clock they are virtual.

use std::{
    collections::HashMap,
    future::Future,
    ops::Range,
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
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    clap::ValueEnum,
)]
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
    /// CPU time the recorded part cost, where measured: this process's and the backend's
    /// daemons' (see [`Batches::counting_cpu_of`]).
    pub cpu: Option<Duration>,
}

impl Measured {
    fn new() -> Measured {
        Measured {
            histogram: Histogram::new_with_bounds(1, 3_600_000_000, 3)
                .expect("valid histogram bounds"),
            elapsed: Duration::ZERO,
            lost: 0,
            cpu: None,
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

/// A cell's operations in batches of `concurrency`: warm-up batches first, then recorded ones.
/// Advanced one batch at a time ([`Batches::broadcast`], [`Batches::put_fetch`]), so that several
/// backends' cells can take turns batch by batch and a drift of the machine or the daemons affects
/// them alike.
pub struct Batches {
    warmup: usize,
    record: usize,
    concurrency: usize,
    next_id: u64,
    measured: Measured,
    /// Whose CPU time the recorded batches count (besides this process's), if any.
    cpu_of: Option<Vec<u32>>,
}

/// What one batch measured: the latency of each result that arrived in time, and how many did not.
#[derive(Default)]
struct Outcome {
    latencies: Vec<Duration>,
    lost: u64,
}

impl Batches {
    /// The batches of a cell under `plan`, where one operation yields `samples_per_operation`
    /// samples (a broadcast one per subscriber), numbering operations from `first_id`. Uses fewer
    /// than `plan.samples + plan.warmup + 2 * concurrency` ids.
    pub fn new(
        plan: Plan,
        samples_per_operation: usize,
        concurrency: usize,
        first_id: u64,
    ) -> Batches {
        let per = samples_per_operation.max(1);
        Batches {
            warmup: plan.warmup.div_ceil(per),
            record: plan.samples.div_ceil(per),
            concurrency: concurrency.max(1),
            next_id: first_id,
            measured: Measured::new(),
            cpu_of: None,
        }
    }

    /// Counts the CPU time of the recorded batches: this process's and that of the processes
    /// `pids` (the backend's daemons). Other backends' background work in this process during
    /// these batches counts too: backends that take turns measure each other's idle cost.
    pub fn counting_cpu_of(mut self, pids: Vec<u32>) -> Batches {
        self.cpu_of = Some(pids);
        self
    }

    /// What the recorded batches measured; the elapsed time is the sum of theirs alone.
    pub fn into_measured(self) -> Measured {
        self.measured
    }

    /// Runs the next batch: broadcasts of `size` bytes from `publisher`, each measured until its
    /// delivery at every subscriber of `listeners` on `topic`, for at most `bound`. False when the
    /// cell is done. The publisher's backend must already know the subscribers.
    pub async fn broadcast<C: Communication + ?Sized>(
        &mut self,
        publisher: &C,
        listeners: &mut Listeners,
        topic: &Topic,
        size: usize,
        bound: Duration,
    ) -> anyhow::Result<bool> {
        self.run(|ids| async move {
            let sends = ids.clone().map(|id| {
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
            let expected = ids.clone().count() * listeners.readers.len();
            let mut outcome = Outcome::default();
            let deadline = Instant::now() + bound;
            while outcome.latencies.len() < expected {
                match tokio::time::timeout_at(deadline, listeners.arrived.recv()).await {
                    Ok(Some((id, latency))) if ids.contains(&id) => outcome.latencies.push(latency),
                    Ok(Some(_)) => {} // late from an earlier batch, already counted as lost
                    Ok(None) | Err(_) => break,
                }
            }
            outcome.lost = (expected - outcome.latencies.len()) as u64;
            let mut sent = lock(&listeners.sent);
            ids.for_each(|id| {
                sent.remove(&id);
            });
            Ok(outcome)
        })
        .await
    }

    /// Runs the next batch: fresh raw blocks of `size` bytes put on `putter` and fetched on
    /// `fetcher`, each measured from the put to the end of the fetch (bounded by `bound`). False
    /// when the cell is done.
    pub async fn put_fetch<C: Communication + ?Sized>(
        &mut self,
        putter: &C,
        fetcher: &C,
        size: usize,
        bound: Duration,
    ) -> anyhow::Result<bool> {
        self.run(|ids| async move {
            let operations = ids.map(|id| async move {
                let data = payload(id, size);
                let begun = Instant::now();
                let cid = putter.put(Codec::Raw, data).await?;
                fetcher.fetch(&cid, bound).await?;
                anyhow::Ok(begun.elapsed())
            });
            let mut outcome = Outcome::default();
            for result in join_all(operations).await {
                match result {
                    Ok(latency) => outcome.latencies.push(latency),
                    Err(error) => {
                        tracing::debug!(%error, "a put-fetch failed");
                        outcome.lost += 1;
                    }
                }
            }
            Ok(outcome)
        })
        .await
    }

    /// Runs the next batch with `batch`, given its operation ids, and records what it measured
    /// unless it is a warm-up batch; false when the cell is done.
    async fn run<F, Fut>(&mut self, batch: F) -> anyhow::Result<bool>
    where
        F: FnOnce(Range<u64>) -> Fut,
        Fut: Future<Output = anyhow::Result<Outcome>>,
    {
        let recording = if self.warmup > 0 {
            self.warmup = self.warmup.saturating_sub(self.concurrency);
            false
        } else if self.record > 0 {
            self.record = self.record.saturating_sub(self.concurrency);
            true
        } else {
            return Ok(false);
        };
        let ids = self.next_id..self.next_id + self.concurrency as u64;
        self.next_id = ids.end;
        let cpu_of = self.cpu_of.as_deref().filter(|_| recording);
        let cpu_before = cpu_of.and_then(crate::cpu_time);
        let started = Instant::now();
        let outcome = batch(ids).await?;
        if let (Some(before), Some(after)) = (cpu_before, cpu_of.and_then(crate::cpu_time)) {
            let spent = after.saturating_sub(before);
            self.measured.cpu = Some(self.measured.cpu.unwrap_or_default() + spent);
        }
        if recording {
            outcome
                .latencies
                .into_iter()
                .for_each(|latency| self.measured.record(latency));
            self.measured.lost += outcome.lost;
            self.measured.elapsed += started.elapsed();
        }
        Ok(true)
    }
}
