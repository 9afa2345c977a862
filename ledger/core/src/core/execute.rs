//! The core's executor: decides leader slots ([`Committer`]), orders each committed leader's
//! history ([`Linearizer`]) and applies its transactions to the [`State`], one height at a time.

use std::collections::VecDeque;

use comms::Cid;

use crate::{
    checkpoint::CHECKPOINT_INTERVAL,
    committee::Committee,
    consensus::{Committer, Linearizer, GC_DEPTH},
    dag::Dag,
    state::State,
    tree::TreeBlock,
    types::{Checkpoint, Genesis},
    Error,
};

use crate::store::Commit;

/// One commit made.
pub(crate) struct Executed {
    pub(crate) commit: Commit,
    /// The state-tree blocks it made.
    pub(crate) tree: Vec<TreeBlock>,
    /// The state-tree blocks of the state before it that it no longer needs.
    pub(crate) dropped: Vec<Cid>,
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
    /// Joining by snapshot: the certified checkpoint whose leader the decisions are replayed up
    /// to, without executing (see [`Executor::join`]).
    joining: Option<Checkpoint>,
}

/// A slot decided while joining, before the certified leader.
pub(crate) enum Replayed {
    /// Its leader's history ordered (not executed); more to replay.
    Ordered(Vec<Cid>),
    /// The certified leader, its history ordered: the replay is done, and what every commit up to
    /// it ordered from the memory floor up is given, each block with its round.
    Reached {
        ordered: Vec<Cid>,
        base: Vec<(Cid, u64)>,
    },
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
            joining: None,
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

    /// Starts after certified `checkpoint` with its `state`: the slots from its leader's memory
    /// floor up to its leader are decided again and their leaders' histories ordered, but not
    /// executed ([`Executor::replay`]), so that commits after it order only what those did not.
    pub(crate) fn join(&mut self, checkpoint: Checkpoint, state: State, committee: &Committee) {
        let floor = checkpoint.round.saturating_sub(GC_DEPTH);
        self.committer = Committer::resume(floor * committee.leaders_per_round());
        self.linearizer = Linearizer::default();
        self.state = state;
        self.height = checkpoint.height;
        self.checkpoints.clear();
        self.executed(checkpoint);
        self.joining = Some(checkpoint);
    }

    /// The certified checkpoint whose history is being replayed, while joining.
    pub(crate) fn joining(&self) -> Option<Checkpoint> {
        self.joining
    }

    /// Replays decided slot `round` (committing `leader`, or skipped) of the history up to the
    /// joined checkpoint. A slot past the checkpoint's round without its leader committed means
    /// the certificate is false (more than `f` signed it): an error.
    pub(crate) fn replay(
        &mut self,
        dag: &Dag,
        round: u64,
        leader: Option<Cid>,
    ) -> Result<Replayed, Error> {
        let Some(checkpoint) = self.joining else {
            return Ok(Replayed::Ordered(Vec::new()));
        };
        if round > checkpoint.round {
            return Err(Error::SnapshotDiverges {
                height: checkpoint.height,
                leader: Box::new(checkpoint.leader),
            });
        }
        let ordered = match leader {
            Some(leader) => self.linearizer.linearize(dag, &leader),
            None => Vec::new(),
        };
        if leader != Some(checkpoint.leader) {
            return Ok(Replayed::Ordered(ordered));
        }
        self.joining = None;
        let base = self.linearizer.ordered();
        Ok(Replayed::Reached { ordered, base })
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
            self.executed(commit.checkpoint());
        }
        Executed {
            commit,
            tree,
            dropped: self.state.take_dropped(),
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
                ..
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
