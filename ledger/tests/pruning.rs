//! Pruning with a retention: a validator on RocksDB keeps only the last `retention_rounds` rounds of
//! its history (blocks, commits, transaction records) and the state blocks the states of those
//! commits reach, no other; it restarts from its pruned store and commits on in agreement; and a
//! node that starts late joins the pruning network by snapshot.

use std::{collections::HashSet, sync::Arc, time::Duration};

use comms::{conformance::eventually, Cid};
use ledger::{NodeConfig, NodeHandle, Status, Store, MIN_RETENTION, PRUNE_EVERY};
use ledger_rocksdb::Storage;
use scenario::Network;

const VALIDATORS: usize = 4;
const RETENTION: u64 = MIN_RETENTION;
const ROUNDS: u64 = 6 * RETENTION;

async fn status(node: &NodeHandle) -> Status {
    node.status().await.expect("running")
}

fn node(network: &Network, i: usize) -> NodeHandle {
    network.node(i).expect("running").clone()
}

/// The state blocks the state of root `root` reaches, added to `reached`.
fn reach(storage: &Storage, root: &Cid, reached: &mut HashSet<Cid>) {
    let mut read = |cid: &Cid| {
        reached.insert(*cid);
        storage.state_block(cid)
    };
    ledger::State::load(root, &mut read).expect("every block of a kept state is stored");
}

#[tokio::test(start_paused = true)]
async fn a_pruning_validator_keeps_its_retention_only_restarts_and_a_late_node_joins() {
    let open = Arc::new(|dir: &std::path::Path| Ok(Storage::open(dir)?.into_store()));
    let config = NodeConfig {
        retention_rounds: RETENTION,
        ..Network::test_config()
    };
    let mut network = Network::builder()
        .tests(35)
        .validators(VALIDATORS)
        .observers(1)
        .node_config(config)
        .stores([0])
        .open_store(open)
        .start()
        .await
        .expect("the network starts");
    let dir = network.store_dir(0).expect("a directory").to_owned();
    let mut accounts = network.accounts(2);
    // Transfers all along, so that the state changes (and drops blocks) at many commits.
    for round in 0..ROUNDS / 10 {
        let tx = accounts.transfer(0, 1, 1);
        let taken = accounts.submit(&node(&network, 0), 0, tx).await;
        taken.expect("running").expect("accepted");
        eventually(Duration::from_secs(60), "ten more rounds", || async {
            status(&node(&network, 0)).await.highest_round >= 10 * (round + 1)
        })
        .await;
    }
    let before = status(&node(&network, 0)).await;
    assert!(
        before.pruned_below + RETENTION + PRUNE_EVERY + 10 >= before.highest_round
            && before.pruned_below > 0,
        "pruned below {} at round {}",
        before.pruned_below,
        before.highest_round
    );

    network.crash(0).await.expect("stops");
    {
        let storage = Storage::open(&dir).expect("reopens");
        let below = storage.pruned_below().expect("readable");
        assert_eq!(below, before.pruned_below);
        // No block below the pruned round; the first kept is at it or just above.
        let mut first = None;
        (storage.replay_slice(&[], 1, &mut |bytes| {
            first = Some(ledger::SignedBlock::decode(&bytes)?.block.round);
            Ok(())
        }))
        .expect("readable");
        assert!(
            first.is_some_and(|r| r >= below && r < below + 5),
            "{first:?}"
        );
        // Commits: none of a leader round below it, every one above the first kept.
        let height = storage.height().expect("readable");
        let mut kept = Vec::new();
        for h in 1..=height {
            match storage.commit_at(h).expect("readable") {
                Some(commit) => kept.push(commit),
                None => assert!(kept.is_empty(), "commit {h} missing after kept ones"),
            }
        }
        assert!(
            kept.len() < height as usize / 2,
            "{} of {height} kept",
            kept.len()
        );
        assert!(kept[0].round + 2 >= below && kept[1].round >= below);
        // State blocks: exactly those the kept commits' states reach.
        let mut reached = HashSet::new();
        for commit in &kept {
            reach(&storage, &commit.state_root, &mut reached);
        }
        assert_eq!(
            storage.state_blocks().expect("readable"),
            reached.len() as u64
        );
        assert!(ledger::Start::read(&storage).expect("readable").is_some());
    }
    network
        .restart(0)
        .await
        .expect("restarts from the pruned store");
    let target = status(&node(&network, 1)).await.height;
    eventually(
        Duration::from_secs(120),
        "the restarted validator commits on",
        || async { status(&node(&network, 0)).await.height > target + 10 },
    )
    .await;

    // A node joining the pruning network by snapshot.
    let joiner = ledger::spawn(
        network.genesis(),
        None,
        NodeConfig {
            snapshot_sync: true,
            ..Network::test_config()
        },
        network.peer(VALIDATORS),
        None,
    )
    .await
    .expect("starts");
    let now = status(&node(&network, 1)).await.height;
    eventually(Duration::from_secs(120), "the late node joins", || async {
        let status = status(&joiner).await;
        !status.joining && status.height > now
    })
    .await;
    assert!(status(&joiner).await.stats.joined_at_height.is_some());
    let key = accounts.key(1);
    assert_eq!(
        joiner.account(key).await.expect("running"),
        node(&network, 1).account(key).await.expect("running")
    );
    joiner.shutdown().await.expect("stops");
    let finished = network.finish().await.expect("a complete run");
    scenario::agreement::check(&finished.commits(), ROUNDS).expect("the validators agree");
}
