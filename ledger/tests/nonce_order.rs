//! A burst of one signer's transactions submitted out of nonce order, spread over the
//! validators, applies in full (the execution rules are tested in `ledger-core`'s
//! `tests/nonce_order.rs`).

use std::time::Duration;

use ledger::{
    devnet::{self, Role},
    NodeHandle, SignedTransaction, Transaction,
};
use scenario::{Accounts, Network};

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
    let seed = sim::seed_from_env(12);
    let network = Network::builder()
        .seed(seed)
        .accounts(ACCOUNTS, 1_000_000)
        .start()
        .await
        .expect("the network starts");
    let nodes: Vec<NodeHandle> = (0..4)
        .map(|i| network.node(i).expect("running").clone())
        .collect();
    let (chain, keys) = (
        network.chain(),
        Accounts::new(network.chain(), seed, ACCOUNTS),
    );
    let mut txs: Vec<SignedTransaction> = (0..ACCOUNTS)
        .flat_map(|a| {
            let key = devnet::key(seed, Role::Account, a);
            let to = keys.key((a + 1) % ACCOUNTS);
            (0..PER_ACCOUNT).map(move |nonce| {
                let tx = Transaction::Transfer {
                    from: key.public(),
                    to,
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
                    let account = node.account(keys.key(a)).await.expect("running");
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
            let account = node.account(keys.key(a)).await.expect("running");
            assert_eq!(
                account.balance, 1_000_000,
                "each account sent and received 250"
            );
        }
    }
}
