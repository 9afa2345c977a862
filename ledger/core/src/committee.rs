//! The validator set, its stake thresholds and the leader schedule.

use crate::{crypto::PublicKey, types::Genesis};

/// Leader slots per round (at most): a protocol constant, the same at every node. With more than
/// one, a block of each of several validators can commit directly, in about three message delays,
/// rather than only one per round with the others ordered a round later (Mysticeti's multi-leader
/// rule). Slots commit in order, so a slot left undecided (its block reached too few validators in
/// time) holds back the ones after it until an anchor decides it, and each slot costs deciding
/// work. Measured trade-off in `ledger/DESIGN.md` ("Several leaders per round").
pub const LEADERS_PER_ROUND: u64 = 2;

/// The validators of a chain, by index, with their weights.
#[derive(Clone, Debug)]
pub struct Committee {
    keys: Vec<PublicKey>,
    weights: Vec<u64>,
    total: u64,
}

impl Committee {
    /// The committee of a (checked) genesis.
    pub fn new(genesis: &Genesis) -> Committee {
        let keys = genesis.validators.iter().map(|v| v.key).collect();
        let weights: Vec<u64> = genesis.validators.iter().map(|v| v.weight).collect();
        let total = weights.iter().sum();
        Committee {
            keys,
            weights,
            total,
        }
    }

    /// Number of validators.
    pub fn size(&self) -> usize {
        self.keys.len()
    }

    /// The key of validator `author`, if there is one.
    pub fn key(&self, author: u32) -> Option<&PublicKey> {
        self.keys.get(author as usize)
    }

    /// The index of the validator with `key`.
    pub fn index_of(&self, key: &PublicKey) -> Option<u32> {
        self.keys.iter().position(|k| k == key).map(|i| i as u32)
    }

    /// The weight of validator `author` (0 for an unknown one).
    pub fn weight(&self, author: u32) -> u64 {
        self.weights.get(author as usize).copied().unwrap_or(0)
    }

    /// The smallest stake that any two quorums share more than `f` of: `2W/3 + 1`. With at most
    /// `f < W/3` faulty stake, two quorums always share an honest validator.
    pub fn quorum(&self) -> u64 {
        2 * self.total / 3 + 1
    }

    /// The combined weight of a set of distinct authors.
    pub fn stake(&self, authors: impl IntoIterator<Item = u32>) -> u64 {
        authors.into_iter().map(|a| self.weight(a)).sum()
    }

    /// The first leader of `round`, whose block proposers wait for: round-robin over the validators.
    pub fn leader(&self, round: u64) -> u32 {
        (round % self.keys.len() as u64) as u32
    }

    /// Leader slots per round: [`LEADERS_PER_ROUND`], or every validator in a smaller committee.
    pub fn leaders_per_round(&self) -> u64 {
        LEADERS_PER_ROUND.min(self.keys.len() as u64)
    }

    /// Whether `author` holds one of `round`'s leader slots.
    pub fn leads(&self, round: u64, author: u32) -> bool {
        let per_round = self.leaders_per_round();
        (0..per_round).any(|k| self.slot(round * per_round + k).1 == author)
    }

    /// The round and the leader of slot number `slot`: slots are numbered round by round, and the
    /// `k`-th slot of round `r` belongs to validator `r + k` (mod n), so slot 0 of a round is
    /// [`Committee::leader`].
    pub fn slot(&self, slot: u64) -> (u64, u32) {
        let per_round = self.leaders_per_round();
        let (round, k) = (slot / per_round, slot % per_round);
        (round, ((round + k) % self.keys.len() as u64) as u32)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    #[test]
    fn a_rounds_slots_name_distinct_leaders_the_first_being_the_rounds_leader_and_leads_agrees() {
        for validators in [1, 3, 4, 7, 10] {
            let committee = Committee::new(&crate::devnet::genesis("t", 1, validators, 0, 0));
            let per_round = committee.leaders_per_round();
            assert_eq!(per_round, LEADERS_PER_ROUND.min(validators as u64));
            for round in 0..3 * validators as u64 {
                let slots = (0..per_round).map(|k| committee.slot(round * per_round + k));
                let leaders: Vec<u32> = slots
                    .map(|(r, leader)| {
                        assert_eq!(r, round);
                        leader
                    })
                    .collect();
                assert_eq!(leaders[0], committee.leader(round));
                let distinct: BTreeSet<u32> = leaders.iter().copied().collect();
                assert_eq!(
                    distinct.len() as u64,
                    per_round,
                    "{validators}: {leaders:?}"
                );
                for author in 0..validators as u32 {
                    assert_eq!(
                        committee.leads(round, author),
                        leaders.contains(&author),
                        "{validators} validators, round {round}, author {author}"
                    );
                }
            }
        }
    }
}
