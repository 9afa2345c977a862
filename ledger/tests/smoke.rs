//! Four honest validators on a clean network commit, agree, and apply transfers: inline and in
//! batch blocks, with a validator lagging behind, and at the pace the work sets.

use std::time::Duration;

use ledger::{NodeConfig, NodeHandle};
use scenario::{Accounts, Network};
use sim::LinkModel;

/// Four validators and two accounts of 1,000,000, with `config`, on the simulator's seed `seed`
/// (overridable by the environment); the accounts to sign with.
async fn network(seed: u64, config: NodeConfig) -> (Network, Accounts) {
    let network = Network::builder()
        .tests(seed)
        .node_config(config)
        .start()
        .await
        .expect("the network starts");
    let accounts = network.accounts(2);
    (network, accounts)
}

fn node(network: &Network, i: usize) -> NodeHandle {
    network.node(i).expect("running").clone()
}

/// Submits `count` transfers of `amount` from account 0 to account 1 through validator `via`
/// (one validator for one account's transactions: several would commit them in any order).
async fn send(network: &Network, accounts: &mut Accounts, via: usize, count: u64, amount: u64) {
    for _ in 0..count {
        let tx = accounts.transfer(0, 1, amount);
        let taken = accounts.submit(&node(network, via), 0, tx).await;
        taken.expect("running").expect("accepted");
    }
}

async fn balance(node: &NodeHandle, key: ledger::PublicKey) -> ledger::Account {
    node.account(key).await.expect("running")
}

#[tokio::test(start_paused = true)]
async fn four_honest_validators_commit_a_transfer() {
    let (network, mut accounts) = network(1, Network::test_config()).await;
    send(&network, &mut accounts, 2, 1, 250).await;
    let wall = std::time::Instant::now();
    tokio::time::sleep(Duration::from_secs(5)).await;
    for i in 0..4 {
        let node = node(&network, i);
        let status = node.status().await.expect("running");
        // Idle, rounds are a second apart (`idle_block_interval`): still a commit about each.
        assert!(
            status.height >= 3,
            "only {} commits in 5 simulated seconds",
            status.height
        );
        assert_eq!(balance(&node, accounts.key(1)).await.balance, 1_000_250);
        assert_eq!(balance(&node, accounts.key(0)).await.nonce, 1);
    }
    eprintln!(
        "5 simulated seconds of 4 validators in {:?} of wall time",
        wall.elapsed()
    );
}

#[tokio::test(start_paused = true)]
async fn transactions_in_separate_batch_blocks_commit() {
    let mut config = Network::test_config();
    // Every non-empty payload goes into a separate batch block, fetched by the other validators.
    config.core.inline_bytes = 0;
    let (network, mut accounts) = network(2, config).await;
    send(&network, &mut accounts, 1, 3, 100).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    for i in 0..4 {
        let node = node(&network, i);
        let status = node.status().await.expect("running");
        assert!(
            status.stats.rejected.is_empty(),
            "{:?}",
            status.stats.rejected
        );
        assert_eq!(balance(&node, accounts.key(1)).await.balance, 1_000_300);
    }
}

/// A validator cut off long enough that its blocks reach the others only after they moved on,
/// and that then jumps to the others' round, keeps its transactions in nonce order: its next
/// block links its own previous one, so the blocks nobody else referenced commit first.
#[tokio::test(start_paused = true)]
async fn a_lagging_validator_keeps_its_transactions_in_order() {
    let (network, mut accounts) = network(3, Network::test_config()).await;
    let slow = LinkModel {
        latency: sim::Latency::Constant {
            value: Duration::from_millis(1500),
        },
        ..LinkModel::default()
    };
    let set_links = |link: LinkModel| {
        let sim = network.sim();
        async move {
            for other in 1..4 {
                sim.set_link(0, other, link).await.expect("sim");
                sim.set_link(other, 0, link).await.expect("sim");
            }
        }
    };
    tokio::time::sleep(Duration::from_secs(1)).await;
    set_links(slow).await;
    // Two transactions in two of validator 0's blocks while the others move on without them.
    send(&network, &mut accounts, 0, 1, 100).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    send(&network, &mut accounts, 0, 1, 100).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    set_links(LinkModel::default()).await;
    // The third rides in a block that the others reference at once.
    tokio::time::sleep(Duration::from_millis(600)).await;
    send(&network, &mut accounts, 0, 1, 100).await;

    comms::conformance::eventually(
        Duration::from_secs(30),
        "validator 0's three transfers applied everywhere",
        || async {
            for i in 0..4 {
                if balance(&node(&network, i), accounts.key(0)).await.nonce < 3 {
                    return false;
                }
            }
            true
        },
    )
    .await;
    for i in 0..4 {
        let node = node(&network, i);
        let status = node.status().await.expect("running");
        let account = balance(&node, accounts.key(1)).await;
        assert_eq!(account.balance, 1_000_300, "{status:?}");
    }
}

/// Idle, the validators propose at `idle_block_interval`; a submitted transaction ends the wait,
/// rounds then go as fast as the links deliver quorums until it is ordered, and the network slows
/// down again afterwards.
#[tokio::test(start_paused = true)]
async fn rounds_are_fast_with_work_and_slow_when_idle() {
    let (network, mut accounts) = network(4, Network::test_config()).await;
    let idle = Network::test_config().core.idle_block_interval;
    let round = |i: usize| {
        let node = node(&network, i);
        async move { node.status().await.expect("running").highest_round }
    };
    tokio::time::sleep(idle * 10).await;
    let idle_rounds = round(0).await;
    assert!(
        (8..=12).contains(&idle_rounds),
        "{idle_rounds} rounds in 10 idle intervals"
    );

    let mut commits = node(&network, 3).commits().await.expect("running");
    let tx = accounts.transfer(0, 1, 1);
    let id = (accounts.submit(&node(&network, 1), 0, tx).await)
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

    let before = round(0).await;
    tokio::time::sleep(idle * 10).await;
    let after = round(0).await;
    assert!(
        after - before <= 12,
        "{} rounds in 10 idle intervals after the commit",
        after - before
    );
}
