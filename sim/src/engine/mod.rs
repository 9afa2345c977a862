//! The discrete-event core of the simulator: every peer's state, the links, and a queue of future
//! events, advanced by the caller to a given time. No IO and no clock of its own: the driver tells it
//! the time, so it is deterministic for a seed and the order of the calls made on it.

mod broadcast;
mod fetch;

use std::{
    cmp::Ordering,
    collections::{BTreeSet, BinaryHeap, HashMap},
    sync::Arc,
    time::Duration,
};

use bytes::Bytes;
use comms::{Cid, Error, Message, Operation, PeerId, Topic};
use report::LatencyHistogram;
use tokio::sync::mpsc;

use crate::{
    config::{transfer_nanos, Fault, LinkModel, SimConfig},
    dist::SimRng,
    stats::{Counters, Stats, Trace, TraceEvent, TraceKind},
    SimError,
};

pub(crate) use fetch::PendingFetch;

/// A peer's index in the simulation.
pub(crate) type PeerIdx = u32;

/// Stands for "no peer" in trace events.
const NOBODY: PeerIdx = u32::MAX;

/// A broadcast message in flight, shared by all its deliveries.
pub(crate) struct Envelope {
    id: u64,
    from: PeerIdx,
    sent_at: u64,
    message: Message,
}

/// A peer's sending paths (see [`crate::SenderModel`]).
#[derive(Clone, Copy)]
enum Path {
    Publish,
    Serve,
}

/// Something that will happen at a simulated time.
enum Event {
    Deliver {
        to: PeerIdx,
        envelope: Arc<Envelope>,
    },
    Response {
        fetch: u64,
        from: PeerIdx,
        data: Bytes,
    },
    Retry {
        fetch: u64,
    },
    Deadline {
        fetch: u64,
    },
    Flood {
        peer: PeerIdx,
        epoch: u64,
    },
}

/// An event in the queue, ordered by time and then by scheduling order, so that ties are FIFO.
struct Scheduled {
    at: u64,
    seq: u64,
    event: Event,
}

impl Ord for Scheduled {
    fn cmp(&self, other: &Scheduled) -> Ordering {
        (other.at, other.seq).cmp(&(self.at, self.seq))
    }
}

impl PartialOrd for Scheduled {
    fn partial_cmp(&self, other: &Scheduled) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Scheduled {
    fn eq(&self, other: &Scheduled) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}

impl Eq for Scheduled {}

/// One subscription's sending end.
struct Sub {
    id: u64,
    tx: mpsc::Sender<Message>,
}

/// A flooder's state: what it sends, and which generation of the fault its timer belongs to.
struct Flood {
    topic: Topic,
    every: u64,
    junk: Bytes,
}

struct PeerState {
    id: PeerId,
    up: bool,
    group: u32,
    subs: HashMap<Topic, Vec<Sub>>,
    store: HashMap<Cid, Bytes>,
    fetches: BTreeSet<u64>,
    corrupt: bool,
    flood: Option<Flood>,
    fault_epoch: u64,
    /// When this peer has sent everything queued on each sending path (simulated nanoseconds).
    publisher_free_at: u64,
    server_free_at: u64,
}

impl PeerState {
    fn new(index: PeerIdx) -> PeerState {
        PeerState {
            id: PeerId::new(format!("sim-{index}")),
            up: true,
            group: 0,
            subs: HashMap::new(),
            store: HashMap::new(),
            fetches: BTreeSet::new(),
            corrupt: false,
            flood: None,
            fault_epoch: 0,
            publisher_free_at: 0,
            server_free_at: 0,
        }
    }
}

/// Why a crashed peer's operation failed.
#[derive(Debug, thiserror::Error)]
#[error("simulated peer {0} is crashed")]
struct PeerCrashed(PeerId);

/// The whole simulated network.
pub(crate) struct Engine {
    config: SimConfig,
    now: u64,
    seq: u64,
    next_id: u64,
    rng: SimRng,
    peers: Vec<PeerState>,
    topics: HashMap<Topic, BTreeSet<PeerIdx>>,
    holders: HashMap<Cid, BTreeSet<PeerIdx>>,
    links: HashMap<(PeerIdx, PeerIdx), LinkModel>,
    queue: BinaryHeap<Scheduled>,
    fetches: HashMap<u64, PendingFetch>,
    counters: Counters,
    delivery_latency: LatencyHistogram,
    fetch_latency: LatencyHistogram,
    trace: Trace,
}

impl Engine {
    /// A network of `peers` peers, all up, in one partition group, at time zero.
    pub(crate) fn new(config: SimConfig, peers: usize) -> Engine {
        let mut engine = Engine {
            rng: SimRng::new(config.seed),
            trace: Trace::new(config.record_trace),
            config,
            now: 0,
            seq: 0,
            next_id: 0,
            peers: Vec::new(),
            topics: HashMap::new(),
            holders: HashMap::new(),
            links: HashMap::new(),
            queue: BinaryHeap::new(),
            fetches: HashMap::new(),
            counters: Counters::default(),
            delivery_latency: LatencyHistogram::default(),
            fetch_latency: LatencyHistogram::default(),
        };
        for _ in 0..peers {
            engine.add_peer();
        }
        engine
    }

    /// The time of the earliest pending event, if any.
    pub(crate) fn next_event_at(&self) -> Option<u64> {
        self.queue.peek().map(|s| s.at)
    }

    /// Runs every event due by `now` (in nanoseconds since the start), each at its own time, then
    /// sets the clock to `now`.
    pub(crate) fn advance_to(&mut self, now: u64) {
        while self.queue.peek().is_some_and(|s| s.at <= now) {
            let Some(Scheduled { at, event, .. }) = self.queue.pop() else {
                break;
            };
            self.now = at;
            self.handle_event(event);
        }
        self.now = self.now.max(now);
    }

    fn handle_event(&mut self, event: Event) {
        match event {
            Event::Deliver { to, envelope } => self.handle_deliver(to, &envelope),
            Event::Response { fetch, from, data } => self.handle_response(fetch, from, data),
            Event::Retry { fetch } => self.handle_retry(fetch),
            Event::Deadline { fetch } => self.handle_deadline(fetch),
            Event::Flood { peer, epoch } => self.handle_flood(peer, epoch),
        }
    }

    fn schedule(&mut self, delay: u64, event: Event) {
        self.seq += 1;
        self.queue.push(Scheduled {
            at: self.now.saturating_add(delay),
            seq: self.seq,
            event,
        });
    }

    fn next_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    fn trace(&mut self, kind: TraceKind, from: PeerIdx, to: PeerIdx, id: u64, size: u64) {
        self.trace.push(TraceEvent {
            at_ns: self.now,
            kind,
            from,
            to,
            id,
            size,
        });
    }

    /// When a message of `size` bytes that `peer` sends on `path`, `after` nanoseconds from now,
    /// leaves it, in absolute simulated nanoseconds: it waits for the messages queued before it.
    /// Booked in the order sends are computed, which for a send in the future (a fetch response)
    /// is not quite the order they leave.
    fn occupy(&mut self, peer: PeerIdx, path: Path, size: usize, after: u64) -> u64 {
        let ready = self.now.saturating_add(after);
        let state = &mut self.peers[peer as usize];
        let (model, free_at) = match path {
            Path::Publish => (&self.config.publisher, &mut state.publisher_free_at),
            Path::Serve => (&self.config.server, &mut state.server_free_at),
        };
        let occupancy = model.sample(size, &mut self.rng);
        if occupancy == 0 {
            return ready;
        }
        *free_at = ready.max(*free_at).saturating_add(occupancy);
        *free_at
    }

    /// When `size` bytes that left `from` at `left` (absolute) arrive at `to`, as a delay from
    /// now, or `None` when the link loses them.
    fn transit(&mut self, from: PeerIdx, to: PeerIdx, size: usize, left: u64) -> Option<u64> {
        let link = match self.links.is_empty() {
            true => self.config.link,
            false => *self.links.get(&(from, to)).unwrap_or(&self.config.link),
        };
        if self.rng.chance(link.loss) {
            return None;
        }
        let latency = link.latency.sample(&mut self.rng);
        let jitter = self.rng.up_to(link.jitter.as_nanos() as u64);
        let transfer = link
            .bandwidth
            .filter(|&b| b > 0)
            .map_or(0, |b| transfer_nanos(size, b));
        let wire = latency.saturating_add(jitter).saturating_add(transfer);
        Some((left.saturating_sub(self.now)).saturating_add(wire))
    }

    fn reachable(&self, a: PeerIdx, b: PeerIdx) -> bool {
        let (a, b) = (&self.peers[a as usize], &self.peers[b as usize]);
        a.up && b.up && a.group == b.group
    }

    fn ensure_up(&self, peer: PeerIdx, operation: Operation) -> Result<(), Error> {
        let state = &self.peers[peer as usize];
        match state.up {
            true => Ok(()),
            false => Err(Error::unavailable(operation, PeerCrashed(state.id.clone()))),
        }
    }

    fn check_index(&self, peer: usize) -> Result<PeerIdx, SimError> {
        match peer < self.peers.len() {
            true => Ok(peer as PeerIdx),
            false => Err(SimError::UnknownPeer {
                index: peer,
                peers: self.peers.len(),
            }),
        }
    }

    // ---- the peer operations that are not broadcast or fetch ----

    /// The id of peer `peer`.
    pub(crate) fn peer_id(&self, peer: PeerIdx) -> PeerId {
        self.peers[peer as usize].id.clone()
    }

    /// The peers `peer` can reach now.
    pub(crate) fn peers_of(&self, peer: PeerIdx) -> Result<Vec<PeerId>, Error> {
        self.ensure_up(peer, Operation::Peers)?;
        let reachable = (0..self.peers.len() as PeerIdx)
            .filter(|&other| other != peer && self.reachable(peer, other));
        Ok(reachable.map(|other| self.peer_id(other)).collect())
    }

    // ---- control ----

    /// Adds a peer, up and in the default partition group; returns its index.
    pub(crate) fn add_peer(&mut self) -> PeerIdx {
        let index = self.peers.len() as PeerIdx;
        self.peers.push(PeerState::new(index));
        index
    }

    /// Splits the network: each group can reach only itself; peers in no group form one more group.
    pub(crate) fn partition(&mut self, groups: &[Vec<usize>]) -> Result<(), SimError> {
        let mut assignment = vec![0; self.peers.len()];
        for (group, members) in groups.iter().enumerate() {
            for &member in members {
                assignment[self.check_index(member)? as usize] = group as u32 + 1;
            }
        }
        for (peer, group) in self.peers.iter_mut().zip(assignment) {
            peer.group = group;
        }
        self.trace(
            TraceKind::Partition,
            NOBODY,
            NOBODY,
            0,
            groups.len() as u64 + 1,
        );
        Ok(())
    }

    /// Heals every partition.
    pub(crate) fn heal(&mut self) {
        self.peers.iter_mut().for_each(|p| p.group = 0);
        self.trace(TraceKind::Partition, NOBODY, NOBODY, 0, 1);
    }

    /// Crashes a peer: it becomes unreachable, its subscriptions end and its pending fetches fail.
    /// Its stored blocks survive, as a daemon's blockstore survives on disk.
    pub(crate) fn crash(&mut self, peer: usize) -> Result<(), SimError> {
        let peer = self.check_index(peer)?;
        let state = &mut self.peers[peer as usize];
        if !state.up {
            return Ok(());
        }
        state.up = false;
        let topics: Vec<Topic> = state.subs.drain().map(|(topic, _)| topic).collect();
        let fetches = std::mem::take(&mut state.fetches);
        for topic in topics {
            self.forget_subscriber(&topic, peer);
        }
        for fetch in fetches {
            let error = Error::unavailable(Operation::Fetch, PeerCrashed(self.peer_id(peer)));
            self.finish_fetch(fetch, Err(error));
        }
        self.counters.crashes += 1;
        self.trace(TraceKind::Crash, peer, NOBODY, 0, 0);
        Ok(())
    }

    /// Brings a crashed peer back, with its blocks and without subscriptions.
    pub(crate) fn restart(&mut self, peer: usize) -> Result<(), SimError> {
        let peer = self.check_index(peer)?;
        if !std::mem::replace(&mut self.peers[peer as usize].up, true) {
            self.counters.restarts += 1;
            self.trace(TraceKind::Restart, peer, NOBODY, 0, 0);
        }
        Ok(())
    }

    /// Overrides the model of the link from `from` to `to` (one direction).
    pub(crate) fn set_link(
        &mut self,
        from: usize,
        to: usize,
        link: LinkModel,
    ) -> Result<(), SimError> {
        let key = (self.check_index(from)?, self.check_index(to)?);
        self.links.insert(key, link);
        Ok(())
    }

    /// Replaces the model of every link, dropping all overrides.
    pub(crate) fn set_default_link(&mut self, link: LinkModel) {
        self.config.link = link;
        self.links.clear();
    }

    /// Makes a peer misbehave, or behave again with `None`.
    pub(crate) fn set_fault(&mut self, peer: usize, fault: Option<Fault>) -> Result<(), SimError> {
        let peer = self.check_index(peer)?;
        let state = &mut self.peers[peer as usize];
        state.fault_epoch += 1;
        state.corrupt = matches!(fault, Some(Fault::CorruptBlocks));
        state.flood = match fault {
            Some(Fault::Flood { topic, every, size }) => {
                let every = (every.as_nanos() as u64).max(1);
                Some(Flood {
                    topic,
                    every,
                    junk: Bytes::from(vec![0xA5; size]),
                })
            }
            _ => None,
        };
        if let Some(every) = state.flood.as_ref().map(|f| f.every) {
            let epoch = state.fault_epoch;
            self.schedule(every, Event::Flood { peer, epoch });
        }
        Ok(())
    }

    /// The figures so far.
    pub(crate) fn stats(&self) -> Stats {
        Stats {
            elapsed: Duration::from_nanos(self.now),
            counters: self.counters.clone(),
            delivery_latency: self.delivery_latency.summary(),
            fetch_latency: self.fetch_latency.summary(),
            trace_digest: self.trace.digest(),
        }
    }

    /// The recorded trace events (empty unless the config records them).
    pub(crate) fn trace_events(&self) -> Vec<TraceEvent> {
        self.trace.events().to_vec()
    }
}
