//! Publishing: one `pubsub/pub` at a time per daemon, and the broadcasts that queue behind it sent
//! together in one pubsub message (a frame).
//!
//! Why: kubo (since 0.40) runs a validator that ignores a message whose sequence number is not above
//! the highest it has seen from the same publisher. A daemon numbers a message when its
//! `pubsub/pub` call starts, so two calls in flight at once can reach the validator in the other
//! order. Receivers validate concurrently too (a goroutine per message, and Go runs the newest
//! runnable one first), so two of a publisher's messages that wait at a receiver at the same time can
//! be swapped there, and the lower-numbered one is lost. Measured on the conformance suite's burst (4
//! publishers, 20 broadcasts each, to 4 subscribers, the suite's other tests running beside it): with
//! concurrent calls, or one at a time with up to 5 ms between them, 1 to 5 of 80 messages were lost at
//! some subscriber in nearly every run; kubo's debug log showed validations taking 14 to 16 ms and
//! the loser "punted".
//!
//! So a publish waits after the one before it ends, for twice as long as that one took
//! ([`spacing`]), up to the backend's `max_publish_gap`. A `pubsub/pub` call lasts as long as the
//! daemon's own validation of the message (kubo validates a local message, through the same
//! validator, before it sends it), so its duration tracks how long the receivers, under the same
//! load, take to validate theirs: a quiet daemon's 3 ms publishes are 6 ms apart, a loaded one's
//! further. A fixed 20 ms gap had passed 50 runs on a quiet machine, then lost a message with a
//! build running beside the suite, whose first publishes took 25 to 75 ms. With twice the duration,
//! up to 100 ms, a burst is two messages per publisher and none was lost in 50 runs; waiting once
//! the publish's duration lost a message in the first of 19. A broadcast that comes after the wait
//! goes at once.
//!
//! "One at a time" is per daemon, not per backend: the daemon is the publisher its peers see, so all
//! backends of a process on the same daemon (the same `api` string) share one queue ([`shared`]).
//!
//! A frame is [`MAGIC`] followed by each message as a 4-byte big-endian length and its bytes. A
//! broadcast published alone goes as it is, unless it starts with [`MAGIC`] itself (then it is a
//! frame of one); no DAG-CBOR value starts with `0xff` (CBOR's "break"), so ledger blocks never need
//! that.

use std::{
    collections::BTreeMap,
    sync::{Arc, OnceLock, Weak},
};

use bytes::{BufMut, Bytes, BytesMut};
use comms::{Error, Topic};
use tokio::{
    sync::{oneshot, Mutex},
    time::{Duration, Instant},
};

/// What starts a frame.
pub(crate) const MAGIC: &[u8; 8] = b"\xffcomms/1";

/// How much larger than the message limit a frame may be: a frame of one message that needed one.
pub(crate) const FRAME_SLACK: usize = MAGIC.len() + 4;

/// Splits a received pubsub message into the broadcasts it carries.
pub(crate) fn unframe(data: Bytes) -> Result<Vec<Bytes>, &'static str> {
    if !data.starts_with(MAGIC) {
        return Ok(vec![data]);
    }
    let mut rest = data.slice(MAGIC.len()..);
    let mut messages = Vec::new();
    while !rest.is_empty() {
        let Some(head) = rest.get(..4) else {
            return Err("a frame's length cut short");
        };
        let len = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) as usize;
        if rest.len() - 4 < len {
            return Err("a frame's message cut short");
        }
        messages.push(rest.slice(4..4 + len));
        rest = rest.slice(4 + len..);
    }
    if messages.is_empty() {
        return Err("an empty frame");
    }
    Ok(messages)
}

/// The pubsub messages that carry `messages`, in order: each frame at most `limit` bytes (plus
/// [`FRAME_SLACK`] for a frame of one), each returned with how many broadcasts it carries.
pub(crate) fn frames(messages: &[Bytes], limit: usize) -> Vec<(Bytes, usize)> {
    let mut out = Vec::new();
    let mut start = 0;
    while start < messages.len() {
        let mut size = MAGIC.len() + 4 + messages[start].len();
        let mut end = start + 1;
        while end < messages.len() && size + 4 + messages[end].len() <= limit {
            size += 4 + messages[end].len();
            end += 1;
        }
        out.push((frame(&messages[start..end]), end - start));
        start = end;
    }
    out
}

fn frame(messages: &[Bytes]) -> Bytes {
    if let [only] = messages {
        if !only.starts_with(MAGIC) {
            return only.clone();
        }
    }
    let size = MAGIC.len() + messages.iter().map(|m| 4 + m.len()).sum::<usize>();
    let mut frame = BytesMut::with_capacity(size);
    frame.put_slice(MAGIC);
    for message in messages {
        frame.put_u32(message.len() as u32);
        frame.put_slice(message);
    }
    frame.freeze()
}

/// The queue of the daemon at `api`, shared by every backend of this process on it. `max_gap` and `limit`
/// are those of the backend that first created it.
pub(crate) fn shared(api: &str, max_gap: Duration, limit: usize) -> Arc<Publisher> {
    static QUEUES: OnceLock<std::sync::Mutex<BTreeMap<String, Weak<Publisher>>>> = OnceLock::new();
    let mut queues = QUEUES
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    queues.retain(|_, queue| queue.strong_count() > 0);
    if let Some(queue) = queues.get(api).and_then(Weak::upgrade) {
        return queue;
    }
    let queue = Arc::new(Publisher::new(max_gap, limit));
    queues.insert(api.to_owned(), Arc::downgrade(&queue));
    queue
}

/// A broadcast waiting for its turn, and who waits for its outcome.
struct Waiting {
    topic: Topic,
    data: Bytes,
    done: oneshot::Sender<Result<(), Error>>,
}

/// The queue of one daemon's broadcasts (see [`shared`]).
pub(crate) struct Publisher {
    queue: std::sync::Mutex<Vec<Waiting>>,
    /// Held while publishing; when the next publish may start.
    turn: Mutex<Option<Instant>>,
    max_gap: Duration,
    limit: usize,
}

impl Publisher {
    /// `max_gap`: the most time [`spacing`] puts between the end of one publish and the start of the
    /// next; `limit`: the largest frame of more than one message.
    pub fn new(max_gap: Duration, limit: usize) -> Publisher {
        Publisher {
            queue: std::sync::Mutex::default(),
            turn: Mutex::new(None),
            max_gap,
            limit,
        }
    }

    /// Publishes `data` on `topic` through `publish` (one `pubsub/pub` call), together with whatever
    /// else is queued by the time this broadcast's turn comes.
    pub async fn broadcast<F, Fut>(
        &self,
        topic: &Topic,
        data: Bytes,
        publish: F,
    ) -> Result<(), Error>
    where
        F: Fn(Topic, Bytes) -> Fut,
        Fut: std::future::Future<Output = Result<(), Error>>,
    {
        let (done, mut outcome) = oneshot::channel();
        self.lock_queue().push(Waiting {
            topic: topic.clone(),
            data,
            done,
        });
        let mut last = self.turn.lock().await;
        // An earlier turn may have taken this broadcast along.
        if let Ok(result) = outcome.try_recv() {
            return result;
        }
        let waiting = std::mem::take(&mut *self.lock_queue());
        for (topic, group) in by_topic(waiting) {
            let data: Vec<Bytes> = group.iter().map(|w| w.data.clone()).collect();
            let mut group = group.into_iter();
            for (frame, count) in frames(&data, self.limit) {
                if let Some(not_before) = *last {
                    tokio::time::sleep_until(not_before).await;
                }
                let started = Instant::now();
                let result = publish(topic.clone(), frame).await;
                let ended = Instant::now();
                *last = Some(ended + spacing(ended - started, self.max_gap));
                tracing::trace!(took = ?(ended - started), broadcasts = count, "published");
                for waiting in group.by_ref().take(count) {
                    let _ = waiting.done.send(duplicate(&result));
                }
            }
        }
        drop(last);
        outcome.await.unwrap_or(Err(Error::Closed))
    }

    fn lock_queue(&self) -> std::sync::MutexGuard<'_, Vec<Waiting>> {
        self.queue
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// How many times as long as a publish took the next waits after it ends (at most the backend's
/// `max_publish_gap`).
const SPACING_FACTOR: u32 = 2;

/// How long after a publish that took `took` the next may start.
fn spacing(took: Duration, max: Duration) -> Duration {
    took.saturating_mul(SPACING_FACTOR).min(max)
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
    use proptest::prelude::*;

    fn bytes(data: &[u8]) -> Bytes {
        Bytes::copy_from_slice(data)
    }

    #[test]
    fn a_broadcast_alone_goes_as_it_is_unless_it_looks_like_a_frame() {
        let plain = bytes(b"\xa1ablock");
        assert_eq!(
            frames(std::slice::from_ref(&plain), 100),
            vec![(plain.clone(), 1)]
        );
        assert_eq!(unframe(plain.clone()), Ok(vec![plain]));
        let tricky = bytes(b"\xffcomms/1 but a message");
        let (frame, count) = frames(std::slice::from_ref(&tricky), 100).remove(0);
        assert_eq!(count, 1);
        assert_ne!(frame, tricky);
        assert_eq!(unframe(frame), Ok(vec![tricky]));
    }

    #[test]
    fn a_broken_frame_is_refused() {
        let mut frame = BytesMut::from(&MAGIC[..]);
        assert!(unframe(frame.clone().freeze()).is_err(), "empty");
        frame.put_u32(10);
        frame.put_slice(b"short");
        assert!(unframe(frame.clone().freeze()).is_err(), "cut short");
        let mut frame = BytesMut::from(&MAGIC[..]);
        frame.put_slice(b"\x00\x00");
        assert!(unframe(frame.freeze()).is_err(), "length cut short");
    }

    #[test]
    fn a_publish_waits_twice_as_long_as_the_one_before_took_up_to_the_most() {
        let most = Duration::from_millis(100);
        assert_eq!(
            spacing(Duration::from_millis(3), most),
            Duration::from_millis(6)
        );
        assert_eq!(spacing(Duration::from_millis(70), most), most);
        assert_eq!(spacing(Duration::ZERO, most), Duration::ZERO);
    }

    proptest! {
        /// Whatever is queued comes out whole and in order, in frames within the limit.
        #[test]
        fn frames_carry_every_message_in_order_within_the_limit(
            messages in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..64), 1..20),
            limit in 16usize..256,
        ) {
            let messages: Vec<Bytes> = messages.into_iter().map(Bytes::from).collect();
            let framed = frames(&messages, limit);
            prop_assert_eq!(framed.iter().map(|(_, n)| n).sum::<usize>(), messages.len());
            let mut out = Vec::new();
            for (frame, count) in framed {
                prop_assert!(count == 1 || frame.len() <= limit, "{} > {}", frame.len(), limit);
                let inner = unframe(frame).expect("our own frame");
                prop_assert_eq!(inner.len(), count);
                out.extend(inner);
            }
            prop_assert_eq!(out, messages);
        }
    }
}
