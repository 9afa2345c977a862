//! The ordering rule: which leader blocks commit, and the order of everything they reference.
//!
//! Every round `r` has a leader slot (the block of `committee.leader(r)` at round `r`). Over an
//! uncertified DAG (a Byzantine author may sign two blocks for one slot):
//! - a block at `r+1` **votes** for a leader block `A` if `A` is one of its parents;
//! - a block at `r+2` **certifies** `A` if the authors of its parents that vote for `A` hold a quorum;
//! - **direct commit**: blocks at `r+2` from a quorum of authors certify `A`;
//! - **direct skip**: a quorum of authors at `r+1` has no block voting for any block of the slot;
//! - otherwise the slot waits for an **anchor**: the first slot at round `r+3` or later that is not
//!   skipped. If it is undecided, so is this slot; if it commits block `X`, this slot commits `A` when
//!   `X`'s causal history holds a block certifying `A`, and is skipped when it holds none.
//!
//! Decided slots commit in round order, up to the first undecided one. Safety rests on quorum
//! intersection: two quorums share an honest author, which signs one block per round, so two versions
//! of a slot can never both be certified, nor one certified and skipped; and once a quorum certifies
//! `A`, every block from round `r+3` on has a certifier of `A` in its history, so every anchor sees it.
//! See DESIGN.md for the full argument.

use std::collections::{HashMap, HashSet};

use comms::Cid;

use crate::{committee::Committee, dag::Dag};

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
}

impl Committer {
    /// Resumes after `decided_slots` slots were decided (from storage).
    pub fn resume(decided_slots: u64) -> Committer {
        Committer {
            next_slot: decided_slots,
        }
    }

    /// The first undecided slot.
    pub fn next_slot(&self) -> u64 {
        self.next_slot
    }

    /// The slots newly decided, in order: `(round, Some(leader))` commits, `(round, None)` skips.
    pub fn try_decide(&mut self, dag: &Dag, committee: &Committee) -> Vec<(u64, Option<Cid>)> {
        let top = dag.highest_round();
        if top < self.next_slot + 2 {
            return Vec::new();
        }
        let first = self.next_slot;
        let mut decisions = vec![Decision::Undecided; (top - 1 - first) as usize];
        for round in (first..top - 1).rev() {
            let mut decision = direct(dag, committee, round);
            if decision == Decision::Undecided {
                decision = indirect(
                    dag,
                    committee,
                    round,
                    &decisions[(round - first) as usize + 1..],
                );
            }
            decisions[(round - first) as usize] = decision;
        }
        let decided: Vec<_> = decisions
            .iter()
            .take_while(|d| **d != Decision::Undecided)
            .collect();
        self.next_slot += decided.len() as u64;
        decided
            .into_iter()
            .enumerate()
            .map(|(i, d)| {
                (
                    first + i as u64,
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

fn votes(dag: &Dag, voter: &Cid, leader: &Cid) -> bool {
    dag.get(voter).is_some_and(|b| b.parents().contains(leader))
}

/// Whether block `certifier` certifies `leader`: a quorum of its parents vote for it.
fn certifies(dag: &Dag, committee: &Committee, certifier: &Cid, leader: &Cid) -> bool {
    let Some(block) = dag.get(certifier) else {
        return false;
    };
    let voters = block
        .parents()
        .iter()
        .filter(|p| votes(dag, p, leader))
        .filter_map(|p| dag.get(p))
        .map(|p| p.author());
    committee.stake(voters) >= committee.quorum()
}

/// The stake of the distinct authors of `round` with a block satisfying `test`.
pub(crate) fn stake_where(
    dag: &Dag,
    committee: &Committee,
    round: u64,
    test: impl Fn(&Cid) -> bool,
) -> u64 {
    let mut authors: Vec<u32> = dag
        .round(round)
        .filter(|b| test(&b.cid))
        .map(|b| b.author())
        .collect();
    authors.dedup();
    committee.stake(authors)
}

fn direct(dag: &Dag, committee: &Committee, round: u64) -> Decision {
    let leaders: Vec<Cid> = dag
        .slot(round, committee.leader(round))
        .map(|b| b.cid)
        .collect();
    for leader in &leaders {
        if stake_where(dag, committee, round + 2, |c| {
            certifies(dag, committee, c, leader)
        }) >= committee.quorum()
        {
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

/// Decides slot `round` from the first non-skipped later slot at least three rounds up, given the
/// decisions of the slots after it (`later[0]` is slot `round + 1`).
fn indirect(dag: &Dag, committee: &Committee, round: u64, later: &[Decision]) -> Decision {
    let anchor = later.iter().skip(2).find(|d| **d != Decision::Skip);
    let Some(Decision::Commit(anchor)) = anchor else {
        return Decision::Undecided;
    };
    let certifiers = history_at(dag, anchor, round + 2);
    let leaders = dag.slot(round, committee.leader(round)).map(|b| b.cid);
    for leader in leaders.collect::<Vec<_>>() {
        if certifiers
            .iter()
            .any(|c| certifies(dag, committee, c, &leader))
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

    /// Forgets the blocks below `round`: no later leader reaches them.
    pub fn prune_below(&mut self, round: u64) {
        self.ordered.retain(|_, r| *r >= round);
    }
}
