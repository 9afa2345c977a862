//! Joining by snapshot over real IPFS: four validators on their own kubo daemons build a history;
//! validator 0 prunes it to the least retention, and its daemon lets go of (unpins) its pruned
//! blocks. A fifth node, on a fifth daemon, starts late with nothing, learns a certified
//! checkpoint from the blocks pubsub brings, fetches that state's blocks over bitswap by CID (the
//! validators' nodes put every state block on their daemons), takes only the last rounds of the
//! DAG, and commits on with the validators' state roots.

use std::{sync::Arc, time::Duration};

use comms::conformance::eventually;
use comms_ipfs::{testnet, IpfsComms, IpfsConfig};
use ledger::{
    consensus::GC_DEPTH,
    core::join::YOUNG_ROUNDS,
    devnet::{self, Role},
    CoreConfig, MemoryStore, NodeConfig, NodeHandle, SignedTransaction, Status, Store, Transaction,
    MIN_RETENTION, PRUNE_EVERY,
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
fn config(snapshot_sync: bool, retention_rounds: u64) -> NodeConfig {
    NodeConfig {
        core: CoreConfig {
            idle_block_interval: Duration::from_millis(20),
            ..CoreConfig::default()
        },
        snapshot_sync,
        retention_rounds,
        ..NodeConfig::default()
    }
}

/// The recursive pins on `daemon`.
async fn pins(daemon: &testnet::Daemon) -> usize {
    let mut command = tokio::process::Command::from(daemon.command());
    command
        .args(["pin", "ls", "--type=recursive", "--quiet"])
        .kill_on_drop(true);
    let output = tokio::time::timeout(BOUND, command.output())
        .await
        .expect("`ipfs pin ls` answers")
        .expect("run the ipfs command line");
    assert!(output.status.success(), "{output:?}");
    String::from_utf8_lossy(&output.stdout).lines().count()
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
        // Validator 0 keeps a store, pruned to the least retention.
        let (retention, store) = match i {
            0 => (
                MIN_RETENTION,
                Some(Arc::new(MemoryStore::default()) as Arc<dyn Store>),
            ),
            _ => (0, None),
        };
        let node = ledger::spawn(&genesis, key, config(false, retention), comms, store)
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
    eventually(BOUND, "validator 0 prunes twice", || async {
        status(&validators[0]).await.pruned_below > MIN_RETENTION
    })
    .await;
    let history = status(&validators[0]).await;
    // Its daemon holds pins for about one block a round of the retention, not of the history
    // (the genesis, and blocks whose release is on its way, besides).
    let pinned = pins(&daemons[0]).await as u64;
    let kept = history.highest_round - history.pruned_below;
    assert!(
        pinned <= kept + PRUNE_EVERY + 8 && history.highest_round > pinned + MIN_RETENTION / 2,
        "{pinned} pins at round {}, pruned below {}",
        history.highest_round,
        history.pruned_below
    );

    let store = MemoryStore::default();
    let joiner = ledger::spawn(
        &genesis,
        None,
        config(true, 0),
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
