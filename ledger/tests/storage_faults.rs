//! Storage faults: a validator whose RocksDB store fails its Nth operation (reads and writes,
//! parking and archive look-ups included), for N over a range that covers start-up, proposing,
//! accepting, committing and the keeper, either refuses to start or stops with the error (its exit
//! names what failed). Restarted on the same directory with a sound disk, it has the prefix the
//! others committed, nobody counts an equivocation, and it commits on with them. Never does it run
//! on after a failed operation.

use std::{
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::Duration,
};

use ledger::{Exit, NodeConfig, NodeError, Store};
use ledger_rocksdb::Storage;
use scenario::{
    agreement,
    failing_store::{Countdown, FailingStore},
    Accounts, Error, Network,
};

/// The operation that fails first, per run: start-up takes the first few, then a second of
/// rounds takes some hundreds.
const FAIL_AT: [u64; 16] = [
    1, 2, 3, 4, 6, 10, 20, 40, 80, 150, 300, 600, 1200, 2500, 5000, 10_000,
];

/// The most commits a validator may be behind at the end: the restarted one had 10 s to catch up.
const MAX_LAG: u64 = 10;

/// How a run ended for the validator with the failing store.
#[derive(Debug, PartialEq)]
enum Outcome {
    RefusedToStart,
    StoppedAndRestarted,
    NeverFailed,
}

async fn run(fail_at: u64, seed: u64) -> Outcome {
    let countdown = Countdown::new(fail_at);
    let first_life = Arc::new(AtomicBool::new(true));
    let (faults, first) = (countdown.clone(), first_life.clone());
    let open = Arc::new(move |dir: &std::path::Path| {
        let storage = Storage::open(dir)?.into_store();
        Ok(match first.swap(false, Ordering::Relaxed) {
            true => Arc::new(FailingStore::new(storage, faults.clone())) as Arc<dyn Store>,
            false => storage,
        })
    });
    let started = Network::builder()
        .validators(4)
        .seed(seed)
        .node_config(NodeConfig {
            epoch_ms: Some(0),
            ..NodeConfig::default()
        })
        .stores([0])
        .open_store(open)
        .start()
        .await;
    let mut network = match started {
        Ok(network) => network,
        Err(Error::Node {
            validator: 0,
            source: NodeError::Store(error),
        }) => {
            assert!(countdown.failed(), "refused without a fault: {error}");
            assert!(error.to_string().contains("injected fault"), "{error}");
            return Outcome::RefusedToStart;
        }
        Err(error) => panic!("N = {fail_at}: {error}"),
    };
    let mut accounts = Accounts::new(network.chain(), seed, 8);
    let mut outcome = Outcome::NeverFailed;
    // 20 s at least, and 10 s after a restart.
    let (mut tenth, mut end) = (0u64, 200u64);
    while tenth < end {
        if countdown.failed() && outcome == Outcome::NeverFailed {
            // Stopped with the error, never ran on: a disk error is fatal.
            let node = network.node(0).expect("up until crashed").clone();
            let exit = tokio::time::timeout(Duration::from_secs(1), node.stopped()).await;
            let Ok(Exit::Failed { reason, .. }) = &exit else {
                panic!("N = {fail_at}: ran on after a failed operation ({exit:?})");
            };
            assert!(reason.contains("injected fault"), "N = {fail_at}: {reason}");
            network.crash(0).await.expect("crashes");
            network.restart(0).await.expect("restarts on a sound disk");
            outcome = Outcome::StoppedAndRestarted;
            end = end.max(tenth + 100);
        } else if outcome == Outcome::NeverFailed {
            assert_eq!(
                network.exit(0),
                None,
                "N = {fail_at}: stopped without a fault"
            );
        }
        if tenth % 2 == 0 {
            let from = (tenth / 2) as usize % accounts.len();
            let tx = accounts.transfer(from, (from + 1) % accounts.len(), 1 + tenth);
            // Sent to the others: validator 0's mempool dies with it.
            if let Some(node) = network.node(1 + (tenth as usize / 2) % 3).cloned() {
                let _ = accounts.submit(&node, from, tx).await;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        tenth += 1;
    }
    let finished = network.finish().await.expect("a complete run");
    let agreed = agreement::check(&finished.commits(), MAX_LAG)
        .unwrap_or_else(|error| panic!("N = {fail_at}: {error}"));
    assert!(agreed.common >= 10, "N = {fail_at}: {:?}", agreed.heights);
    for (i, status) in finished.statuses.iter().enumerate() {
        assert_eq!(
            status.stats.equivocations, 0,
            "N = {fail_at}: validator {i} saw an equivocation"
        );
    }
    outcome
}

#[tokio::test(start_paused = true)]
async fn a_failing_store_stops_its_validator_cleanly_and_a_restart_catches_up() {
    let seed = sim::seed_from_env(11);
    let mut outcomes = Vec::new();
    for fail_at in FAIL_AT {
        outcomes.push((fail_at, run(fail_at, seed).await));
    }
    eprintln!("seed {seed}: {outcomes:?}");
    // The range covers each outcome: a fault at start-up, a fault while running, and none.
    for expected in [
        Outcome::RefusedToStart,
        Outcome::StoppedAndRestarted,
        Outcome::NeverFailed,
    ] {
        assert!(
            outcomes.iter().any(|(_, outcome)| *outcome == expected),
            "seed {seed}: no run ended {expected:?}: {outcomes:?}"
        );
    }
}
