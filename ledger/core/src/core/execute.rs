//! The core's executor: decides leader slots ([`Committer`]), orders each committed leader's
//! history ([`Linearizer`]) and applies its transactions to the [`State`], one height at a time.

use std::collections::VecDeque;

use comms::Cid;

use crate::{
    checkpoint::CHECKPOINT_INTERVAL,
    committee::Committee,
    consensus::{Committer, Linearizer},
    dag::Dag,
    state::State,
    tree::TreeBlock,
    types::{Checkpoint, Genesis},
};

use crate::store::Commit;

/// One commit made.
pub(crate) struct Executed {
    pub(crate) commit: Commit,
    /// The state-tree blocks it made.
    pub(crate) tree: Vec<TreeBlock>,
    /// Its transactions that wait for an earlier nonce of their signer.
    pub(crate) waiting: Vec<Cid>,
}

/// The committed sequence so far and the state it produced.
pub(crate) struct Executor {
    committer: Committer,
    linearizer: Linearizer,
    state: State,
    height: u64,
    /// The last checkpoints executed, newest last.
    checkpoints: VecDeque<Checkpoint>,
}

/// The checkpoints executed that are kept to compare with the certified ones.
const CHECKPOINTS_KEPT: usize = 8;

impl Executor {
    /// Nothing committed: the genesis state.
    pub(crate) fn new(genesis: &Genesis) -> Executor {
        Executor {
            committer: Committer::default(),
            linearizer: Linearizer::default(),
            state: State::genesis(genesis),
            height: 0,
            checkpoints: VecDeque::new(),
        }
    }

    /// The latest checkpoint executed, if any: what our blocks name.
    pub(crate) fn checkpoint(&self) -> Option<Checkpoint> {
        self.checkpoints.back().copied()
    }

    /// The checkpoint we executed at `height`, if it is one of the last few.
    pub(crate) fn executed_checkpoint(&self, height: u64) -> Option<Checkpoint> {
        self.checkpoints
            .iter()
            .find(|c| c.height == height)
            .copied()
    }

    fn executed(&mut self, checkpoint: Checkpoint) {
        if self.checkpoints.len() == CHECKPOINTS_KEPT {
            self.checkpoints.pop_front();
        }
        self.checkpoints.push_back(checkpoint);
    }

    /// Resumes after stored commit `last`, which committed slot `slot` and left `state`; the
    /// `ordered` blocks are those that commits up to it ordered from the memory floor up, each with
    /// its commit's leader round; `checkpoint` is the last checkpoint at or below it.
    pub(crate) fn resume(
        &mut self,
        last: &Commit,
        slot: u64,
        state: State,
        ordered: Vec<(Cid, u64)>,
        checkpoint: Option<Checkpoint>,
    ) {
        self.committer = Committer::resume(slot + 1);
        self.linearizer = Linearizer::resume(ordered);
        self.state = state;
        self.height = last.height;
        self.checkpoints.clear();
        self.checkpoints.extend(checkpoint);
    }

    /// The committed state.
    pub(crate) fn state(&self) -> &State {
        &self.state
    }

    /// Commits so far.
    pub(crate) fn height(&self) -> u64 {
        self.height
    }

    /// The slots newly decided in `dag`, in order: `(round, Some(leader))` to commit with
    /// [`Executor::execute`], in this order, `(round, None)` skipped.
    pub(crate) fn decide(&mut self, dag: &Dag, committee: &Committee) -> Vec<(u64, Option<Cid>)> {
        self.committer.try_decide(dag, committee)
    }

    /// Commits `leader` (of `round`), the next decided one: orders its history not ordered before
    /// and applies its transactions. Returns the commit, the state-tree blocks it made (to be
    /// stored with it) and the transactions held back waiting for an earlier nonce of their signer.
    pub(crate) fn execute(&mut self, dag: &Dag, round: u64, leader: Cid) -> Executed {
        let blocks = self.linearizer.linearize(dag, &leader);
        let ordered = (blocks.iter())
            .filter_map(|cid| dag.get(cid))
            .flat_map(|block| block.transactions.iter());
        let executed = self.state.execute(self.height + 1, ordered);
        let changed = (executed.changed.into_iter())
            .map(|key| (key, self.state.account(&key)))
            .collect();
        self.height += 1;
        let mut tree = Vec::new();
        let commit = Commit {
            height: self.height,
            round,
            leader,
            blocks,
            transactions: executed.transactions,
            changed,
            state_root: self.state.flush(&mut tree),
        };
        if self.height % CHECKPOINT_INTERVAL == 0 {
            self.executed(Checkpoint {
                height: self.height,
                state_root: commit.state_root,
            });
        }
        Executed {
            commit,
            tree,
            waiting: executed.waiting,
        }
    }

    /// Forgets what it ordered below `round`: no later leader reaches it.
    pub(crate) fn prune_below(&mut self, round: u64) {
        self.linearizer.prune_below(round);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dag_builder::DagBuilder;

    #[test]
    fn each_decided_leader_commits_at_the_next_height_with_every_block_ordered_once() {
        let mut dag = DagBuilder::new(4);
        dag.full(0..=5);
        let mut executor = Executor::new(&dag.genesis);
        let (mut heights, mut ordered) = (Vec::new(), Vec::new());
        for (round, leader) in executor.decide(&dag.dag, &dag.committee) {
            let leader = leader.expect("a full DAG skips nothing");
            let Executed {
                commit,
                tree,
                waiting,
            } = executor.execute(&dag.dag, round, leader);
            assert_eq!(commit.blocks.last(), Some(&leader));
            assert!(waiting.is_empty() && commit.transactions.is_empty());
            // The genesis state's blocks go with the first commit; nothing changes after.
            assert_eq!(tree.is_empty(), commit.height > 1);
            assert_eq!(commit.state_root, executor.state().root());
            heights.push(commit.height);
            ordered.extend(commit.blocks);
        }
        assert_eq!(
            heights,
            (1..=8).collect::<Vec<u64>>(),
            "rounds 0 to 3, two slots each"
        );
        assert_eq!(executor.height(), 8);
        let mut distinct = ordered.clone();
        distinct.sort_unstable_by_key(|cid| cid.to_bytes());
        distinct.dedup();
        assert_eq!(distinct.len(), ordered.len(), "each block once");
        assert_eq!(
            ordered.len(),
            3 * 4 + 2,
            "rounds 0 to 2 whole, and round 3's two leaders"
        );
    }
}
