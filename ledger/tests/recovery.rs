//! Crash recovery: a validator stopped and reopened from its RocksDB directory resumes with the same
//! committed prefix and state root, refetches nothing it stored, and keeps committing.

use std::time::Duration;

use bytes::Bytes;
use comms::Cid;
use ledger::{
    Commit, Committed, NodeHandle, Outcome, SignedTransaction, SubmitError, Transaction, TxStatus,
};
use sim::LinkModel;

use ledger::Store;
use ledger_rocksdb::Storage;

mod common;

#[tokio::test(start_paused = true)]
async fn a_restarted_validator_resumes_its_committed_prefix() {
    let genesis = common::genesis(4, 2);
    let chain = genesis.encode().1;
    let (sim, peers) = common::network(4, 9, LinkModel::default());
    let dir = std::env::temp_dir().join(format!("ledger-recovery-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut nodes = Vec::new();
    for (i, peer) in peers.iter().enumerate() {
        nodes.push(
            common::start_validator(&genesis, i, peer.clone(), (i == 0).then_some(dir.as_path()))
                .await,
        );
    }
    let first_life = scenario::CommitLog::open(&nodes[0]).await.expect("running");
    let tx = Transaction::Transfer {
        from: common::account(0),
        to: common::account(1),
        amount: 7,
        nonce: 0,
    };
    nodes[1]
        .submit(SignedTransaction::sign(&chain, tx, &common::account_key(0)))
        .await
        .expect("running")
        .expect("accepted");
    // Idle rounds are `idle_block_interval` (1 s) apart: long enough for a history of some length.
    tokio::time::sleep(Duration::from_secs(15)).await;

    nodes[0].shutdown().await.expect("stops");
    sim.crash(0).await.expect("peer 0");
    let before = first_life.commits().await.expect("a complete commit log");
    let last = before.last().expect("commits before the crash").clone();
    assert!(last.height >= 10, "only {} commits", last.height);
    let storage = Storage::open(&dir).expect("reopen");
    assert_eq!(
        storage.height().expect("readable"),
        last.height,
        "every commit is on disk"
    );
    let stored = storage.replay(|_| Ok(())).expect("readable");
    drop(storage);

    tokio::time::sleep(Duration::from_secs(2)).await;
    sim.restart(0).await.expect("peer 0");
    let fetched_before = sim.stats().await.expect("running").counters.fetches;
    nodes[0] = common::start_validator(&genesis, 0, peers[0].clone(), Some(&dir)).await;
    // The replay re-derived every stored commit, each checked against the stored record, before
    // the node started.
    let replayed = nodes[0].status().await.expect("running");
    assert_eq!(replayed.height, last.height, "the replayed height");
    assert_eq!(replayed.state_root, last.state_root.to_string());
    let second_life = scenario::CommitLog::open(&nodes[0]).await.expect("running");
    tokio::time::sleep(Duration::from_secs(15)).await;
    let status = nodes[0].status().await.expect("running");
    nodes[0].shutdown().await.expect("stops");
    let after = second_life.commits().await.expect("a complete commit log");
    assert_eq!(
        after.first().map(|c| c.height),
        Some(last.height + 1),
        "the second life continues where the first stopped"
    );
    assert!(
        status.height > last.height + 10,
        "no progress after restart: {} then {}",
        last.height,
        status.height
    );
    assert_eq!(nodes[0].status().await.ok(), None, "stopped");
    // Refetching the stored history would take at least one fetch per stored block; the network's
    // fetches since the restart (for blocks made while it was down) stay below that.
    let fetched = sim.stats().await.expect("running").counters.fetches - fetched_before;
    assert!(
        fetched < stored,
        "{fetched} fetches after restarting with {stored} stored blocks"
    );
    assert_eq!(
        nodes[1]
            .account(common::account(1))
            .await
            .expect("running")
            .balance,
        1_000_007
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// A transaction's status: pending once submitted (a second submission changes nothing, another
/// transaction for its nonce is refused), then
/// committed with its outcome, read from the store, so it survives a restart.
#[tokio::test(start_paused = true)]
async fn transaction_status_is_pending_then_committed_and_survives_a_restart() {
    let genesis = common::genesis(4, 2);
    let chain = genesis.encode().1;
    let (_sim, peers) = common::network(4, 11, LinkModel::default());
    let dir = std::env::temp_dir().join(format!("ledger-tx-status-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut nodes = Vec::new();
    for (i, peer) in peers.iter().enumerate() {
        nodes.push(
            common::start_validator(&genesis, i, peer.clone(), (i == 0).then_some(dir.as_path()))
                .await,
        );
    }
    let transfer = |amount| {
        let tx = Transaction::Transfer {
            from: common::account(0),
            to: common::account(1),
            amount,
            nonce: 0,
        };
        SignedTransaction::sign(&chain, tx, &common::account_key(0))
    };
    let (good, replay) = (transfer(5), transfer(6));
    let submit = |tx: SignedTransaction| async {
        nodes[0]
            .submit(tx)
            .await
            .expect("running")
            .expect("accepted")
    };
    let id = submit(good.clone()).await;
    assert_eq!(id, good.id());
    assert_eq!(submit(good.clone()).await, id, "resubmission is idempotent");
    assert_eq!(
        nodes[0].transaction(id).await.expect("running"),
        TxStatus::Pending
    );
    assert_eq!(nodes[0].status().await.expect("running").mempool, 1);
    assert!(
        matches!(
            nodes[0].submit(replay).await.expect("running"),
            Err(SubmitError::NonceTaken(0))
        ),
        "a second transaction for a queued nonce is refused"
    );

    comms::conformance::eventually(Duration::from_secs(10), "committed", || async {
        committed(&nodes[0], id).await.is_some()
    })
    .await;
    let first = committed(&nodes[0], id).await.expect("committed");
    assert_eq!(first.outcome, Outcome::Applied);
    assert!(
        matches!(
            nodes[0].submit(good.clone()).await.expect("running"),
            Err(SubmitError::StaleNonce { next: 1, got: 0 })
        ),
        "a committed transaction is not queued again"
    );
    let unknown = transfer(7).id();
    assert_eq!(
        nodes[0].transaction(unknown).await.expect("running"),
        TxStatus::Unknown
    );

    nodes[0].shutdown().await.expect("stops");
    nodes[0] = common::start_validator(&genesis, 0, peers[0].clone(), Some(&dir)).await;
    assert_eq!(
        committed(&nodes[0], id).await,
        Some(first),
        "read back from disk"
    );
    nodes[0].shutdown().await.expect("stops");
    let _ = std::fs::remove_dir_all(&dir);
}

/// The store keeps the first record of a transaction ordered more than once, within one commit or
/// across commits, keeps it across a reopen, and refuses a replayed commit that differs.
#[test]
fn a_transaction_ordered_again_keeps_its_first_record() {
    let dir = std::env::temp_dir().join(format!("ledger-first-record-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let [a, b, c] = [1u8, 2, 3].map(|i| ledger::codec::cid_of(&[i]));
    let stale = Outcome::BadNonce {
        expected: 1,
        got: 0,
    };
    let commit = |height: u64, transactions: Vec<(Cid, Outcome)>| Commit {
        height,
        round: 2 * height,
        leader: a,
        blocks: vec![a],
        transactions,
        changed: Vec::new(),
        state_root: ledger::codec::cid_of(&[height as u8, 0]),
    };
    let tree = |bytes: &'static [u8]| [(ledger::codec::cid_of(bytes), Bytes::from(bytes))];
    let first = commit(1, vec![(a, Outcome::Applied), (b, stale), (a, stale)]);
    let second = commit(2, vec![(a, stale), (c, Outcome::Applied)]);
    let record = |height, index, outcome| Committed {
        height,
        index,
        outcome,
    };
    let expected = [
        (a, record(1, 0, Outcome::Applied)),
        (b, record(1, 1, stale)),
        (c, record(2, 1, Outcome::Applied)),
    ];
    {
        let storage = Storage::open(&dir).expect("open");
        storage.commit(&first, &tree(b"one")).expect("first commit");
        storage
            .commit(&second, &tree(b"two"))
            .expect("second commit");
        for (id, record) in expected {
            assert_eq!(storage.transaction(&id).expect("read"), Some(record));
        }
    }
    let storage = Storage::open(&dir).expect("reopen");
    assert_eq!(storage.height().expect("read"), 2);
    for (id, record) in expected {
        assert_eq!(storage.transaction(&id).expect("read"), Some(record));
    }
    let unknown = ledger::codec::cid_of(&[4]);
    assert_eq!(storage.transaction(&unknown).expect("read"), None);
    for (cid, bytes) in [tree(b"one"), tree(b"two")].concat() {
        let stored = storage.state_block(&cid).expect("read");
        assert_eq!(
            stored.as_deref(),
            Some(&bytes[..]),
            "the commits' tree blocks"
        );
    }
    storage
        .commit(&first, &[])
        .expect("the same commit replays");
    let mut differs = first.clone();
    differs.transactions.pop();
    assert!(matches!(
        storage.commit(&differs, &[]),
        Err(ledger::StoreError::Corrupt { .. })
    ));
    drop(storage);
    let _ = std::fs::remove_dir_all(&dir);
}

async fn committed(node: &NodeHandle, id: Cid) -> Option<Committed> {
    match node.transaction(id).await.expect("running") {
        TxStatus::Committed(committed) => Some(committed),
        _ => None,
    }
}
