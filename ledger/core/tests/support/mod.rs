//! Keys and genesis for the core's tests, from the devnet's deterministic keys.
#![allow(dead_code)]

use ledger_core::{
    devnet::{self, Role},
    Genesis, Keypair, PublicKey,
};

/// The seed of the tests' devnet keys.
const SEED: u64 = 7;

/// Validator `i`'s key (fixed, so runs are reproducible).
pub fn validator_key(i: usize) -> Keypair {
    devnet::key(SEED, Role::Validator, i)
}

/// Account `i`'s key.
pub fn account_key(i: usize) -> Keypair {
    devnet::key(SEED, Role::Account, i)
}

/// The public key of account `i`.
pub fn account(i: usize) -> PublicKey {
    account_key(i).public()
}

/// `validators` equal-weight validators and `accounts` accounts holding 1,000,000 each.
pub fn genesis(validators: usize, accounts: usize) -> Genesis {
    devnet::genesis("test", SEED, validators, accounts, 1_000_000)
}
