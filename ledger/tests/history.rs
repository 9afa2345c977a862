//! A long history: memory holds only the last `GC_DEPTH` rounds of the DAG while the validators keep
//! agreeing; old blocks stay readable from disk; a validator restarted from its store and a node that
//! joins with nothing both catch up on the whole history and commit the same sequence.

use std::{sync::Arc, time::Duration};

use comms::conformance::eventually;
use ledger::{consensus::GC_DEPTH, NodeHandle, Status, Store};
use ledger_rocksdb::Storage;
use scenario::Network;

const VALIDATORS: usize = 4;
const ROUNDS: u64 = 6 * GC_DEPTH;
const TRANSFERS: u64 = 10;
/// Blocks in memory at most: the rounds from the floor to the top, which is a few rounds above the
/// last committed leader.
const MEMORY_BOUND: u64 = VALIDATORS as u64 * (GC_DEPTH + 10);

async fn status(node: &NodeHandle) -> Status {
    node.status().await.expect("running")
}

async fn wait_for_height(node: &NodeHandle, above: u64, what: &str) {
    eventually(Duration::from_secs(600), what, || async {
        status(node).await.height > above
    })
    .await;
}

fn assert_bounded(status: &Status, who: &str) {
    assert!(
        status.dag_blocks as u64 <= MEMORY_BOUND && status.dag_floor > 0,
        "{who}: {} blocks in memory, floor {} at round {}",
        status.dag_blocks,
        status.dag_floor,
        status.highest_round
    );
}

fn node(network: &Network, i: usize) -> NodeHandle {
    network.node(i).expect("running").clone()
}

#[tokio::test(start_paused = true)]
async fn a_long_history_leaves_memory_and_a_fresh_node_syncs_all_of_it() {
    // Validator 0 on RocksDB; two more peers, for the nodes that join late.
    let open = Arc::new(|dir: &std::path::Path| Ok(Storage::open(dir)?.into_store()));
    let mut network = Network::builder()
        .tests(21)
        .validators(VALIDATORS)
        .observers(2)
        .stores([0])
        .open_store(open)
        .start()
        .await
        .expect("the network starts");
    let dir = network.store_dir(0).expect("a directory").to_owned();
    let mut accounts = network.accounts(2);
    // The first commit, taken as it happens: the rounds below commit more than the stream buffers.
    let mut early = node(&network, 1).commits().await.expect("running");
    let first = tokio::spawn(async move { early.recv().await });
    for _ in 0..TRANSFERS {
        let tx = accounts.transfer(0, 1, 1);
        let taken = accounts.submit(&node(&network, 1), 0, tx).await;
        taken.expect("running").expect("accepted");
    }
    eventually(Duration::from_secs(600), "the rounds are made", || async {
        status(&node(&network, 1)).await.highest_round >= ROUNDS
    })
    .await;
    for i in 0..VALIDATORS {
        let status = status(&node(&network, i)).await;
        assert_bounded(&status, &format!("validator {i}"));
        // Only validator 0 has a store, which answers for the blocks below the floor.
        assert_eq!(status.pruned_in_memory == 0, i == 0, "validator {i}");
    }
    let first = first.await.expect("joined").expect("the first commit");
    let old = node(&network, 0)
        .block(first.leader)
        .await
        .expect("running")
        .expect("a block below the floor is read from disk");
    assert_eq!(old.cid, first.leader);
    assert!(old.round() < status(&node(&network, 0)).await.dag_floor);

    // Restart validator 0 from its store; start two nodes with nothing, one with an empty store
    // (its blocks wait for their ancestors on disk) and one without, which parks at most one
    // broadcast block per validator: the others are refused, and fetched once referenced.
    network.crash(0).await.expect("stops");
    // A restart reads the last commit's state and the blocks from its memory floor up, not the
    // whole store: other tasks on the runtime go on meanwhile, with one yield between slices.
    let (stored, replayed_slices) = {
        let storage = Storage::open(&dir).expect("reopens");
        let slices = |from: Vec<u8>| {
            let (mut from, mut slices, mut total) = (from, 0, 0);
            loop {
                let (read, next) = storage
                    .replay_slice(&from, ledger::REPLAY_SLICE, &mut |_| Ok(()))
                    .expect("readable");
                assert!(read <= ledger::REPLAY_SLICE);
                (total, slices) = (total + read, slices + 1);
                let Some(next) = next else { break };
                from = next;
            }
            (total, slices)
        };
        let (total, all) = slices(Vec::new());
        assert_eq!(total as u64, storage.replay(|_| Ok(())).expect("readable"));
        assert!(all > 3, "{total} stored blocks in {all} slices");
        let start = ledger::Start::read(&storage)
            .expect("readable")
            .expect("commits");
        let (above, replayed) = slices(start.replay_from());
        assert!(
            above <= (GC_DEPTH as usize + 10) * VALIDATORS && above * 3 < total,
            "{above} of {total} stored blocks are above the floor"
        );
        (all, replayed)
    };
    let ticks = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let ticker = tokio::spawn({
        let ticks = ticks.clone();
        async move {
            loop {
                ticks.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tokio::task::yield_now().await;
            }
        }
    });
    network.restart(0).await.expect("restarts");
    ticker.abort();
    let ticks = ticks.load(std::sync::atomic::Ordering::Relaxed);
    assert!(
        ticks >= replayed_slices - 1,
        "{ticks} ticks during a replay of {replayed_slices} slices (of {stored})"
    );
    // The replay commits as it reads, so the history never fills memory: it is bounded as soon as
    // the node starts, before it hears from anyone.
    let replayed = status(&node(&network, 0)).await;
    assert!(replayed.height > 0, "the replay commits");
    assert_bounded(&replayed, "the validator just restarted");
    let fresh_dir = std::env::temp_dir().join(format!("ledger-history-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&fresh_dir);
    let mut fresh = Vec::new();
    for (k, store) in [Some(&fresh_dir), None].into_iter().enumerate() {
        let storage = store.map(|d| Storage::open(d).expect("open storage").into_store());
        let mut config = Network::test_config();
        if store.is_none() {
            config.core.parked_broadcasts_per_author = 1;
        }
        let peer = network.peer(VALIDATORS + k);
        let node = ledger::spawn(network.genesis(), None, config, peer, storage)
            .await
            .expect("starts");
        let log = scenario::CommitLog::open(&node).await.expect("running");
        fresh.push((node, log));
    }
    let target = status(&node(&network, 1)).await.height;
    let restarted = node(&network, 0);
    wait_for_height(&restarted, target, "the restarted validator catches up").await;
    assert_bounded(&status(&restarted).await, "the restarted validator");
    // While they sync, memory holds the DAG above the floor only; the blocks waiting for their
    // ancestors are many at times (on disk, for the node with a store).
    let most_parked = [std::cell::Cell::new(0), std::cell::Cell::new(0)];
    eventually(Duration::from_secs(600), "the fresh nodes sync", || async {
        let mut synced = true;
        for ((node, _), most) in fresh.iter().zip(&most_parked) {
            let status = status(node).await;
            most.set(most.get().max(status.pending_blocks));
            assert!(status.dag_blocks as u64 <= MEMORY_BOUND, "{status:?}");
            synced &= status.height > target;
        }
        synced
    })
    .await;
    let mut synced = Vec::new();
    for (i, ((node, log), most)) in fresh.into_iter().zip(most_parked).enumerate() {
        let who = format!("fresh node {i}");
        assert!(most.get() > VALIDATORS, "{who} fetched the history");
        let status = status(&node).await;
        assert_bounded(&status, &who);
        let refused = status.stats.rejected.get("parking_full").copied();
        assert_eq!(refused.is_some(), i == 1, "{who}: refused {refused:?}");
        let balance = node.account(accounts.key(1)).await.expect("running");
        assert_eq!(
            balance.balance,
            1_000_000 + TRANSFERS,
            "{who}: every transfer"
        );
        node.shutdown().await.expect("stops");
        synced.push((who, log.commits().await.expect("a complete log")));
    }
    let finished = network.finish().await.expect("a complete run");
    let reference = &finished.commits()[1];
    for (who, commits) in synced {
        assert!(commits.len() as u64 > target, "{who}: the whole history");
        for commit in commits.iter().take(reference.len()) {
            assert_eq!(
                reference.get(commit.height as usize - 1),
                Some(commit),
                "{who}: commit {} differs",
                commit.height
            );
        }
    }
    let _ = std::fs::remove_dir_all(&fresh_dir);
}
