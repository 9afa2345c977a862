//! Joining by snapshot: a node with nothing stored starts from a state the validators attested,
//! rather than fetching and executing every block since genesis.
//!
//! It goes through three steps, each IO-free like the rest of the core:
//! 1. **Deciding** ([`Deciding`]): blocks that arrive by broadcast are checked (chain, author,
//!    signature) and held, a few per author, and the checkpoints they name are collected. Once
//!    blocks of a quorum of stake name one checkpoint, it is certified ([`crate::checkpoint`]):
//!    the node takes it. Blocks of more than `f` stake below round [`YOUNG_ROUNDS`] show a young
//!    network, whose history is short: the node syncs from genesis instead, as it does when
//!    nothing is certified within [`DECIDING_MS`].
//! 2. **Fetching** ([`TreeFetch`]): the certified state's blocks, from its root down, by CID,
//!    each checked against the CID that names it, a bounded number at a time. Meanwhile the block
//!    manager takes blocks from the checkpoint leader's memory floor up (those below it are taken
//!    without their parents), so the DAG a node needs to go on is fetched at the same time.
//! 3. **Replaying decisions**: with the state loaded, the executor decides the leader slots from
//!    that floor up to the certified leader without executing them, only to learn which blocks
//!    the commits up to it ordered. The certified leader must be the one committed there.
//!
//! What a node fetches is the state and [`GC_DEPTH`](crate::consensus::GC_DEPTH) rounds of the
//! DAG: it grows with the state and the committee, not with the length of the history.

use std::{
    collections::{HashMap, HashSet, VecDeque},
    sync::Arc,
};

use bytes::Bytes;
use comms::Cid;
use ipld_core::ipld::Ipld;

use super::{blocks::Source, execute::Replayed, Core, Joining, Output};
use crate::{
    checkpoint::Checkpoints,
    committee::Committee,
    state::{State, StateRoot},
    store::{Base, StoreError},
    tree::{self, TreeBlock, TreeError},
    types::{Checkpoint, SignedBlock},
    validate::{check_block, BlockLimits},
};

/// Below this round, a network is young: syncing its whole history costs no more than a
/// snapshot's window, so a joining node does that.
pub const YOUNG_ROUNDS: u64 = crate::consensus::GC_DEPTH;

/// How long a joining node waits to see a certified checkpoint before it syncs from genesis.
pub const DECIDING_MS: u64 = 20_000;

/// Blocks held per author while deciding, the newest.
const HELD_PER_AUTHOR: usize = 4;

/// State blocks asked for at once.
const TREE_FETCHES: usize = 64;

/// What deciding came to.
pub(crate) enum Decision {
    /// Start from this certified checkpoint.
    Snapshot(Box<Checkpoint>),
    /// Sync from genesis: the network is young, or nothing was certified in time.
    Genesis,
}

/// Step 1: learning how far the network is, and a certified checkpoint.
pub(crate) struct Deciding {
    since_ms: Option<u64>,
    /// Per author, its newest checked blocks (round, bytes).
    held: Vec<VecDeque<(u64, Bytes)>>,
    checkpoints: Checkpoints,
}

impl Deciding {
    pub(crate) fn new(committee: &Committee) -> Deciding {
        Deciding {
            since_ms: None,
            held: vec![VecDeque::new(); committee.size()],
            checkpoints: Checkpoints::new(committee.size()),
        }
    }

    /// A block arrived: held if it checks. Returns what the node decides, if it now can.
    pub(crate) fn receive(
        &mut self,
        bytes: Bytes,
        chain: &Cid,
        committee: &Committee,
        limits: &BlockLimits,
    ) -> Option<Decision> {
        let block = SignedBlock::decode(&bytes).ok()?;
        check_block(&block, bytes.len(), chain, committee, limits).ok()?;
        let (author, round) = (block.block.author, block.block.round);
        let held = self.held.get_mut(author as usize)?;
        if held.iter().any(|(r, b)| *r == round && *b == bytes) {
            return None;
        }
        if held.len() == HELD_PER_AUTHOR {
            held.pop_front();
        }
        held.push_back((round, bytes.clone()));
        if let Some(checkpoint) = block.block.checkpoint {
            if let Some(certificate) = self
                .checkpoints
                .named(author, checkpoint, &bytes, committee)
            {
                return Some(Decision::Snapshot(Box::new(certificate.checkpoint)));
            }
        }
        (self.reached(committee)? < YOUNG_ROUNDS).then_some(Decision::Genesis)
    }

    /// The highest round that authors of more than `f` stake reached with a held block (so an
    /// honest one did), once that many were heard from. (A faulty validator can replay old blocks
    /// of honest ones, and so make the network look young: the node then syncs from genesis,
    /// slower but no less right.)
    fn reached(&self, committee: &Committee) -> Option<u64> {
        let mut rounds: Vec<(u64, u32)> = (self.held.iter().enumerate())
            .filter_map(|(author, held)| {
                Some((held.iter().map(|(round, _)| *round).max()?, author as u32))
            })
            .collect();
        rounds.sort_unstable_by(|a, b| b.cmp(a));
        let total = committee.stake(0..committee.size() as u32);
        let more_than_f = total.saturating_sub(committee.quorum()) + 1;
        let mut stake = 0;
        (rounds.into_iter()).find_map(|(round, author)| {
            stake += committee.weight(author);
            (stake >= more_than_f).then_some(round)
        })
    }

    /// The time is `now_ms`: [`Decision::Genesis`] once nothing was certified for [`DECIDING_MS`].
    pub(crate) fn tick(&mut self, now_ms: u64) -> Option<Decision> {
        let since = *self.since_ms.get_or_insert(now_ms);
        (now_ms >= since + DECIDING_MS).then_some(Decision::Genesis)
    }

    /// The blocks held, oldest round first, to hand to the block manager.
    pub(crate) fn into_held(self) -> Vec<Bytes> {
        let mut held: Vec<(u64, Bytes)> = self.held.into_iter().flatten().collect();
        held.sort_by_key(|(round, _)| *round);
        held.into_iter().map(|(_, bytes)| bytes).collect()
    }
}

/// Counters of a join.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct TreeStats {
    pub(crate) fetched: u64,
    pub(crate) failed: u64,
    pub(crate) refused: u64,
}

/// Step 2: the certified state's blocks, fetched from the root down.
pub(crate) struct TreeFetch {
    root: Cid,
    /// Blocks fetched, each checked against its CID.
    got: HashMap<Cid, Bytes>,
    /// Blocks to ask for, not asked yet.
    queue: VecDeque<Cid>,
    /// Asked for, not back yet.
    asked: HashSet<Cid>,
    stats: TreeStats,
}

impl TreeFetch {
    /// Fetching the state of root block `root`; the first fetches go to `out`.
    pub(crate) fn new(root: Cid, out: &mut Vec<Output>) -> TreeFetch {
        let mut fetch = TreeFetch {
            root,
            got: HashMap::new(),
            queue: VecDeque::from([root]),
            asked: HashSet::new(),
            stats: TreeStats::default(),
        };
        fetch.ask(out);
        fetch
    }

    pub(crate) fn stats(&self) -> TreeStats {
        self.stats
    }

    /// Whether `cid` is one of the state blocks asked for.
    pub(crate) fn wants(&self, cid: &Cid) -> bool {
        self.asked.contains(cid)
    }

    /// Asks for the next blocks, up to [`TREE_FETCHES`] in flight.
    fn ask(&mut self, out: &mut Vec<Output>) {
        while self.asked.len() < TREE_FETCHES {
            let Some(cid) = self.queue.pop_front() else {
                return;
            };
            self.asked.insert(cid);
            out.push(Output::Fetch(cid));
        }
    }

    /// Block `cid` arrived: checked against its CID, and the blocks it links asked for. One that
    /// does not hash to its CID, or is not a state block, is refused and asked for again (another
    /// peer may serve it right).
    pub(crate) fn fetched(
        &mut self,
        cid: Cid,
        bytes: Bytes,
        out: &mut Vec<Output>,
    ) -> Result<(), TreeError> {
        let checked = tree::check_block(&cid, &bytes).and_then(|()| self.links(&cid, &bytes));
        self.asked.remove(&cid);
        match checked {
            Ok(links) => {
                self.stats.fetched += 1;
                self.got.insert(cid, bytes);
                let new = (links.into_iter()).filter(|l| !self.got.contains_key(l));
                self.queue.extend(new);
                self.ask(out);
                Ok(())
            }
            Err(error) => {
                self.stats.refused += 1;
                self.queue.push_back(cid);
                self.ask(out);
                Err(error)
            }
        }
    }

    /// A fetch of `cid` failed for good: it is asked for again, later.
    pub(crate) fn failed(&mut self, cid: Cid, out: &mut Vec<Output>) {
        if self.asked.remove(&cid) {
            self.stats.failed += 1;
            self.queue.push_back(cid);
            self.ask(out);
        }
    }

    /// Whether every block of the state is here.
    pub(crate) fn done(&self) -> bool {
        self.queue.is_empty() && self.asked.is_empty()
    }

    /// The state the blocks make, checked whole (every block's CID, the tree's canonical shape),
    /// and the blocks.
    pub(crate) fn load(self) -> Result<(State, Vec<TreeBlock>), TreeError> {
        let got = &self.got;
        let state = State::load(&self.root, &mut |cid: &Cid| {
            Ok::<_, TreeError>(got.get(cid).map(|b| b.to_vec()))
        })?;
        Ok((state, self.got.into_iter().collect()))
    }

    /// The blocks that block `cid` links: the two trees of the root block, or a tree node's
    /// children (not the links inside its values, such as a record's payload).
    fn links(&self, cid: &Cid, bytes: &[u8]) -> Result<Vec<Cid>, TreeError> {
        let malformed = |reason: String| TreeError::Malformed {
            cid: Box::new(*cid),
            reason,
        };
        if *cid == self.root {
            let root: StateRoot =
                crate::codec::decode(bytes).map_err(|e| malformed(e.to_string()))?;
            return Ok(vec![root.accounts, root.waiting]);
        }
        let node: Ipld =
            serde_ipld_dagcbor::from_slice(bytes).map_err(|e| malformed(e.to_string()))?;
        match node {
            Ipld::List(parts) => match parts.get(1) {
                Some(Ipld::List(slots)) => Ok(slots
                    .iter()
                    .filter_map(|slot| match slot {
                        Ipld::Link(link) => Some(*link),
                        _ => None,
                    })
                    .collect()),
                _ => Err(malformed("not [bitmap, slots]".into())),
            },
            _ => Err(malformed("not a list".into())),
        }
    }
}

impl Core {
    /// Joins by snapshot (see the module doc): from now on, blocks that arrive are held while the
    /// node learns a certified checkpoint. For a node with nothing: does nothing (and returns
    /// false) once the core has a DAG or a commit.
    pub fn join(&mut self) -> bool {
        if self.height() > 0 || !self.dag().is_empty() {
            return false;
        }
        self.joining = Some(Joining::Deciding(Deciding::new(&self.committee)));
        true
    }

    /// While deciding, a block that arrived by broadcast is held, and may settle how the node
    /// joins. True when it was taken here.
    pub(super) fn deciding(
        &mut self,
        now_ms: u64,
        bytes: Bytes,
        out: &mut Vec<Output>,
    ) -> Result<bool, StoreError> {
        let Some(Joining::Deciding(deciding)) = &mut self.joining else {
            return Ok(false);
        };
        let limits = BlockLimits {
            max_transactions: self.config.max_block_transactions,
            max_bytes: self.config.max_block_bytes,
        };
        if let Some(decision) = deciding.receive(bytes, &self.chain, &self.committee, &limits) {
            self.decided(now_ms, decision, out)?;
        }
        Ok(true)
    }

    /// The time is `now_ms`: a node deciding for too long syncs from genesis.
    pub(super) fn join_tick(
        &mut self,
        now_ms: u64,
        out: &mut Vec<Output>,
    ) -> Result<(), StoreError> {
        let Some(Joining::Deciding(deciding)) = &mut self.joining else {
            return Ok(());
        };
        match deciding.tick(now_ms) {
            Some(decision) => self.decided(now_ms, decision, out),
            None => Ok(()),
        }
    }

    /// Goes on as decided, with the blocks held meanwhile.
    fn decided(
        &mut self,
        now_ms: u64,
        decision: Decision,
        out: &mut Vec<Output>,
    ) -> Result<(), StoreError> {
        let Some(Joining::Deciding(deciding)) = self.joining.take() else {
            return Ok(());
        };
        match decision {
            Decision::Genesis => {
                tracing::info!(
                    "the network is young, or certified nothing in time: syncing from genesis"
                );
            }
            Decision::Snapshot(checkpoint) => {
                let checkpoint = *checkpoint;
                tracing::info!(
                    height = checkpoint.height,
                    round = checkpoint.round,
                    state_root = %checkpoint.state_root,
                    "joining at a certified checkpoint"
                );
                self.blocks.start_after(checkpoint.round, []);
                let tree = TreeFetch::new(checkpoint.state_root, out);
                self.joining = Some(Joining::Fetching { checkpoint, tree });
            }
        }
        for bytes in deciding.into_held() {
            self.blocks.receive(bytes, Source::Broadcast, out)?;
        }
        self.after_change(now_ms, out)
    }

    /// A fetch finished: taken here if it is a snapshot's state block (returns `None`), else
    /// handed back.
    pub(super) fn snapshot_fetched(
        &mut self,
        cid: Cid,
        bytes: Bytes,
        out: &mut Vec<Output>,
    ) -> Option<Bytes> {
        let Some(Joining::Fetching { tree, .. }) = &mut self.joining else {
            return Some(bytes);
        };
        if !tree.wants(&cid) {
            return Some(bytes);
        }
        if let Err(error) = tree.fetched(cid, bytes, out) {
            self.blocks.report(Some(cid), error.into(), out);
        }
        if tree.done() {
            self.load_snapshot(out);
        }
        None
    }

    /// A fetch failed for good: true when it was a snapshot's state block (asked for again).
    pub(super) fn snapshot_failed(&mut self, cid: Cid, out: &mut Vec<Output>) -> bool {
        match &mut self.joining {
            Some(Joining::Fetching { tree, .. }) if tree.wants(&cid) => {
                tree.failed(cid, out);
                true
            }
            _ => false,
        }
    }

    /// Every block of the state is here: loads it and starts the executor after the checkpoint.
    /// A state that does not load (a certified root over malformed blocks: more than `f` signed
    /// it) is refused, and the node decides again.
    fn load_snapshot(&mut self, out: &mut Vec<Output>) {
        let Some(Joining::Fetching { checkpoint, tree }) = self.joining.take() else {
            return;
        };
        self.join_stats = tree.stats();
        match tree.load() {
            Ok((state, blocks)) => {
                tracing::info!(
                    accounts = state.len(),
                    blocks = blocks.len(),
                    "snapshot state fetched"
                );
                self.executor.join(checkpoint, state, &self.committee);
                self.joining = Some(Joining::Replaying { tree: blocks });
            }
            Err(error) => {
                tracing::error!(%error, "the certified snapshot's state does not load");
                self.blocks
                    .report(Some(checkpoint.state_root), error.into(), out);
                self.joining = Some(Joining::Deciding(Deciding::new(&self.committee)));
            }
        }
    }

    /// Whether leader slots may be decided: not while the snapshot's state is not loaded.
    pub(super) fn may_decide(&self) -> bool {
        matches!(self.joining, None | Some(Joining::Replaying { .. }))
    }

    /// A slot decided while replaying the history up to the snapshot's leader: its blocks count
    /// as ordered; at the leader, the join is done and its base is output.
    pub(super) fn replay_decision(
        &mut self,
        round: u64,
        leader: Option<Cid>,
        out: &mut Vec<Output>,
    ) {
        match self.executor.replay(self.blocks.dag(), round, leader) {
            Ok(Replayed::Ordered(ordered)) => self.blocks.ordered(&ordered),
            Ok(Replayed::Reached { ordered, base }) => {
                self.blocks.ordered(&ordered);
                let Some(Joining::Replaying { tree }) = self.joining.take() else {
                    return;
                };
                let checkpoint = self.executor.checkpoint().expect("set by the join");
                tracing::info!(height = checkpoint.height, "joined");
                self.joined_at_height = Some(checkpoint.height);
                let base = Arc::new(Base {
                    checkpoint,
                    ordered: base,
                });
                out.push(Output::Joined { base, tree });
            }
            Err(error) => {
                tracing::error!(%error, "the certified checkpoint is not what this DAG commits");
                self.blocks.report(None, error, out);
                self.joining = Some(Joining::Diverged);
            }
        }
    }

    /// The counters of the snapshot's state fetch so far.
    pub(super) fn snapshot_stats(&self) -> TreeStats {
        match &self.joining {
            Some(Joining::Fetching { tree, .. }) => tree.stats(),
            _ => self.join_stats,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        checkpoint::test_support::{block, checkpoint},
        core::fetched_cids as fetches,
        devnet,
    };

    const VALIDATORS: usize = 4;

    fn setup() -> (Cid, Committee, BlockLimits) {
        let genesis = devnet::genesis("join", 1, VALIDATORS, 0, 0);
        let limits = BlockLimits {
            max_transactions: 100,
            max_bytes: 1 << 20,
        };
        (genesis.encode().1, Committee::new(&genesis), limits)
    }

    #[test]
    fn a_joining_node_takes_only_a_checkpoint_a_quorum_certified() {
        let (chain, committee, limits) = setup();
        let mut deciding = Deciding::new(&committee);
        let (honest, forged) = (checkpoint(40), checkpoint(41));
        let mut receive = |author, checkpoint| {
            let bytes = block(chain, author, 400, Some(checkpoint));
            deciding.receive(bytes, &chain, &committee, &limits)
        };
        // One faulty validator (f = 1) names a root it made up: no quorum, however often.
        assert!(receive(3, forged).is_none());
        assert!(receive(3, forged).is_none());
        assert!(receive(0, honest).is_none());
        assert!(receive(1, honest).is_none());
        let Some(Decision::Snapshot(taken)) = receive(2, honest) else {
            panic!("three of four name it")
        };
        assert_eq!(*taken, honest);
        // A block of another chain, or signed by another key, is not even held.
        let mut deciding = Deciding::new(&committee);
        let other = devnet::genesis("other", 1, VALIDATORS, 0, 0).encode().1;
        for author in 0..3 {
            let bytes = block(other, author, 400, Some(honest));
            assert!(deciding
                .receive(bytes, &chain, &committee, &limits)
                .is_none());
        }
        assert!(deciding.into_held().is_empty());
    }

    #[test]
    fn a_young_network_or_a_long_silence_means_syncing_from_genesis() {
        let (chain, committee, limits) = setup();
        let mut deciding = Deciding::new(&committee);
        let young = |author| block(chain, author, 3, None);
        assert!(deciding
            .receive(young(0), &chain, &committee, &limits)
            .is_none());
        assert!(matches!(
            deciding.receive(young(1), &chain, &committee, &limits),
            Some(Decision::Genesis)
        ));
        assert_eq!(deciding.into_held().len(), 2, "handed on");
        // Blocks far up with no certificate yet: waiting, until the wait runs out.
        let mut deciding = Deciding::new(&committee);
        for author in 0..2 {
            let old = block(chain, author, 10 * YOUNG_ROUNDS, None);
            assert!(deciding.receive(old, &chain, &committee, &limits).is_none());
        }
        assert!(deciding.tick(1_000).is_none());
        assert!(deciding.tick(1_000 + DECIDING_MS - 1).is_none());
        assert!(matches!(
            deciding.tick(1_000 + DECIDING_MS),
            Some(Decision::Genesis)
        ));
    }

    /// A state of `accounts` accounts, and its blocks by CID.
    fn state(accounts: usize) -> (Cid, HashMap<Cid, Bytes>) {
        let genesis = devnet::genesis("join", 1, VALIDATORS, accounts, 10);
        let mut state = State::genesis(&genesis);
        let mut blocks = Vec::new();
        let root = state.flush(&mut blocks);
        (root, blocks.into_iter().collect())
    }

    #[test]
    fn a_snapshot_is_fetched_a_bounded_number_at_a_time_and_a_wrong_or_lost_block_asked_again() {
        let (root, blocks) = state(2_000);
        assert!(blocks.len() > 2 * TREE_FETCHES, "{} blocks", blocks.len());
        let mut out = Vec::new();
        let mut fetch = TreeFetch::new(root, &mut out);
        let mut asked: VecDeque<Cid> = fetches(&out).into();
        assert_eq!(Vec::from(asked.clone()), [root]);
        let (mut lied, mut lost) = (false, false);
        while let Some(cid) = asked.pop_front() {
            assert!(fetch.wants(&cid) && fetch.asked.len() <= TREE_FETCHES);
            let mut out = Vec::new();
            if !lied && cid != root {
                // A peer serves other bytes under this CID: refused, asked again.
                lied = true;
                let error = fetch.fetched(cid, Bytes::from_static(b"lies"), &mut out);
                assert!(matches!(error, Err(TreeError::CidMismatch { .. })));
            } else if !lost && cid != root {
                lost = true;
                fetch.failed(cid, &mut out);
            } else {
                fetch
                    .fetched(cid, blocks[&cid].clone(), &mut out)
                    .expect("checks");
            }
            asked.extend(fetches(&out));
        }
        assert!(fetch.done());
        let stats = fetch.stats();
        assert_eq!(
            (stats.fetched, stats.refused, stats.failed),
            (blocks.len() as u64, 1, 1)
        );
        let (state, fetched) = fetch.load().expect("the whole state");
        assert_eq!(state.root(), root);
        assert_eq!(state.len(), 2_000);
        assert_eq!(fetched.len(), blocks.len());
    }
}
