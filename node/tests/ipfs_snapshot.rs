//! Joining by snapshot over real IPFS: four validators on their own kubo daemons build a history;
//! a fifth node, on a fifth daemon, starts late with nothing, learns a certified checkpoint from
//! the blocks pubsub brings, fetches that state's blocks over bitswap by CID (the validators' nodes
//! put every state block on their daemons), takes only the last rounds of the DAG, and commits on
//! with the validators' state roots.

use std::{sync::Arc, time::Duration};

use comms::conformance::eventually;
use comms_ipfs::{testnet, IpfsComms, IpfsConfig};
use ledger::{
    consensus::GC_DEPTH,
    core::join::YOUNG_ROUNDS,
    devnet::{self, Role},
    CoreConfig, MemoryStore, NodeConfig, NodeHandle, SignedTransaction, Status, Store, Transaction,
};

const VALIDATORS: usize = 4;
const SEED: u64 = 35;
const BOUND: Duration = Duration::from_secs(120);

async fn connect(daemons: &[testnet::Daemon], i: usize) -> IpfsComms {
    let config = IpfsConfig {
        api: daemons[i].api(),
        peers: (daemons.iter().enumerate())
            .filter(|(j, _)| *j != i)
            .map(|(_, daemon)| daemon.swarm_address())
            .collect(),
        ..IpfsConfig::default()
    };
    IpfsComms::connect(config)
        .await
        .expect("connect to the daemon")
}

/// Blocks every 20 ms while idle, so that the history is long enough for a snapshot soon.
fn config(snapshot_sync: bool) -> NodeConfig {
    NodeConfig {
        core: CoreConfig {
            idle_block_interval: Duration::from_millis(20),
            ..CoreConfig::default()
        },
        snapshot_sync,
        ..NodeConfig::default()
    }
}

async fn status(node: &NodeHandle) -> Status {
    node.status().await.expect("running")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_node_joins_by_snapshot_over_bitswap_and_commits_with_the_validators() {
    let daemons = testnet::start_daemons(VALIDATORS + 1);
    let genesis = devnet::genesis("ipfs-snapshot", SEED, VALIDATORS, 2, 1_000_000);
    let chain = genesis.encode().1;
    let (mut validators, mut logs) = (Vec::new(), Vec::new());
    for i in 0..VALIDATORS {
        let key = Some(devnet::key(SEED, Role::Validator, i));
        let comms = connect(&daemons, i).await;
        let node = ledger::spawn(&genesis, key, config(false), comms, None)
            .await
            .expect("the validator starts");
        logs.push(scenario::CommitLog::open(&node).await.expect("running"));
        validators.push(node);
    }
    let transfer = Transaction::Transfer {
        from: devnet::key(SEED, Role::Account, 0).public(),
        to: devnet::key(SEED, Role::Account, 1).public(),
        amount: 7,
        nonce: 0,
    };
    let signed = SignedTransaction::sign(&chain, transfer, &devnet::key(SEED, Role::Account, 0));
    (validators[0].submit(signed).await)
        .expect("running")
        .expect("accepted");
    let history_rounds = 2 * GC_DEPTH.max(YOUNG_ROUNDS);
    eventually(BOUND, "the validators make a history", || async {
        status(&validators[0]).await.highest_round >= history_rounds
    })
    .await;
    let history = status(&validators[0]).await;

    let store = MemoryStore::default();
    let joiner = ledger::spawn(
        &genesis,
        None,
        config(true),
        connect(&daemons, VALIDATORS).await,
        Some(Arc::new(store.clone()) as Arc<dyn Store>),
    )
    .await
    .expect("the late node starts");
    let log = scenario::CommitLog::open(&joiner).await.expect("running");
    let joined = tokio::time::timeout(
        BOUND,
        eventually(BOUND, "the late node joins and commits", || async {
            let status = status(&joiner).await;
            !status.joining && status.height > history.height
        }),
    );
    if joined.await.is_err() {
        eprintln!("{:?}", status(&joiner).await);
        panic!("the late node did not join within {BOUND:?}: status above");
    }
    let status = status(&joiner).await;
    let at = status.stats.joined_at_height.expect("joined by snapshot");
    assert!(status.stats.snapshot_blocks >= 3, "{:?}", status.stats);
    let account = devnet::key(SEED, Role::Account, 1).public();
    assert_eq!(
        joiner.account(account).await.expect("running").balance,
        1_000_007
    );
    joiner.shutdown().await.expect("stops");
    for node in &validators {
        node.shutdown().await.expect("stops");
    }
    let joined = log.commits().await.expect("a complete log");
    assert_eq!(joined.first().map(|c| c.height), Some(at + 1));
    for log in logs {
        let reference = log.commits().await.expect("a complete log");
        for commit in &joined {
            let theirs = reference.get(commit.height as usize - 1);
            assert_eq!(theirs, Some(commit), "commit {} differs", commit.height);
        }
    }
    // What it stored: the base, then every commit after it.
    let base = store.base().expect("in memory").expect("a base");
    assert_eq!(base.checkpoint.height, at);
    // Of the DAG, it took the rounds from the checkpoint leader's memory floor up (and their
    // parents' round below), nothing older: the first block it stored is of that round.
    let floor = base.checkpoint.round - GC_DEPTH;
    let mut lowest = None;
    store
        .replay_slice(&[], 1, &mut |bytes| {
            lowest = Some(ledger::SignedBlock::decode(&bytes)?.block.round);
            Ok(())
        })
        .expect("in memory");
    assert!(
        floor > 0,
        "the checkpoint at round {} is too young",
        base.checkpoint.round
    );
    assert_eq!(
        lowest,
        Some(floor - 1),
        "its oldest block; the history began at round 0"
    );
    for commit in &joined {
        let stored = store.commit_at(commit.height).expect("in memory");
        assert_eq!(stored.as_ref(), Some(&**commit));
    }
}
