//! The DAG of accepted blocks: every block here is valid and has all its ancestors here too.

use std::{
    collections::{BTreeMap, HashMap},
    sync::Arc,
};

use bytes::Bytes;
use comms::Cid;

use crate::types::{SignedBlock, SignedTransaction};

/// A block the DAG accepted, with its transactions resolved (inline or from its batch).
#[derive(Debug)]
pub struct AcceptedBlock {
    /// Its CID.
    pub cid: Cid,
    /// The block.
    pub block: SignedBlock,
    /// Its canonical bytes, to store and serve.
    pub bytes: Bytes,
    /// Its transactions.
    pub transactions: Arc<Vec<SignedTransaction>>,
}

impl AcceptedBlock {
    /// The author's index.
    pub fn author(&self) -> u32 {
        self.block.block.author
    }

    /// The round.
    pub fn round(&self) -> u64 {
        self.block.block.round
    }

    /// The parents' CIDs.
    pub fn parents(&self) -> &[Cid] {
        &self.block.block.parents
    }
}

/// Accepted blocks by CID and by slot (round, author). A slot holding two blocks is an equivocation.
#[derive(Debug, Default)]
pub struct Dag {
    blocks: HashMap<Cid, Arc<AcceptedBlock>>,
    slots: BTreeMap<(u64, u32), Vec<Cid>>,
    highest_round: u64,
}

impl Dag {
    /// The accepted block `cid`.
    pub fn get(&self, cid: &Cid) -> Option<&Arc<AcceptedBlock>> {
        self.blocks.get(cid)
    }

    /// Whether `cid` is accepted.
    pub fn contains(&self, cid: &Cid) -> bool {
        self.blocks.contains_key(cid)
    }

    /// Number of accepted blocks.
    pub fn len(&self) -> usize {
        self.blocks.len()
    }

    /// Whether no block is accepted yet.
    pub fn is_empty(&self) -> bool {
        self.blocks.is_empty()
    }

    /// The highest round with an accepted block.
    pub fn highest_round(&self) -> u64 {
        self.highest_round
    }

    /// Adds a block whose parents are all here. Returns the other blocks already in its slot: not
    /// empty means its author equivocated.
    pub fn insert(&mut self, block: Arc<AcceptedBlock>) -> Vec<Cid> {
        let slot = self
            .slots
            .entry((block.round(), block.author()))
            .or_default();
        let others = slot.clone();
        slot.push(block.cid);
        self.highest_round = self.highest_round.max(block.round());
        self.blocks.insert(block.cid, block);
        others
    }

    /// Removes the blocks of rounds below `round`, returning them.
    pub fn prune_below(&mut self, round: u64) -> Vec<Arc<AcceptedBlock>> {
        let kept = self.slots.split_off(&(round, 0));
        let pruned = std::mem::replace(&mut self.slots, kept);
        pruned
            .into_values()
            .flatten()
            .filter_map(|cid| self.blocks.remove(&cid))
            .collect()
    }

    /// The blocks of `author` in `round` (more than one if it equivocated).
    pub fn slot(&self, round: u64, author: u32) -> impl Iterator<Item = &Arc<AcceptedBlock>> {
        self.slots
            .get(&(round, author))
            .into_iter()
            .flatten()
            .filter_map(|cid| self.blocks.get(cid))
    }

    /// All blocks of `round`, by author.
    pub fn round(&self, round: u64) -> impl Iterator<Item = &Arc<AcceptedBlock>> {
        self.slots
            .range((round, 0)..=(round, u32::MAX))
            .flat_map(|(_, cids)| cids)
            .filter_map(|cid| self.blocks.get(cid))
    }
}
