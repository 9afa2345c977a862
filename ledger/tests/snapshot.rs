//! Joining by snapshot, in the simulator: a node that starts late with nothing learns a checkpoint
//! a quorum certified, fetches its state by CID and only the last rounds of the DAG, commits on in
//! agreement with the validators, and restarts from what it stored. One validator withholds: it
//! serves nothing to a fetch and sends half of its blocks to nobody; another prunes its store (in
//! memory) to the least retention.

use std::{sync::Arc, time::Duration};

use comms::conformance::eventually;
use ledger::{
    checkpoint::CHECKPOINT_INTERVAL, consensus::GC_DEPTH, MemoryStore, NodeHandle, Status, Store,
};
use scenario::{byzantine::Behaviour, CommitLog, Network};

const HONEST: usize = 3;
const VALIDATORS: usize = HONEST + 1;
const ROUNDS: u64 = 6 * GC_DEPTH;
const TRANSFERS: u64 = 10;

async fn status(node: &NodeHandle) -> Status {
    node.status().await.expect("running")
}

fn node(network: &Network, i: usize) -> NodeHandle {
    network.node(i).expect("running").clone()
}

/// Starts an observer on the network's spare peer `k`, joining by snapshot, over `store`.
async fn joiner(network: &Network, k: usize, store: &MemoryStore) -> NodeHandle {
    let config = ledger::NodeConfig {
        snapshot_sync: true,
        ..Network::test_config()
    };
    let peer = network.peer(VALIDATORS + k);
    let store: Arc<dyn Store> = Arc::new(store.clone());
    ledger::spawn(network.genesis(), None, config, peer, Some(store))
        .await
        .expect("starts")
}

#[tokio::test(start_paused = true)]
async fn a_late_node_joins_by_snapshot_commits_in_agreement_and_restarts_from_its_store() {
    let network = Network::builder()
        .tests(34)
        .validators(VALIDATORS)
        .byzantine(vec![Behaviour::Withhold])
        .observers(1)
        .node_config(ledger::NodeConfig {
            retention_rounds: ledger::MIN_RETENTION,
            ..Network::test_config()
        })
        .stores([1])
        .start()
        .await
        .expect("the network starts");
    let mut accounts = network.accounts(2);
    for _ in 0..TRANSFERS {
        let tx = accounts.transfer(0, 1, 1);
        let taken = accounts.submit(&node(&network, 0), 0, tx).await;
        taken.expect("running").expect("accepted");
    }
    eventually(Duration::from_secs(900), "the rounds are made", || async {
        status(&node(&network, 0)).await.highest_round >= ROUNDS
    })
    .await;
    let history = status(&node(&network, 0)).await;
    let pruning = status(&node(&network, 1)).await;
    assert!(
        pruning.pruned_below + ledger::MIN_RETENTION + 2 * ledger::PRUNE_EVERY
            >= pruning.highest_round,
        "validator 1 pruned below {} at round {}",
        pruning.pruned_below,
        pruning.highest_round
    );

    let store = MemoryStore::default();
    let joined = joiner(&network, 0, &store).await;
    let log = CommitLog::open(&joined).await.expect("running");
    assert!(status(&joined).await.joining, "it starts by joining");
    eventually(Duration::from_secs(300), "the late node joins", || async {
        let status = status(&joined).await;
        !status.joining && status.height > history.height
    })
    .await;
    let status = status(&joined).await;
    let at = (status.stats.joined_at_height).expect("joined by snapshot");
    assert!(
        at >= history.height.saturating_sub(4 * CHECKPOINT_INTERVAL)
            && at % CHECKPOINT_INTERVAL == 0,
        "joined at {at}, the network at {}",
        history.height
    );
    assert!(status.stats.snapshot_blocks > 0, "{:?}", status.stats);
    // What it took of the DAG: the rounds from the checkpoint leader's floor up, not the history.
    let taken = status.stats.new_blocks_by_broadcast + status.stats.new_blocks_by_fetch;
    assert!(
        taken <= (GC_DEPTH + 40) * VALIDATORS as u64 && taken * 3 < history.stats.accepted,
        "took {taken} blocks; a validator accepted {}",
        history.stats.accepted
    );
    assert_eq!(
        node(&network, 0)
            .account(accounts.key(1))
            .await
            .expect("running"),
        joined.account(accounts.key(1)).await.expect("running"),
    );

    // It restarts from its store: from the base and the commits after it, not by joining again.
    let before = status.height;
    joined.shutdown().await.expect("stops");
    let commits = log.commits().await.expect("a complete log");
    let restarted = joiner(&network, 0, &store).await;
    let log_after = CommitLog::open(&restarted).await.expect("running");
    let resumed = self::status(&restarted).await;
    assert!(!resumed.joining && resumed.height >= before, "{resumed:?}");
    let target = self::status(&node(&network, 0)).await.height;
    eventually(
        Duration::from_secs(300),
        "the restarted node commits on",
        || async { self::status(&restarted).await.height > target },
    )
    .await;
    restarted.shutdown().await.expect("stops");
    let commits_after = log_after.commits().await.expect("a complete log");

    let finished = network.finish().await.expect("a complete run");
    let reference = &finished.commits()[0];
    assert!(commits.first().is_some_and(|c| c.height == at + 1));
    for commit in commits.iter().chain(&commits_after) {
        assert_eq!(
            reference.get(commit.height as usize - 1),
            Some(commit),
            "commit {} differs",
            commit.height
        );
    }
    assert!(commits_after.last().is_some_and(|c| c.height > target));
}
