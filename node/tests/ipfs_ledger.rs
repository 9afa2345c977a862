//! End to end over real IPFS: four validators, each on its own kubo daemon (pubsub carries the
//! blocks, bitswap serves what a validator missed), commit transfers and agree on every state root.

use std::{collections::BTreeMap, time::Duration};

use comms::conformance::eventually;
use comms_ipfs::{testnet, IpfsComms, IpfsConfig};
use ledger::{
    devnet::{self, Role},
    NodeConfig, NodeHandle, SignedTransaction, Transaction,
};
use tokio::time::Instant;

const VALIDATORS: usize = 4;
const TRANSFERS_PER_ACCOUNT: u64 = 3;
const BOUND: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_validators_on_four_ipfs_daemons_commit_and_agree() {
    let daemons = testnet::start_daemons(VALIDATORS);
    let genesis = devnet::genesis("ipfs-end-to-end", 7, VALIDATORS, VALIDATORS, 1_000_000);
    let chain = genesis.encode().1;
    let mut nodes = Vec::new();
    let mut collectors = Vec::new();
    for (i, daemon) in daemons.iter().enumerate() {
        let config = IpfsConfig {
            api: daemon.api(),
            peers: daemons[..i]
                .iter()
                .map(testnet::Daemon::swarm_address)
                .collect(),
            ..IpfsConfig::default()
        };
        let comms = IpfsComms::connect(config)
            .await
            .expect("connect to the daemon");
        let key = Some(devnet::key(7, Role::Validator, i));
        let node = ledger::spawn(&genesis, key, NodeConfig::default(), comms, None)
            .await
            .expect("the validator starts");
        collectors.push(node.commit_log().await.expect("running"));
        nodes.push(node);
    }

    // Account i sends to account i+1 through validator i (one validator per account keeps nonces in order).
    for nonce in 0..TRANSFERS_PER_ACCOUNT {
        for (i, node) in nodes.iter().enumerate() {
            let transfer = Transaction::Transfer {
                from: devnet::key(7, Role::Account, i).public(),
                to: devnet::key(7, Role::Account, (i + 1) % VALIDATORS).public(),
                amount: 10 * (i as u64 + 1),
                nonce,
            };
            let signed =
                SignedTransaction::sign(&chain, transfer, &devnet::key(7, Role::Account, i));
            node.submit(signed)
                .await
                .expect("running")
                .expect("accepted");
        }
    }

    let started = Instant::now();
    let committed = tokio::time::timeout(
        BOUND,
        eventually(BOUND, "every transfer committed on every node", || {
            all_applied(&nodes)
        }),
    );
    if committed.await.is_err() {
        for node in &nodes {
            eprintln!("{:?}", node.status().await);
        }
        panic!("transfers not committed everywhere within {BOUND:?}: statuses above");
    }
    eprintln!(
        "all transfers committed everywhere after {:?}",
        started.elapsed()
    );
    // Account i sent 3 × 10(i+1) and received 3 × 10 i from account i-1 (account 0 from the last).
    for node in &nodes {
        for i in 0..VALIDATORS {
            let account = node
                .account(devnet::key(7, Role::Account, i).public())
                .await
                .expect("running");
            let received = 10 * ((i + VALIDATORS - 1) % VALIDATORS + 1) as u64;
            let sent = 10 * (i as u64 + 1);
            assert_eq!(
                account.balance,
                1_000_000 + TRANSFERS_PER_ACCOUNT * received - TRANSFERS_PER_ACCOUNT * sent
            );
        }
    }
    for node in &nodes {
        node.shutdown().await.expect("running");
    }

    let mut roots: BTreeMap<u64, [u8; 32]> = BTreeMap::new();
    for collector in collectors {
        for commit in collector.commits().await.expect("a complete commit log") {
            let root = *roots.entry(commit.height).or_insert(commit.state_root);
            assert_eq!(
                root, commit.state_root,
                "state roots differ at height {}",
                commit.height
            );
        }
    }
    assert!(roots.len() >= 3, "only {} heights committed", roots.len());
}

/// Whether every node has applied every transfer (each account's nonce is at its last one).
async fn all_applied(nodes: &[NodeHandle]) -> bool {
    for node in nodes {
        for i in 0..VALIDATORS {
            let account = node
                .account(devnet::key(7, Role::Account, i).public())
                .await;
            if account.map_or(true, |account| account.nonce < TRANSFERS_PER_ACCOUNT) {
                return false;
            }
        }
    }
    true
}
