//! Account state invariants under random transaction streams.

use std::collections::HashMap;

use comms::Cid;
use ledger_core::{
    prove_stored_account, tree::TreeError, verify_account, Outcome, SignedTransaction, State,
    Transaction,
};
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
    fn equal_states_have_equal_roots(txs in transfers(), flush_every in 1..20usize) {
        let genesis = support::genesis(1, 5);
        let (mut a, mut b) = (State::genesis(&genesis), State::genesis(&genesis));
        let (start, mut blocks) = (a.root(), Vec::new());
        let mut applied = false;
        for (n, tx) in txs.iter().enumerate() {
            applied |= a.apply(tx) == Outcome::Applied;
            b.apply(tx);
            if n % flush_every == 0 {
                b.flush(&mut blocks);
            }
        }
        let root = a.flush(&mut Vec::new());
        prop_assert_eq!(b.flush(&mut blocks), root);
        prop_assert_eq!(root != start, applied, "a root changes exactly when the state does");
    }

    /// A state, waiting transactions included, reads back from the blocks its flushes handed out,
    /// and proves each account against its root alone.
    #[test]
    fn a_state_reads_back_from_its_blocks_and_proves_its_accounts(
        steps in proptest::collection::vec((0..4usize, 0..6usize, 1..1_000u64, 0..4u64), 1..60),
        per_commit in 1..8usize,
    ) {
        let genesis = support::genesis(1, 5);
        let mut state = State::genesis(&genesis);
        let mut nonces = [0u64; 4];
        let txs: Vec<SignedTransaction> = steps.into_iter().map(|(from, to, amount, skew)| {
            // Some ahead of their turn, so that they wait.
            let nonce = nonces[from] + skew / 3;
            nonces[from] += 1;
            let tx = Transaction::Transfer { from: support::account(from), to: support::account(to), amount, nonce };
            SignedTransaction::sign(&genesis.encode().1, tx, &support::account_key(from))
        }).collect();
        let mut blocks = Vec::new();
        for (height, commit) in txs.chunks(per_commit).enumerate() {
            state.execute(height as u64 + 1, commit);
            state.flush(&mut blocks);
        }
        let stored: HashMap<Cid, Vec<u8>> = blocks.into_iter().map(|(cid, b)| (cid, b.to_vec())).collect();
        let loaded = State::load(&state.root(), &mut |cid: &Cid| Ok::<_, TreeError>(stored.get(cid).cloned()))
            .expect("every block was handed out");
        prop_assert_eq!(&loaded, &state);
        for i in 0..7 {
            let key = support::account(i);
            let proof = state.prove(&key).expect("flushed");
            let read = &mut |cid: &Cid| Ok::<_, TreeError>(stored.get(cid).cloned());
            let from_store = prove_stored_account(&state.root(), &key, read).expect("stored");
            prop_assert_eq!(&from_store, &proof, "the same proof, read from the store");
            let proven = verify_account(&state.root(), &key, &proof).expect("verifies");
            prop_assert_eq!(proven.unwrap_or_default(), state.account(&key));
            prop_assert!(i < 6 || proven.is_none(), "account 6 never appears, and is proven absent");
        }
    }
}

#[test]
fn a_tampered_or_foreign_account_proof_fails() {
    let genesis = support::genesis(1, 5);
    let mut state = State::genesis(&genesis);
    let root = state.flush(&mut Vec::new());
    let key = support::account(2);
    let proof = state.prove(&key).expect("flushed");
    assert_eq!(
        verify_account(&root, &key, &proof),
        Ok(Some(state.account(&key)))
    );
    let mut tampered = proof.clone();
    let mut bytes = tampered[1].to_vec();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    tampered[1] = bytes.into();
    assert!(matches!(
        verify_account(&root, &key, &tampered),
        Err(TreeError::CidMismatch { .. })
    ));
    let mut other = State::genesis(&support::genesis(1, 6));
    let other_root = other.flush(&mut Vec::new());
    assert!(matches!(
        verify_account(&other_root, &key, &proof),
        Err(TreeError::CidMismatch { .. })
    ));
    assert_eq!(
        verify_account(&root, &key, &[]),
        Err(TreeError::ProofTooShort)
    );
}
