//! What a simulation counts and records: counters, latency histograms, the trace and its digest.

use std::time::Duration;

use report::LatencySummary;
use serde::{Deserialize, Serialize};

/// Event counts since the simulation started.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    /// Broadcasts accepted (including a flooder's).
    pub published: u64,
    /// Payload bytes of those broadcasts.
    pub published_bytes: u64,
    /// Messages handed to a subscription.
    pub delivered: u64,
    /// Payload bytes of those messages.
    pub delivered_bytes: u64,
    /// Messages lost on a link.
    pub dropped_loss: u64,
    /// Messages not sent or not delivered because a partition separated the peers.
    pub dropped_partition: u64,
    /// Messages to or from a crashed peer.
    pub dropped_crashed: u64,
    /// Messages dropped because a subscription's queue was full.
    pub dropped_queue_full: u64,
    /// Messages a receiver refused for exceeding its size limit.
    pub dropped_too_large: u64,
    /// Messages that arrived after the receiver had unsubscribed.
    pub dropped_unsubscribed: u64,
    /// Blocks stored by `put`.
    pub puts: u64,
    /// Bytes the peers' stores hold (a block stored by two peers counts twice).
    pub stored_bytes: u64,
    /// Fetches started.
    pub fetches: u64,
    /// Fetches answered from the local store.
    pub fetches_local: u64,
    /// Fetches that returned verified bytes from a peer.
    pub fetches_ok: u64,
    /// Fetches that timed out.
    pub fetches_timed_out: u64,
    /// Fetches that failed with a CID mismatch.
    pub fetches_mismatched: u64,
    /// Block responses (remote fetch legs) sent.
    pub blocks_served: u64,
    /// Bytes of those responses.
    pub blocks_served_bytes: u64,
    /// Responses whose bytes did not hash to the CID.
    pub blocks_corrupt: u64,
    /// Responses lost on a link or cut by a partition or crash.
    pub blocks_lost: u64,
    /// Peer crashes.
    pub crashes: u64,
    /// Peer restarts.
    pub restarts: u64,
}

/// A snapshot of a simulation's figures, exportable as JSON.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Stats {
    /// Simulated time elapsed.
    #[serde(with = "humantime_serde")]
    pub elapsed: Duration,
    /// Event counts.
    pub counters: Counters,
    /// Broadcast-to-delivery latency at each subscriber.
    pub delivery_latency: LatencySummary,
    /// Latency of fetches answered by a peer.
    pub fetch_latency: LatencySummary,
    /// Digest of the whole trace: equal digests mean identical runs.
    pub trace_digest: String,
}

impl Stats {
    /// The snapshot as pretty JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("plain data serializes")
    }
}

/// What happened, in one trace event.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[repr(u8)]
pub enum TraceKind {
    /// `from` broadcast message `id` of `size` bytes.
    Publish,
    /// Message `id` reached `to`.
    Deliver,
    /// Message `id` to `to` was dropped (the counters say why).
    Drop,
    /// `from` stored a block.
    Put,
    /// `to` asked for a block (fetch `id`).
    FetchStart,
    /// `from` sent a block to `to` for fetch `id`.
    Serve,
    /// Fetch `id` of `to` finished with verified bytes.
    FetchOk,
    /// Fetch `id` of `to` failed.
    FetchFail,
    /// `from` crashed.
    Crash,
    /// `from` restarted.
    Restart,
    /// The network was partitioned (`size` groups) or healed (`size` 1).
    Partition,
}

/// One trace event. Peers are indices; `u32::MAX` stands for "none".
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TraceEvent {
    /// Simulated nanoseconds since the start.
    pub at_ns: u64,
    /// What happened.
    pub kind: TraceKind,
    /// The acting peer.
    pub from: u32,
    /// The peer acted upon.
    pub to: u32,
    /// A message or fetch id.
    pub id: u64,
    /// Bytes involved, or a count.
    pub size: u64,
}

/// The trace: a running digest of every event, and the events themselves when recording.
#[derive(Clone, Debug)]
pub struct Trace {
    digest: u64,
    events: Option<Vec<TraceEvent>>,
}

impl Trace {
    /// An empty trace that keeps its events when `record` is set.
    pub fn new(record: bool) -> Trace {
        Trace {
            digest: 0xcbf2_9ce4_8422_2325,
            events: record.then(Vec::new),
        }
    }

    /// Folds one event into the digest (and keeps it when recording).
    pub fn push(&mut self, event: TraceEvent) {
        for word in [
            event.at_ns,
            event.kind as u64,
            ((event.from as u64) << 32) | event.to as u64,
            event.id,
            event.size,
        ] {
            self.digest = (self.digest.rotate_left(5) ^ word).wrapping_mul(0x517c_c1b7_2722_0a95);
        }
        if let Some(events) = &mut self.events {
            events.push(event);
        }
    }

    /// The digest as 16 hex digits.
    pub fn digest(&self) -> String {
        format!("{:016x}", self.digest)
    }

    /// The recorded events (empty unless recording).
    pub fn events(&self) -> &[TraceEvent] {
        self.events.as_deref().unwrap_or_default()
    }
}
