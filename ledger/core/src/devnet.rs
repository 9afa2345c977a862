//! Deterministic keys and genesis for development networks, simulations and tests: every key is
//! derived from a public seed, so anyone can sign for these accounts. Never hold value with them.

use sha2::{Digest, Sha256};

use crate::{Allocation, Genesis, Keypair, Validator};

/// What a devnet key is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Signs blocks.
    Validator,
    /// Holds a balance and signs transactions.
    Account,
}

/// Key `index` of `role` under `seed`: the ed25519 secret is sha256("{seed}/{role}/{index}").
pub fn key(seed: u64, role: Role, index: usize) -> Keypair {
    let role = match role {
        Role::Validator => "validator",
        Role::Account => "account",
    };
    let digest = Sha256::digest(format!("{seed}/{role}/{index}"));
    Keypair::from_secret(digest.into())
}

/// A genesis with `validators` equal-weight validators and `accounts` accounts holding `balance`
/// each, all keyed from `seed`.
pub fn genesis(
    chain_id: &str,
    seed: u64,
    validators: usize,
    accounts: usize,
    balance: u64,
) -> Genesis {
    Genesis {
        chain_id: chain_id.into(),
        validators: (0..validators)
            .map(|i| Validator {
                key: key(seed, Role::Validator, i).public(),
                weight: 1,
            })
            .collect(),
        balances: (0..accounts)
            .map(|i| Allocation {
                account: key(seed, Role::Account, i).public(),
                balance,
            })
            .collect(),
    }
}
