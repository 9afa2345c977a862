//! Fetching the frames a subscription did not get.
//!
//! Every frame names its publisher's previous frame on the topic, which the publisher stored on its
//! daemon ([`publish`](crate::publish)). When a frame arrives whose predecessor has not, the
//! subscription fetches the predecessor by CID, hands its broadcasts on, and goes on back along the
//! chain while the frames are missing, up to [`MAX_DEPTH`] frames. Frames are known by sender (the
//! pubsub `from`, which kubo's signatures vouch for), origin and seq, so one peer's frames cannot
//! mark another's as seen, and a frame received twice is handed on once.
//!
//! Only frames that may have been published after the subscription started are fetched: a frame
//! published `before` ahead of one that arrived when the subscription was `age` old was published
//! after the subscription started only if `before` ≤ `age` less the latency of the later one. The
//! latency is unknown, so `before` ≤ `age` is the test: a frame published up to one latency before
//! the subscription started may be delivered, as it could have been in flight anyway.

use std::{
    collections::{BTreeSet, VecDeque},
    sync::{Arc, Mutex},
};

use bytes::Bytes;
use comms::{Limits, Message, PeerId, Topic};
use tokio::{
    sync::{mpsc, Semaphore},
    time::{Duration, Instant},
};
use tracing::debug;

use comms::frame::{self, Frame, Link, Prev};

use crate::{
    metrics::{bump, IpfsMetrics},
    rpc::Rpc,
};

/// How many missing frames, one before another, one repair goes back.
const MAX_DEPTH: usize = 32;

/// How many repairs of one subscription run at once; a loss found beyond it is counted and left.
const MAX_RUNNING: usize = 16;

/// How many frames a subscription remembers having received.
const REMEMBERED: usize = 4096;

/// Which frame: sender, origin, seq.
type Key = (PeerId, u64, u64);

/// Where a subscription's broadcasts go, and the limit they are held to.
#[derive(Clone)]
pub(crate) struct Outlet {
    pub sender: mpsc::Sender<Message>,
    pub topic: Topic,
    pub metrics: Arc<IpfsMetrics>,
    pub limits: Limits,
}

impl Outlet {
    /// Hands one received broadcast to the subscriber; false once the subscriber is gone.
    pub fn hand_on(&self, from: PeerId, data: Bytes) -> bool {
        let metrics = &self.metrics;
        let limit = self.limits.max_message_bytes;
        if data.len() > limit {
            bump(&metrics.oversized_dropped);
            debug!(topic = %self.topic, %from, size = data.len(), limit, "dropped an oversized message");
            return true;
        }
        let message = Message {
            from,
            topic: self.topic.clone(),
            data,
        };
        match self.sender.try_send(message) {
            Ok(()) => bump(&metrics.messages_received),
            Err(mpsc::error::TrySendError::Full(_)) => bump(&metrics.queue_full_dropped),
            Err(mpsc::error::TrySendError::Closed(_)) => return false,
        }
        true
    }
}

/// The frames one subscription has received, and its running repairs.
pub(crate) struct Repair {
    rpc: Rpc,
    outlet: Outlet,
    timeout: Duration,
    opened: Instant,
    seen: Mutex<Seen>,
    running: Arc<Semaphore>,
}

impl Repair {
    /// For a subscription that started now; each fetch waits at most `timeout`.
    pub fn new(rpc: Rpc, outlet: Outlet, timeout: Duration) -> Arc<Repair> {
        Arc::new(Repair {
            rpc,
            outlet,
            timeout,
            opened: Instant::now(),
            seen: Mutex::new(Seen::default()),
            running: Arc::new(Semaphore::new(MAX_RUNNING)),
        })
    }

    /// Hands on a frame received from `from` unless it came already, and starts fetching what it
    /// shows to be missing; false once the subscriber is gone.
    pub fn receive(self: &Arc<Self>, from: PeerId, frame: Frame) -> bool {
        let Some(link) = frame.link else {
            return self.hand_on_all(&from, frame.messages);
        };
        if !self.first_sight(&from, &link) {
            bump(&self.outlet.metrics.duplicates_dropped);
            return true;
        }
        if !self.hand_on_all(&from, frame.messages) {
            return false;
        }
        let age = self.opened.elapsed();
        if let Some(prev) = link
            .prev
            .filter(|prev| self.wants(&from, link.origin, prev, age))
        {
            self.start(from, link.origin, prev, age);
        }
        true
    }

    fn hand_on_all(&self, from: &PeerId, messages: Vec<Bytes>) -> bool {
        messages
            .into_iter()
            .all(|data| self.outlet.hand_on(from.clone(), data))
    }

    fn start(self: &Arc<Self>, from: PeerId, origin: u64, prev: Prev, age: Duration) {
        let Ok(permit) = self.running.clone().try_acquire_owned() else {
            bump(&self.outlet.metrics.repairs_skipped);
            debug!(topic = %self.outlet.topic, %from, cid = %prev.cid, "too many repairs running; a lost frame is left");
            return;
        };
        let repair = self.clone();
        tokio::spawn(async move {
            repair.walk(from, origin, prev, age).await;
            drop(permit);
        });
    }

    /// Fetches `prev` and the missing frames before it, within `budget` of the subscription's start.
    async fn walk(&self, from: PeerId, origin: u64, mut prev: Prev, mut budget: Duration) {
        for _ in 0..MAX_DEPTH {
            budget = budget.saturating_sub(prev.before);
            let Some((link, messages)) = self.fetch(&from, origin, &prev).await else {
                return;
            };
            if !self.first_sight(&from, &link) {
                return; // It came after all, meanwhile.
            }
            bump(&self.outlet.metrics.frames_repaired);
            debug!(topic = %self.outlet.topic, %from, seq = link.seq, "repaired a lost frame");
            if !self.hand_on_all(&from, messages) {
                return;
            }
            match link.prev {
                Some(next) if self.wants(&from, origin, &next, budget) => prev = next,
                _ => return,
            }
        }
    }

    /// The frame `prev` from its publisher, if it is what the frame naming it said.
    async fn fetch(&self, from: &PeerId, origin: u64, prev: &Prev) -> Option<(Link, Vec<Bytes>)> {
        let metrics = &self.outlet.metrics;
        let limit = self.outlet.limits.max_message_bytes + frame::FRAME_SLACK;
        let fetched = crate::fetch_block(&self.rpc, metrics, &prev.cid, self.timeout, limit).await;
        let data = match fetched {
            Ok(data) => data,
            Err(error) => {
                bump(&metrics.repairs_failed);
                debug!(topic = %self.outlet.topic, %from, cid = %prev.cid, %error, "could not fetch a lost frame");
                return None;
            }
        };
        match frame::decode(data) {
            Ok(Frame {
                link: Some(link),
                messages,
            }) if link.origin == origin && link.seq == prev.seq => Some((link, messages)),
            _ => {
                bump(&metrics.malformed_dropped);
                debug!(topic = %self.outlet.topic, %from, cid = %prev.cid, "a linked frame is not the one its successor named");
                None
            }
        }
    }

    /// Whether `prev` is missing and may have been published after the subscription started.
    fn wants(&self, from: &PeerId, origin: u64, prev: &Prev, age: Duration) -> bool {
        prev.before <= age && !self.lock().contains(&(from.clone(), origin, prev.seq))
    }

    /// Records the frame at `link` as received; false if it was already.
    fn first_sight(&self, from: &PeerId, link: &Link) -> bool {
        self.lock().insert((from.clone(), link.origin, link.seq))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Seen> {
        self.seen
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The last [`REMEMBERED`] frames received.
#[derive(Default)]
struct Seen {
    keys: BTreeSet<Key>,
    order: VecDeque<Key>,
}

impl Seen {
    fn contains(&self, key: &Key) -> bool {
        self.keys.contains(key)
    }

    fn insert(&mut self, key: Key) -> bool {
        if !self.keys.insert(key.clone()) {
            return false;
        }
        self.order.push_back(key);
        if self.order.len() > REMEMBERED {
            if let Some(oldest) = self.order.pop_front() {
                self.keys.remove(&oldest);
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(seq: u64) -> Key {
        (PeerId::new("peer"), 1, seq)
    }

    #[test]
    fn a_frame_is_seen_once_and_the_oldest_are_forgotten() {
        let mut seen = Seen::default();
        assert!(seen.insert(key(0)));
        assert!(!seen.insert(key(0)));
        for seq in 1..=REMEMBERED as u64 {
            assert!(seen.insert(key(seq)));
        }
        assert!(!seen.contains(&key(0)), "the oldest is forgotten");
        assert!(seen.contains(&key(1)));
        assert_eq!(seen.keys.len(), REMEMBERED);
        assert!(!seen.contains(&(PeerId::new("other"), 1, 1)), "by sender");
    }
}
