//! A light client's view of the ledger: an account, or its absence, proven at a certified
//! checkpoint and checked against the genesis alone, before and after the node restarts from its
//! stored state.

use std::time::Duration;

use comms::conformance::eventually;
use ledger::{
    checkpoint::{verify_certificate, CHECKPOINT_INTERVAL},
    devnet::{self, Role},
    verify_account, Committee, ProvenAccount, PublicKey,
};
use scenario::{Accounts, Network};

async fn proven(network: &Network, validator: usize, key: PublicKey) -> Option<ProvenAccount> {
    let node = network.node(validator).expect("running");
    node.proven_account(key).await.expect("running")
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
    let mut accounts = Accounts::new(network.chain(), network.seed(), 8);
    for k in 0..(4 * CHECKPOINT_INTERVAL as usize) {
        let (from, node) = (k % 8, network.node(k % 4).expect("running").clone());
        let tx = accounts.transfer(from, (from + 3) % 8, 1 + k as u64);
        let _ = accounts.submit(&node, from, tx).await.expect("running");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let key = devnet::key(network.seed(), Role::Account, 3).public();
    eventually(
        Duration::from_secs(60),
        "a checkpoint is certified",
        || async { proven(&network, 0, key).await.is_some() },
    )
    .await;
    let proven = proven(&network, 0, key).await.expect("certified");
    let (chain, committee) = (network.chain(), Committee::new(network.genesis()));
    let checkpoint =
        verify_certificate(&proven.certificate, &chain, &committee).expect("certifies");
    assert_eq!(checkpoint, proven.checkpoint);
    assert!(checkpoint.height >= CHECKPOINT_INTERVAL);
    let shown = verify_account(&checkpoint.state_root, &key, &proven.proof).expect("proves");
    assert_eq!(shown, proven.account);
    assert!(
        shown.is_some_and(|account| account.balance != 1_000_000),
        "transfers reached it"
    );

    // Every validator committed that root at that height.
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
    eventually(
        Duration::from_secs(120),
        "a checkpoint is certified",
        || async { proven(&network, 1, stranger).await.is_some() },
    )
    .await;
    let before = proven(&network, 1, stranger).await.expect("certified");
    assert_eq!(before.account, None);
    let checkpoint = before.checkpoint;
    assert_eq!(
        verify_account(&checkpoint.state_root, &stranger, &before.proof),
        Ok(None)
    );

    network.crash(1).await.expect("crashes");
    network.restart(1).await.expect("restarts");
    eventually(
        Duration::from_secs(120),
        "certified again after the restart",
        || async { proven(&network, 1, stranger).await.is_some() },
    )
    .await;
    let after = proven(&network, 1, stranger).await.expect("certified");
    assert!(after.checkpoint.height >= checkpoint.height);
    let (chain, committee) = (network.chain(), Committee::new(network.genesis()));
    assert_eq!(
        verify_certificate(&after.certificate, &chain, &committee).ok(),
        Some(after.checkpoint)
    );
    assert_eq!(
        verify_account(&after.checkpoint.state_root, &stranger, &after.proof),
        Ok(None)
    );
    network.finish().await.expect("a complete run");
}
