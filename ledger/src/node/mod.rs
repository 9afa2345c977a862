//! The node: the protocol core driven over a [`Communication`] backend, with storage.
//!
//! Its parts:
//! - `actor`: one task owns the [`Core`] and runs one loop over its event sources (commands from
//!   handles, broadcast messages, finished fetches, the clock), carrying out what the core
//!   decides, disk first;
//! - `handle`: the cheap [`NodeHandle`] that talks to it over a bounded channel, and learns how it
//!   ended ([`Exit`]);
//! - `keeper`: the task that makes accepted blocks available from the backend;
//! - `replay`: the stored blocks replayed through the core at start;
//! - `fetch`: fetches in their own tasks with bounded concurrency, each retried with exponential
//!   backoff and given up only after `fetch_attempts`.
//!
//! Everything the core accepts is written to disk before anything that depends on it is
//! broadcast, and a block of our own is synced to disk, with the record that we signed its round,
//! before it leaves the process. A storage error stops the node: a supervisor logs one ERROR line
//! naming the task and what failed, and every handle sees [`Exit::Failed`]. So does a panic.

mod actor;
mod fetch;
mod handle;
mod keeper;
mod replay;

use std::{sync::Arc, time::Duration};

use bytes::Bytes;
use comms::{Cid, Communication, Topic};
use serde::{Deserialize, Serialize};
use tokio::{
    sync::{broadcast, mpsc, watch, Semaphore},
    task::JoinHandle,
    time::Instant,
};
use tracing::{error, Instrument};

pub use actor::panic_message;
pub use handle::{Exit, NodeHandle};

use crate::{
    core::{within, ConfigError, Core, CoreConfig, CoreStats},
    state::{Account, AccountProof},
    store::{Committed, Store, StoreError},
    types::{Checkpoint, Genesis},
    Error, Keypair,
};

/// Stored blocks replayed between two yields to the runtime at start.
pub const REPLAY_SLICE: usize = 256;

/// How a node runs; every field has a sensible default.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NodeConfig {
    /// The protocol's tuning.
    pub core: CoreConfig,
    /// Deadline of one fetch attempt.
    #[serde(with = "humantime_serde")]
    pub fetch_timeout: Duration,
    /// Attempts per CID before giving up on it (until something references it again).
    pub fetch_attempts: u32,
    /// Fetches in flight at once.
    pub max_concurrent_fetches: usize,
    /// The longest the core goes without being told the time. It is woken sooner when it has
    /// something due (a block to propose, a leader timeout, a re-broadcast).
    #[serde(with = "humantime_serde")]
    pub tick: Duration,
    /// Block timestamps count milliseconds from this Unix time at start; unset: the wall clock.
    /// Simulations set it so that runs are reproducible.
    pub epoch_ms: Option<u64>,
    /// The most rounds the node's DAG may be below the highest round it has seen and the node
    /// still report itself ready (`GET /readyz`).
    pub ready_lag_rounds: u64,
    /// A node whose store holds no commit joins by snapshot: it starts from a checkpoint
    /// that a quorum of validators certified, fetching its state by CID and only the last
    /// [`GC_DEPTH`](crate::consensus::GC_DEPTH) rounds of the DAG, rather than every block since
    /// genesis (see [`crate::core::join`]). Off, it fetches and executes the whole history.
    pub snapshot_sync: bool,
    /// Rounds of history the store keeps below the last commit's leader: older blocks, commits,
    /// transaction records and the state blocks only older states need are deleted as the
    /// network goes on (every [`PRUNE_EVERY`] rounds). 0: an archive node, which keeps
    /// everything. At least [`MIN_RETENTION`] otherwise.
    pub retention_rounds: u64,
}

/// The fewest rounds a pruning node keeps: a restart reads the commits of the last
/// [`GC_DEPTH`](crate::consensus::GC_DEPTH) rounds and the blocks from that floor's parents up,
/// and a peer that lags a little fetches recent blocks from it.
pub const MIN_RETENTION: u64 = 2 * crate::consensus::GC_DEPTH;

/// Rounds between two prunes of a pruning node.
pub const PRUNE_EVERY: u64 = 32;

impl NodeConfig {
    /// Checks every field against its bound, naming the first that breaks one as the config file
    /// spells it (`node.tick`, `node.core.max_block_bytes`): a tick from 1 ms to a minute, a fetch
    /// timeout from 1 ms to an hour, at least one fetch attempt and one fetch at a time.
    pub fn check(&self) -> Result<(), ConfigError> {
        let (ms, hour) = (Duration::from_millis(1), Duration::from_secs(3600));
        let in_node = |error: ConfigError| ConfigError {
            field: format!("node.{}", error.field),
            ..error
        };
        self.core.check().map_err(in_node)?;
        within("node.tick", self.tick, ms, Duration::from_secs(60))?;
        within("node.fetch_timeout", self.fetch_timeout, ms, hour)?;
        within("node.fetch_attempts", self.fetch_attempts, 1, 1000)?;
        within("node.ready_lag_rounds", self.ready_lag_rounds, 1, 1_000_000)?;
        if self.retention_rounds != 0 {
            let retention = self.retention_rounds;
            within("node.retention_rounds", retention, MIN_RETENTION, u64::MAX)?;
        }
        let concurrent = self.max_concurrent_fetches;
        within("node.max_concurrent_fetches", concurrent, 1, 1 << 16)
    }
}

impl Default for NodeConfig {
    fn default() -> NodeConfig {
        NodeConfig {
            core: CoreConfig::default(),
            fetch_timeout: Duration::from_secs(5),
            fetch_attempts: 8,
            max_concurrent_fetches: 64,
            tick: Duration::from_millis(50),
            epoch_ms: None,
            ready_lag_rounds: 10,
            snapshot_sync: false,
            retention_rounds: 0,
        }
    }
}

/// A snapshot of a node's progress.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Status {
    /// Commits so far.
    pub height: u64,
    /// The CID of the state's root block after the last commit.
    pub state_root: String,
    /// The latest checkpoint a quorum certified, as far as this node saw: its height.
    pub certified_height: Option<u64>,
    /// And its state root's CID.
    pub certified_state_root: Option<String>,
    /// Accepted blocks in memory: those from the floor up.
    pub dag_blocks: usize,
    /// The lowest round in memory ([`crate::consensus::GC_DEPTH`] rounds below the last committed
    /// leader); older blocks are on disk.
    pub dag_floor: u64,
    /// Blocks below the floor whose author and round stay in memory (none when the node has a
    /// store, which answers for them).
    pub pruned_in_memory: usize,
    /// The highest round in the DAG.
    pub highest_round: u64,
    /// The highest round of a valid block received, accepted or waiting for ancestors, that
    /// validators of more than `f` stake reached: how far the others are, as far as this node
    /// knows.
    pub highest_round_seen: u64,
    /// Blocks waiting for ancestors.
    pub pending_blocks: usize,
    /// CIDs being fetched.
    pub pending_fetches: usize,
    /// Transactions submitted here, not yet committed.
    pub mempool: usize,
    /// For the three highest rounds, the validators whose blocks this node holds.
    pub recent_authors: Vec<(u64, Vec<u32>)>,
    /// Joining by snapshot: not yet at a certified checkpoint with its state.
    pub joining: bool,
    /// The round below which the store pruned the history (0: it keeps everything).
    pub pruned_below: u64,
    /// Counters of the core.
    pub stats: CoreStats,
}

/// An account as of the latest certified checkpoint, with what proves it to a client that trusts
/// the genesis alone: the certificate (blocks of a quorum naming the checkpoint) and the state
/// blocks from its root to the account.
#[derive(Clone, Debug, PartialEq)]
pub struct ProvenAccount {
    /// The account there; `None` when the state has none (proven absent).
    pub account: Option<Account>,
    /// The certified checkpoint.
    pub checkpoint: Checkpoint,
    /// The state blocks from the checkpoint's root to the account (see [`verify_account`](crate::state::verify_account)).
    pub proof: AccountProof,
    /// The certificate's signed blocks (see [`verify_certificate`](crate::checkpoint::verify_certificate)).
    pub certificate: Vec<Bytes>,
}

/// Where a transaction stands, as one node sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum TxStatus {
    /// Waiting for an earlier nonce of its signer: held here, or ordered and waiting to execute.
    Queued,
    /// Submitted here; waiting for a block, or in one and waiting for its commit.
    Pending,
    /// Held here for an earlier nonce that did not come in time, and dropped.
    Expired,
    /// Committed (from this node's store: a node without storage knows only pending ones).
    Committed(Committed),
    /// Neither: never submitted here, or lost before it committed (the mempool is not durable).
    Unknown,
}

/// Why a node could not start or answer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NodeError {
    /// The genesis is invalid.
    #[error(transparent)]
    Ledger(#[from] Error),
    /// The network backend failed at start.
    #[error("network: {0}")]
    Comms(#[from] comms::Error),
    /// A config value outside its bounds.
    #[error("config: {0}")]
    Config(#[from] ConfigError),
    /// The store failed, or replays differently from what it recorded.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A storage operation failed while the node ran: it stopped.
    #[error("{operation} failed: {source}")]
    Storage {
        operation: &'static str,
        #[source]
        source: StoreError,
    },
    /// One of the node's tasks ended: it stopped.
    #[error("the {task} task failed: {reason}")]
    Task { task: &'static str, reason: String },
    /// The node's task has stopped.
    #[error("the node has stopped")]
    Stopped,
}

/// The topic a chain's blocks are broadcast on.
pub fn blocks_topic(chain: &Cid) -> Topic {
    Topic::new(format!("ledger/{chain}/blocks")).expect("a CID-sized topic name is valid")
}

/// Starts a node on the current tokio runtime: replays `storage` (if any; the runtime's other
/// tasks run between slices of the replay) and joins the network. Without a store, the node keeps
/// everything in memory and starts empty each time.
pub async fn spawn<C: Communication + Clone>(
    genesis: &Genesis,
    key: Option<Keypair>,
    config: NodeConfig,
    comms: C,
    storage: Option<Arc<dyn Store>>,
) -> Result<NodeHandle, NodeError> {
    genesis.check()?;
    config.check()?;
    let span = tracing::info_span!("node", node = %comms.local_peer());
    let core = match &storage {
        Some(store) => Core::with_store(genesis, key, config.core.clone(), store.as_ref())?,
        None => Core::new(genesis, key, config.core.clone()),
    };
    let topic = blocks_topic(core.chain());
    let subscription = comms.subscribe(&topic).await?;
    let start = Instant::now();
    let epoch = config.epoch_ms.unwrap_or_else(wall_clock_ms);
    let (commands, receiver) = mpsc::channel(256);
    let (commits, _) = broadcast::channel(1024);
    let (fetched_tx, fetched) = mpsc::channel(256);
    let permits = Arc::new(Semaphore::new(config.max_concurrent_fetches.max(1)));
    let (keeper, keeper_task) = keeper::spawn(comms.clone(), span.clone());
    let mut node = actor::Node {
        core,
        comms,
        storage,
        topic,
        config,
        start,
        epoch,
        commits,
        fetch_permits: permits,
        fetched_tx,
        keeper,
        quiet: actor::Quiet::default(),
        pruned_below: 0,
    };
    // Every block links to the genesis (`chain`), so it is made available like a block: a walk of
    // the DAG from any block (a recursive pin, `dag export`, the daemon's garbage collector) then
    // finds every link on the daemon.
    node.keep(genesis.encode().0.into(), true).await;
    // A node that never committed nor joined joins by snapshot, if so configured, without
    // replaying what a join cut short may have stored (those blocks' ancestors are not stored, and
    // would be fetched back to genesis); its record of the rounds it signed still holds.
    let committed = match &node.storage {
        Some(storage) => storage.height()? > 0,
        None => false,
    };
    if node.config.snapshot_sync && !committed && node.core.join() {
        tracing::info!(parent: &span, "nothing committed: joining by snapshot");
    } else {
        node.replay().instrument(span.clone()).await?;
    }
    if let Some(storage) = &node.storage {
        node.pruned_below = storage.pruned_below()?;
    }
    let inputs = actor::Inputs {
        commands: receiver,
        subscription,
        fetched,
        keeper: keeper_task,
    };
    let task = tokio::spawn(node.run(inputs).instrument(span.clone()));
    let (exit_tx, exit) = watch::channel(None);
    tokio::spawn(supervise(task, exit_tx).instrument(span));
    Ok(NodeHandle { commands, exit })
}

/// Waits for the node's task to end, and tells every handle how: a failure (an error or a panic)
/// with one ERROR line naming the task and what failed.
async fn supervise(task: JoinHandle<Result<(), NodeError>>, exit: watch::Sender<Option<Exit>>) {
    let ended = match task.await {
        Ok(Ok(())) => Exit::Stopped,
        Ok(Err(NodeError::Task { task, reason })) => Exit::Failed { task, reason },
        Ok(Err(failure)) => Exit::Failed {
            task: "node",
            reason: failure.to_string(),
        },
        Err(join) if join.is_panic() => Exit::Failed {
            task: "node",
            reason: actor::panicked(&*join.into_panic()),
        },
        Err(_) => Exit::Failed {
            task: "node",
            reason: "cancelled".into(),
        },
    };
    if let Exit::Failed { task, reason } = &ended {
        error!(task, reason, "the node stopped");
    }
    exit.send_replace(Some(ended));
}

fn wall_clock_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
