//! The ordering rule on hand-made DAGs of four equal validators (quorum 3), two leader slots a
//! round: slot `2r` is validator `r % 4`'s, slot `2r + 1` validator `(r + 1) % 4`'s.

use std::sync::Arc;

use super::*;
use crate::dag_builder::DagBuilder;

const ALL: [u32; 4] = [0, 1, 2, 3];

/// An empty DAG of four validators.
fn four() -> DagBuilder {
    let dag = DagBuilder::new(4);
    assert_eq!(
        dag.committee.leaders_per_round(),
        2,
        "these DAGs are drawn for two slots a round"
    );
    dag
}

fn decide(dag: &DagBuilder, committer: &mut Committer) -> Vec<(u64, Option<Cid>)> {
    committer.try_decide(&dag.dag, &dag.committee)
}

/// The decisions every slot of `rounds` gets in a DAG where each of them commits.
fn commits(dag: &DagBuilder, rounds: std::ops::RangeInclusive<u64>) -> Vec<(u64, Option<Cid>)> {
    let per_round = dag.committee.leaders_per_round();
    let slots = rounds.start() * per_round..(rounds.end() + 1) * per_round;
    slots
        .map(|slot| {
            let (round, leader) = dag.committee.slot(slot);
            (round, Some(dag.cid(round, leader)))
        })
        .collect()
}

#[test]
fn a_leader_certified_by_a_quorum_two_rounds_up_commits_directly() {
    let mut dag = four();
    let mut committer = Committer::default();
    dag.full(0..=1);
    assert_eq!(
        decide(&dag, &mut committer),
        vec![],
        "no round 2 to certify in"
    );
    dag.full(2..=2);
    assert_eq!(
        direct(&dag.dag, &dag.committee, 0, 0),
        Decision::Commit(dag.cid(0, 0))
    );
    assert_eq!(decide(&dag, &mut committer), commits(&dag, 0..=0));
    assert_eq!(committer.next_slot(), 2);
    assert_eq!(decide(&dag, &mut committer), vec![], "decided once");
}

#[test]
fn a_leader_that_a_quorum_of_the_next_round_leaves_out_is_skipped_directly() {
    let mut dag = four();
    dag.full(0..=0);
    dag.round(1, &[0], &ALL);
    dag.round(1, &[1, 2, 3], &[1, 2, 3]);
    dag.full(2..=2);
    let mut committer = Committer::default();
    assert_eq!(
        decide(&dag, &mut committer),
        vec![(0, None), (0, Some(dag.cid(0, 1)))]
    );
}

/// Round 0's first leader (validator 0) gets the votes of 0, 1 and 2 but only validator 0's
/// block at round 2 certifies it: neither a direct commit nor a direct skip.
fn certified_by_one(dag: &mut DagBuilder) {
    dag.full(0..=0);
    dag.round(1, &[0, 1, 2], &ALL);
    dag.round(1, &[3], &[1, 2, 3]);
    dag.round(2, &[0], &[0, 1, 2]);
    dag.round(2, &[1, 2, 3], &[1, 2, 3]);
    assert_eq!(direct(&dag.dag, &dag.committee, 0, 0), Decision::Undecided);
}

#[test]
fn an_undecided_leader_commits_through_an_anchor_whose_history_certifies_it() {
    let mut dag = four();
    let mut committer = Committer::default();
    certified_by_one(&mut dag);
    dag.full(3..=4);
    assert_eq!(
        decide(&dag, &mut committer),
        vec![],
        "the anchor (round 3) is not decided yet, so neither is slot 0 nor any after it"
    );
    dag.full(5..=5);
    assert_eq!(decide(&dag, &mut committer), commits(&dag, 0..=3));
}

#[test]
fn an_undecided_leader_no_block_can_certify_is_skipped_through_an_anchor() {
    let mut dag = four();
    dag.full(0..=0);
    // Two votes: too few to certify, too many to skip directly.
    dag.round(1, &[0, 1], &ALL);
    dag.round(1, &[2, 3], &[1, 2, 3]);
    dag.full(2..=5);
    assert_eq!(direct(&dag.dag, &dag.committee, 0, 0), Decision::Undecided);
    let mut expected = commits(&dag, 0..=3);
    expected[0] = (0, None);
    assert_eq!(decide(&dag, &mut Committer::default()), expected);
}

#[test]
fn an_undecided_anchor_holds_the_slot_until_it_is_decided_and_a_skipped_one_passes_it_on() {
    let mut dag = four();
    let mut committer = Committer::default();
    certified_by_one(&mut dag);
    dag.full(3..=3);
    // Round 3's first leader (validator 3, the anchor of slot 0) gets two votes.
    dag.round(4, &[2, 3], &ALL);
    dag.round(4, &[0, 1], &[0, 1, 2]);
    dag.full(5..=5);
    assert_eq!(direct(&dag.dag, &dag.committee, 3, 3), Decision::Undecided);
    assert_eq!(decide(&dag, &mut committer), vec![]);
    assert_eq!(committer.next_slot(), 0);

    // Round 6's anchor skips slot 6; slot 0 then takes slot 7 (validator 0 at round 3) as its
    // anchor, whose history certifies it.
    dag.full(6..=8);
    let decided = decide(&dag, &mut committer);
    let mut expected = commits(&dag, 0..=6);
    expected[6] = (3, None);
    assert_eq!(decided, expected);
}

/// Validator 0 signs two blocks for round 0, `a` and `b`; at round 1 the validators in `for_a` link
/// `a`, the others `b`. Returns the DAG and the two blocks.
fn equivocation(for_a: &[u32]) -> (DagBuilder, Cid, Cid) {
    let mut dag = four();
    dag.round(0, &[1, 2, 3], &[]);
    let (a, b) = (dag.add(0, 0, 0, vec![]), dag.add(0, 0, 1, vec![]));
    let others = dag.cids(0, &[1, 2, 3]);
    for author in ALL {
        let version = if for_a.contains(&author) { a } else { b };
        dag.add(1, author, 0, [others.clone(), vec![version]].concat());
    }
    (dag, a, b)
}

#[test]
fn of_an_equivocating_leaders_two_blocks_only_the_certified_one_commits() {
    let (mut dag, a, _) = equivocation(&[0, 1, 2]);
    dag.full(2..=2);
    let decided = decide(&dag, &mut Committer::default());
    assert_eq!(decided[0], (0, Some(a)));
}

#[test]
fn an_equivocating_leader_whose_votes_split_is_skipped_and_neither_block_commits() {
    let (mut dag, _, _) = equivocation(&[0, 1]);
    dag.full(2..=5);
    assert_eq!(direct(&dag.dag, &dag.committee, 0, 0), Decision::Undecided);
    let decided = decide(&dag, &mut Committer::default());
    assert_eq!(decided.len(), 8);
    assert_eq!(decided[0], (0, None));
}

/// Validators 0, 1 and 2 in every round up to `top`; validator 3 at rounds 0 and 1, then only at
/// `top`, linking its own block of round 1 across the gap; and validator 0's leader at
/// `top + 1` over all of round `top`. Returns the leader and validator 3's round-1 block.
fn gap_of_validator_3(top: u64) -> (DagBuilder, Cid, Cid) {
    let mut dag = four();
    dag.full(0..=1);
    for round in 2..=top {
        dag.round(round, &[0, 1, 2], &[0, 1, 2]);
    }
    let own = dag.cid(1, 3);
    dag.add(
        top,
        3,
        0,
        [dag.cids(top - 1, &[0, 1, 2]), vec![own]].concat(),
    );
    let leader = dag.add(top + 1, 0, 0, dag.cids(top, &ALL));
    (dag, leader, own)
}

#[test]
fn a_leader_orders_its_history_down_to_gc_depth_rounds_below_it_once_in_round_author_order() {
    // The leader is at GC_DEPTH + 1: round 1 is the last it orders.
    let (dag, leader, own) = gap_of_validator_3(GC_DEPTH);
    let mut linearizer = Linearizer::default();
    let ordered = linearizer.linearize(&dag.dag, &leader);
    assert!(ordered.contains(&own));
    let rounds: Vec<(u64, u32)> = ordered
        .iter()
        .map(|cid| {
            let block = &dag.dag.get(cid).unwrap();
            (block.round(), block.author())
        })
        .collect();
    assert_eq!(
        rounds.first(),
        Some(&(1, 0)),
        "round 0 is below the horizon"
    );
    assert_eq!(ordered.last(), Some(&leader));
    assert!(rounds.windows(2).all(|w| w[0] < w[1]), "{rounds:?}");
    // Rounds 1..=GC_DEPTH of three validators, validator 3's two blocks and the leader.
    assert_eq!(ordered.len() as u64, 3 * GC_DEPTH + 3);
    assert_eq!(linearizer.linearize(&dag.dag, &leader), vec![], "once");

    // One round higher, validator 3's round-1 block is below the horizon: never ordered.
    let (dag, leader, own) = gap_of_validator_3(GC_DEPTH + 1);
    let ordered = Linearizer::default().linearize(&dag.dag, &leader);
    assert!(!ordered.contains(&own));
    assert!(ordered.contains(&dag.cid(GC_DEPTH + 1, 3)));
}

/// A deterministic stream of random numbers (splitmix64), so that a case is its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..bound`.
    fn below(&mut self, bound: usize) -> usize {
        (self.next() % bound as u64) as usize
    }

    /// At least `at_least` of `items` (all of them half the time), in random order.
    fn some<T: Copy>(&mut self, items: &[T], at_least: usize) -> Vec<T> {
        let mut items = items.to_vec();
        for i in (1..items.len()).rev() {
            items.swap(i, self.below(i + 1));
        }
        let extra = items.len() - at_least;
        let keep = match self.below(2) {
            0 => items.len(),
            _ => at_least + self.below(extra + 1),
        };
        items.truncate(keep);
        items
    }
}

/// A random DAG of `n` validators over `rounds` rounds: in each round a random quorum or more of
/// the validators has a block, each linking one block of each of a random quorum or more of the
/// round before. With `equivocator`, the last validator signs a second block, with other parents,
/// in about half its rounds.
fn random_dag(n: usize, rounds: u64, equivocator: bool, rng: &mut Rng) -> DagBuilder {
    let mut dag = DagBuilder::new(n);
    let quorum = dag.committee.quorum() as usize;
    let all = dag.all();
    for round in 0..rounds {
        let before: Vec<(u32, Cid)> = match round {
            0 => Vec::new(),
            _ => dag
                .dag
                .round(round - 1)
                .map(|b| (b.author(), b.cid))
                .collect(),
        };
        let mut authors_before: Vec<u32> = before.iter().map(|(a, _)| *a).collect();
        authors_before.dedup();
        let mut blocks = rng.some(&all, quorum);
        if equivocator && blocks.contains(&(n as u32 - 1)) && rng.below(2) == 0 {
            blocks.push(n as u32 - 1);
        }
        for (i, author) in blocks.iter().enumerate() {
            let version = blocks[..i].iter().filter(|a| *a == author).count() as u64;
            let parents = rng
                .some(&authors_before, quorum.min(authors_before.len()))
                .into_iter()
                .map(|linked| {
                    let versions: Vec<Cid> = before
                        .iter()
                        .filter(|(a, _)| *a == linked)
                        .map(|(_, c)| *c)
                        .collect();
                    versions[rng.below(versions.len())]
                })
                .collect();
            dag.add(round, *author, version, parents);
        }
    }
    dag
}

/// The blocks of `dag` in an order a node could accept them (each after its parents), chosen at
/// random, cut after a random number of them (at least half).
fn a_view(dag: &DagBuilder, rng: &mut Rng) -> Vec<Arc<AcceptedBlock>> {
    let mut left: Vec<Arc<AcceptedBlock>> = (0..=dag.dag.highest_round())
        .flat_map(|r| dag.dag.round(r).cloned().collect::<Vec<_>>())
        .collect();
    let keep = left.len() / 2 + rng.below(left.len() / 2 + 1);
    let (mut order, mut seen) = (Vec::new(), HashSet::new());
    while order.len() < keep {
        let ready: Vec<usize> = (0..left.len())
            .filter(|i| left[*i].parents().iter().all(|p| seen.contains(p)))
            .collect();
        let block = left.remove(ready[rng.below(ready.len())]);
        seen.insert(block.cid);
        order.push(block);
    }
    order
}

/// A node's decisions, slot by slot, and the blocks it ordered.
type Replayed = (Vec<(u64, Option<Cid>)>, Vec<Cid>);

/// What a node accepting `blocks` in this order decides, slot by slot, and the blocks it orders.
fn replay(committee: &Committee, blocks: &[Arc<AcceptedBlock>]) -> Replayed {
    let (mut dag, mut committer, mut linearizer) =
        (Dag::default(), Committer::default(), Linearizer::default());
    let (mut decided, mut ordered) = (Vec::new(), Vec::new());
    for block in blocks {
        dag.insert(block.clone());
        for (round, leader) in committer.try_decide(&dag, committee) {
            if let Some(leader) = leader {
                ordered.extend(linearizer.linearize(&dag, &leader));
            }
            decided.push((round, leader));
        }
    }
    (decided, ordered)
}

/// Whether one of `a` and `b` is a prefix of the other.
fn prefixes<T: PartialEq>(a: &[T], b: &[T]) -> bool {
    let common = a.len().min(b.len());
    a[..common] == b[..common]
}

/// Two nodes that saw different parts of one random DAG, in different orders.
fn two_views(n: usize, rounds: u64, equivocator: bool, seed: u64) -> [Replayed; 2] {
    let mut rng = Rng(seed);
    let dag = random_dag(n, rounds, equivocator, &mut rng);
    [a_view(&dag, &mut rng), a_view(&dag, &mut rng)].map(|view| replay(&dag.committee, &view))
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(96))]

    #[test]
    fn nodes_that_see_different_parts_of_one_dag_never_decide_a_slot_differently(
        n in proptest::sample::select(vec![4usize, 5, 7]),
        rounds in 6u64..16,
        equivocator: bool,
        seed: u64,
    ) {
        let [(decided_a, ordered_a), (decided_b, ordered_b)] = two_views(n, rounds, equivocator, seed);
        proptest::prop_assert!(prefixes(&decided_a, &decided_b), "{decided_a:?}\n{decided_b:?}");
        proptest::prop_assert!(prefixes(&ordered_a, &ordered_b));
    }
}

#[test]
fn the_random_dags_commit_skip_and_split_views_so_the_property_is_not_vacuous() {
    let (mut commits, mut skips, mut uneven) = (0, 0, 0);
    for seed in 0..48 {
        let [(a, _), (b, _)] = two_views(4 + (seed % 4) as usize, 12, seed % 2 == 0, seed);
        commits += a.iter().filter(|(_, leader)| leader.is_some()).count();
        skips += a.iter().filter(|(_, leader)| leader.is_none()).count();
        uneven += usize::from(a.len() != b.len());
    }
    assert!(
        commits > 100 && skips > 10 && uneven > 10,
        "{commits} {skips} {uneven}"
    );
}
