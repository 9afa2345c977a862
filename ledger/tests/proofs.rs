//! A light client's view of the ledger: an account, or its absence, proven at a certified
//! checkpoint and checked against the genesis alone, before and after the node restarts from its
//! stored state.

use std::time::Duration;

use comms::conformance::eventually;
use ledger::{
    checkpoint::{verify_certificate, CHECKPOINT_INTERVAL},
    devnet::{self, Role},
    verify_account, Account, Committee, ProvenAccount, PublicKey,
};
use scenario::Network;

async fn proven(network: &Network, validator: usize, key: PublicKey) -> Option<ProvenAccount> {
    let node = network.node(validator).expect("running");
    node.proven_account(key).await.expect("running")
}

/// Waits until `validator` proves `key` at a certified checkpoint; returns the proof.
async fn certified(network: &Network, validator: usize, key: PublicKey) -> ProvenAccount {
    eventually(
        Duration::from_secs(120),
        "a checkpoint is certified",
        || async { proven(network, validator, key).await.is_some() },
    )
    .await;
    proven(network, validator, key).await.expect("certified")
}

/// Checks `proven` against the network's genesis alone: the certificate's checkpoint must be the
/// one it names, and the state blocks must show the account it names. Returns that account.
fn check(network: &Network, key: &PublicKey, proven: &ProvenAccount) -> Option<Account> {
    let (chain, committee) = (network.chain(), Committee::new(network.genesis()));
    let checkpoint = verify_certificate(&proven.certificate, &chain, &committee)
        .expect("certifies")
        .checkpoint;
    assert_eq!(checkpoint, proven.checkpoint);
    assert!(checkpoint.height >= CHECKPOINT_INTERVAL);
    let shown = verify_account(&checkpoint.state_root, key, &proven.proof).expect("proves");
    assert_eq!(shown, proven.account);
    shown
}

#[tokio::test(start_paused = true)]
async fn accounts_are_proven_at_a_certified_checkpoint_against_the_genesis_alone() {
    let network = Network::builder()
        .validators(4)
        .accounts(8, 1_000_000)
        .stores([0])
        .start()
        .await
        .expect("the network starts");
    let mut accounts = network.accounts(8);
    for k in 0..(4 * CHECKPOINT_INTERVAL as usize) {
        let (from, node) = (k % 8, network.node(k % 4).expect("running").clone());
        let tx = accounts.transfer(from, (from + 3) % 8, 1 + k as u64);
        let _ = accounts.submit(&node, from, tx).await.expect("running");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let key = devnet::key(network.seed(), Role::Account, 3).public();
    let proven = certified(&network, 0, key).await;
    let shown = check(&network, &key, &proven);
    assert!(
        shown.is_some_and(|account| account.balance != 1_000_000),
        "transfers reached it"
    );

    // Every validator committed that root at that height.
    let checkpoint = proven.checkpoint;
    let finished = network.finish().await.expect("a complete run");
    for (i, history) in finished.commits().iter().enumerate() {
        let at = history.iter().find(|c| c.height == checkpoint.height);
        assert_eq!(
            at.map(|c| c.state_root),
            Some(checkpoint.state_root),
            "validator {i}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn an_absent_account_is_proven_absent_and_a_restarted_node_proves_again() {
    let mut network = Network::builder()
        .validators(4)
        .accounts(4, 1_000)
        .stores([1])
        .start()
        .await
        .expect("the network starts");
    let stranger = devnet::key(99, Role::Account, 0).public();
    let before = certified(&network, 1, stranger).await;
    assert_eq!(check(&network, &stranger, &before), None);

    network.crash(1).await.expect("crashes");
    network.restart(1).await.expect("restarts");
    let after = certified(&network, 1, stranger).await;
    assert!(after.checkpoint.height >= before.checkpoint.height);
    assert_eq!(check(&network, &stranger, &after), None);
    network.finish().await.expect("a complete run");
}
