//! Broadcast: subscriptions, fan-out over the links, delivery, and the flooding fault.
//!
//! Model: a message goes from its publisher straight to every subscribed peer over the direct link
//! (a full mesh, as gossipsub's mesh is for small networks); each copy draws its own loss and delay.
//! A partition or crash at either end when sending, or at the receiver when arriving, drops the copy.

use std::{sync::Arc, time::Duration};

use bytes::Bytes;
use comms::{Error, Message, Operation, PeerId, Topic};
use tokio::sync::mpsc::{self, error::TrySendError};

use super::{Engine, Envelope, Event, Path, PeerIdx, Sub, NOBODY};
use crate::stats::TraceKind;

impl Engine {
    /// Subscribes `peer` to `topic`: the receiving end and the id to unsubscribe with.
    pub(crate) fn subscribe(
        &mut self,
        peer: PeerIdx,
        topic: Topic,
    ) -> Result<(u64, mpsc::Receiver<Message>), Error> {
        self.ensure_up(peer, Operation::Subscribe)?;
        let (tx, rx) = mpsc::channel(self.config.subscriber_queue.max(1));
        let id = self.next_id();
        self.peers[peer as usize]
            .subs
            .entry(topic.clone())
            .or_default()
            .push(Sub { id, tx });
        self.topics.entry(topic).or_default().insert(peer);
        Ok((id, rx))
    }

    /// Ends subscription `id` of `peer`; the peer stops being a subscriber once its last one ends.
    pub(crate) fn unsubscribe(&mut self, peer: PeerIdx, topic: &Topic, id: u64) {
        let subs = &mut self.peers[peer as usize].subs;
        let Some(list) = subs.get_mut(topic) else {
            return;
        };
        list.retain(|sub| sub.id != id);
        if list.is_empty() {
            subs.remove(topic);
            self.forget_subscriber(topic, peer);
        }
    }

    pub(super) fn forget_subscriber(&mut self, topic: &Topic, peer: PeerIdx) {
        if let Some(set) = self.topics.get_mut(topic) {
            set.remove(&peer);
            if set.is_empty() {
                self.topics.remove(topic);
            }
        }
    }

    /// The reachable peers with a live subscription to `topic`, as `peer` sees them.
    pub(crate) fn topic_peers(&self, peer: PeerIdx, topic: &Topic) -> Result<Vec<PeerId>, Error> {
        self.ensure_up(peer, Operation::Peers)?;
        let Some(set) = self.topics.get(topic) else {
            return Ok(Vec::new());
        };
        let live = |other: &PeerIdx| {
            let subs = self.peers[*other as usize].subs.get(topic);
            subs.is_some_and(|subs| subs.iter().any(|s| !s.tx.is_closed()))
        };
        let peers = set
            .iter()
            .filter(|&&other| other != peer && self.reachable(peer, other) && live(&other));
        Ok(peers.map(|&other| self.peer_id(other)).collect())
    }

    /// Publishes `data` from `peer` on `topic`, after checking the size limit and that `peer` is up.
    pub(crate) fn broadcast(
        &mut self,
        peer: PeerIdx,
        topic: Topic,
        data: Bytes,
    ) -> Result<(), Error> {
        self.config.limits.check_message(data.len())?;
        self.ensure_up(peer, Operation::Broadcast)?;
        self.publish(peer, topic, data);
        Ok(())
    }

    /// Sends one copy of a message to each subscriber but the publisher.
    fn publish(&mut self, from: PeerIdx, topic: Topic, data: Bytes) {
        let id = self.next_id();
        let size = data.len();
        self.counters.published += 1;
        self.counters.published_bytes += size as u64;
        self.trace(TraceKind::Publish, from, NOBODY, id, size as u64);
        let Some(subscribers) = self.topics.get(&topic) else {
            return;
        };
        let targets: Vec<PeerIdx> = subscribers
            .iter()
            .copied()
            .filter(|&to| to != from)
            .collect();
        let message = Message {
            from: self.peer_id(from),
            topic,
            data,
        };
        let envelope = Arc::new(Envelope {
            id,
            from,
            sent_at: self.now,
            message,
        });
        let left = self.occupy(from, Path::Publish, size, 0);
        for to in targets {
            self.send_copy(to, &envelope, left);
        }
    }

    /// One copy of a message that left its publisher at `left`.
    fn send_copy(&mut self, to: PeerIdx, envelope: &Arc<Envelope>, left: u64) {
        let (from, id, size) = (envelope.from, envelope.id, envelope.message.data.len());
        let dropped = if !self.peers[to as usize].up {
            &mut self.counters.dropped_crashed
        } else if !self.reachable(from, to) {
            &mut self.counters.dropped_partition
        } else if let Some(delay) = self.transit(from, to, size, left) {
            self.schedule(
                delay,
                Event::Deliver {
                    to,
                    envelope: envelope.clone(),
                },
            );
            return;
        } else {
            &mut self.counters.dropped_loss
        };
        *dropped += 1;
        self.trace(TraceKind::Drop, from, to, id, size as u64);
    }

    /// A copy arrives at `to`: handed to each of its subscriptions to the topic, or dropped.
    pub(super) fn handle_deliver(&mut self, to: PeerIdx, envelope: &Envelope) {
        let size = envelope.message.data.len() as u64;
        let kind = if self.hand_over(to, envelope) {
            self.delivery_latency
                .record(Duration::from_nanos(self.now - envelope.sent_at));
            TraceKind::Deliver
        } else {
            TraceKind::Drop
        };
        self.trace(kind, envelope.from, to, envelope.id, size);
    }

    /// Gives the message to `to`'s subscriptions and counts the outcome; false when none took it.
    fn hand_over(&mut self, to: PeerIdx, envelope: &Envelope) -> bool {
        let (message, size) = (&envelope.message, envelope.message.data.len());
        let receiver = &self.peers[to as usize];
        let counters = &mut self.counters;
        let dropped = if !receiver.up {
            &mut counters.dropped_crashed
        } else if receiver.group != self.peers[envelope.from as usize].group {
            &mut counters.dropped_partition
        } else if size > self.config.limits.max_message_bytes {
            &mut counters.dropped_too_large
        } else if let Some(subs) = receiver.subs.get(&message.topic) {
            let mut delivered = 0;
            for sub in subs {
                match sub.tx.try_send(message.clone()) {
                    Ok(()) => delivered += 1,
                    Err(TrySendError::Full(_)) => counters.dropped_queue_full += 1,
                    Err(TrySendError::Closed(_)) => counters.dropped_unsubscribed += 1,
                }
            }
            counters.delivered += delivered;
            counters.delivered_bytes += delivered * size as u64;
            return delivered > 0;
        } else {
            &mut counters.dropped_unsubscribed
        };
        *dropped += 1;
        false
    }

    /// A flooder's timer: publish junk (ignoring limits) while the fault lasts, and set the next one.
    pub(super) fn handle_flood(&mut self, peer: PeerIdx, epoch: u64) {
        let state = &self.peers[peer as usize];
        let Some(flood) = state.flood.as_ref().filter(|_| state.fault_epoch == epoch) else {
            return;
        };
        let (topic, junk, every, up) = (
            flood.topic.clone(),
            flood.junk.clone(),
            flood.every,
            state.up,
        );
        if up {
            self.publish(peer, topic, junk);
        }
        self.schedule(every, Event::Flood { peer, epoch });
    }
}
