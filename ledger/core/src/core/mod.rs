//! The protocol core, free of IO: inputs in (a block's bytes arrived, a fetch finished, a
//! transaction was submitted, the time is now T), outputs out (broadcast this, store that, fetch
//! this CID, these transactions committed). The node shell does the IO; tests drive it directly.
//!
//! `Core` composes parts that each hold their own state and have their own tests: the block
//! manager (`blocks`, with the fetch scheduler `fetches` and `park`ing), the transaction `pool`, the
//! `proposer`, and the executor (`execute`: deciding, ordering and applying). `propose` routes the
//! inputs between them.

mod blocks;
mod execute;
mod fetches;
pub mod join;
mod pool;
mod propose;
mod proposer;

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use blocks::Blocks;
use bytes::Bytes;
use comms::Cid;
use execute::Executor;
use proposer::Proposer;
use serde::{Deserialize, Serialize};

use crate::{
    checkpoint::{Certificate, Checkpoints},
    dag::Dag,
    state::State,
    store::{Base, Commit, Start, Store, StoreError},
    tree::TreeBlock,
    types::{Checkpoint, Genesis},
    Committee, Error, Keypair,
};

pub use propose::SubmitError;

/// Tuning of the core; every field has a sensible default.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CoreConfig {
    /// How long a validator waits for the previous round's leader block, once it has a quorum of
    /// that round, before proposing without it.
    #[serde(with = "humantime_serde")]
    pub leader_timeout: Duration,
    /// The least time between two of a validator's blocks while there is work: transactions
    /// waiting here for a block, or in blocks not yet ordered. Rounds then advance as fast as the
    /// network delivers quorums, up to this pace.
    #[serde(with = "humantime_serde")]
    pub min_block_interval: Duration,
    /// The time between two of a validator's blocks while there is no work, so that an idle
    /// network grows its DAG (and every node's disk) slowly. A transaction arriving ends the wait.
    #[serde(with = "humantime_serde")]
    pub idle_block_interval: Duration,
    /// How often a validator re-broadcasts its latest block, so that lost messages heal.
    #[serde(with = "humantime_serde")]
    pub rebroadcast_interval: Duration,
    /// Transactions per block.
    pub max_block_transactions: u64,
    /// Encoded bytes of a block or a batch.
    pub max_block_bytes: u64,
    /// Above this many bytes of transactions, they go into a separate batch block.
    pub inline_bytes: u64,
    /// Rounds after which a transaction included in one of our blocks but not committed is proposed again.
    pub resubmit_after_rounds: u64,
    /// Transactions submitted here and not yet ordered, at most; further submissions are refused.
    pub max_mempool: usize,
    /// Of those, transactions of one signer waiting for a block, at most.
    pub max_mempool_per_signer: usize,
    /// How long a transaction too far ahead of its signer's nonce to be proposed (more than
    /// `ledger::state::WAIT_WINDOW`) is held for the ones before it, before it expires.
    #[serde(with = "humantime_serde")]
    pub queued_timeout: Duration,
    /// Fetches in flight on behalf of one author's blocks; more wait their turn. A faulty author
    /// referencing blocks that do not exist can thus slow only its own blocks' sync, not others'.
    pub fetches_per_author: usize,
    /// Fetches waiting for their turn on behalf of one author's blocks, at most. A block that
    /// would queue more is refused for now (and taken when it comes again), so blocks of a faulty
    /// author that reference what does not exist cannot fill memory with wanted CIDs.
    pub queued_fetches_per_author: usize,
    /// Blocks received by broadcast that wait for missing ancestors, per author, at most. Further
    /// ones are refused for now: a faulty validator broadcasting many blocks that share missing
    /// parents (equivocating, or for rounds far ahead) queues no new fetches, so only this bounds
    /// what it parks. A block refused here is fetched like any other once an accepted block
    /// references it, so a syncing node loses nothing by it.
    pub parked_broadcasts_per_author: usize,
}

impl Default for CoreConfig {
    fn default() -> CoreConfig {
        CoreConfig {
            leader_timeout: Duration::from_millis(500),
            min_block_interval: Duration::from_millis(5),
            idle_block_interval: Duration::from_secs(1),
            rebroadcast_interval: Duration::from_secs(2),
            max_block_transactions: 10_000,
            max_block_bytes: 1 << 20,
            inline_bytes: 64 << 10,
            resubmit_after_rounds: 20,
            max_mempool: 100_000,
            max_mempool_per_signer: 20_000,
            queued_timeout: Duration::from_secs(60),
            fetches_per_author: 8,
            queued_fetches_per_author: 4096,
            parked_broadcasts_per_author: 1024,
        }
    }
}

pub use comms::config::{within, ConfigError};

/// The smallest block a validator may be limited to: room for the header, its parents and a
/// transaction.
pub const MIN_BLOCK_BYTES: u64 = 4096;

impl CoreConfig {
    /// Checks every field against its bound (naming it `core.<name>`), so that no accepted config
    /// can make the core panic or stall: durations from 1 ms (the minimum interval from 0) to an
    /// hour, counts from 1, blocks from [`MIN_BLOCK_BYTES`] to a mebibyte ([`comms::Limits::MIB`]).
    pub fn check(&self) -> Result<(), ConfigError> {
        let (ms, hour) = (Duration::from_millis(1), Duration::from_secs(3600));
        within("core.leader_timeout", self.leader_timeout, ms, hour)?;
        let idle = self.idle_block_interval;
        within("core.idle_block_interval", idle, ms, hour)?;
        within(
            "core.min_block_interval",
            self.min_block_interval,
            Duration::ZERO,
            idle,
        )?;
        within(
            "core.rebroadcast_interval",
            self.rebroadcast_interval,
            ms,
            hour,
        )?;
        within("core.queued_timeout", self.queued_timeout, ms, hour * 24)?;
        within(
            "core.max_block_transactions",
            self.max_block_transactions,
            1,
            1 << 20,
        )?;
        let max = comms::Limits::MIB as u64;
        within(
            "core.max_block_bytes",
            self.max_block_bytes,
            MIN_BLOCK_BYTES,
            max,
        )?;
        let inline_max = self.max_block_bytes - MIN_BLOCK_BYTES / 2;
        within("core.inline_bytes", self.inline_bytes, 0, inline_max)?;
        within(
            "core.resubmit_after_rounds",
            self.resubmit_after_rounds,
            1,
            1 << 20,
        )?;
        within("core.max_mempool", self.max_mempool, 1, 1 << 24)?;
        let per_signer = self.max_mempool_per_signer;
        within(
            "core.max_mempool_per_signer",
            per_signer,
            1,
            self.max_mempool,
        )?;
        within(
            "core.fetches_per_author",
            self.fetches_per_author,
            1,
            1 << 16,
        )?;
        within(
            "core.queued_fetches_per_author",
            self.queued_fetches_per_author,
            0,
            1 << 24,
        )?;
        let parked = self.parked_broadcasts_per_author;
        within("core.parked_broadcasts_per_author", parked, 0, 1 << 24)
    }
}

/// What the core asks the shell to do, or tells it.
#[derive(Debug)]
pub enum Output {
    /// Broadcast these block bytes to the other nodes.
    Broadcast(Bytes),
    /// Keep this accepted block (or batch) on disk and serve it to peers by CID.
    Store {
        cid: Cid,
        bytes: Bytes,
        /// A batch of transactions rather than a block.
        batch: bool,
        /// Ours: this node is its first source, so it must be available from here at once.
        own: bool,
    },
    /// Fetch this block or batch by CID, and report back.
    Fetch(Cid),
    /// A leader committed: its history is now ordered and applied. The state-tree blocks it
    /// made are to be stored with it (see [`Store::commit`]).
    Committed {
        commit: Arc<Commit>,
        tree: Vec<TreeBlock>,
        /// The state blocks the commit's state no longer needs (see [`Store::commit`]).
        dropped: Vec<Cid>,
    },
    /// The node joined by snapshot (see [`join`]): where it starts, and the state's blocks, to
    /// be stored durably (see [`Store::put_base`]) before the commits that follow.
    Joined {
        base: Arc<Base>,
        tree: Vec<TreeBlock>,
    },
    /// Received data was refused (log it once and count it).
    Rejected { cid: Option<Cid>, error: Error },
    /// A validator signed two blocks for one round.
    Equivocation {
        author: u32,
        round: u64,
        blocks: Vec<Cid>,
    },
}

/// The CIDs `out` asks to fetch, in order (for tests).
#[cfg(test)]
pub(crate) fn fetched_cids(out: &[Output]) -> Vec<Cid> {
    (out.iter())
        .filter_map(|o| match o {
            Output::Fetch(cid) => Some(*cid),
            _ => None,
        })
        .collect()
}

/// Counters of what the core saw.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CoreStats {
    /// Blocks accepted into the DAG.
    pub accepted: u64,
    /// Refusals, by error kind.
    pub rejected: BTreeMap<String, u64>,
    /// Slots where a validator signed two blocks.
    pub equivocations: u64,
    /// Leader slots skipped.
    pub skipped_slots: u64,
    /// Our blocks proposed without the round's first leader, after waiting `leader_timeout` for it.
    pub leader_timeouts: u64,
    /// Transactions committed (valid or not).
    pub committed_transactions: u64,
    /// Valid blocks new to this node that arrived by broadcast.
    pub new_blocks_by_broadcast: u64,
    /// Valid blocks new to this node that had to be fetched (their broadcast was lost, late, or
    /// sent before this node listened). With the line above: the broadcast delivery ratio.
    pub new_blocks_by_fetch: u64,
    /// Checkpoints a quorum certified with another state root than this node computed: a fault
    /// of this node, or more than `f` faulty validators.
    pub checkpoint_mismatches: u64,
    /// The height of the certified checkpoint this node joined at, if it joined by snapshot.
    pub joined_at_height: Option<u64>,
    /// State blocks fetched for a snapshot, each checked against its CID.
    pub snapshot_blocks: u64,
    /// Fetches of a snapshot's state blocks that failed for good (each is asked for again).
    pub snapshot_fetches_failed: u64,
    /// Snapshot state blocks refused: not hashing to their CID, or no state block.
    pub snapshot_blocks_refused: u64,
}

impl CoreStats {
    /// Of the valid blocks new to this node, the share that arrived by broadcast (1 when none).
    pub fn broadcast_share(&self) -> f64 {
        let total = self.new_blocks_by_broadcast + self.new_blocks_by_fetch;
        match total {
            0 => 1.0,
            _ => self.new_blocks_by_broadcast as f64 / total as f64,
        }
    }
}

/// Where a transaction stands before it commits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Standing {
    /// Waiting for an earlier nonce of its signer: held here, or ordered and waiting to execute.
    Queued,
    /// Waiting for one of our blocks, or in one and waiting for its commit.
    Pending,
    /// Held here for an earlier nonce that did not come within `queued_timeout`: dropped.
    Expired,
}

/// The ledger protocol of one node.
pub struct Core {
    chain: Cid,
    committee: Committee,
    config: CoreConfig,
    blocks: Blocks,
    /// A validator's; an observer has none.
    proposer: Option<Proposer>,
    executor: Executor,
    pool: pool::Pool,
    /// When the pool last dropped expired transactions.
    last_expiry_ms: u64,
    /// The latest time the core was given.
    now_ms: u64,
    skipped_slots: u64,
    committed_transactions: u64,
    /// The checkpoints blocks name, and the latest certified.
    checkpoints: Checkpoints,
    checkpoint_mismatches: u64,
    /// Joining by snapshot, until it is done.
    joining: Option<Joining>,
    join_stats: join::TreeStats,
    joined_at_height: Option<u64>,
}

/// Where a join by snapshot stands (see [`join`]).
enum Joining {
    Deciding(join::Deciding),
    /// Fetching the certified checkpoint's state.
    Fetching {
        checkpoint: Checkpoint,
        tree: join::TreeFetch,
    },
    /// The state loaded: the executor replays the decisions up to the checkpoint's leader.
    Replaying {
        tree: Vec<TreeBlock>,
    },
    /// The DAG does not commit the certified leader: the node stays here (counted and logged).
    Diverged,
}

impl Core {
    /// A core for the chain of `genesis` (which must pass [`Genesis::check`]); a validator when
    /// `key` is one of the genesis validators' keys, an observer otherwise.
    pub fn new(genesis: &Genesis, key: Option<Keypair>, config: CoreConfig) -> Core {
        let committee = Committee::new(genesis);
        let chain = genesis.encode().1;
        let proposer = key.and_then(|k| {
            let author = committee.index_of(&k.public())?;
            Some(Proposer::new(author, k, chain, &config))
        });
        let me = proposer.as_ref().map(Proposer::author);
        Core {
            chain,
            blocks: Blocks::new(chain, committee.clone(), me, &config),
            proposer,
            executor: Executor::new(genesis),
            pool: pool::Pool::default(),
            last_expiry_ms: 0,
            now_ms: 0,
            skipped_slots: 0,
            committed_transactions: 0,
            checkpoints: Checkpoints::new(committee.size()),
            checkpoint_mismatches: 0,
            joining: None,
            join_stats: join::TreeStats::default(),
            joined_at_height: None,
            config,
            committee,
        }
    }

    /// A core like [`Core::new`]'s whose parked blocks wait in `store` and whose blocks that leave
    /// memory are looked up there (it holds every accepted block), not indexed in memory. A
    /// validator never signs a round at or below the last that `store` recorded it signed.
    pub fn with_store(
        genesis: &Genesis,
        key: Option<Keypair>,
        config: CoreConfig,
        store: &dyn Store,
    ) -> Result<Core, StoreError> {
        let mut core = Core::new(genesis, key, config);
        core.blocks.use_store(store);
        if let (Some(proposer), Some(round)) = (&mut core.proposer, store.last_signed()?) {
            proposer.signed_up_to(round);
        }
        Ok(core)
    }

    /// Starts after a stored commit rather than from genesis (see [`Start`]), before any block is
    /// restored: its state, its place in the sequence, and the memory floor it left. The blocks
    /// to restore then are those from that floor up ([`Start::replay_from`]).
    pub fn start_after(&mut self, start: Start) -> Result<(), StoreError> {
        let corrupt = |reason: String| StoreError::Corrupt { reason };
        let last = &start.last;
        if start.state.root() != last.state_root {
            return Err(corrupt(format!(
                "the state read for commit {} is not its root {}",
                last.height, last.state_root
            )));
        }
        let per_round = self.committee.leaders_per_round();
        let slot = (last.round * per_round..(last.round + 1) * per_round)
            .find(|slot| self.committee.slot(*slot).1 == start.leader_author)
            .ok_or_else(|| {
                corrupt(format!(
                    "commit {}'s leader is not a leader of round {}",
                    last.height, last.round
                ))
            })?;
        let ordered = start.ordered.iter().map(|(cid, _)| *cid);
        self.blocks.start_after(last.round, ordered);
        let (state, ordered) = (start.state, start.ordered);
        (self.executor).resume(last, slot, state, ordered, start.checkpoint);
        Ok(())
    }

    /// Lets go of the store (its parking and archive share it), so that it can close: the core
    /// takes no more blocks after this (what was parked is dropped).
    pub fn release_store(&mut self) {
        self.blocks.release_store();
    }

    /// The chain's CID (the genesis CID).
    pub fn chain(&self) -> &Cid {
        &self.chain
    }

    /// Our validator index, if we are one.
    pub fn validator_index(&self) -> Option<u32> {
        self.proposer.as_ref().map(Proposer::author)
    }

    /// The committed state.
    pub fn state(&self) -> &State {
        self.executor.state()
    }

    /// The number of commits so far.
    pub fn height(&self) -> u64 {
        self.executor.height()
    }

    /// The latest certified checkpoint and its certificate, if one formed since start.
    pub fn certified(&self) -> Option<&Certificate> {
        self.checkpoints.certified()
    }

    /// The DAG of accepted blocks, from the memory floor up (see [`Core::floor`]).
    pub fn dag(&self) -> &Dag {
        self.blocks.dag()
    }

    /// The lowest round whose blocks are in memory: [`GC_DEPTH`](crate::consensus::GC_DEPTH) rounds below the last committed
    /// leader. Older blocks are on disk and with the network, and no later leader orders them.
    pub fn floor(&self) -> u64 {
        self.blocks.floor()
    }

    /// The highest round of a valid block received, accepted or still waiting for its ancestors,
    /// that validators of more than `f` stake reached: how far the others are, as far as this
    /// node knows, and no faulty validator can inflate it.
    pub fn highest_round_seen(&self) -> u64 {
        self.blocks.highest_seen()
    }

    /// Blocks below the floor whose author and round are kept in memory: none with an archive.
    pub fn pruned_in_memory(&self) -> usize {
        self.blocks.pruned_in_memory()
    }

    /// Whether block `cid` was accepted (it may since have left memory).
    pub fn knows(&self, cid: &Cid) -> Result<bool, StoreError> {
        self.blocks.knows(cid)
    }

    /// Counters.
    pub fn stats(&self) -> CoreStats {
        let (blocks, snapshot) = (self.blocks.stats(), self.snapshot_stats());
        CoreStats {
            accepted: blocks.accepted,
            rejected: blocks.rejected.clone(),
            equivocations: blocks.equivocations,
            skipped_slots: self.skipped_slots,
            leader_timeouts: (self.proposer.as_ref()).map_or(0, Proposer::leader_timeouts),
            committed_transactions: self.committed_transactions,
            new_blocks_by_broadcast: blocks.by_broadcast,
            new_blocks_by_fetch: blocks.by_fetch,
            checkpoint_mismatches: self.checkpoint_mismatches,
            joined_at_height: self.joined_at_height,
            snapshot_blocks: snapshot.fetched,
            snapshot_fetches_failed: snapshot.failed,
            snapshot_blocks_refused: snapshot.refused,
        }
    }

    /// Whether the node is joining by snapshot (see [`Core::join`]): it proposes nothing, takes
    /// no transactions, and commits nothing until it is done.
    pub fn joining(&self) -> bool {
        self.joining.is_some()
    }

    /// Blocks received whose ancestors are still being fetched.
    pub fn pending_blocks(&self) -> usize {
        self.blocks.parked()
    }

    /// CIDs being fetched.
    pub fn wanted(&self) -> usize {
        self.blocks.wanted()
    }

    /// Transactions submitted here and not yet ordered.
    pub fn mempool_len(&self) -> usize {
        self.pool.len()
    }

    /// Where transaction `id` stands before its commit, as far as this node knows: `None` when it
    /// was neither submitted here nor ordered and waiting.
    pub fn standing(&self, id: &Cid) -> Option<Standing> {
        if self.executor.state().is_waiting(id) {
            return Some(Standing::Queued);
        }
        let state = self.executor.state();
        Some(match self.pool.place(id, |k| state.account(k).nonce)? {
            pool::Place::Queued { held: true } => Standing::Queued,
            pool::Place::Queued { held: false } | pool::Place::InFlight => Standing::Pending,
            pool::Place::Expired => Standing::Expired,
        })
    }

    fn pool_limits(&self) -> pool::Limits {
        pool::Limits {
            total: self.config.max_mempool,
            per_signer: self.config.max_mempool_per_signer,
            queued_timeout_ms: self.config.queued_timeout.as_millis() as u64,
            resubmit_after_rounds: self.config.resubmit_after_rounds,
        }
    }
}
