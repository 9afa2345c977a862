//! The validator set, its stake thresholds and the leader schedule.

use crate::{crypto::PublicKey, types::Genesis};

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

    /// The leader of `round`: round-robin over the validators.
    pub fn leader(&self, round: u64) -> u32 {
        (round % self.keys.len() as u64) as u32
    }
}
