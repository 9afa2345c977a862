//! Account state invariants under random transaction streams.

use ledger_core::{Outcome, State, Transaction};
use proptest::prelude::*;

mod support;

prop_compose! {
    fn transfers()(steps in proptest::collection::vec((0..5usize, 0..6usize, 0..400_000u64, 0..3u64), 1..200)) -> Vec<Transaction> {
        let mut nonces = [0u64; 5];
        steps.into_iter().map(|(from, to, amount, skew)| {
            // Mostly the right nonce; sometimes a replay or a gap.
            let nonce = match skew { 0 => nonces[from].saturating_sub(1), 1 => nonces[from] + 1, _ => nonces[from] };
            if skew == 2 { nonces[from] += 1; }
            Transaction::Transfer { from: support::account(from), to: support::account(to), amount, nonce }
        }).collect()
    }
}

proptest! {
    #[test]
    fn supply_is_constant_and_nothing_is_spent_twice(txs in transfers()) {
        let genesis = support::genesis(1, 5);
        let mut state = State::genesis(&genesis);
        let supply = state.supply();
        for tx in &txs {
            let before = state.clone();
            let outcome = state.apply(tx);
            prop_assert_eq!(state.supply(), supply);
            let Transaction::Transfer { from, to, amount, nonce } = tx else { unreachable!() };
            match outcome {
                Outcome::Applied => {
                    prop_assert_eq!(before.account(from).nonce, *nonce);
                    prop_assert_eq!(state.account(from).nonce, nonce + 1);
                    if from != to {
                        prop_assert_eq!(state.account(from).balance, before.account(from).balance - amount);
                        prop_assert_eq!(state.account(to).balance, before.account(to).balance + amount);
                    }
                }
                _ => prop_assert_eq!(&state, &before, "an invalid transaction changed the state"),
            }
            // A replay of anything applied is refused.
            if outcome == Outcome::Applied {
                let mut replayed = state.clone();
                let refused = matches!(replayed.apply(tx), Outcome::BadNonce { .. });
                prop_assert!(refused);
            }
        }
    }

    #[test]
    fn equal_states_have_equal_roots(txs in transfers()) {
        let genesis = support::genesis(1, 5);
        let (mut a, mut b) = (State::genesis(&genesis), State::genesis(&genesis));
        for tx in &txs {
            a.apply(tx);
            b.apply(tx);
        }
        prop_assert_eq!(a.root(), b.root());
    }
}
