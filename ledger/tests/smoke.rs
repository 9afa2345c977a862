//! Four honest validators on a clean network commit, agree, and apply a transfer.

use std::time::Duration;

use ledger::{SignedTransaction, Transaction};
use sim::LinkModel;

mod common;

#[tokio::test(start_paused = true)]
async fn four_honest_validators_commit_a_transfer() {
    let genesis = common::genesis(4, 2);
    let chain = genesis.encode().1;
    let (_sim, peers) = common::network(4, 1, LinkModel::default());
    let mut nodes = Vec::new();
    for (i, peer) in peers.into_iter().enumerate() {
        nodes.push(common::start_validator(&genesis, i, peer, None).await);
    }
    let tx = Transaction::Transfer {
        from: common::account(0),
        to: common::account(1),
        amount: 250,
        nonce: 0,
    };
    nodes[2]
        .submit(SignedTransaction::sign(&chain, tx, &common::account_key(0)))
        .await
        .expect("running")
        .expect("accepted");
    let wall = std::time::Instant::now();
    tokio::time::sleep(Duration::from_secs(5)).await;
    for node in &nodes {
        let status = node.status().await.expect("running");
        assert!(
            status.height >= 10,
            "only {} commits in 5 simulated seconds",
            status.height
        );
        assert_eq!(
            node.account(common::account(1))
                .await
                .expect("running")
                .balance,
            1_000_250
        );
        assert_eq!(
            node.account(common::account(0))
                .await
                .expect("running")
                .nonce,
            1
        );
    }
    eprintln!(
        "5 simulated seconds of 4 validators in {:?} of wall time",
        wall.elapsed()
    );
}

#[tokio::test(start_paused = true)]
async fn transactions_in_separate_batch_blocks_commit() {
    let genesis = common::genesis(4, 2);
    let chain = genesis.encode().1;
    let (_sim, peers) = common::network(4, 2, LinkModel::default());
    let mut config = common::node_config();
    // Every non-empty payload goes into a separate batch block, fetched by the other validators.
    config.core.inline_bytes = 0;
    let mut nodes = Vec::new();
    for (i, peer) in peers.into_iter().enumerate() {
        let key = Some(common::validator_key(i));
        nodes.push(
            ledger::spawn(&genesis, key, config.clone(), peer, None)
                .await
                .expect("starts"),
        );
    }
    for nonce in 0..3 {
        let tx = Transaction::Transfer {
            from: common::account(0),
            to: common::account(1),
            amount: 100,
            nonce,
        };
        let signed = SignedTransaction::sign(&chain, tx, &common::account_key(0));
        // One validator for one account's transactions: several would commit them in any order.
        nodes[1]
            .submit(signed)
            .await
            .expect("running")
            .expect("accepted");
    }
    tokio::time::sleep(Duration::from_secs(5)).await;
    for node in &nodes {
        let status = node.status().await.expect("running");
        assert!(
            status.stats.rejected.is_empty(),
            "{:?}",
            status.stats.rejected
        );
        assert_eq!(
            node.account(common::account(1))
                .await
                .expect("running")
                .balance,
            1_000_300
        );
    }
}
