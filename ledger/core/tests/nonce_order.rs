//! Transactions of one signer ordered out of nonce order wait for the ones before them, in any
//! arrival order, and a gap that never fills expires with `NonceGap`.

use ledger_core::{state::WAIT_COMMITS, Outcome, SignedTransaction, State, Transaction};
use proptest::prelude::*;

mod support;

fn transfers(count: u64) -> (ledger_core::Genesis, Vec<SignedTransaction>) {
    let genesis = support::genesis(1, 2);
    let chain = genesis.encode().1;
    let key = support::account_key(0);
    let txs = (0..count)
        .map(|nonce| {
            let tx = Transaction::Transfer {
                from: support::account(0),
                to: support::account(1),
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
        prop_assert_eq!(state.account(&support::account(0)).nonce, 64);
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
