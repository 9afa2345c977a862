//! Crash recovery: a validator stopped and reopened from its RocksDB directory resumes with the same
//! committed prefix and state root, refetches nothing it stored, and keeps committing.

use std::time::Duration;

use bytes::Bytes;
use comms::Cid;
use std::sync::Arc;

use ledger::{
    Commit, Committed, NodeHandle, Outcome, SignedTransaction, Store, SubmitError, TxStatus,
};
use ledger_rocksdb::Storage;
use scenario::{Accounts, Network};

/// Four validators, validator 0 on a RocksDB store in a directory of the network's, on the
/// simulator's seed `seed`; the accounts (two of 1,000,000) to sign with.
async fn network(seed: u64) -> (Network, Accounts) {
    let open = Arc::new(|dir: &std::path::Path| Ok(Storage::open(dir)?.into_store()));
    let network = Network::builder()
        .tests(seed)
        .stores([0])
        .open_store(open)
        .start()
        .await
        .expect("the network starts");
    let accounts = network.accounts(2);
    (network, accounts)
}

fn node(network: &Network, i: usize) -> NodeHandle {
    network.node(i).expect("running").clone()
}

#[tokio::test(start_paused = true)]
async fn a_restarted_validator_resumes_its_committed_prefix() {
    let (mut network, mut accounts) = network(9).await;
    let first_life = scenario::CommitLog::open(&node(&network, 0))
        .await
        .expect("running");
    let tx = accounts.transfer(0, 1, 7);
    let taken = accounts.submit(&node(&network, 1), 0, tx).await;
    taken.expect("running").expect("accepted");
    // Idle rounds are `idle_block_interval` (1 s) apart: long enough for a history of some length.
    tokio::time::sleep(Duration::from_secs(15)).await;

    network.crash(0).await.expect("crashes");
    let before = first_life.commits().await.expect("a complete commit log");
    let last = before.last().expect("commits before the crash").clone();
    assert!(last.height >= 10, "only {} commits", last.height);
    let dir = network.store_dir(0).expect("a directory").to_owned();
    let storage = Storage::open(&dir).expect("reopen");
    assert_eq!(
        storage.height().expect("readable"),
        last.height,
        "every commit is on disk"
    );
    let stored = storage.replay(|_| Ok(())).expect("readable");
    drop(storage);

    tokio::time::sleep(Duration::from_secs(2)).await;
    let fetched_before = network
        .sim()
        .stats()
        .await
        .expect("running")
        .counters
        .fetches;
    network.restart(0).await.expect("restarts");
    // The node started from the last stored commit's state (every tree block checked against its
    // CID) and the blocks above its floor, before it answered.
    let restarted = node(&network, 0).status().await.expect("running");
    assert_eq!(restarted.height, last.height, "the stored height");
    assert_eq!(restarted.state_root, last.state_root.to_string());
    let second_life = scenario::CommitLog::open(&node(&network, 0))
        .await
        .expect("running");
    tokio::time::sleep(Duration::from_secs(15)).await;
    let status = node(&network, 0).status().await.expect("running");
    network.crash(0).await.expect("stops");
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
    // Refetching the stored history would take at least one fetch per stored block; the network's
    // fetches since the restart (for blocks made while it was down) stay below that.
    let fetched = network
        .sim()
        .stats()
        .await
        .expect("running")
        .counters
        .fetches
        - fetched_before;
    assert!(
        fetched < stored,
        "{fetched} fetches after restarting with {stored} stored blocks"
    );
    let balance = node(&network, 1)
        .account(accounts.key(1))
        .await
        .expect("running");
    assert_eq!(balance.balance, 1_000_007);
    network.finish().await.expect("a complete run");
}

/// A transaction's status: pending once submitted (a second submission changes nothing, another
/// transaction for its nonce is refused), then
/// committed with its outcome, read from the store, so it survives a restart.
#[tokio::test(start_paused = true)]
async fn transaction_status_is_pending_then_committed_and_survives_a_restart() {
    let (mut network, accounts) = network(11).await;
    let (good, replay) = (accounts.transfer(0, 1, 5), accounts.transfer(0, 1, 6));
    let submit = |tx: SignedTransaction| {
        let node = node(&network, 0);
        async move { node.submit(tx).await.expect("running").expect("accepted") }
    };
    let id = submit(good.clone()).await;
    assert_eq!(id, good.id());
    assert_eq!(submit(good.clone()).await, id, "resubmission is idempotent");
    let validator = node(&network, 0);
    assert_eq!(
        validator.transaction(id).await.expect("running"),
        TxStatus::Pending
    );
    assert_eq!(validator.status().await.expect("running").mempool, 1);
    assert!(
        matches!(
            validator.submit(replay).await.expect("running"),
            Err(SubmitError::NonceTaken(0))
        ),
        "a second transaction for a queued nonce is refused"
    );

    comms::conformance::eventually(Duration::from_secs(10), "committed", || async {
        committed(&validator, id).await.is_some()
    })
    .await;
    let first = committed(&validator, id).await.expect("committed");
    assert_eq!(first.outcome, Outcome::Applied);
    assert!(
        matches!(
            validator.submit(good.clone()).await.expect("running"),
            Err(SubmitError::StaleNonce { next: 1, got: 0 })
        ),
        "a committed transaction is not queued again"
    );
    let unknown = accounts.transfer(0, 1, 7).id();
    assert_eq!(
        validator.transaction(unknown).await.expect("running"),
        TxStatus::Unknown
    );

    network.crash(0).await.expect("stops");
    network.restart(0).await.expect("restarts");
    assert_eq!(
        committed(&node(&network, 0), id).await,
        Some(first),
        "read back from disk"
    );
    network.finish().await.expect("a complete run");
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
        storage
            .commit(&first, &tree(b"one"), &[])
            .expect("first commit");
        storage
            .commit(&second, &tree(b"two"), &[])
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
        .commit(&first, &[], &[])
        .expect("the same commit replays");
    let mut differs = first.clone();
    differs.transactions.pop();
    assert!(matches!(
        storage.commit(&differs, &[], &[]),
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
