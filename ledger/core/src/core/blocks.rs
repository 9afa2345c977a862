//! The block manager: receives blocks, validates them, waits for missing ancestors and batches
//! (fetching them, within each author's budget), accepts them into the DAG in causal order, and
//! lets blocks below the memory floor go. Iterative throughout, so a history of any depth costs no
//! stack. It knows nothing of proposing or committing: the core feeds it and reads its DAG.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    sync::Arc,
};

use bytes::Bytes;
use comms::Cid;

use super::{
    fetches::{Fetches, Want},
    proposer::OwnBlock,
    CoreConfig, Output,
};
use crate::{
    codec::{cid_of, decode},
    committee::Committee,
    consensus::GC_DEPTH,
    dag::{AcceptedBlock, Dag},
    store::{Archive, MemoryParking, Parking, Store, StoreError},
    types::{Checkpoint, Payload, SignedBlock, SignedTransaction},
    validate::{check_block, check_parents, check_transactions, BlockLimits},
    Error,
};

/// How many refused CIDs are remembered.
const MAX_REFUSED: usize = 100_000;

/// How many ready blocks one call accepts at most (see [`Blocks::drain`]).
pub(crate) const DRAIN_BUDGET: usize = 256;

/// How a block's bytes reached the core.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Source {
    Broadcast,
    Fetch,
    /// Our own store, at start: nothing is stored again.
    Disk,
}

/// The sha2-256 digest of a block's CID, the key of the index of blocks below the floor (every
/// accepted block's CID is one: the manager computes it from the bytes).
fn digest(cid: &Cid) -> Option<[u8; 32]> {
    cid.hash().digest().try_into().ok()
}

/// What the block manager counted.
#[derive(Clone, Debug, Default)]
pub(crate) struct BlockStats {
    pub(crate) accepted: u64,
    pub(crate) rejected: BTreeMap<String, u64>,
    pub(crate) equivocations: u64,
    pub(crate) by_broadcast: u64,
    pub(crate) by_fetch: u64,
}

/// The accepted blocks, and the ones on their way.
pub(crate) struct Blocks {
    chain: Cid,
    committee: Committee,
    limits: BlockLimits,
    /// Our validator index: our blocks accepted from elsewhere (disk, a fetch) are reported.
    me: Option<u32>,
    parked_broadcasts_per_author: usize,
    queued_fetches_per_author: usize,
    dag: Dag,
    /// Blocks of rounds below this left memory: a leader can no longer order them.
    floor: u64,
    /// Author and round of every accepted block below the floor, by the sha2-256 digest of its CID
    /// (49 bytes a block in the map), when there is no archive (with one, only of the blocks
    /// accepted below the floor): enough to check blocks that link them, and to know them when
    /// they are re-broadcast or referenced again.
    pruned: HashMap<[u8; 32], (u32, u64)>,
    archive: Option<Box<dyn Archive>>,
    parking: Box<dyn Parking>,
    /// Parked blocks whose dependencies all arrived, to accept next.
    ready: Vec<Cid>,
    /// The parked blocks that arrived by broadcast, with their authors, and how many each author has.
    parked_broadcasts: HashMap<Cid, u32>,
    parked_broadcasts_by_author: Vec<usize>,
    fetches: Fetches,
    /// Accepted blocks in memory that carry transactions and are not yet ordered: while there are
    /// any, the network has work (only emptiness is read).
    unordered: HashSet<Cid>,
    /// After a start from a stored commit: blocks that commits before it ordered, which are not
    /// unordered when they come back from the store. Forgotten once the floor passes them all.
    ordered_before: (HashSet<Cid>, u64),
    /// Reading our own store: accepted blocks are not stored again.
    restoring: bool,
    refused: HashSet<Cid>,
    /// Our latest block accepted from elsewhere than our proposer, not yet taken.
    own: Option<OwnBlock>,
    /// The highest round of a valid block received (accepted or parked) from each author.
    seen: Vec<u64>,
    /// The checkpoints that blocks accepted since the last [`Blocks::take_named`] name, with
    /// their authors and bytes.
    named: Vec<(u32, Checkpoint, Bytes)>,
    stats: BlockStats,
}

impl Blocks {
    /// No blocks, for the chain `chain` of `committee`; `me` is our validator index.
    pub(crate) fn new(
        chain: Cid,
        committee: Committee,
        me: Option<u32>,
        config: &CoreConfig,
    ) -> Blocks {
        let size = committee.size();
        Blocks {
            chain,
            limits: BlockLimits {
                max_transactions: config.max_block_transactions,
                max_bytes: config.max_block_bytes,
            },
            me,
            parked_broadcasts_per_author: config.parked_broadcasts_per_author,
            queued_fetches_per_author: config.queued_fetches_per_author,
            dag: Dag::default(),
            floor: 0,
            pruned: HashMap::new(),
            archive: None,
            parking: Box::<MemoryParking>::default(),
            ready: Vec::new(),
            parked_broadcasts: HashMap::new(),
            parked_broadcasts_by_author: vec![0; size],
            fetches: Fetches::new(size, config.fetches_per_author),
            unordered: HashSet::new(),
            ordered_before: (HashSet::new(), 0),
            restoring: false,
            refused: HashSet::new(),
            own: None,
            seen: vec![0; size],
            named: Vec::new(),
            stats: BlockStats::default(),
            committee,
        }
    }

    /// Parks in `store` and looks blocks below the floor up there, rather than in memory.
    pub(crate) fn use_store(&mut self, store: &dyn Store) {
        self.archive = Some(store.archive());
        self.parking = store.parking();
    }

    /// Lets go of the store: what was parked is dropped.
    pub(crate) fn release_store(&mut self) {
        self.archive = None;
        self.parking = Box::<MemoryParking>::default();
        self.ready.clear();
        self.parked_broadcasts.clear();
        self.parked_broadcasts_by_author.fill(0);
    }

    pub(crate) fn dag(&self) -> &Dag {
        &self.dag
    }

    pub(crate) fn floor(&self) -> u64 {
        self.floor
    }

    /// The highest round of a valid block received, accepted or waiting for its ancestors, that
    /// authors of more than `f` stake reached (so at least one honest one: a faulty validator
    /// cannot make it up by signing a far round), or the DAG's highest round if that is higher.
    pub(crate) fn highest_seen(&self) -> u64 {
        let mut rounds: Vec<(u64, u32)> = (self.seen.iter().enumerate())
            .map(|(author, round)| (*round, author as u32))
            .collect();
        rounds.sort_unstable_by(|a, b| b.cmp(a));
        let committee = &self.committee;
        let total = committee.stake(0..committee.size() as u32);
        let more_than_f = total.saturating_sub(committee.quorum()) + 1;
        let mut stake = 0;
        let reached = rounds.into_iter().find(|(_, author)| {
            stake += committee.weight(*author);
            stake >= more_than_f
        });
        let reached = reached.map_or(0, |(round, _)| round);
        reached.max(self.dag.highest_round())
    }

    pub(crate) fn stats(&self) -> &BlockStats {
        &self.stats
    }

    pub(crate) fn pruned_in_memory(&self) -> usize {
        self.pruned.len()
    }

    pub(crate) fn parked(&self) -> usize {
        self.parking.len()
    }

    pub(crate) fn wanted(&self) -> usize {
        self.fetches.len()
    }

    /// Whether accepted blocks carrying transactions wait to be ordered.
    pub(crate) fn has_unordered(&self) -> bool {
        !self.unordered.is_empty()
    }

    /// Whether blocks are ready to be accepted (a long history arrived all at once).
    pub(crate) fn has_backlog(&self) -> bool {
        !self.ready.is_empty()
    }

    /// While `restoring`, blocks come from our own store and are not stored again.
    pub(crate) fn set_restoring(&mut self, restoring: bool) {
        self.restoring = restoring;
    }

    /// The checkpoints named by the blocks accepted since the last call, with authors and bytes.
    pub(crate) fn take_named(&mut self) -> Vec<(u32, Checkpoint, Bytes)> {
        std::mem::take(&mut self.named)
    }

    /// Our latest block accepted from elsewhere than our proposer (our store, a fetch), once.
    pub(crate) fn take_own(&mut self) -> Option<OwnBlock> {
        self.own.take()
    }

    /// Whether block `cid` was accepted (it may since have left memory).
    pub(crate) fn knows(&self, cid: &Cid) -> Result<bool, StoreError> {
        Ok(self.slot_of(cid)?.is_some())
    }

    /// Author and round of an accepted block, in memory or below the floor.
    fn slot_of(&self, cid: &Cid) -> Result<Option<(u32, u64)>, StoreError> {
        if let Some(block) = self.dag.get(cid) {
            return Ok(Some((block.author(), block.round())));
        }
        if let Some(slot) = digest(cid).and_then(|d| self.pruned.get(&d).copied()) {
            return Ok(Some(slot));
        }
        match &self.archive {
            Some(archive) => archive.slot(cid),
            None => Ok(None),
        }
    }

    /// Remembers the slot of an accepted block below the floor, unless the archive has it.
    fn forget(&mut self, cid: &Cid, author: u32, round: u64) {
        if self.archive.is_none() {
            if let Some(digest) = digest(cid) {
                self.pruned.insert(digest, (author, round));
            }
        }
    }

    /// Starts after a stored commit of leader round `round`, before any block is restored: the
    /// floor is where that commit left it, and the `ordered` blocks (from the floor up, ordered by
    /// commits up to it) will not count as unordered.
    pub(crate) fn start_after(&mut self, round: u64, ordered: impl IntoIterator<Item = Cid>) {
        self.floor = round.saturating_sub(GC_DEPTH);
        self.ordered_before = (ordered.into_iter().collect(), round);
    }

    /// The blocks in `ordered` were ordered by a commit.
    pub(crate) fn ordered(&mut self, ordered: &[Cid]) {
        for cid in ordered {
            self.unordered.remove(cid);
        }
    }

    /// Leader `round` committed: blocks more than [`GC_DEPTH`] rounds below it leave memory, with
    /// their batches. Returns the new floor if it rose.
    pub(crate) fn collect_garbage(&mut self, round: u64) -> Result<Option<u64>, StoreError> {
        let floor = round.saturating_sub(GC_DEPTH);
        if floor <= self.floor {
            return Ok(None);
        }
        self.floor = floor;
        if floor > self.ordered_before.1 {
            self.ordered_before.0 = HashSet::new();
        }
        for block in self.dag.prune_below(floor) {
            if let Payload::Batch { cid, .. } = &block.block.block.payload {
                self.parking.drop_batch(cid)?;
            }
            self.unordered.remove(&block.cid);
            self.forget(&block.cid, block.author(), block.round());
        }
        Ok(Some(floor))
    }

    /// Keeps a batch of ours until the block that carries it is accepted.
    pub(crate) fn put_batch(&mut self, cid: &Cid, bytes: &Bytes) -> Result<(), StoreError> {
        self.parking.put_batch(cid, bytes)
    }

    /// Counts and reports a refusal; the CID is remembered (up to a bound) so that its re-broadcasts
    /// are ignored rather than refused and logged again.
    fn reject(&mut self, cid: Option<Cid>, error: Error, out: &mut Vec<Output>) {
        if let Some(cid) = cid {
            if self.refused.len() >= MAX_REFUSED {
                self.refused.clear();
            }
            self.refused.insert(cid);
        }
        self.report(cid, error, out);
    }

    /// Counts and reports a refusal without remembering it.
    pub(crate) fn report(&mut self, cid: Option<Cid>, error: Error, out: &mut Vec<Output>) {
        *self
            .stats
            .rejected
            .entry(error.kind().to_string())
            .or_default() += 1;
        out.push(Output::Rejected { cid, error });
    }

    /// A fetch asked for by [`Output::Fetch`] succeeded (the bytes match the CID).
    pub(crate) fn fetched(
        &mut self,
        cid: Cid,
        bytes: Bytes,
        out: &mut Vec<Output>,
    ) -> Result<(), StoreError> {
        match self.unwant(cid, out) {
            Some(Want { batch: true, .. }) => self.receive_batch(cid, bytes, out),
            Some(Want { batch: false, .. }) => self.receive(bytes, Source::Fetch, out),
            None => Ok(()),
        }
    }

    /// A fetch failed for good: the blocks waiting for it are dropped; a later reference to the CID
    /// (a re-broadcast of one of them, say) asks for it again.
    pub(crate) fn fetch_failed(
        &mut self,
        cid: Cid,
        out: &mut Vec<Output>,
    ) -> Result<(), StoreError> {
        self.unwant(cid, out);
        self.discard_descendants(cid)
    }

    /// Asks for `dependency` on behalf of a block by `author` (see [`Fetches::want`]).
    fn want(&mut self, dependency: Cid, batch: bool, author: u32, out: &mut Vec<Output>) {
        if let Some(now) = self.fetches.want(dependency, batch, author) {
            out.push(Output::Fetch(now));
        }
    }

    /// `cid` is no longer being fetched: frees its author's turn for the next queued fetch.
    fn unwant(&mut self, cid: Cid, out: &mut Vec<Output>) -> Option<Want> {
        let (want, next) = self.fetches.unwant(&cid);
        out.extend(next.map(Output::Fetch));
        want
    }

    /// Block bytes arrived from `source`.
    pub(crate) fn receive(
        &mut self,
        bytes: Bytes,
        source: Source,
        out: &mut Vec<Output>,
    ) -> Result<(), StoreError> {
        let cid = cid_of(&bytes);
        if self.dag.contains(&cid) || self.refused.contains(&cid) || self.parking.contains(&cid)? {
            return Ok(());
        }
        let block = match SignedBlock::decode(&bytes) {
            Ok(block) => block,
            Err(error) => {
                self.reject(Some(cid), error, out);
                return Ok(());
            }
        };
        // Accepted before, and since left memory (a late re-broadcast): nothing to check again.
        if block.block.round < self.floor && self.knows(&cid)? {
            return Ok(());
        }
        let checked = check_block(
            &block,
            bytes.len(),
            &self.chain,
            &self.committee,
            &self.limits,
        );
        match checked {
            Ok(()) => {
                let seen = &mut self.seen[block.block.author as usize];
                *seen = (*seen).max(block.block.round);
                match source {
                    Source::Broadcast => self.stats.by_broadcast += 1,
                    Source::Fetch => self.stats.by_fetch += 1,
                    Source::Disk => {}
                }
                let broadcast = matches!(source, Source::Broadcast);
                self.admit(cid, block, bytes, broadcast, out)
            }
            Err(error) => {
                self.reject(Some(cid), error, out);
                Ok(())
            }
        }
    }

    fn receive_batch(
        &mut self,
        cid: Cid,
        bytes: Bytes,
        out: &mut Vec<Output>,
    ) -> Result<(), StoreError> {
        let checked = decode::<Vec<SignedTransaction>>(&bytes).and_then(|txs| {
            check_transactions(&txs, &self.chain, &self.limits)?;
            Ok(txs)
        });
        match checked {
            Ok(_) => {
                self.parking.put_batch(&cid, &bytes)?;
                if !self.restoring {
                    out.push(Output::Store {
                        cid,
                        bytes,
                        batch: true,
                        own: false,
                    });
                }
                self.resolved(cid, out)
            }
            Err(error) => {
                self.reject(Some(cid), error, out);
                Ok(())
            }
        }
    }

    /// A valid block: accepted now if its dependencies are here, else parked until they are.
    /// `broadcast`: it came unasked, so it counts against its author's parked broadcasts.
    pub(crate) fn admit(
        &mut self,
        cid: Cid,
        block: SignedBlock,
        bytes: Bytes,
        broadcast: bool,
        out: &mut Vec<Output>,
    ) -> Result<(), StoreError> {
        let mut missing: Vec<(Cid, bool)> = Vec::new();
        // Below the floor, no leader can order a block, and only its slot is kept: its parents
        // are not needed (nor checked), so that a late block, or one at the bottom edge of a
        // snapshot's window, never sets off fetches down to blocks this node does not hold.
        if block.block.round >= self.floor {
            for parent in &block.block.parents {
                if !self.knows(parent)? {
                    missing.push((*parent, false));
                }
            }
        }
        if let Payload::Batch { cid: batch, .. } = &block.block.payload {
            if !self.parking.has_batch(batch)? {
                missing.push((*batch, true));
            }
        }
        let author = block.block.author;
        let slot = author as usize;
        let parked = self.parked_broadcasts_by_author[slot];
        if broadcast && !missing.is_empty() && parked >= self.parked_broadcasts_per_author {
            self.report(Some(cid), Error::ParkingFull { author, parked }, out);
            return Ok(());
        }
        // A parked dependency is here already, only waiting itself: nothing to fetch for it.
        let mut to_fetch: Vec<(Cid, bool)> = Vec::new();
        for (dependency, batch) in &missing {
            if !self.parking.contains(dependency)? {
                to_fetch.push((*dependency, *batch));
            }
        }
        let new = to_fetch
            .iter()
            .filter(|(d, _)| !self.fetches.contains(d))
            .count();
        let room = self.fetches.room(author);
        let (queued, to_queue) = (self.fetches.queued(author), new.saturating_sub(room));
        if to_queue > 0 && queued + to_queue > self.queued_fetches_per_author {
            let error = Error::FetchQueueFull { author, queued };
            self.report(Some(cid), error, out);
            return Ok(());
        }
        for (dependency, batch) in to_fetch {
            self.want(dependency, batch, author, out);
        }
        if missing.is_empty() {
            return match self.insert(cid, block, bytes, out)? {
                true => self.resolved(cid, out),
                false => self.discard_descendants(cid),
            };
        }
        let missing: Vec<Cid> = missing.into_iter().map(|(cid, _)| cid).collect();
        self.parking.park(&cid, &bytes, &missing)?;
        if broadcast {
            self.parked_broadcasts.insert(cid, author);
            self.parked_broadcasts_by_author[slot] += 1;
        }
        Ok(())
    }

    /// Block `cid` left the parking (accepted or discarded): if it came by broadcast, its
    /// author has room for one more.
    fn unparked(&mut self, cid: &Cid) {
        if let Some(author) = self.parked_broadcasts.remove(cid) {
            let count = &mut self.parked_broadcasts_by_author[author as usize];
            *count = count.saturating_sub(1);
        }
    }

    /// `dependency` is now here: the blocks that waited only for it are ready, and are accepted
    /// (and theirs after them) up to the budget.
    fn resolved(&mut self, dependency: Cid, out: &mut Vec<Output>) -> Result<(), StoreError> {
        self.ready.extend(self.parking.resolve(&dependency)?);
        self.drain(out)
    }

    /// Accepts ready blocks, in causal order, until none is left or [`DRAIN_BUDGET`] were: a
    /// history that arrives all at once is taken in slices, so that what the node writes and sends
    /// for it never piles up, and commands and fetches are served in between.
    pub(crate) fn drain(&mut self, out: &mut Vec<Output>) -> Result<(), StoreError> {
        let mut budget = DRAIN_BUDGET;
        while budget > 0 {
            let Some(cid) = self.ready.pop() else {
                break;
            };
            let Some(bytes) = self.parking.take(&cid)? else {
                continue;
            };
            self.unparked(&cid);
            budget -= 1;
            let inserted = match SignedBlock::decode(&bytes) {
                Ok(block) => self.insert(cid, block, bytes, out)?,
                Err(error) => {
                    self.reject(Some(cid), error, out);
                    false
                }
            };
            match inserted {
                true => self.ready.extend(self.parking.resolve(&cid)?),
                false => self.discard_descendants(cid)?,
            }
        }
        Ok(())
    }

    /// Checks a block against its parents and batch, and adds it to the DAG.
    fn insert(
        &mut self,
        cid: Cid,
        block: SignedBlock,
        bytes: Bytes,
        out: &mut Vec<Output>,
    ) -> Result<bool, StoreError> {
        if block.block.round >= self.floor {
            let mut parents: Vec<(u32, u64)> = Vec::with_capacity(block.block.parents.len());
            for parent in &block.block.parents {
                parents.extend(self.slot_of(parent)?);
            }
            let (author, round) = (block.block.author, block.block.round);
            if let Err(error) = check_parents(author, round, &parents, &self.committee) {
                self.reject(Some(cid), error.into(), out);
                return Ok(false);
            }
        }
        let transactions = match &block.block.payload {
            Payload::Inline(txs) => Arc::new(txs.clone()),
            Payload::Batch {
                cid: batch,
                count,
                size,
            } => match self.batch_of(batch, *count, *size)? {
                Some(transactions) => transactions,
                None => {
                    self.reject(
                        Some(cid),
                        Error::BatchMismatch {
                            cid: Box::new(*batch),
                        },
                        out,
                    );
                    return Ok(false);
                }
            },
        };
        let (author, round) = (block.block.author, block.block.round);
        if let Some(checkpoint) = block.block.checkpoint {
            self.named.push((author, checkpoint, bytes.clone()));
        }
        if round < self.floor {
            // Valid, but no leader can order it any more (it arrived late, is replayed from
            // disk, or is at the bottom edge of a snapshot's window): only its slot is kept, for
            // the blocks that link it. In memory even with an archive: the store has it only once
            // the node wrote it, and a child may be checked before (these are few).
            if let Some(digest) = digest(&cid) {
                self.pruned.insert(digest, (author, round));
            }
        } else {
            if !transactions.is_empty() && !self.ordered_before.0.contains(&cid) {
                self.unordered.insert(cid);
            }
            let accepted = Arc::new(AcceptedBlock {
                cid,
                block,
                bytes: bytes.clone(),
                transactions,
            });
            let others = self.dag.insert(accepted);
            if !others.is_empty() {
                self.stats.equivocations += 1;
                out.push(Output::Equivocation {
                    author,
                    round,
                    blocks: [others, vec![cid]].concat(),
                });
            }
        }
        self.stats.accepted += 1;
        let own = self.me == Some(author);
        if own && self.own.as_ref().is_none_or(|o| o.round < round) {
            self.own = Some(OwnBlock {
                cid,
                round,
                bytes: bytes.clone(),
                at_ms: 0,
            });
        }
        if !self.restoring {
            out.push(Output::Store {
                cid,
                bytes,
                batch: false,
                own,
            });
        }
        Ok(true)
    }

    /// The transactions of a kept batch, if it has the `count` and encoded `size` a block says.
    fn batch_of(
        &self,
        cid: &Cid,
        count: u64,
        size: u64,
    ) -> Result<Option<Arc<Vec<SignedTransaction>>>, StoreError> {
        let Some(bytes) = self.parking.batch(cid)? else {
            return Ok(None);
        };
        let Ok(transactions) = decode::<Vec<SignedTransaction>>(&bytes) else {
            return Ok(None);
        };
        Ok(
            (transactions.len() as u64 == count && bytes.len() as u64 == size)
                .then(|| Arc::new(transactions)),
        )
    }

    /// Drops every parked block that depends, directly or not, on an invalid one.
    fn discard_descendants(&mut self, invalid: Cid) -> Result<(), StoreError> {
        let mut stack = vec![invalid];
        while let Some(cid) = stack.pop() {
            let discarded = self.parking.discard(&cid)?;
            for child in &discarded {
                self.unparked(child);
            }
            stack.extend(discarded);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{core::fetched_cids as fetches, dag_builder::DagBuilder};

    /// A block manager for the chain of `dag`, as validator `me`.
    fn manager(dag: &DagBuilder, me: Option<u32>, config: &CoreConfig) -> Blocks {
        let chain = dag.genesis.encode().1;
        Blocks::new(chain, dag.committee.clone(), me, config)
    }

    /// The bytes of a block the builder added.
    fn bytes(dag: &DagBuilder, cid: &Cid) -> Bytes {
        dag.dag.get(cid).expect("added").bytes.clone()
    }

    /// Gives `blocks` the builder's block `cid` by broadcast.
    fn broadcast(blocks: &mut Blocks, dag: &DagBuilder, cid: &Cid, out: &mut Vec<Output>) {
        let bytes = bytes(dag, cid);
        (blocks.receive(bytes, Source::Broadcast, out)).expect("in memory");
    }

    /// Gives `blocks` every block of `rounds` of the builder by broadcast, returning the outputs.
    fn deliver(
        blocks: &mut Blocks,
        dag: &DagBuilder,
        rounds: std::ops::RangeInclusive<u64>,
    ) -> Vec<Output> {
        let mut out = Vec::new();
        for round in rounds {
            for block in dag.dag.round(round) {
                broadcast(blocks, dag, &block.cid, &mut out);
            }
        }
        out
    }

    fn stored(out: &[Output]) -> Vec<Cid> {
        (out.iter())
            .filter_map(|o| match o {
                Output::Store { cid, .. } => Some(*cid),
                _ => None,
            })
            .collect()
    }

    fn rejected(out: &[Output]) -> Vec<&'static str> {
        (out.iter())
            .filter_map(|o| match o {
                Output::Rejected { error, .. } => Some(error.kind()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn the_highest_round_seen_is_one_that_more_than_f_authors_reached() {
        let mut dag = DagBuilder::new(4);
        dag.full(0..=9);
        let mut blocks = manager(&dag, None, &CoreConfig::default());
        let mut out = Vec::new();
        broadcast(&mut blocks, &dag, &dag.cid(9, 0), &mut out);
        assert_eq!(blocks.highest_seen(), 0, "one author alone may be faulty");
        broadcast(&mut blocks, &dag, &dag.cid(9, 1), &mut out);
        assert_eq!(blocks.highest_seen(), 9, "two of four: one is honest");
    }

    #[test]
    fn a_block_with_a_missing_parent_waits_for_its_fetch_and_both_are_accepted_parent_first() {
        let mut dag = DagBuilder::new(4);
        dag.full(0..=1);
        let (child, missing) = (dag.cid(1, 0), dag.cid(0, 3));
        let mut blocks = manager(&dag, None, &CoreConfig::default());
        let mut out = Vec::new();
        for author in 0..3 {
            broadcast(&mut blocks, &dag, &dag.cid(0, author), &mut out);
        }
        out.clear();
        broadcast(&mut blocks, &dag, &child, &mut out);
        assert_eq!(fetches(&out), [missing]);
        assert!(stored(&out).is_empty());
        assert_eq!((blocks.parked(), blocks.wanted()), (1, 1));
        assert!(!blocks.knows(&child).expect("in memory"));

        out.clear();
        blocks
            .fetched(missing, bytes(&dag, &missing), &mut out)
            .expect("in memory");
        assert_eq!(stored(&out), [missing, child], "causal order");
        assert!(
            blocks.knows(&child).expect("in memory") && blocks.knows(&missing).expect("in memory")
        );
        assert_eq!((blocks.parked(), blocks.wanted()), (0, 0));
        let stats = blocks.stats();
        assert_eq!(
            (stats.accepted, stats.by_broadcast, stats.by_fetch),
            (5, 4, 1)
        );
    }

    #[test]
    fn a_parent_refused_on_arrival_takes_the_blocks_waiting_for_it_along() {
        let mut dag = DagBuilder::new(4);
        dag.full(0..=0);
        // Author 0's round-1 block links one block only: no quorum, so it is invalid.
        let bad = dag.add(1, 0, 0, vec![dag.cid(0, 0)]);
        dag.round(1, &[1, 2], &[0, 1, 2]);
        let child = dag.add(2, 1, 0, vec![bad, dag.cid(1, 1), dag.cid(1, 2)]);
        let mut blocks = manager(&dag, None, &CoreConfig::default());
        let mut out = deliver(&mut blocks, &dag, 0..=0);
        for author in [1, 2] {
            broadcast(&mut blocks, &dag, &dag.cid(1, author), &mut out);
        }
        out.clear();
        broadcast(&mut blocks, &dag, &child, &mut out);
        assert_eq!(fetches(&out), [bad]);
        out.clear();
        blocks
            .fetched(bad, bytes(&dag, &bad), &mut out)
            .expect("in memory");
        assert_eq!(rejected(&out), ["bad_parents"]);
        assert!(stored(&out).is_empty());
        assert_eq!(blocks.parked(), 0, "the child is discarded");
        assert!(
            !blocks.knows(&child).expect("in memory") && !blocks.knows(&bad).expect("in memory")
        );
    }

    #[test]
    fn a_failed_fetch_drops_what_waited_for_it_and_a_later_reference_asks_again() {
        let mut dag = DagBuilder::new(4);
        dag.full(0..=1);
        let mut blocks = manager(&dag, None, &CoreConfig::default());
        let mut out = Vec::new();
        let (child, missing) = (dag.cid(1, 0), dag.cid(0, 3));
        for author in 0..3 {
            broadcast(&mut blocks, &dag, &dag.cid(0, author), &mut out);
        }
        broadcast(&mut blocks, &dag, &child, &mut out);
        blocks.fetch_failed(missing, &mut out).expect("in memory");
        assert_eq!((blocks.parked(), blocks.wanted()), (0, 0));
        out.clear();
        broadcast(&mut blocks, &dag, &child, &mut out);
        assert_eq!(fetches(&out), [missing], "not refused for good");
        assert_eq!(blocks.parked(), 1);
    }

    #[test]
    fn an_authors_parked_broadcasts_are_bounded_and_a_refused_one_is_taken_when_it_comes_again() {
        let mut dag = DagBuilder::new(4);
        dag.full(0..=2);
        let config = CoreConfig {
            parked_broadcasts_per_author: 1,
            ..CoreConfig::default()
        };
        let mut blocks = manager(&dag, None, &config);
        let mut out = Vec::new();
        let (first, second) = (dag.cid(1, 2), dag.cid(2, 2));
        broadcast(&mut blocks, &dag, &first, &mut out);
        out.clear();
        broadcast(&mut blocks, &dag, &second, &mut out);
        assert_eq!(rejected(&out), ["parking_full"]);
        assert_eq!(blocks.parked(), 1);
        // Another author's broadcast still parks.
        broadcast(&mut blocks, &dag, &dag.cid(1, 3), &mut out);
        assert_eq!(blocks.parked(), 2);

        out.clear();
        deliver(&mut blocks, &dag, 0..=1);
        assert!(blocks.knows(&first).expect("in memory"));
        broadcast(&mut blocks, &dag, &second, &mut out);
        assert!(
            blocks.knows(&second).expect("in memory"),
            "refused for now, not for good"
        );
        assert_eq!(blocks.stats().rejected.get("parking_full"), Some(&1));
    }

    #[test]
    fn an_invalid_block_is_refused_once_and_its_rebroadcasts_are_ignored() {
        let mut dag = DagBuilder::new(4);
        dag.full(0..=0);
        let elsewhere = crate::devnet::genesis("another chain", 1, 4, 0, 0)
            .encode()
            .1;
        let mut blocks = Blocks::new(
            elsewhere,
            dag.committee.clone(),
            None,
            &CoreConfig::default(),
        );
        let mut out = Vec::new();
        for _ in 0..3 {
            broadcast(&mut blocks, &dag, &dag.cid(0, 0), &mut out);
        }
        assert_eq!(rejected(&out), ["wrong_chain"]);
        assert_eq!(blocks.stats().rejected.get("wrong_chain"), Some(&1));
        assert!(blocks.dag().is_empty());
    }

    #[test]
    fn blocks_below_the_floor_leave_memory_but_stay_known_and_their_late_copies_are_ignored() {
        let mut dag = DagBuilder::new(4);
        let top = GC_DEPTH + 5;
        dag.full(0..=top);
        let mut blocks = manager(&dag, None, &CoreConfig::default());
        deliver(&mut blocks, &dag, 0..=top);
        assert_eq!(blocks.dag().len() as u64, 4 * (top + 1));
        assert_eq!(blocks.collect_garbage(top).expect("in memory"), Some(5));
        assert_eq!(
            blocks.collect_garbage(top).expect("in memory"),
            None,
            "the floor did not rise"
        );
        assert_eq!(
            (blocks.floor(), blocks.dag().len() as u64),
            (5, 4 * (top - 4))
        );
        assert_eq!(blocks.pruned_in_memory(), 4 * 5);
        let old = dag.cid(0, 1);
        assert!(blocks.knows(&old).expect("in memory") && blocks.dag().get(&old).is_none());
        let mut out = Vec::new();
        broadcast(&mut blocks, &dag, &old, &mut out);
        assert!(out.is_empty(), "a late re-broadcast: {out:?}");
        assert_eq!(blocks.stats().accepted, 4 * (top + 1));
    }

    #[test]
    fn our_own_block_accepted_from_elsewhere_is_reported_once_and_only_the_latest() {
        let mut dag = DagBuilder::new(4);
        dag.full(0..=2);
        let mut blocks = manager(&dag, Some(2), &CoreConfig::default());
        blocks.set_restoring(true);
        let out = deliver(&mut blocks, &dag, 0..=2);
        assert!(
            stored(&out).is_empty(),
            "restored blocks are not stored again"
        );
        let own = blocks.take_own().expect("ours were accepted");
        assert_eq!((own.cid, own.round, own.at_ms), (dag.cid(2, 2), 2, 0));
        assert!(blocks.take_own().is_none());
    }
}
