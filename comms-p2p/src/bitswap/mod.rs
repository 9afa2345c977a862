//! Bitswap 1.2.0 on libp2p streams, as kubo's boxo speaks it.
//!
//! - A fetch is two phases: WANT_HAVE (with send-dont-have) to every connected peer, then
//!   WANT_BLOCK to each that answers HAVE. A peer may answer a WANT_HAVE with the block itself (Go
//!   does for small blocks), which ends the fetch as well. A block arrives as a CID prefix and its
//!   bytes; its CID is recomputed from the bytes, so a block is taken only for the CID it hashes
//!   to. Once it is here, the want is cancelled at every peer asked; so it is when the fetch gives
//!   up.
//! - Go answers a want on a new stream, not on the one it came on: every message here goes on
//!   this peer's own outbound stream to that peer (one per peer, reopened when it breaks), and
//!   every inbound stream is only read.
//! - A peer's wants for blocks this peer lacks are remembered (its wantlist), so a block stored
//!   later is still sent to it. A wantlist holds at most `max_wants` entries: more are answered
//!   DONT_HAVE and counted (a hostile peer cannot grow this peer's memory).
//!
//! One task (the engine) holds the blocks, the wantlists and the pending fetches; the peer's swarm
//! task tells it who connects and leaves, reader tasks bring it what peers send, writer tasks send
//! what it queues.

pub mod message;

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
};

use bytes::Bytes;
use comms::Cid;
use futures::{AsyncRead, StreamExt};
use libp2p::{PeerId, StreamProtocol};
use libp2p_stream::Control;
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, info, warn};

use comms::bump;

use crate::{
    metrics::P2pMetrics,
    store::{BlockStore, StoreError},
};

use message::{Block, BlockPresence, Entry, Message, PresenceType, WantType, Wantlist};

/// The protocols accepted; messages are sent on the first.
pub const PROTOCOLS: [StreamProtocol; 2] = [
    StreamProtocol::new("/ipfs/bitswap/1.2.0"),
    StreamProtocol::new("/ipfs/bitswap/1.1.0"),
];

/// Blocks up to this size answer a WANT_HAVE themselves (as boxo does).
const SMALL_BLOCK: usize = 1024;

/// Messages queued for one peer's writer, at most; more are dropped (the want is repeated).
const WRITER_QUEUE: usize = 256;

/// What a fetch comes to: the bytes, or the CID of bytes that came in their place.
pub(crate) type Fetched = Result<Bytes, Cid>;

/// What the engine is told.
pub(crate) enum Event {
    /// Store a block and serve it; the reply says whether it was stored.
    Put(Cid, Bytes, oneshot::Sender<Result<(), StoreError>>),
    /// Delete blocks from the store.
    Release(Vec<Cid>),
    Fetch(Cid, oneshot::Sender<Fetched>),
    /// A fetch's time ran out: the CID of wrong bytes a peer sent for it, if any.
    GiveUp(Cid, oneshot::Sender<Option<Cid>>),
    Connected(PeerId),
    Disconnected(PeerId),
    Received(PeerId, Message),
    /// Stop, closing the blockstore, and say so.
    Stop(oneshot::Sender<()>),
}

/// A fetch waiting for a block.
#[derive(Default)]
struct Pending {
    waiters: Vec<oneshot::Sender<Fetched>>,
    /// The peers asked, and those that answered without the block (DONT_HAVE, or wrong bytes).
    asked: HashSet<PeerId>,
    answered: HashSet<PeerId>,
    /// The CID of wrong bytes a peer sent in the block's place.
    mismatch: Option<Cid>,
}

/// How the engine runs.
pub(crate) struct Setup {
    pub blocks: Box<dyn BlockStore>,
    pub metrics: Arc<P2pMetrics>,
    /// The most wants remembered per peer.
    pub max_wants: usize,
    /// A fault for tests: every block served altered.
    pub corrupt: bool,
}

/// Starts the engine and the readers of inbound streams; returns the sender of its events.
pub(crate) fn start(mut control: Control, setup: Setup) -> mpsc::Sender<Event> {
    let (events, receiver) = mpsc::channel(1024);
    for protocol in PROTOCOLS {
        let Ok(mut incoming) = control.accept(protocol) else {
            continue;
        };
        let events = events.downgrade();
        let metrics = setup.metrics.clone();
        tokio::spawn(async move {
            while let Some((peer, stream)) = incoming.next().await {
                let Some(events) = events.upgrade() else {
                    return;
                };
                tokio::spawn(read_stream(peer, stream, events, metrics.clone()));
            }
        });
    }
    let engine = Engine {
        control,
        setup,
        peers: HashSet::new(),
        wants_of: HashMap::new(),
        wanted: HashMap::new(),
        writers: HashMap::new(),
    };
    tokio::spawn(engine.run(receiver));
    events
}

/// Reads `peer`'s messages from one inbound stream until it ends, breaks, or brings bytes that are
/// no message (counted, and the stream closed).
async fn read_stream<S: AsyncRead + Unpin>(
    peer: PeerId,
    mut stream: S,
    events: mpsc::Sender<Event>,
    metrics: Arc<P2pMetrics>,
) {
    loop {
        match message::read(&mut stream).await {
            Ok(Some(message)) => {
                if events.send(Event::Received(peer, message)).await.is_err() {
                    return;
                }
            }
            Ok(None) => return,
            Err(message::ReadError::Io(error)) => {
                debug!(%peer, %error, "a bitswap stream broke");
                return;
            }
            Err(error) => {
                bump(&metrics.bitswap_malformed);
                info!(%peer, %error, "closed a bitswap stream that brought no message");
                return;
            }
        }
    }
}

/// Sends queued messages to `peer` on one outbound stream, opened when needed.
async fn write_stream(peer: PeerId, mut control: Control, mut queue: mpsc::Receiver<Message>) {
    let mut stream = None;
    while let Some(message) = queue.recv().await {
        for _ in 0..2 {
            let open = match stream.take() {
                Some(open) => open,
                None => match control.open_stream(peer, PROTOCOLS[0].clone()).await {
                    Ok(open) => open,
                    Err(error) => {
                        debug!(%peer, %error, "opening a bitswap stream failed");
                        break;
                    }
                },
            };
            let mut open = open;
            match message::write(&mut open, &message).await {
                Ok(()) => {
                    stream = Some(open);
                    break;
                }
                Err(error) => debug!(%peer, %error, "a bitswap write failed"),
            }
        }
    }
}

struct Engine {
    control: Control,
    /// The blocks this peer holds, the counters, the bounds.
    setup: Setup,
    peers: HashSet<PeerId>,
    /// What each peer wants from here and did not get yet, with the kind of want.
    wants_of: HashMap<PeerId, HashMap<Cid, WantType>>,
    /// The fetches waiting, by CID.
    wanted: HashMap<Cid, Pending>,
    writers: HashMap<PeerId, mpsc::Sender<Message>>,
}

fn entry(cid: &Cid, want_type: WantType, cancel: bool) -> Entry {
    Entry {
        block: cid.to_bytes(),
        priority: 1,
        cancel,
        want_type: want_type as i32,
        send_dont_have: want_type == WantType::Have && !cancel,
    }
}

fn wants(entries: Vec<Entry>) -> Message {
    Message {
        wantlist: Some(Wantlist {
            entries,
            full: false,
        }),
        ..Message::default()
    }
}

fn payload(cid: &Cid, data: &Bytes, corrupt: bool) -> Message {
    let mut data = data.to_vec();
    if corrupt {
        if let Some(first) = data.first_mut() {
            *first ^= 1;
        }
    }
    Message {
        payload: vec![Block {
            prefix: message::prefix(cid),
            data,
        }],
        ..Message::default()
    }
}

fn presence(cid: &Cid, kind: PresenceType) -> Message {
    Message {
        block_presences: vec![BlockPresence {
            cid: cid.to_bytes(),
            r#type: kind as i32,
        }],
        ..Message::default()
    }
}

impl Engine {
    /// Block `cid`, if held; a failed read is logged, counted and taken as not held (the peer
    /// asking goes to another).
    fn held(&self, cid: &Cid) -> Option<Bytes> {
        self.setup.blocks.get(cid).unwrap_or_else(|error| {
            bump(&self.setup.metrics.store_errors);
            warn!(%cid, %error, "reading a block failed");
            None
        })
    }

    async fn run(mut self, mut events: mpsc::Receiver<Event>) {
        while let Some(event) = events.recv().await {
            match event {
                Event::Put(cid, data, reply) => {
                    let _ = reply.send(self.put(cid, data));
                }
                Event::Release(cids) => self.release(cids),
                Event::Fetch(cid, reply) => self.fetch(cid, reply),
                Event::GiveUp(cid, reply) => {
                    let _ = reply.send(self.give_up(cid));
                }
                Event::Connected(peer) => self.connected(peer),
                Event::Disconnected(peer) => {
                    self.peers.remove(&peer);
                    self.wants_of.remove(&peer);
                    self.writers.remove(&peer);
                }
                Event::Received(peer, message) => self.received(peer, message),
                Event::Stop(reply) => {
                    drop(self);
                    let _ = reply.send(());
                    return;
                }
            }
        }
    }

    fn send(&mut self, peer: PeerId, message: Message) {
        let control = &self.control;
        let writer = self.writers.entry(peer).or_insert_with(|| {
            let (sender, queue) = mpsc::channel(WRITER_QUEUE);
            tokio::spawn(write_stream(peer, control.clone(), queue));
            sender
        });
        if writer.try_send(message).is_err() {
            debug!(%peer, "the bitswap writer is behind: a message dropped");
        }
    }

    fn connected(&mut self, peer: PeerId) {
        if !self.peers.insert(peer) {
            return;
        }
        let entries: Vec<Entry> = (self.wanted.iter_mut())
            .map(|(cid, pending)| {
                pending.asked.insert(peer);
                entry(cid, WantType::Have, false)
            })
            .collect();
        if !entries.is_empty() {
            self.send(peer, wants(entries));
        }
    }

    /// Stores a block, then hands it to the fetches waiting for it and the peers that want it.
    fn put(&mut self, cid: Cid, data: Bytes) -> Result<(), StoreError> {
        let stored = self.setup.blocks.put(&cid, &data);
        if let Err(error) = &stored {
            bump(&self.setup.metrics.store_errors);
            warn!(%cid, %error, "storing a block failed");
            return stored;
        }
        if let Some(pending) = self.wanted.remove(&cid) {
            for waiter in pending.waiters {
                let _ = waiter.send(Ok(data.clone()));
            }
            self.cancel(&cid, pending.asked);
        }
        let mut sends = Vec::new();
        let corrupt = self.setup.corrupt;
        for (peer, wants) in &mut self.wants_of {
            match wants.remove(&cid) {
                Some(WantType::Block) => sends.push((*peer, payload(&cid, &data, corrupt))),
                Some(WantType::Have) => sends.push((*peer, answer_have(&cid, &data, corrupt))),
                None => {}
            }
        }
        for (peer, message) in sends {
            self.serve(peer, message);
        }
        Ok(())
    }

    /// Deletes blocks this peer let go of; a failed delete is logged and counted.
    fn release(&mut self, cids: Vec<Cid>) {
        for cid in cids {
            if let Err(error) = self.setup.blocks.delete(&cid) {
                bump(&self.setup.metrics.store_errors);
                warn!(%cid, %error, "deleting a block failed");
            }
        }
    }

    /// Sends an answer to a want, counting the blocks in it.
    fn serve(&mut self, peer: PeerId, message: Message) {
        for _ in &message.payload {
            bump(&self.setup.metrics.blocks_served);
        }
        self.send(peer, message);
    }

    fn fetch(&mut self, cid: Cid, reply: oneshot::Sender<Fetched>) {
        if let Some(data) = self.held(&cid) {
            let _ = reply.send(Ok(data));
            return;
        }
        let pending = self.wanted.entry(cid).or_default();
        pending.waiters.push(reply);
        if pending.waiters.len() > 1 {
            return;
        }
        let peers: Vec<PeerId> = self.peers.iter().copied().collect();
        pending.asked = peers.iter().copied().collect();
        for peer in peers {
            self.send(peer, wants(vec![entry(&cid, WantType::Have, false)]));
        }
    }

    /// A fetch gave up: once no fetch of `cid` waits, its want is cancelled. Returns the CID of
    /// wrong bytes a peer sent for it, if one did.
    fn give_up(&mut self, cid: Cid) -> Option<Cid> {
        let pending = self.wanted.get_mut(&cid)?;
        let mismatch = pending.mismatch;
        pending.waiters.retain(|w| !w.is_closed());
        if pending.waiters.is_empty() {
            let asked = self
                .wanted
                .remove(&cid)
                .map(|p| p.asked)
                .unwrap_or_default();
            self.cancel(&cid, asked);
        }
        mismatch
    }

    /// Cancels the want of `cid` at the peers `asked`.
    fn cancel(&mut self, cid: &Cid, asked: HashSet<PeerId>) {
        for peer in asked {
            self.send(peer, wants(vec![entry(cid, WantType::Block, true)]));
        }
    }

    /// `peer` answered the want of `cid` without the block; once every peer asked has and one sent
    /// wrong bytes, the fetch ends with them.
    fn answered_without(&mut self, peer: PeerId, cid: Cid, wrong: Option<Cid>) {
        let Some(pending) = self.wanted.get_mut(&cid) else {
            return;
        };
        pending.answered.insert(peer);
        pending.mismatch = wrong.or(pending.mismatch);
        let Some(actual) = pending.mismatch else {
            return;
        };
        if pending.asked.is_subset(&pending.answered) {
            let pending = self.wanted.remove(&cid).unwrap_or_default();
            for waiter in pending.waiters {
                let _ = waiter.send(Err(actual));
            }
            self.cancel(&cid, pending.asked);
        }
    }

    fn received(&mut self, peer: PeerId, message: Message) {
        for block in message.payload {
            let Some(cid) = message::cid_of(&block.prefix, &block.data) else {
                continue;
            };
            if self.wanted.contains_key(&cid) {
                bump(&self.setup.metrics.blocks_received);
                // A failed write is counted and logged; the fetches waiting still get the bytes.
                let _ = self.put(cid, Bytes::from(block.data));
                continue;
            }
            // Bytes that answer none of our wants: wrong bytes for the one want of this prefix
            // this peer was asked, if there is exactly one.
            let mut meant = (self.wanted.iter())
                .filter(|(want, p)| {
                    p.asked.contains(&peer) && message::prefix(want) == block.prefix
                })
                .map(|(want, _)| *want);
            if let (Some(want), None) = (meant.next(), meant.next()) {
                bump(&self.setup.metrics.cid_mismatches);
                debug!(%peer, %want, actual = %cid, "a peer sent bytes that do not hash to the CID");
                self.answered_without(peer, want, Some(cid));
            }
        }
        for presence in message.block_presences {
            let Ok(cid) = Cid::try_from(&presence.cid[..]) else {
                continue;
            };
            if !self.wanted.contains_key(&cid) {
                continue;
            }
            match presence.r#type == PresenceType::Have as i32 {
                true => self.send(peer, wants(vec![entry(&cid, WantType::Block, false)])),
                false => self.answered_without(peer, cid, None),
            }
        }
        if let Some(wantlist) = message.wantlist {
            self.wanted_by(peer, wantlist);
        }
    }

    /// `peer`'s wants: answered from the blocks here, or remembered until one comes (up to
    /// `max_wants` per peer; beyond, answered DONT_HAVE and counted).
    fn wanted_by(&mut self, peer: PeerId, wantlist: Wantlist) {
        let mut answers = Vec::new();
        let corrupt = self.setup.corrupt;
        if wantlist.full {
            self.wants_of.remove(&peer);
        }
        let mut refused = 0;
        for entry in wantlist.entries {
            let Ok(cid) = Cid::try_from(&entry.block[..]) else {
                continue;
            };
            if entry.cancel {
                self.wants_of.entry(peer).or_default().remove(&cid);
                continue;
            }
            let kind = match entry.want_type {
                1 => WantType::Have,
                _ => WantType::Block,
            };
            match (self.held(&cid), kind) {
                (Some(data), WantType::Block) => answers.push(payload(&cid, &data, corrupt)),
                (Some(data), WantType::Have) => answers.push(answer_have(&cid, &data, corrupt)),
                (None, _) => {
                    let wants = self.wants_of.entry(peer).or_default();
                    let room = wants.len() < self.setup.max_wants || wants.contains_key(&cid);
                    if room {
                        wants.insert(cid, kind);
                    } else {
                        refused += 1;
                    }
                    if entry.send_dont_have || !room {
                        answers.push(presence(&cid, PresenceType::DontHave));
                    }
                }
            }
        }
        if refused > 0 {
            let metrics = &self.setup.metrics;
            metrics
                .wants_refused
                .fetch_add(refused, std::sync::atomic::Ordering::Relaxed);
            debug!(%peer, refused, bound = self.setup.max_wants, "a peer's wantlist is full: wants refused");
        }
        for answer in answers {
            self.serve(peer, answer);
        }
    }
}

/// The answer to a WANT_HAVE for a block held: the block itself when small, else HAVE.
fn answer_have(cid: &Cid, data: &Bytes, corrupt: bool) -> Message {
    match data.len() <= SMALL_BLOCK {
        true => payload(cid, data, corrupt),
        false => presence(cid, PresenceType::Have),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemoryBlocks;

    fn engine(max_wants: usize) -> Engine {
        Engine {
            control: libp2p_stream::Behaviour::new().new_control(),
            setup: Setup {
                blocks: Box::<MemoryBlocks>::default(),
                metrics: Arc::default(),
                max_wants,
                corrupt: false,
            },
            peers: HashSet::new(),
            wants_of: HashMap::new(),
            wanted: HashMap::new(),
            writers: HashMap::new(),
        }
    }

    fn wantlist(cids: &[Cid]) -> Wantlist {
        Wantlist {
            entries: (cids.iter())
                .map(|cid| entry(cid, WantType::Block, false))
                .collect(),
            full: false,
        }
    }

    /// A peer that wants more than the bound gets DONT_HAVE for the rest, counted; its wants
    /// already held stay, and a cancel makes room again.
    #[tokio::test]
    async fn a_peers_wantlist_is_bounded() {
        let mut engine = engine(4);
        let peer = PeerId::random();
        let cids: Vec<Cid> = (0..10u8)
            .map(|i| comms::cid_for(comms::Codec::Raw, &[i]))
            .collect();
        engine.wanted_by(peer, wantlist(&cids));
        assert_eq!(engine.wants_of[&peer].len(), 4);
        let refused = |engine: &Engine| engine.setup.metrics.snapshot().wants_refused;
        assert_eq!(refused(&engine), 6);
        // Wanting what it already wants costs nothing; a new want is refused.
        engine.wanted_by(peer, wantlist(&cids[..5]));
        assert_eq!(refused(&engine), 7);
        let mut cancel = wantlist(&cids[..1]);
        cancel.entries[0].cancel = true;
        engine.wanted_by(peer, cancel);
        engine.wanted_by(peer, wantlist(&cids[9..]));
        assert_eq!(refused(&engine), 7);
        assert!(engine.wants_of[&peer].contains_key(&cids[9]));
        // A block put later goes to the peer that wanted it, and leaves its wantlist.
        engine
            .put(cids[9], Bytes::from_static(&[9]))
            .expect("stored");
        assert!(!engine.wants_of[&peer].contains_key(&cids[9]));
        assert_eq!(engine.setup.metrics.snapshot().blocks_served, 1);
    }

    /// A stream that brings bytes that are no message is counted and closed: what came before is
    /// taken, nothing after. A stream that just ends is not counted.
    #[tokio::test]
    async fn a_stream_of_junk_is_counted_and_closed() {
        let good = Message {
            wantlist: Some(wantlist(&[comms::cid_for(comms::Codec::Raw, b"x")])),
            ..Message::default()
        };
        let mut bytes = Vec::new();
        message::write(&mut bytes, &good).await.expect("in memory");
        let junk = [3u8, 0xff, 0xff, 0xff];
        for (tail, counted) in [(&junk[..], 1), (&[][..], 0)] {
            let mut stream = bytes.clone();
            stream.extend_from_slice(tail);
            stream.extend_from_slice(&bytes);
            let (events, mut received) = mpsc::channel(8);
            let metrics = Arc::<P2pMetrics>::default();
            let peer = PeerId::random();
            read_stream(peer, &stream[..], events, metrics.clone()).await;
            let mut messages = 0;
            while let Ok(event) = received.try_recv() {
                assert!(
                    matches!(event, Event::Received(from, ref m) if from == peer && *m == good)
                );
                messages += 1;
            }
            assert_eq!(messages, 2 - counted);
            assert_eq!(metrics.snapshot().bitswap_malformed, counted);
        }
    }
}
