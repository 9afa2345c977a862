//! The ordering rule: which leader blocks commit, and the order of everything they reference.
//!
//! Every round `r` has [`Committee::leaders_per_round`] leader slots (the blocks of the validators
//! [`Committee::slot`] names at round `r`), numbered round by round. Over an uncertified DAG (a
//! Byzantine author may sign two blocks for one slot):
//! - a block at `r+1` **votes** for a leader block `A` if `A` is one of its parents;
//! - a block at `r+2` **certifies** `A` if the authors of its parents that vote for `A` hold a quorum;
//! - **direct commit**: blocks at `r+2` from a quorum of authors certify `A`;
//! - **direct skip**: a quorum of authors at `r+1` has no block voting for any block of the slot;
//! - otherwise the slot waits for an **anchor**: the first slot at round `r+3` or later that is not
//!   skipped. If it is undecided, so is this slot; if it commits block `X`, this slot commits `A` when
//!   `X`'s causal history holds a block certifying `A`, and is skipped when it holds none.
//!
//! Decided slots commit in slot order, up to the first undecided one. Safety rests on quorum
//! intersection: two quorums share an honest author, which signs one block per round, so two versions
//! of a slot can never both be certified, nor one certified and skipped; and once a quorum certifies
//! `A`, every block from round `r+3` on has a certifier of `A` in its history, so every anchor sees it.
//! See DESIGN.md for the full argument.

use std::collections::{BTreeMap, HashMap, HashSet};

use comms::Cid;

use crate::{
    committee::Committee,
    dag::{AcceptedBlock, Dag},
};

/// What happens to a leader slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// The leader block `Cid` commits.
    Commit(Cid),
    /// The slot has no committed block.
    Skip,
    /// Not known yet.
    Undecided,
}

/// Decides leader slots in order.
#[derive(Debug, Default)]
pub struct Committer {
    next_slot: u64,
    /// Slots after `next_slot` already decided: a decision, once made, never changes (the DAG only
    /// grows, so a certificate or skip quorum stays one, and an anchor's decision is final), so it is
    /// not worked out again while an earlier slot waits.
    decided: BTreeMap<u64, Decision>,
}

impl Committer {
    /// Resumes after `decided_slots` slots were decided (from storage).
    pub fn resume(decided_slots: u64) -> Committer {
        Committer {
            next_slot: decided_slots,
            decided: BTreeMap::new(),
        }
    }

    /// The first undecided slot.
    pub fn next_slot(&self) -> u64 {
        self.next_slot
    }

    /// The slots newly decided, in order: `(round, Some(leader))` commits, `(round, None)` skips.
    /// A round has [`Committee::leaders_per_round`] slots (see [`Committee::slot`]).
    pub fn try_decide(&mut self, dag: &Dag, committee: &Committee) -> Vec<(u64, Option<Cid>)> {
        let per_round = committee.leaders_per_round();
        // The slots of rounds below `top - 1` have a round `r + 2` to be certified in.
        let end = dag.highest_round().saturating_sub(1) * per_round;
        if end <= self.next_slot {
            return Vec::new();
        }
        let first = self.next_slot;
        let mut decisions = vec![Decision::Undecided; (end - first) as usize];
        for slot in (first..end).rev() {
            if let Some(decision) = self.decided.get(&slot) {
                decisions[(slot - first) as usize] = *decision;
                continue;
            }
            let (round, author) = committee.slot(slot);
            let mut decision = direct(dag, committee, round, author);
            if decision == Decision::Undecided {
                // Anchors are the slots from round `r + 3` on.
                let anchors = ((round + 3) * per_round - first).min(end - first) as usize;
                decision = indirect(dag, committee, round, author, &decisions[anchors..]);
            }
            if decision != Decision::Undecided {
                self.decided.insert(slot, decision);
            }
            decisions[(slot - first) as usize] = decision;
        }
        let decided: Vec<_> = decisions
            .iter()
            .take_while(|d| **d != Decision::Undecided)
            .collect();
        self.next_slot += decided.len() as u64;
        self.decided = self.decided.split_off(&self.next_slot);
        decided
            .into_iter()
            .enumerate()
            .map(|(i, d)| {
                (
                    committee.slot(first + i as u64).0,
                    if let Decision::Commit(cid) = d {
                        Some(*cid)
                    } else {
                        None
                    },
                )
            })
            .collect()
    }
}

/// The blocks of `round + 1` that vote for `leader` (of `round`), with their authors: those with it
/// among their parents.
fn voters(dag: &Dag, round: u64, leader: &Cid) -> Vec<(Cid, u32)> {
    dag.round(round + 1)
        .filter(|b| b.parents().contains(leader))
        .map(|b| (b.cid, b.author()))
        .collect()
}

/// Whether `certifier` certifies the leader that `voters` vote for: the authors of its parents
/// among them hold a quorum. A block's parents have distinct authors, so each counts once.
fn certifies(committee: &Committee, certifier: &AcceptedBlock, voters: &[(Cid, u32)]) -> bool {
    let voting = voters
        .iter()
        .filter(|(voter, _)| certifier.parents().contains(voter))
        .map(|(_, author)| *author);
    committee.stake(voting) >= committee.quorum()
}

/// The stake of the distinct authors of `round` with a block satisfying `test`.
pub(crate) fn stake_where(
    dag: &Dag,
    committee: &Committee,
    round: u64,
    test: impl Fn(&AcceptedBlock) -> bool,
) -> u64 {
    let mut authors: Vec<u32> = dag
        .round(round)
        .filter(|b| test(b))
        .map(|b| b.author())
        .collect();
    authors.dedup();
    committee.stake(authors)
}

/// Decides the slot of `author` at `round` from rounds `r + 1` and `r + 2` alone.
fn direct(dag: &Dag, committee: &Committee, round: u64, author: u32) -> Decision {
    let leaders: Vec<Cid> = dag.slot(round, author).map(|b| b.cid).collect();
    for leader in &leaders {
        let voters = voters(dag, round, leader);
        if voters.is_empty() {
            continue;
        }
        let certifying = stake_where(dag, committee, round + 2, |b| {
            certifies(committee, b, &voters)
        });
        if certifying >= committee.quorum() {
            return Decision::Commit(*leader);
        }
    }
    // Authors none of whose blocks at r+1 vote for any version of the slot.
    let mut voting: Vec<u32> = dag
        .round(round + 1)
        .filter(|b| leaders.iter().any(|l| b.parents().contains(l)))
        .map(|b| b.author())
        .collect();
    voting.dedup();
    let silent = dag
        .round(round + 1)
        .map(|b| b.author())
        .filter(|a| !voting.contains(a));
    let mut silent: Vec<u32> = silent.collect();
    silent.dedup();
    match committee.stake(silent) >= committee.quorum() {
        true => Decision::Skip,
        false => Decision::Undecided,
    }
}

/// Decides the slot of `author` at `round` from the first non-skipped slot at least three rounds up,
/// given the decisions of the slots from round `round + 3` on, in order.
fn indirect(
    dag: &Dag,
    committee: &Committee,
    round: u64,
    author: u32,
    anchors: &[Decision],
) -> Decision {
    let anchor = anchors.iter().find(|d| **d != Decision::Skip);
    let Some(Decision::Commit(anchor)) = anchor else {
        return Decision::Undecided;
    };
    let certifiers = history_at(dag, anchor, round + 2);
    let leaders = dag.slot(round, author).map(|b| b.cid);
    for leader in leaders.collect::<Vec<_>>() {
        let voters = voters(dag, round, &leader);
        if certifiers
            .iter()
            .filter_map(|c| dag.get(c))
            .any(|c| certifies(committee, c, &voters))
        {
            return Decision::Commit(leader);
        }
    }
    Decision::Skip
}

/// The blocks of round `round` in the causal history of `from`.
fn history_at(dag: &Dag, from: &Cid, round: u64) -> Vec<Cid> {
    let (mut seen, mut stack, mut found) = (HashSet::new(), vec![*from], Vec::new());
    while let Some(cid) = stack.pop() {
        let Some(block) = dag.get(&cid).filter(|_| seen.insert(cid)) else {
            continue;
        };
        match block.round() == round {
            true => found.push(cid),
            false if block.round() > round => stack.extend(block.parents().iter().copied()),
            false => {}
        }
    }
    found
}

/// Rounds of history a leader orders: the causal history of a leader at round `r` is ordered down to
/// round `r - GC_DEPTH`; older blocks in it that no earlier leader ordered never are (their
/// transactions go back to their proposer's mempool and are proposed again). A protocol constant:
/// every node must use the same value to commit the same sequence. It is also what lets a node keep
/// only the last `GC_DEPTH` rounds of the DAG in memory.
pub const GC_DEPTH: u64 = 50;

/// Orders the causal history of committed leaders, each block once, down to the [`GC_DEPTH`] horizon.
#[derive(Debug, Default)]
pub struct Linearizer {
    /// Blocks ordered, with their rounds (to forget those below the memory floor).
    ordered: HashMap<Cid, u64>,
}

impl Linearizer {
    /// Resumes with the blocks a stored sequence of commits ordered, from the memory floor up,
    /// each with its round or one above it (its commit's leader round).
    pub fn resume(ordered: impl IntoIterator<Item = (Cid, u64)>) -> Linearizer {
        Linearizer {
            ordered: ordered.into_iter().collect(),
        }
    }

    /// The blocks in `leader`'s causal history from round `leader round - GC_DEPTH` up, not ordered
    /// before, in (round, author, CID) order, the leader last. Iterative: a history of any depth costs
    /// no stack.
    pub fn linearize(&mut self, dag: &Dag, leader: &Cid) -> Vec<Cid> {
        let horizon = dag
            .get(leader)
            .map_or(0, |b| b.round().saturating_sub(GC_DEPTH));
        let (mut stack, mut batch) = (vec![*leader], Vec::new());
        while let Some(cid) = stack.pop() {
            if self.ordered.contains_key(&cid) {
                continue;
            }
            let Some(block) = dag.get(&cid).filter(|b| b.round() >= horizon) else {
                continue;
            };
            self.ordered.insert(cid, block.round());
            stack.extend(
                block
                    .parents()
                    .iter()
                    .filter(|p| !self.ordered.contains_key(*p)),
            );
            batch.push((block.round(), block.author(), cid.to_bytes(), cid));
        }
        batch.sort_unstable();
        batch.into_iter().map(|(.., cid)| cid).collect()
    }

    /// The blocks ordered so far that it remembers, each with its round.
    pub fn ordered(&self) -> Vec<(Cid, u64)> {
        let mut ordered: Vec<(Cid, u64)> = self.ordered.iter().map(|(c, r)| (*c, *r)).collect();
        ordered.sort_unstable_by_key(|(cid, round)| (*round, cid.to_bytes()));
        ordered
    }

    /// Forgets the blocks below `round`: no later leader reaches them.
    pub fn prune_below(&mut self, round: u64) {
        self.ordered.retain(|_, r| *r >= round);
    }
}

#[cfg(test)]
mod tests;
