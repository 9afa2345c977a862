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
//!   later is still sent to it.
//!
//! One task (the engine) holds the blocks, the wantlists and the pending fetches; the peer's swarm
//! task tells it who connects and leaves, reader tasks bring it what peers send, writer tasks send
//! what it queues.

pub mod message;

use std::collections::{HashMap, HashSet};

use bytes::Bytes;
use comms::Cid;
use futures::StreamExt;
use libp2p::{PeerId, StreamProtocol};
use libp2p_stream::Control;
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, warn};

use crate::store::BlockStore;

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
    Put(Cid, Bytes),
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

/// Starts the engine and the readers of inbound streams; returns the sender of its events.
/// `corrupt`: a fault for tests, every block served altered.
pub(crate) fn start(
    mut control: Control,
    blocks: Box<dyn BlockStore>,
    corrupt: bool,
) -> mpsc::Sender<Event> {
    let (events, receiver) = mpsc::channel(1024);
    for protocol in PROTOCOLS {
        let Ok(mut incoming) = control.accept(protocol) else {
            continue;
        };
        let events = events.downgrade();
        tokio::spawn(async move {
            while let Some((peer, stream)) = incoming.next().await {
                let Some(events) = events.upgrade() else {
                    return;
                };
                tokio::spawn(read_stream(peer, stream, events));
            }
        });
    }
    let engine = Engine {
        control,
        blocks,
        peers: HashSet::new(),
        wants_of: HashMap::new(),
        wanted: HashMap::new(),
        writers: HashMap::new(),
        corrupt,
    };
    tokio::spawn(engine.run(receiver));
    events
}

/// Reads `peer`'s messages from one inbound stream until it ends or breaks.
async fn read_stream(peer: PeerId, mut stream: libp2p::Stream, events: mpsc::Sender<Event>) {
    loop {
        match message::read(&mut stream).await {
            Ok(Some(message)) => {
                if events.send(Event::Received(peer, message)).await.is_err() {
                    return;
                }
            }
            Ok(None) => return,
            Err(error) => {
                debug!(%peer, %error, "a bitswap stream broke");
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
    /// The blocks this peer holds.
    blocks: Box<dyn BlockStore>,
    peers: HashSet<PeerId>,
    /// What each peer wants from here and did not get yet, with the kind of want.
    wants_of: HashMap<PeerId, HashMap<Cid, WantType>>,
    /// The fetches waiting, by CID.
    wanted: HashMap<Cid, Pending>,
    writers: HashMap<PeerId, mpsc::Sender<Message>>,
    corrupt: bool,
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

/// Block `cid` from `blocks`, if held; a failed read is logged and taken as not held (the peer
/// asking goes to another).
fn held(blocks: &dyn BlockStore, cid: &Cid) -> Option<Bytes> {
    blocks.get(cid).unwrap_or_else(|error| {
        warn!(%cid, %error, "reading a block failed");
        None
    })
}

impl Engine {
    fn held(&self, cid: &Cid) -> Option<Bytes> {
        held(&*self.blocks, cid)
    }

    async fn run(mut self, mut events: mpsc::Receiver<Event>) {
        while let Some(event) = events.recv().await {
            match event {
                Event::Put(cid, data) => self.put(cid, data),
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

    fn put(&mut self, cid: Cid, data: Bytes) {
        if let Some(pending) = self.wanted.remove(&cid) {
            for waiter in pending.waiters {
                let _ = waiter.send(Ok(data.clone()));
            }
            self.cancel(&cid, pending.asked);
        }
        let mut sends = Vec::new();
        let corrupt = self.corrupt;
        for (peer, wants) in &mut self.wants_of {
            match wants.remove(&cid) {
                Some(WantType::Block) => sends.push((*peer, payload(&cid, &data, corrupt))),
                Some(WantType::Have) => sends.push((*peer, answer_have(&cid, &data, corrupt))),
                None => {}
            }
        }
        for (peer, message) in sends {
            self.send(peer, message);
        }
        if let Err(error) = self.blocks.put(&cid, &data) {
            warn!(%cid, %error, "storing a block failed");
        }
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
                self.put(cid, Bytes::from(block.data));
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

    /// `peer`'s wants: answered from the blocks here, or remembered until one comes.
    fn wanted_by(&mut self, peer: PeerId, wantlist: Wantlist) {
        let mut answers = Vec::new();
        let wants = self.wants_of.entry(peer).or_default();
        if wantlist.full {
            wants.clear();
        }
        for entry in wantlist.entries {
            let Ok(cid) = Cid::try_from(&entry.block[..]) else {
                continue;
            };
            if entry.cancel {
                wants.remove(&cid);
                continue;
            }
            let kind = match entry.want_type {
                1 => WantType::Have,
                _ => WantType::Block,
            };
            match (held(&*self.blocks, &cid), kind) {
                (Some(data), WantType::Block) => answers.push(payload(&cid, &data, self.corrupt)),
                (Some(data), WantType::Have) => {
                    answers.push(answer_have(&cid, &data, self.corrupt))
                }
                (None, _) => {
                    if entry.send_dont_have {
                        answers.push(presence(&cid, PresenceType::DontHave));
                    }
                    wants.insert(cid, kind);
                }
            }
        }
        for answer in answers {
            self.send(peer, answer);
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
