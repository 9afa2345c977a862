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
        // Idle, rounds are a second apart (`idle_block_interval`): still a commit about each.
        assert!(
            status.height >= 3,
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

/// A validator cut off long enough that its blocks reach the others only after they moved on,
/// and that then jumps to the others' round, keeps its transactions in nonce order: its next
/// block links its own previous one, so the blocks nobody else referenced commit first.
#[tokio::test(start_paused = true)]
async fn a_lagging_validator_keeps_its_transactions_in_order() {
    let genesis = common::genesis(4, 2);
    let chain = genesis.encode().1;
    let (sim, peers) = common::network(4, 3, LinkModel::default());
    let mut nodes = Vec::new();
    for (i, peer) in peers.into_iter().enumerate() {
        nodes.push(common::start_validator(&genesis, i, peer, None).await);
    }
    let slow = LinkModel {
        latency: sim::Latency::Constant {
            value: Duration::from_millis(1500),
        },
        ..LinkModel::default()
    };
    let set_links = |link: LinkModel| {
        let sim = &sim;
        async move {
            for other in 1..4 {
                sim.set_link(0, other, link).await.expect("sim");
                sim.set_link(other, 0, link).await.expect("sim");
            }
        }
    };
    let submit = |nonce: u64| {
        let tx = Transaction::Transfer {
            from: common::account(0),
            to: common::account(1),
            amount: 100,
            nonce,
        };
        let signed = SignedTransaction::sign(&chain, tx, &common::account_key(0));
        let node = &nodes[0];
        async move {
            node.submit(signed)
                .await
                .expect("running")
                .expect("accepted");
        }
    };
    tokio::time::sleep(Duration::from_secs(1)).await;
    set_links(slow).await;
    // Two transactions in two of validator 0's blocks while the others move on without them.
    submit(0).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    submit(1).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    set_links(LinkModel::default()).await;
    // The third rides in a block that the others reference at once.
    tokio::time::sleep(Duration::from_millis(600)).await;
    submit(2).await;

    comms::conformance::eventually(
        Duration::from_secs(30),
        "validator 0's three transfers applied everywhere",
        || async {
            for node in &nodes {
                if node
                    .account(common::account(0))
                    .await
                    .expect("running")
                    .nonce
                    < 3
                {
                    return false;
                }
            }
            true
        },
    )
    .await;
    for node in &nodes {
        let status = node.status().await.expect("running");
        let account = node.account(common::account(1)).await.expect("running");
        assert_eq!(account.balance, 1_000_300, "{status:?}");
    }
}

/// Idle, the validators propose at `idle_block_interval`; a submitted transaction ends the wait,
/// rounds then go as fast as the links deliver quorums until it is ordered, and the network slows
/// down again afterwards.
#[tokio::test(start_paused = true)]
async fn rounds_are_fast_with_work_and_slow_when_idle() {
    let genesis = common::genesis(4, 2);
    let chain = genesis.encode().1;
    let (_sim, peers) = common::network(4, 4, LinkModel::default());
    let mut nodes = Vec::new();
    for (i, peer) in peers.into_iter().enumerate() {
        nodes.push(common::start_validator(&genesis, i, peer, None).await);
    }
    let idle = common::node_config().core.idle_block_interval;
    let round = |node: &ledger::NodeHandle| {
        let node = node.clone();
        async move { node.status().await.expect("running").highest_round }
    };
    tokio::time::sleep(idle * 10).await;
    let idle_rounds = round(&nodes[0]).await;
    assert!(
        (8..=12).contains(&idle_rounds),
        "{idle_rounds} rounds in 10 idle intervals"
    );

    let mut commits = nodes[3].commits().await.expect("running");
    let tx = Transaction::Transfer {
        from: common::account(0),
        to: common::account(1),
        amount: 1,
        nonce: 0,
    };
    let id = nodes[1]
        .submit(SignedTransaction::sign(&chain, tx, &common::account_key(0)))
        .await
        .expect("running")
        .expect("accepted");
    let submitted = tokio::time::Instant::now();
    let committed = tokio::time::timeout(idle, async {
        loop {
            let commit = commits.recv().await.expect("commits");
            if commit.transactions.iter().any(|(t, _)| *t == id) {
                return commit;
            }
        }
    })
    .await
    .expect("committed at another validator within one idle interval");
    let busy_rounds = committed.round + 1 - idle_rounds;
    eprintln!(
        "committed at validator 3 after {:?} and {busy_rounds} rounds",
        submitted.elapsed()
    );

    let before = round(&nodes[0]).await;
    tokio::time::sleep(idle * 10).await;
    let after = round(&nodes[0]).await;
    assert!(
        after - before <= 12,
        "{} rounds in 10 idle intervals after the commit",
        after - before
    );
}
