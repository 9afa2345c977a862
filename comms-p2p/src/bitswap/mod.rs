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
use tracing::debug;

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

/// What the engine is told.
pub(crate) enum Event {
    Put(Cid, Bytes),
    Fetch(Cid, oneshot::Sender<Bytes>),
    GiveUp(Cid),
    Connected(PeerId),
    Disconnected(PeerId),
    Received(PeerId, Message),
}

/// Starts the engine and the readers of inbound streams; returns the sender of its events.
pub(crate) fn start(mut control: Control) -> mpsc::Sender<Event> {
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
        blocks: HashMap::new(),
        peers: HashSet::new(),
        wants_of: HashMap::new(),
        wanted: HashMap::new(),
        asked: HashMap::new(),
        writers: HashMap::new(),
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
    blocks: HashMap<Cid, Bytes>,
    peers: HashSet<PeerId>,
    /// What each peer wants from here and did not get yet, with the kind of want.
    wants_of: HashMap<PeerId, HashMap<Cid, WantType>>,
    /// The fetches waiting, by CID.
    wanted: HashMap<Cid, Vec<oneshot::Sender<Bytes>>>,
    /// Per wanted CID, the peers asked for it.
    asked: HashMap<Cid, HashSet<PeerId>>,
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

fn payload(cid: &Cid, data: &Bytes) -> Message {
    Message {
        payload: vec![Block {
            prefix: message::prefix(cid),
            data: data.to_vec(),
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
    async fn run(mut self, mut events: mpsc::Receiver<Event>) {
        while let Some(event) = events.recv().await {
            match event {
                Event::Put(cid, data) => self.put(cid, data),
                Event::Fetch(cid, reply) => self.fetch(cid, reply),
                Event::GiveUp(cid) => self.give_up(cid),
                Event::Connected(peer) => self.connected(peer),
                Event::Disconnected(peer) => {
                    self.peers.remove(&peer);
                    self.wants_of.remove(&peer);
                    self.writers.remove(&peer);
                }
                Event::Received(peer, message) => self.received(peer, message),
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
        let entries: Vec<Entry> = (self.wanted.keys())
            .map(|cid| entry(cid, WantType::Have, false))
            .collect();
        if !entries.is_empty() {
            for cid in self.wanted.keys() {
                self.asked.entry(*cid).or_default().insert(peer);
            }
            self.send(peer, wants(entries));
        }
    }

    fn put(&mut self, cid: Cid, data: Bytes) {
        if let Some(waiters) = self.wanted.remove(&cid) {
            for waiter in waiters {
                let _ = waiter.send(data.clone());
            }
            self.cancel(&cid);
        }
        let mut sends = Vec::new();
        for (peer, wants) in &mut self.wants_of {
            match wants.remove(&cid) {
                Some(WantType::Block) => sends.push((*peer, payload(&cid, &data))),
                Some(WantType::Have) => sends.push((*peer, self::answer_have(&cid, &data))),
                None => {}
            }
        }
        for (peer, message) in sends {
            self.send(peer, message);
        }
        self.blocks.insert(cid, data);
    }

    fn fetch(&mut self, cid: Cid, reply: oneshot::Sender<Bytes>) {
        if let Some(data) = self.blocks.get(&cid) {
            let _ = reply.send(data.clone());
            return;
        }
        let waiters = self.wanted.entry(cid).or_default();
        waiters.push(reply);
        if waiters.len() > 1 {
            return;
        }
        let peers: Vec<PeerId> = self.peers.iter().copied().collect();
        self.asked.insert(cid, peers.iter().copied().collect());
        for peer in peers {
            self.send(peer, wants(vec![entry(&cid, WantType::Have, false)]));
        }
    }

    /// A fetch gave up: once no fetch of `cid` waits, its want is cancelled.
    fn give_up(&mut self, cid: Cid) {
        let Some(waiters) = self.wanted.get_mut(&cid) else {
            return;
        };
        waiters.retain(|w| !w.is_closed());
        if waiters.is_empty() {
            self.wanted.remove(&cid);
            self.cancel(&cid);
        }
    }

    /// Cancels the want of `cid` at every peer asked.
    fn cancel(&mut self, cid: &Cid) {
        for peer in self.asked.remove(cid).unwrap_or_default() {
            self.send(peer, wants(vec![entry(cid, WantType::Block, true)]));
        }
    }

    fn received(&mut self, peer: PeerId, message: Message) {
        for block in message.payload {
            let Some(cid) = message::cid_of(&block.prefix, &block.data) else {
                continue;
            };
            if self.wanted.contains_key(&cid) {
                self.put(cid, Bytes::from(block.data));
            }
        }
        for presence in message.block_presences {
            let Ok(cid) = Cid::try_from(&presence.cid[..]) else {
                continue;
            };
            if presence.r#type == PresenceType::Have as i32 && self.wanted.contains_key(&cid) {
                self.send(peer, wants(vec![entry(&cid, WantType::Block, false)]));
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
            match (self.blocks.get(&cid), kind) {
                (Some(data), WantType::Block) => answers.push(payload(&cid, data)),
                (Some(data), WantType::Have) => answers.push(answer_have(&cid, data)),
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
fn answer_have(cid: &Cid, data: &Bytes) -> Message {
    match data.len() <= SMALL_BLOCK {
        true => payload(cid, data),
        false => presence(cid, PresenceType::Have),
    }
}
