//! What a node keeps durably, as an interface the core's driver writes through and a store
//! implements outside the core: RocksDB (`ledger-rocksdb`) on a real node, [`MemoryStore`] in a
//! simulation, where it survives a simulated crash because it lives outside the node.
//!
//! A store holds accepted blocks and batches (blocks indexed in round order, for replay), the
//! committed sequence, each committed transaction's place and outcome, and parking for blocks that
//! wait for ancestors. On restart the node replays the stored blocks through the deterministic core,
//! which re-derives the same commits; [`Store::commit`] checks each against its record.

use std::collections::{hash_map::Entry, HashMap};

use bytes::Bytes;
use comms::Cid;
use serde::{Deserialize, Serialize};

mod memory;
mod park;

pub use memory::MemoryStore;
pub use park::{MemoryParking, Parking};

use crate::{
    checkpoint::CHECKPOINT_INTERVAL,
    consensus::GC_DEPTH,
    tree::{TreeBlock, TreeError},
    types::{Checkpoint, SignedBlock},
    Account, Error, Outcome, PublicKey, State,
};

#[cfg(doc)]
use crate::StateRoot;

/// Where a committed transaction is in the sequence, and what it did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Committed {
    /// The commit's height.
    pub height: u64,
    /// Its position among the commit's transactions.
    pub index: u64,
    /// What it did.
    pub outcome: Outcome,
}

/// One committed leader and everything ordered with it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Commit {
    /// 1 for the first commit, then one more each.
    pub height: u64,
    /// The leader's round.
    pub round: u64,
    /// The leader block.
    pub leader: Cid,
    /// The blocks ordered, in order (the leader last).
    pub blocks: Vec<Cid>,
    /// Each transaction of those blocks, in order, with what it did.
    pub transactions: Vec<(Cid, Outcome)>,
    /// The accounts those transactions changed, with their new values.
    pub changed: Vec<(PublicKey, Account)>,
    /// The CID of the state's root block after applying them (see [`StateRoot`]).
    pub state_root: Cid,
}

/// What a prune deleted.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pruned {
    /// The CIDs of the deleted blocks of the author it was asked about (ours), and of their
    /// deleted batches: what the node's backend pinned, and may now let go of.
    pub own: Vec<Cid>,
    /// Blocks.
    pub blocks: u64,
    /// Batches.
    pub batches: u64,
    /// Commit records.
    pub commits: u64,
    /// Records of committed transactions.
    pub transactions: u64,
    /// State-tree blocks.
    pub state_blocks: u64,
}

impl Pruned {
    /// Adds `other`'s counts.
    pub fn add(&mut self, mut other: Pruned) {
        self.own.append(&mut other.own);
        self.blocks += other.blocks;
        self.batches += other.batches;
        self.commits += other.commits;
        self.transactions += other.transactions;
        self.state_blocks += other.state_blocks;
    }
}

/// Where a node that joined by snapshot started: the certified checkpoint, and what the commits up
/// to it ordered from its leader's memory floor up. Nothing below it is stored: the store's
/// commits begin above its height, and its blocks at the floor's round below it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Base {
    /// The checkpoint started from.
    pub checkpoint: Checkpoint,
    /// The blocks that commits up to it ordered from the memory floor up, each with its round.
    pub ordered: Vec<(Cid, u64)>,
}

impl Commit {
    /// The checkpoint this commit is, were its height one.
    pub fn checkpoint(&self) -> Checkpoint {
        Checkpoint {
            height: self.height,
            round: self.round,
            leader: self.leader,
            state_root: self.state_root,
        }
    }
}

/// Where the core finds the author and round of an accepted block that left memory: the node's
/// store. Without one, the core keeps them in memory.
pub trait Archive: Send + Sync {
    /// Author and round of accepted block `cid`, if it is stored. A failed read is an error, never
    /// "absent": a block taken for unknown would be fetched again, or one linking it refused.
    fn slot(&self, cid: &Cid) -> Result<Option<(u32, u64)>, StoreError>;
}

/// Why a store failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The store's database or disk failed.
    #[error("storage: {0}")]
    Disk(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The store holds something this version cannot read, or replays differently from what it
    /// recorded.
    #[error("corrupt store: {reason}")]
    Corrupt { reason: String },
    /// A stored record that does not decode, or a stored block the core refused on replay.
    #[error("stored record: {0}")]
    Record(#[from] Error),
    /// The stored state tree is missing a block, or holds one that does not check.
    #[error("stored state: {0}")]
    Tree(#[from] TreeError),
}

/// A node's durable store. Shared (`Arc`) between the node, its parking and its archive.
pub trait Store: Send + Sync {
    /// Stores an accepted block (indexed by round and author) or a batch. Not synced: what a
    /// crash loses of it is fetched again.
    fn put_block(&self, cid: &Cid, bytes: &[u8], batch: bool) -> Result<(), StoreError>;

    /// Stores a block we signed and records that we signed its round, in one atomic write that is
    /// durable (synced) when this returns: the block may leave the process only after. The
    /// record is kept apart from the blocks, so that it outlives them (see
    /// [`Store::last_signed`]).
    fn put_own_block(&self, cid: &Cid, bytes: &[u8]) -> Result<(), StoreError>;

    /// The highest round we recorded signing a block for, if any. A validator never signs a
    /// round at or below it again, whatever else the store lost.
    fn last_signed(&self) -> Result<Option<u64>, StoreError>;

    /// Hands up to `limit` stored blocks to `visit`, one at a time, in round order from index key
    /// `from` on (empty: from the start). Returns how many there were and the key to go on from,
    /// `None` at the end. Stops at the first error `visit` returns.
    fn replay_slice(
        &self,
        from: &[u8],
        limit: usize,
        visit: &mut dyn FnMut(Bytes) -> Result<(), StoreError>,
    ) -> Result<(usize, Option<Vec<u8>>), StoreError>;

    /// The stored bytes of a block, if any.
    fn block(&self, cid: &Cid) -> Result<Option<Vec<u8>>, StoreError>;

    /// The stored bytes of a batch, if any.
    fn batch(&self, cid: &Cid) -> Result<Option<Vec<u8>>, StoreError>;

    /// The committed height stored.
    fn height(&self) -> Result<u64, StoreError>;

    /// Writes a commit and the state-tree blocks it made, atomically, with the CIDs of the blocks
    /// its state no longer needs (those of the state before it that it replaced: see
    /// [`State::take_dropped`]), which pruning deletes once it keeps no state from before it. A
    /// commit at or below the stored height (a replay) is checked against its record instead.
    fn commit(
        &self,
        commit: &Commit,
        tree: &[TreeBlock],
        dropped: &[Cid],
    ) -> Result<(), StoreError>;

    /// The stored bytes of a state-tree block, if any.
    fn state_block(&self, cid: &Cid) -> Result<Option<Vec<u8>>, StoreError>;

    /// Records where a node that joined by snapshot starts, with the state's blocks, in one write
    /// that is durable when this returns: the stored height is then the base's, and commits go on
    /// above it.
    fn put_base(&self, base: &Base, tree: &[TreeBlock]) -> Result<(), StoreError>;

    /// Where the node joined by snapshot, if it did.
    fn base(&self) -> Result<Option<Base>, StoreError>;

    /// Deletes the history below `round`: the blocks of lower rounds and their batches (unless a
    /// block at `round` or above carries the batch too), the commits of lower leader rounds (never
    /// the last one) with the records of their transactions, and the state blocks that only the
    /// states of those commits needed (a commit's state is the last to need the blocks the next
    /// commit dropped, unless a later commit wrote them again). Blocks at `round` and above, later commits and every state
    /// block their states reach stay. A crash during a prune leaves a store that the next prune
    /// finishes. The CIDs of the deleted blocks of validator `own` (ours), and of their deleted
    /// batches, are returned.
    fn prune(&self, round: u64, own: Option<u32>) -> Result<Pruned, StoreError>;

    /// The round below which the store pruned its history (0 when it never did).
    fn pruned_below(&self) -> Result<u64, StoreError>;

    /// The stored commit at `height` (from 1), if any.
    fn commit_at(&self, height: u64) -> Result<Option<Commit>, StoreError>;

    /// Where and how transaction `id` committed, if it did.
    fn transaction(&self, id: &Cid) -> Result<Option<Committed>, StoreError>;

    /// Makes everything written durable (on shutdown).
    fn flush(&self) -> Result<(), StoreError>;

    /// Parking for the core in this store (blocks parked by an earlier run are gone).
    fn parking(&self) -> Box<dyn Parking>;

    /// The core's view of blocks that left memory.
    fn archive(&self) -> Box<dyn Archive>;
}

/// What a node whose store holds commits starts from, instead of replaying its whole history:
/// the last commit, the state it left (read from the store's tree blocks, each checked against
/// its CID), and the commits' record of what they ordered above the memory floor.
pub struct Start {
    /// The last stored commit.
    pub last: Commit,
    /// The author of its leader block.
    pub leader_author: u32,
    /// The state after it, whose root is its `state_root`.
    pub state: State,
    /// The blocks that commits up to it ordered from round `last.round - GC_DEPTH` up, each with
    /// its commit's leader round.
    pub ordered: Vec<(Cid, u64)>,
    /// The last checkpoint at or below it, which our next blocks name.
    pub checkpoint: Option<Checkpoint>,
}

impl Start {
    /// Reads where a node with `store` starts: `None` when nothing was committed nor a snapshot
    /// joined (it replays every stored block from genesis). Reads the last commit's whole state,
    /// and the commits of the last [`GC_DEPTH`] rounds (down to the snapshot's base, if the node
    /// joined by one): what it reads grows with the state and the committee, not with the length
    /// of the history.
    pub fn read(store: &dyn Store) -> Result<Option<Start>, StoreError> {
        let (height, base) = (store.height()?, store.base()?);
        let missing = |what: String| StoreError::Corrupt {
            reason: format!("{what} is missing"),
        };
        let commit_at = |at: u64| match &base {
            Some(base) if base.checkpoint.height == at => Ok(base_commit(base)),
            _ => (store.commit_at(at)?).ok_or_else(|| missing(format!("commit {at}"))),
        };
        if height == 0 {
            return Ok(None);
        }
        let last = commit_at(height)?;
        let leader = (store.block(&last.leader)?)
            .ok_or_else(|| missing(format!("commit {height}'s leader block")))?;
        let leader_author = SignedBlock::decode(&leader)?.block.author;
        let state = State::load(&last.state_root, &mut |cid: &Cid| store.state_block(cid))?;
        let mut ordered = Vec::new();
        for below in (1..=height).rev() {
            if let Some(base) = base.as_ref().filter(|b| b.checkpoint.height == below) {
                ordered.extend(base.ordered.iter().copied());
                break;
            }
            let commit = match below {
                _ if below == height => last.clone(),
                _ => commit_at(below)?,
            };
            if commit.round + GC_DEPTH < last.round {
                break;
            }
            ordered.extend(commit.blocks.iter().map(|cid| (*cid, commit.round)));
        }
        let checkpoint = match height - height % CHECKPOINT_INTERVAL {
            0 => None,
            at => Some(commit_at(at)?.checkpoint()),
        };
        Ok(Some(Start {
            last,
            leader_author,
            state,
            ordered,
            checkpoint,
        }))
    }

    /// The replay index key of the first block to restore: the first of the memory floor's round.
    pub fn replay_from(&self) -> Vec<u8> {
        index_key(self.last.round.saturating_sub(GC_DEPTH), 0, &[])
    }
}

/// The commit a snapshot's base stands for: its place and state; what it ordered is the base's.
fn base_commit(base: &Base) -> Commit {
    let checkpoint = &base.checkpoint;
    Commit {
        height: checkpoint.height,
        round: checkpoint.round,
        leader: checkpoint.leader,
        blocks: Vec::new(),
        transactions: Vec::new(),
        changed: Vec::new(),
        state_root: checkpoint.state_root,
    }
}

/// The key that orders stored blocks for replay: round and author big-endian, then the CID.
pub fn index_key(round: u64, author: u32, cid: &[u8]) -> Vec<u8> {
    [&round.to_be_bytes()[..], &author.to_be_bytes(), cid].concat()
}

/// Per transaction of `commit`: the record where it took effect, or else its first.
pub fn records(commit: &Commit) -> Vec<(Cid, Committed)> {
    let mut records: Vec<(Cid, Committed)> = Vec::with_capacity(commit.transactions.len());
    let mut at = HashMap::with_capacity(commit.transactions.len());
    for (index, (id, outcome)) in commit.transactions.iter().enumerate() {
        let record = Committed {
            height: commit.height,
            index: index as u64,
            outcome: *outcome,
        };
        match at.entry(id) {
            Entry::Vacant(slot) => {
                slot.insert(records.len());
                records.push((*id, record));
            }
            Entry::Occupied(slot) if *outcome == Outcome::Applied => {
                records[*slot.get()].1 = record
            }
            Entry::Occupied(_) => {}
        }
    }
    records
}

/// The error of a replayed commit that differs from its record.
pub fn replay_differs(height: u64) -> StoreError {
    StoreError::Corrupt {
        reason: format!("replayed commit {height} differs from the stored one"),
    }
}
