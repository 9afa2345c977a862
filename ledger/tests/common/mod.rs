//! Keys, genesis and simulated networks of ledger nodes for the tests.
#![allow(dead_code)]

use std::time::Duration;

use ledger::{
    devnet::{self, Role},
    Genesis, Keypair, NodeConfig, NodeHandle, PublicKey,
};
use sim::{Sim, SimPeer};

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

/// `validators` equal-weight validators and `accounts` accounts holding 1,000,000 each.
pub fn genesis(validators: usize, accounts: usize) -> Genesis {
    devnet::genesis("test", SEED, validators, accounts, 1_000_000)
}

/// The node config of simulated tests: fixed timestamps, short timeouts.
pub fn node_config() -> NodeConfig {
    NodeConfig {
        epoch_ms: Some(0),
        fetch_timeout: Duration::from_secs(2),
        ..NodeConfig::default()
    }
}

/// Starts validator `i` of `genesis` on `peer`, with storage in `dir` if given.
pub async fn start_validator(
    genesis: &Genesis,
    i: usize,
    peer: SimPeer,
    dir: Option<&std::path::Path>,
) -> NodeHandle {
    let storage = dir.map(|d| {
        ledger_rocksdb::Storage::open(d)
            .expect("open storage")
            .into_store()
    });
    ledger::spawn(
        genesis,
        Some(validator_key(i)),
        node_config(),
        peer,
        storage,
    )
    .await
    .expect("node starts")
}

/// A simulated network of `n` peers with the seed from the environment (default `seed`).
pub fn network(n: usize, seed: u64, link: sim::LinkModel) -> (Sim, Vec<SimPeer>) {
    Sim::builder()
        .seed(sim::seed_from_env(seed))
        .link(link)
        .peers(n)
        .build()
}

/// The public key of account `i`.
pub fn account(i: usize) -> PublicKey {
    account_key(i).public()
}
