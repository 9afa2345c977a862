//! Publishing: one `pubsub/pub` at a time per daemon, the broadcasts that queue behind it sent
//! together in one pubsub message, and every frame stored on the daemon so that receivers can fetch
//! one they lost ([`frame`](comms::frame), [`repair`](crate::repair)).
//!
//! Why: kubo (since 0.40) runs a validator that ignores a message whose sequence number is not above
//! the highest it has seen from the same publisher. A daemon numbers a message when its
//! `pubsub/pub` call starts, so two calls in flight at once can reach the validator in the other
//! order, and the call of the lower-numbered one fails with `validation ignored`: publishes go one
//! at a time. Receivers validate concurrently too (a goroutine per message, and Go runs the newest
//! runnable one first), so two of a publisher's messages that wait at a receiver at the same time can
//! be swapped there, and the lower-numbered one is lost at that receiver alone. Measured on the
//! conformance suite's burst (4 publishers, 20 broadcasts each, to 4 subscribers, the suite's other
//! tests running beside it): publishing one at a time, 1 to 5 of 80 messages were lost at some
//! subscriber in nearly every run; kubo's debug log showed validations taking 14 to 16 ms and the
//! loser "punted". Waiting between publishes only makes it rarer: a wait of twice the previous
//! publish's duration passed 50 runs, once its duration lost a message in the first of 19, and the
//! wait cost a broadcast that follows another closely up to 1.9 times the raw publish's latency.
//!
//! So nothing waits, and the loss is repaired instead. The swap only ever loses the lower-numbered
//! of two messages, so the message it loses is always followed by one that arrives, and that one
//! names it: each frame carries the CID of the publisher's previous frame on the topic, and each
//! frame is put (unpinned, as a `raw` block) on the publisher's daemon while it is published. A
//! receiver that gets a frame whose predecessor it did not get fetches the predecessor over bitswap.
//!
//! The validator numbers all of a daemon's messages in one sequence, whatever their topic, so the
//! message that makes a receiver lose one can be on another topic, and then nothing need follow the
//! lost one on its own topic (in 50 runs of the suite with no other defence, one lost the last frame
//! of a burst, 19 broadcasts, that way). So a topic's last frame is followed up: once a frame on
//! another topic has gone out after it, the queue publishes, [`FOLLOW_UP_DELAY`] later, an empty
//! frame on the first topic that names it ([`Chains::at_risk`]). Follow-ups on two topics put each
//! other at risk in turn, so each goes again a round later, up to [`FOLLOW_UPS`] times for one frame
//! of broadcasts; then it ends. What it leaves is losing a topic's last frame and all its follow-ups.
//! A ledger node broadcasts on one topic, and sends none.
//!
//! "One at a time" is per daemon, not per backend: the daemon is the publisher its peers see, so all
//! backends of a process on the same daemon (the same `api` string) share one queue ([`shared`]).

use std::{
    collections::BTreeMap,
    hash::{BuildHasher, Hasher},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, OnceLock, Weak,
    },
};

use async_trait::async_trait;
use bytes::Bytes;
use comms::{Cid, Codec, Error, Topic};
use tokio::{
    sync::{oneshot, Mutex},
    time::{Duration, Instant},
};

use comms::frame::{self, Link};

/// What the queue needs of its daemon.
#[async_trait]
pub(crate) trait Daemon: Send + Sync + 'static {
    /// One `pubsub/pub` of `frame` on `topic`.
    async fn publish(&self, topic: &Topic, frame: Bytes) -> Result<(), Error>;
    /// Stores `frame`, whose CID is `cid`, for receivers that lose it to fetch; a failure only
    /// loses that repair.
    async fn store(&self, frame: Bytes, cid: Cid);
}

/// The queue of the daemon at `api`, shared by every backend of this process on it. `daemon` and
/// `limit` are those of the backend that first created it.
pub(crate) fn shared(api: &str, daemon: Arc<dyn Daemon>, limit: usize) -> Arc<Publisher> {
    static QUEUES: OnceLock<std::sync::Mutex<BTreeMap<String, Weak<Publisher>>>> = OnceLock::new();
    let mut queues = QUEUES
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    queues.retain(|_, queue| queue.strong_count() > 0);
    if let Some(queue) = queues.get(api).and_then(Weak::upgrade) {
        return queue;
    }
    let queue = Arc::new(Publisher::new(daemon, limit));
    queues.insert(api.to_owned(), Arc::downgrade(&queue));
    queue
}

/// A broadcast waiting for its turn, and who waits for its outcome.
struct Waiting {
    topic: Topic,
    data: Bytes,
    done: oneshot::Sender<Result<(), Error>>,
}

/// The most topics whose last frame a queue remembers; past it, the longest idle is forgotten (its
/// next frame goes unlinked, so a loss just before it cannot be repaired).
const MAX_CHAINS: usize = 1024;

/// How long after the turn that put a topic's last frame at risk its follow-up goes.
const FOLLOW_UP_DELAY: Duration = Duration::from_millis(50);

/// A frame older than this when another topic's goes out is taken to have been validated already:
/// it needs no follow-up.
const RISK_WINDOW: Duration = Duration::from_secs(5);

/// How many follow-ups the last frame of broadcasts gets at most, one per round.
const FOLLOW_UPS: u8 = 3;

/// A topic's last frame.
struct Tail {
    cid: Cid,
    seq: u64,
    at: Instant,
    /// How many more follow-ups the topic gets if this frame is put at risk: [`FOLLOW_UPS`] after a
    /// frame of broadcasts, one less after each follow-up.
    follow_ups: u8,
    /// Whether a frame on another topic went out after it.
    at_risk: bool,
}

/// What the queue knows while it holds the turn: the next seq, and each topic's last frame.
#[derive(Default)]
struct Chains {
    next: u64,
    last: BTreeMap<Topic, Tail>,
}

impl Chains {
    /// The link of the next frame on `topic`, published at `now`.
    fn link(&self, origin: u64, topic: &Topic, now: Instant) -> Link {
        let prev = self.last.get(topic).map(|tail| frame::Prev {
            cid: tail.cid,
            seq: tail.seq,
            before: now - tail.at,
        });
        Link {
            origin,
            seq: self.next,
            prev,
        }
    }

    /// Records that the frame `cid`, carrying broadcasts or a follow-up, went out on `topic` as
    /// number `seq` at `now`, and puts at risk the recent last frames of other topics that have
    /// follow-ups left.
    fn published(&mut self, topic: &Topic, cid: Cid, seq: u64, now: Instant, carries: bool) {
        self.next = seq + 1;
        for (other, tail) in &mut self.last {
            let recent = now.saturating_duration_since(tail.at) < RISK_WINDOW;
            tail.at_risk |= other != topic && tail.follow_ups > 0 && recent;
        }
        let follow_ups = match (carries, self.last.get(topic)) {
            (true, _) | (false, None) => FOLLOW_UPS,
            (false, Some(before)) => before.follow_ups.saturating_sub(1),
        };
        let tail = Tail {
            cid,
            seq,
            at: now,
            follow_ups,
            at_risk: false,
        };
        self.last.insert(topic.clone(), tail);
        if self.last.len() > MAX_CHAINS {
            let idle = self.last.iter().min_by_key(|(_, tail)| tail.at);
            if let Some(idle) = idle.map(|(topic, _)| topic.clone()) {
                self.last.remove(&idle);
            }
        }
    }

    /// Whether some topic's last frame needs a follow-up.
    fn any_at_risk(&self) -> bool {
        self.last.values().any(|tail| tail.at_risk)
    }

    /// The topics whose last frame needs a follow-up, in order.
    fn at_risk(&self) -> Vec<Topic> {
        self.last
            .iter()
            .filter(|(_, tail)| tail.at_risk)
            .map(|(topic, _)| topic.clone())
            .collect()
    }
}

/// The queue of one daemon's broadcasts (see [`shared`]).
pub(crate) struct Publisher {
    queue: std::sync::Mutex<Vec<Waiting>>,
    /// Held while publishing.
    turn: Mutex<Chains>,
    /// Tells this queue's frames from those of another process on the same daemon, or of this one
    /// before a restart.
    origin: u64,
    limit: usize,
    daemon: Arc<dyn Daemon>,
    /// Whether a follow-up task is waiting to run.
    following_up: AtomicBool,
}

impl Publisher {
    /// `limit`: the largest frame of more than one message.
    pub fn new(daemon: Arc<dyn Daemon>, limit: usize) -> Publisher {
        Publisher {
            queue: std::sync::Mutex::default(),
            turn: Mutex::default(),
            origin: std::collections::hash_map::RandomState::new()
                .build_hasher()
                .finish(),
            limit,
            daemon,
            following_up: AtomicBool::new(false),
        }
    }

    /// Publishes `data` on `topic`, together with whatever else is queued by the time this
    /// broadcast's turn comes.
    pub async fn broadcast(self: &Arc<Self>, topic: &Topic, data: Bytes) -> Result<(), Error> {
        let (done, mut outcome) = oneshot::channel();
        self.lock_queue().push(Waiting {
            topic: topic.clone(),
            data,
            done,
        });
        let mut chains = self.turn.lock().await;
        // An earlier turn may have taken this broadcast along.
        if let Ok(result) = outcome.try_recv() {
            return result;
        }
        let waiting = std::mem::take(&mut *self.lock_queue());
        for (topic, group) in by_topic(waiting) {
            let data: Vec<Bytes> = group.iter().map(|w| w.data.clone()).collect();
            let mut group = group.into_iter();
            let mut start = 0;
            for count in frame::groups(&data, self.limit) {
                let result = self
                    .publish_frame(&mut chains, &topic, &data[start..start + count])
                    .await;
                start += count;
                for waiting in group.by_ref().take(count) {
                    let _ = waiting.done.send(duplicate(&result));
                }
            }
        }
        if chains.any_at_risk() {
            self.schedule_follow_up();
        }
        drop(chains);
        outcome.await.unwrap_or(Err(Error::Closed))
    }

    /// Publishes and stores one frame of `messages` (none for a follow-up) on `topic`.
    async fn publish_frame(
        &self,
        chains: &mut Chains,
        topic: &Topic,
        messages: &[Bytes],
    ) -> Result<(), Error> {
        let started = Instant::now();
        let link = chains.link(self.origin, topic, started);
        let frame = frame::encode(&link, messages);
        // Hashed beside the publish, not before it.
        let store = async {
            let cid = comms::cid_for(Codec::Raw, &frame);
            self.daemon.store(frame.clone(), cid).await;
            cid
        };
        let (result, cid) = tokio::join!(self.daemon.publish(topic, frame.clone()), store);
        // Linked even if the publish failed: it may have gone out all the same.
        chains.published(topic, cid, link.seq, started, !messages.is_empty());
        tracing::trace!(took = ?started.elapsed(), broadcasts = messages.len(), seq = link.seq, "published");
        result
    }

    /// Follows up, after [`FOLLOW_UP_DELAY`], every topic whose last frame is at risk; the follow-ups
    /// may put each other at risk, and then go again a round later, up to [`FOLLOW_UPS`] rounds.
    fn schedule_follow_up(self: &Arc<Self>) {
        if self.following_up.swap(true, Ordering::AcqRel) {
            return;
        }
        let publisher = Arc::downgrade(self);
        tokio::spawn(async move {
            tokio::time::sleep(FOLLOW_UP_DELAY).await;
            let Some(publisher) = publisher.upgrade() else {
                return;
            };
            let mut chains = publisher.turn.lock().await;
            publisher.following_up.store(false, Ordering::Release);
            for topic in chains.at_risk() {
                if let Err(error) = publisher.publish_frame(&mut chains, &topic, &[]).await {
                    tracing::debug!(%topic, %error, "a follow-up frame failed");
                }
            }
            if chains.any_at_risk() {
                publisher.schedule_follow_up();
            }
        });
    }

    fn lock_queue(&self) -> std::sync::MutexGuard<'_, Vec<Waiting>> {
        self.queue
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The queued broadcasts grouped by topic, topics in the order they first appear.
fn by_topic(waiting: Vec<Waiting>) -> Vec<(Topic, Vec<Waiting>)> {
    let mut groups: Vec<(Topic, Vec<Waiting>)> = Vec::new();
    for w in waiting {
        match groups.iter_mut().find(|(topic, _)| *topic == w.topic) {
            Some((_, group)) => group.push(w),
            None => groups.push((w.topic.clone(), vec![w])),
        }
    }
    groups
}

/// The outcome of one publish, for each broadcast it carried.
fn duplicate(result: &Result<(), Error>) -> Result<(), Error> {
    match result {
        Ok(()) => Ok(()),
        Err(Error::Timeout { operation, after }) => Err(Error::Timeout {
            operation: *operation,
            after: *after,
        }),
        Err(Error::Closed) => Err(Error::Closed),
        Err(Error::Unavailable { operation, source }) => {
            Err(Error::unavailable(*operation, source.to_string()))
        }
        Err(other) => Err(Error::unavailable(
            comms::Operation::Broadcast,
            other.to_string(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topic(name: &str) -> Topic {
        Topic::new(name).expect("topic")
    }

    fn cid(frame: &[u8]) -> Cid {
        comms::cid_for(Codec::Raw, frame)
    }

    #[test]
    fn each_frame_names_the_one_before_it_on_its_topic() {
        let (mut chains, start) = (Chains::default(), Instant::now());
        let (a, b) = (topic("a"), topic("b"));
        let first = chains.link(9, &a, start);
        assert_eq!((first.origin, first.seq, first.prev), (9, 0, None));
        chains.published(&a, cid(b"first"), first.seq, start, true);
        let other = chains.link(9, &b, start);
        assert_eq!((other.seq, other.prev), (1, None), "seq counts over topics");
        chains.published(&b, cid(b"other"), other.seq, start, true);

        let later = start + Duration::from_millis(3);
        let second = chains.link(9, &a, later);
        assert_eq!(second.seq, 2);
        let expected = frame::Prev {
            cid: cid(b"first"),
            seq: 0,
            before: Duration::from_millis(3),
        };
        assert_eq!(second.prev, Some(expected));
    }

    #[test]
    fn a_last_frame_is_at_risk_once_another_topic_publishes_until_followed_up() {
        let (mut chains, now) = (Chains::default(), Instant::now());
        let (a, b) = (topic("a"), topic("b"));
        chains.published(&a, cid(b"a0"), 0, now, true);
        chains.published(&a, cid(b"a1"), 1, now, true);
        assert!(chains.at_risk().is_empty(), "one topic needs no follow-up");
        chains.published(&b, cid(b"b0"), 2, now, true);
        assert_eq!(chains.at_risk(), vec![a.clone()]);
        let mut rounds = 0;
        while !chains.at_risk().is_empty() {
            for topic in chains.at_risk() {
                let seq = chains.next;
                chains.published(&topic, cid(b""), seq, now, false);
            }
            rounds += 1;
            assert!(rounds <= 2 * FOLLOW_UPS as usize, "follow-ups end");
        }
        // Each follow-up puts the other topic at risk, until each has had its own.
        assert_eq!(chains.next, 3 + 2 * FOLLOW_UPS as u64);
    }

    #[test]
    fn a_frame_from_before_the_risk_window_needs_no_follow_up() {
        let (mut chains, now) = (Chains::default(), Instant::now());
        chains.published(&topic("a"), cid(b"a0"), 0, now, true);
        chains.published(&topic("b"), cid(b"b0"), 1, now + RISK_WINDOW, true);
        assert!(chains.at_risk().is_empty());
    }

    #[test]
    fn past_the_most_topics_the_longest_idle_is_forgotten() {
        let (mut chains, start) = (Chains::default(), Instant::now());
        for i in 0..=MAX_CHAINS {
            let at = start + Duration::from_millis(i as u64);
            chains.published(&topic(&format!("t{i}")), cid(b"frame"), i as u64, at, true);
        }
        assert_eq!(chains.last.len(), MAX_CHAINS);
        assert_eq!(chains.link(1, &topic("t0"), start).prev, None);
        assert!(chains.link(1, &topic("t1"), start).prev.is_some());
        assert_eq!(chains.next, MAX_CHAINS as u64 + 1);
    }
}
