//! Agreement and liveness over the simulator: honest validators commit the same sequence and reach
//! the same state root under loss, latency spread, a healing partition, a crash and restart, and up
//! to f Byzantine validators; transactions submitted to honest validators commit.
//!
//! Each configuration runs over `LEDGER_SEEDS` seeds (default 50) starting at `SIM_SEED` (default 1).

use std::{collections::BTreeSet, sync::Arc, time::Duration};

use comms::Cid;
use ledger::{Commit, NodeConfig, SubmitError};
use ledger_rocksdb::Storage;
use scenario::{agreement, byzantine::Behaviour, Accounts, Network};
use sim::{Latency, LinkModel};

/// One run's setting.
struct Scenario {
    validators: usize,
    byzantine: Vec<Behaviour>,
    loss: f64,
}

/// What the honest nodes committed.
struct Run {
    /// Per honest validator, its commits (a restarted one's second life appended).
    commits: Vec<Vec<Arc<Commit>>>,
    /// The transactions submitted.
    submitted: Vec<Cid>,
}

/// The most commits an honest validator may be behind the highest at the end: the one restarted
/// at 14 s has caught up by 30 s.
const MAX_LAG: u64 = 10;

/// Runs 30 simulated seconds: a partition from 3 s to 7 s, the last honest validator down from 10 s
/// to 14 s (restarted from its RocksDB directory), transfers submitted throughout.
async fn run(scenario: &Scenario, seed: u64) -> Run {
    let n = scenario.validators;
    let link = LinkModel {
        latency: Latency::LogNormal {
            median: Duration::from_millis(30),
            sigma: 0.6,
        },
        jitter: Duration::from_millis(10),
        loss: scenario.loss,
        bandwidth: Some(12_500_000),
    };
    let honest = n - scenario.byzantine.len();
    let restarted = honest - 1;
    let mut network = Network::builder()
        .validators(n)
        .byzantine(scenario.byzantine.clone())
        .seed(seed)
        .link(link)
        .node_config(NodeConfig {
            epoch_ms: Some(0),
            fetch_timeout: Duration::from_secs(2),
            ..NodeConfig::default()
        })
        .stores([restarted])
        .open_store(Arc::new(|dir| Ok(Storage::open(dir)?.into_store())))
        .start()
        .await
        .expect("the network starts");
    let mut accounts = Accounts::new(network.chain(), seed, 8);

    let mut submitted = Vec::new();
    // Transactions sent to the validator that will crash: a mempool is not durable, so the client
    // sends them again elsewhere once that validator has failed (a duplicate takes effect once).
    let mut at_risk = Vec::new();
    for tenth in 0..300u64 {
        match tenth {
            30 => network.partition(vec![vec![0, 1]]).await.expect("valid"),
            70 => network.heal().await.expect("heal"),
            100 => {
                network.crash(restarted).await.expect("crashes");
                for tx in at_risk.drain(..) {
                    let node = network.node(0).expect("running");
                    match node.submit(tx).await.expect("running") {
                        // Committed before the crash: node 0 has it already.
                        Ok(_) | Err(SubmitError::StaleNonce { .. }) => {}
                        Err(error) => panic!("resubmission refused: {error}"),
                    }
                }
            }
            140 => network.restart(restarted).await.expect("restarts"),
            _ => {}
        }
        if tenth % 5 == 0 && tenth < 250 {
            let from = (tenth / 5) as usize % accounts.len();
            let tx = accounts.transfer(from, (from + 3) % accounts.len(), 10 + tenth);
            let target = (tenth / 5) as usize % honest;
            if let Some(node) = network.node(target).cloned() {
                if let Ok(Ok(id)) = accounts.submit(&node, from, tx.clone()).await {
                    submitted.push(id);
                    if target == restarted && tenth < 100 {
                        at_risk.push(tx);
                    }
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let finished = network.finish().await.expect("a complete run");
    let commits = finished.commits();
    Run { commits, submitted }
}

fn check(run: &Run, scenario: &Scenario, seed: u64) {
    let what = format!("seed {seed}, {} validators", scenario.validators);
    let agreed = agreement::check(&run.commits, MAX_LAG).unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        agreed.common >= 20,
        "{what}: honest nodes reached only {:?} commits",
        agreed.heights
    );
    // Liveness: every transaction submitted to an honest validator committed (it was given 5 s).
    let committed: BTreeSet<Cid> = run.commits[0]
        .iter()
        .flat_map(|c| c.transactions.iter().map(|(id, _)| *id))
        .collect();
    let missing: Vec<String> = run
        .submitted
        .iter()
        .filter(|id| !committed.contains(id))
        .map(Cid::to_string)
        .collect();
    assert!(
        missing.is_empty(),
        "{what}: of {} transactions, these never committed: {missing:?}",
        run.submitted.len()
    );
}

async fn many_seeds(scenario: Scenario) {
    let seeds: u64 = std::env::var("LEDGER_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(50);
    let first = sim::seed_from_env(1);
    for seed in first..first + seeds {
        let run = run(&scenario, seed).await;
        check(&run, &scenario, seed);
    }
}

#[tokio::test(start_paused = true)]
async fn four_validators_one_equivocating() {
    many_seeds(Scenario {
        validators: 4,
        byzantine: vec![Behaviour::Equivocate],
        loss: 0.02,
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn seven_validators_equivocating_and_invalid() {
    many_seeds(Scenario {
        validators: 7,
        byzantine: vec![Behaviour::Equivocate, Behaviour::Invalid],
        loss: 0.02,
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn ten_validators_equivocating_invalid_and_withholding() {
    many_seeds(Scenario {
        validators: 10,
        byzantine: vec![
            Behaviour::Equivocate,
            Behaviour::Invalid,
            Behaviour::Withhold,
        ],
        loss: 0.02,
    })
    .await;
}
