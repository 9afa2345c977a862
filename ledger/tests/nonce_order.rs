//! Transactions of one signer ordered out of nonce order wait for the ones before them, in any
//! arrival order, and a gap that never fills expires with `NonceGap`.

use std::time::Duration;

use ledger::{state::WAIT_COMMITS, Outcome, SignedTransaction, State, Transaction};
use proptest::prelude::*;
use sim::LinkModel;

mod common;

fn transfers(count: u64) -> (ledger::Genesis, Vec<SignedTransaction>) {
    let genesis = common::genesis(1, 2);
    let chain = genesis.encode().1;
    let key = common::account_key(0);
    let txs = (0..count)
        .map(|nonce| {
            let tx = Transaction::Transfer {
                from: common::account(0),
                to: common::account(1),
                amount: 1,
                nonce,
            };
            SignedTransaction::sign(&chain, tx, &key)
        })
        .collect();
    (genesis, txs)
}

proptest! {
    /// However a contiguous run is split into commits and ordered, every transaction applies once.
    #[test]
    fn any_order_applies_all(order in Just((0..64usize).collect::<Vec<_>>()).prop_shuffle(), cuts in proptest::collection::vec(0..64usize, 0..6)) {
        let (genesis, txs) = transfers(64);
        let mut state = State::genesis(&genesis);
        let mut bounds: Vec<usize> = cuts;
        bounds.push(0);
        bounds.push(64);
        bounds.sort_unstable();
        let mut applied = 0;
        for (height, pair) in bounds.windows(2).enumerate() {
            let ordered = order[pair[0]..pair[1]].iter().map(|i| &txs[*i]);
            let executed = state.execute(height as u64 + 1, ordered);
            for (_, outcome) in &executed.transactions {
                prop_assert_eq!(*outcome, Outcome::Applied);
                applied += 1;
            }
        }
        prop_assert_eq!(applied, 64);
        prop_assert_eq!(state.account(&common::account(0)).nonce, 64);
        prop_assert_eq!(state.waiting(), 0);
    }
}

#[test]
fn a_gap_that_never_fills_expires() {
    let (genesis, txs) = transfers(3);
    let mut state = State::genesis(&genesis);
    let executed = state.execute(1, [&txs[0], &txs[2]]);
    assert_eq!(executed.transactions, vec![(txs[0].id(), Outcome::Applied)]);
    assert_eq!(executed.waiting, vec![txs[2].id()]);
    assert!(state.is_waiting(&txs[2].id()));
    for height in 2..=WAIT_COMMITS {
        assert!(state.execute(height, []).transactions.is_empty());
    }
    let executed = state.execute(WAIT_COMMITS + 1, []);
    let gap = Outcome::NonceGap {
        expected: 1,
        got: 2,
    };
    assert_eq!(executed.transactions, vec![(txs[2].id(), gap)]);
    assert_eq!(state.waiting(), 0);
}

/// A Fisher-Yates shuffle driven by splitmix64 from `seed`.
fn shuffle<T>(items: &mut [T], mut seed: u64) {
    let mut next = move || {
        seed = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = seed;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    };
    for i in (1..items.len()).rev() {
        items.swap(i, (next() % (i as u64 + 1)) as usize);
    }
}

/// 1,000 transfers from 4 accounts, submitted in shuffled order and spread over the 4 validators:
/// every one applies, once, at every validator.
#[tokio::test(start_paused = true)]
async fn a_shuffled_burst_over_all_validators_applies_in_full() {
    const ACCOUNTS: usize = 4;
    const PER_ACCOUNT: u64 = 250;
    let genesis = common::genesis(4, ACCOUNTS);
    let chain = genesis.encode().1;
    let seed = sim::seed_from_env(12);
    let (_sim, peers) = common::network(4, seed, LinkModel::default());
    let mut nodes = Vec::new();
    for (i, peer) in peers.into_iter().enumerate() {
        nodes.push(common::start_validator(&genesis, i, peer, None).await);
    }
    let mut txs: Vec<SignedTransaction> = (0..ACCOUNTS)
        .flat_map(|a| {
            let key = common::account_key(a);
            (0..PER_ACCOUNT).map(move |nonce| {
                let tx = Transaction::Transfer {
                    from: common::account(a),
                    to: common::account((a + 1) % ACCOUNTS),
                    amount: 1,
                    nonce,
                };
                SignedTransaction::sign(&chain, tx, &key)
            })
        })
        .collect();
    shuffle(&mut txs, seed);
    let mut commits = nodes[0].commits().await.expect("running");
    for (i, tx) in txs.into_iter().enumerate() {
        nodes[i % nodes.len()]
            .submit(tx)
            .await
            .expect("running")
            .expect("accepted");
    }

    comms::conformance::eventually(
        Duration::from_secs(60),
        "every transfer applied at every validator",
        || async {
            for node in &nodes {
                for a in 0..ACCOUNTS {
                    let account = node.account(common::account(a)).await.expect("running");
                    if account.nonce < PER_ACCOUNT {
                        return false;
                    }
                }
            }
            true
        },
    )
    .await;
    let mut outcomes = std::collections::BTreeMap::<String, usize>::new();
    while let Ok(commit) = commits.try_recv() {
        for (_, outcome) in &commit.transactions {
            *outcomes.entry(format!("{outcome:?}")).or_default() += 1;
        }
    }
    assert_eq!(
        outcomes,
        [("Applied".to_string(), ACCOUNTS * PER_ACCOUNT as usize)].into(),
        "outcomes at validator 0"
    );
    for node in &nodes {
        let status = node.status().await.expect("running");
        assert_eq!(status.mempool, 0, "nothing left waiting");
        for a in 0..ACCOUNTS {
            let account = node.account(common::account(a)).await.expect("running");
            assert_eq!(
                account.balance, 1_000_000,
                "each account sent and received 250"
            );
        }
    }
}
