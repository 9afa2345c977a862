//! A deterministic in-memory network that implements [`comms::Communication`] for each of its peers.
//!
//! # Determinism and time
//! One task owns the whole network (the engine) and applies every operation in the order it
//! receives them; one seeded ChaCha8 stream draws every delay and loss. Time is tokio's clock: run
//! the simulation on a current-thread runtime with the clock paused (`#[tokio::test(start_paused =
//! true)]`, or `Builder::new_current_thread().start_paused(true)`) and simulated time jumps from
//! event to event, so ten simulated minutes take seconds; the code under test, with its own
//! timers, runs in the same virtual time. The same seed and the same program then give the same
//! trace, which [`Stats::trace_digest`] condenses into one string. Code under simulation keeps its
//! part: `biased;` in `select!` (tokio otherwise picks a branch at random) and no iteration over
//! randomly-seeded hash maps where the order matters.
//!
//! # What is modelled
//! - **Links**: per direction a [`LinkModel`]: latency from a [`Latency`] distribution (constant,
//!   uniform, log-normal, exponential, Pareto), uniform jitter, loss probability, and bandwidth (a
//!   payload's transfer time is its size over the bandwidth; links do not contend with each other).
//!   The default model and per-link overrides can change at any time.
//! - **Sending paths** (optional, [`SenderModel`]): each broadcast a peer publishes (once, however
//!   many copies) and each fetch response it serves occupies the peer's publishing or serving path
//!   for a cost per message (fixed, or log-normal) plus size over bandwidth, one after another, so
//!   latency grows with load.
//! - **Broadcast**: full-mesh fan-out from the publisher to every subscribed peer, each copy with its
//!   own loss and delay (no gossip relaying, so no duplicates). Subscriber queues are bounded
//!   ([`SimConfig::subscriber_queue`]); overflow drops and counts, as a gossipsub router does.
//! - **Fetch**: bitswap-like wants to reachable holders with periodic retry, each holder answering
//!   after [`SimConfig::serve_delay`]; see `engine/fetch.rs`.
//! - **Faults**: partitions that split and heal, crashes and restarts (blocks survive, subscriptions
//!   and pending fetches do not), and per-peer [`Fault`]s: a peer serving corrupted blocks, a peer
//!   flooding a topic. Receivers enforce size limits themselves, since a faulty sender ignores its own.
//! - **Not modelled**: CPU time of the peers (handlers run in zero simulated time) beyond the sending
//!   paths and serve delay, contention on the receiving side, gossip mesh maintenance, connection set-up,
//!   and garbage collection of blocks.
//!
//! # Figures
//! [`Sim::stats`] returns counters, latency percentiles and the trace digest, exportable as JSON;
//! with [`SimConfig::record_trace`] the whole trace is kept and [`Sim::trace`] returns it.

mod config;
mod dist;
mod driver;
mod engine;
mod peer;
mod stats;

use std::time::Duration;

pub use config::{Fault, LinkModel, SenderModel, SimConfig};
pub use dist::{Latency, SimRng, MAX_DELAY};
pub use peer::SimPeer;
pub use stats::{Counters, Stats, TraceEvent, TraceKind};

use driver::Driver;
use engine::Engine;

/// The environment variable that overrides a simulation's seed.
pub const SEED_VAR: &str = "SIM_SEED";

/// Errors of the simulator's control interface.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SimError {
    /// A peer index that is not in the network.
    #[error("no peer {index}: the network has {peers}")]
    UnknownPeer { index: usize, peers: usize },
    /// The simulation's task has ended (its runtime shut down).
    #[error("the simulation has stopped")]
    Closed,
}

/// The seed to use: the value of `SIM_SEED` when set and valid, `default` otherwise.
pub fn seed_from_env(default: u64) -> u64 {
    std::env::var(SEED_VAR)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(default)
}

/// Controls a running simulation: its topology, faults and figures. Its peers are [`SimPeer`]s.
/// If a panic unwinds through it (a failing test), it prints the seed to replay the run with.
pub struct Sim {
    driver: Driver,
    seed: u64,
    limits: comms::Limits,
}

/// Builds a [`Sim`] and its first peers.
#[derive(Clone, Debug, Default)]
pub struct SimBuilder {
    config: SimConfig,
    peers: usize,
}

impl SimBuilder {
    /// Starts from a whole config (a scenario file, say).
    pub fn config(mut self, config: SimConfig) -> SimBuilder {
        self.config = config;
        self
    }

    /// The seed.
    pub fn seed(mut self, seed: u64) -> SimBuilder {
        self.config.seed = seed;
        self
    }

    /// The model of every link.
    pub fn link(mut self, link: LinkModel) -> SimBuilder {
        self.config.link = link;
        self
    }

    /// Size limits.
    pub fn limits(mut self, limits: comms::Limits) -> SimBuilder {
        self.config.limits = limits;
        self
    }

    /// Keep every trace event for [`Sim::trace`].
    pub fn record_trace(mut self, record: bool) -> SimBuilder {
        self.config.record_trace = record;
        self
    }

    /// How many peers to start with.
    pub fn peers(mut self, peers: usize) -> SimBuilder {
        self.peers = peers;
        self
    }

    /// Starts the simulation on the current tokio runtime.
    ///
    /// # Panics
    /// Outside a tokio runtime.
    pub fn build(self) -> (Sim, Vec<SimPeer>) {
        let (seed, limits) = (self.config.seed, self.config.limits);
        let engine = Engine::new(self.config, self.peers);
        let ids: Vec<_> = (0..self.peers as u32).map(|i| engine.peer_id(i)).collect();
        let driver = Driver::spawn(engine);
        let peers = ids
            .into_iter()
            .enumerate()
            .map(|(i, id)| SimPeer::new(i as u32, id, limits, driver.clone()))
            .collect();
        (
            Sim {
                driver,
                seed,
                limits,
            },
            peers,
        )
    }
}

impl Sim {
    /// A builder with the default config and no peers.
    pub fn builder() -> SimBuilder {
        SimBuilder::default()
    }

    /// The seed this simulation runs with.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// Simulated time since the start.
    pub fn elapsed(&self) -> Duration {
        self.driver.elapsed()
    }

    /// Adds a peer to the running network.
    pub async fn add_peer(&self) -> Result<SimPeer, SimError> {
        let (index, id) = self
            .driver
            .call(|e| {
                let index = e.add_peer();
                (index, e.peer_id(index))
            })
            .await?;
        Ok(SimPeer::new(index, id, self.limits, self.driver.clone()))
    }

    /// Splits the network into `groups` (peer indices); peers in no group form one more group.
    pub async fn partition(&self, groups: Vec<Vec<usize>>) -> Result<(), SimError> {
        self.driver.call(move |e| e.partition(&groups)).await?
    }

    /// Heals all partitions.
    pub async fn heal(&self) -> Result<(), SimError> {
        self.driver.call(Engine::heal).await
    }

    /// Crashes peer `index`: unreachable, subscriptions ended, pending fetches failed, blocks kept.
    pub async fn crash(&self, index: usize) -> Result<(), SimError> {
        self.driver.call(move |e| e.crash(index)).await?
    }

    /// Restarts a crashed peer `index`.
    pub async fn restart(&self, index: usize) -> Result<(), SimError> {
        self.driver.call(move |e| e.restart(index)).await?
    }

    /// Sets the model of the link from `from` to `to`, one direction.
    pub async fn set_link(&self, from: usize, to: usize, link: LinkModel) -> Result<(), SimError> {
        self.driver
            .call(move |e| e.set_link(from, to, link))
            .await?
    }

    /// Sets the model of every link, dropping per-link overrides.
    pub async fn set_default_link(&self, link: LinkModel) -> Result<(), SimError> {
        self.driver.call(move |e| e.set_default_link(link)).await
    }

    /// Makes peer `index` misbehave, or stop misbehaving with `None`.
    pub async fn set_fault(&self, index: usize, fault: Option<Fault>) -> Result<(), SimError> {
        self.driver.call(move |e| e.set_fault(index, fault)).await?
    }

    /// Counters, latency percentiles and the trace digest so far.
    pub async fn stats(&self) -> Result<Stats, SimError> {
        self.driver.call(|e| e.stats()).await
    }

    /// The recorded trace (empty unless [`SimConfig::record_trace`] is set).
    pub async fn trace(&self) -> Result<Vec<TraceEvent>, SimError> {
        self.driver.call(|e| e.trace_events()).await
    }
}

impl Drop for Sim {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("simulation seed {0}: replay with {SEED_VAR}={0}", self.seed);
        }
    }
}
