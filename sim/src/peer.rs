//! A simulated peer: the `Communication` contract over the simulated network.

use std::{
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use async_trait::async_trait;
use bytes::Bytes;
use comms::{Cid, Codec, Communication, Error, Limits, Message, PeerId, Subscription, Topic};
use futures::Stream;
use tokio::sync::mpsc;

use crate::{
    driver::{Command, Driver},
    engine::{Engine, PeerIdx},
    SimError,
};

/// One peer of a simulated network. Cheap to clone; all clones are the same peer.
#[derive(Clone)]
pub struct SimPeer {
    index: PeerIdx,
    id: PeerId,
    limits: Limits,
    driver: Driver,
}

impl SimPeer {
    pub(crate) fn new(index: PeerIdx, id: PeerId, limits: Limits, driver: Driver) -> SimPeer {
        SimPeer {
            index,
            id,
            limits,
            driver,
        }
    }

    /// This peer's index in the simulation (what `Sim`'s control methods take).
    pub fn index(&self) -> usize {
        self.index as usize
    }

    async fn call<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Engine, PeerIdx) -> Result<T, Error> + Send + 'static,
    ) -> Result<T, Error> {
        let index = self.index;
        self.driver
            .call(move |engine| f(engine, index))
            .await
            .map_err(Error::from)?
    }
}

impl From<SimError> for Error {
    fn from(_: SimError) -> Error {
        Error::Closed
    }
}

#[async_trait]
impl Communication for SimPeer {
    fn local_peer(&self) -> PeerId {
        self.id.clone()
    }

    fn limits(&self) -> Limits {
        self.limits
    }

    async fn broadcast(&self, topic: &Topic, data: Bytes) -> Result<(), Error> {
        let topic = topic.clone();
        self.call(move |engine, me| engine.broadcast(me, topic, data))
            .await
    }

    async fn subscribe(&self, topic: &Topic) -> Result<Subscription, Error> {
        let key = topic.clone();
        let (id, messages) = self
            .call(move |engine, me| engine.subscribe(me, key))
            .await?;
        let unsubscribe = Unsubscribe {
            driver: self.driver.downgrade(),
            peer: self.index,
            topic: topic.clone(),
            id,
        };
        Ok(Subscription::new(
            topic.clone(),
            Messages {
                messages,
                _unsubscribe: unsubscribe,
            },
        ))
    }

    async fn put(&self, codec: Codec, data: Bytes) -> Result<Cid, Error> {
        self.call(move |engine, me| engine.put(me, codec, data))
            .await
    }

    async fn fetch(&self, cid: &Cid, timeout: Duration) -> Result<Bytes, Error> {
        let (cid, me) = (*cid, self.index);
        self.driver
            .request(move |engine, reply| engine.fetch(me, cid, timeout, reply))
            .await?
    }

    async fn peers(&self) -> Result<Vec<PeerId>, Error> {
        self.call(|engine, me| engine.peers_of(me)).await
    }

    async fn topic_peers(&self, topic: &Topic) -> Result<Vec<PeerId>, Error> {
        let topic = topic.clone();
        self.call(move |engine, me| engine.topic_peers(me, &topic))
            .await
    }
}

/// A subscription's receiving end, which unsubscribes when dropped.
struct Messages {
    messages: mpsc::Receiver<Message>,
    _unsubscribe: Unsubscribe,
}

impl Stream for Messages {
    type Item = Message;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Message>> {
        self.messages.poll_recv(cx)
    }
}

struct Unsubscribe {
    driver: mpsc::WeakUnboundedSender<Command>,
    peer: PeerIdx,
    topic: Topic,
    id: u64,
}

impl Drop for Unsubscribe {
    fn drop(&mut self) {
        let Some(driver) = self.driver.upgrade() else {
            return;
        };
        let (peer, topic, id) = (self.peer, self.topic.clone(), self.id);
        let _ = driver.send(Box::new(move |engine: &mut Engine| {
            engine.unsubscribe(peer, &topic, id)
        }));
    }
}
