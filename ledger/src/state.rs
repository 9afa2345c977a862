//! Account state: balances and nonces, changed only by committed transactions.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::{codec::encode, crypto::PublicKey, types::Genesis, types::Transaction};

/// One account.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Account {
    /// Its balance.
    pub balance: u64,
    /// Transactions it signed that took effect; the next one must carry this nonce.
    pub nonce: u64,
}

/// What a committed transaction did. Invalid ones are ordered but change nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// It took effect.
    Applied,
    /// Its nonce was not the signer's next one (a replay, or out of order).
    BadNonce { expected: u64, got: u64 },
    /// The sender's balance was lower than the amount.
    InsufficientFunds { balance: u64, amount: u64 },
}

/// All accounts. The total of the balances never changes.
#[derive(Clone, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct State {
    accounts: BTreeMap<PublicKey, Account>,
}

impl State {
    /// The state at genesis.
    pub fn genesis(genesis: &Genesis) -> State {
        let accounts = genesis
            .balances
            .iter()
            .map(|a| {
                (
                    a.account,
                    Account {
                        balance: a.balance,
                        nonce: 0,
                    },
                )
            })
            .collect();
        State { accounts }
    }

    /// An account (all zero if never seen).
    pub fn account(&self, key: &PublicKey) -> Account {
        self.accounts.get(key).copied().unwrap_or_default()
    }

    /// Applies a transaction whose signature was verified.
    pub fn apply(&mut self, tx: &Transaction) -> Outcome {
        let signer = self.account(tx.signer());
        if tx.nonce() != signer.nonce {
            return Outcome::BadNonce {
                expected: signer.nonce,
                got: tx.nonce(),
            };
        }
        if let Transaction::Transfer {
            from, to, amount, ..
        } = tx
        {
            if signer.balance < *amount {
                return Outcome::InsufficientFunds {
                    balance: signer.balance,
                    amount: *amount,
                };
            }
            self.accounts.entry(*from).or_default().balance -= amount;
            // Cannot overflow: the total of all balances is a u64 and does not change.
            self.accounts.entry(*to).or_default().balance += amount;
        }
        self.accounts.entry(*tx.signer()).or_default().nonce += 1;
        Outcome::Applied
    }

    /// The sum of all balances (the total supply).
    pub fn supply(&self) -> u128 {
        self.accounts.values().map(|a| a.balance as u128).sum()
    }

    /// A hash of every account, in key order: equal roots mean equal states.
    pub fn root(&self) -> [u8; 32] {
        Sha256::digest(encode(&self.accounts.iter().collect::<Vec<_>>())).into()
    }

    /// Number of accounts.
    pub fn len(&self) -> usize {
        self.accounts.len()
    }

    /// Whether there are no accounts.
    pub fn is_empty(&self) -> bool {
        self.accounts.is_empty()
    }
}
