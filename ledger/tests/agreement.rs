//! Agreement and liveness over the simulator: honest validators commit the same sequence and reach
//! the same state root under loss, latency spread, a healing partition, a crash and restart, and up
//! to f Byzantine validators; transactions submitted to honest validators commit.
//!
//! Each configuration runs over `LEDGER_SEEDS` seeds (default 50) starting at `SIM_SEED` (default 1).

use std::{collections::BTreeSet, sync::Arc, time::Duration};

use comms::Cid;
use ledger::{node::blocks_topic, Commit, NodeHandle, SignedTransaction, SubmitError, Transaction};
use sim::{Latency, LinkModel, Sim};
use tokio::task::JoinHandle;

mod common;
use ledger::byzantine::{send_invalid_blocks, Behaviour, Faulty};

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
    sim: Sim,
}

/// Runs 30 simulated seconds: a partition from 3 s to 7 s, the last honest validator down from 10 s
/// to 14 s (restarted from its RocksDB directory), transfers submitted throughout.
async fn run(scenario: &Scenario, seed: u64) -> Run {
    let n = scenario.validators;
    let genesis = common::genesis(n, 8);
    let chain = genesis.encode().1;
    let link = LinkModel {
        latency: Latency::LogNormal {
            median: Duration::from_millis(30),
            sigma: 0.6,
        },
        jitter: Duration::from_millis(10),
        loss: scenario.loss,
        bandwidth: Some(12_500_000),
    };
    let (sim, peers) = Sim::builder().seed(seed).link(link).peers(n).build();
    let first_faulty = n - scenario.byzantine.len();
    let restarted = first_faulty - 1;
    let dir = tempdir(seed);

    let mut nodes: Vec<Option<NodeHandle>> = Vec::new();
    let mut collectors = Vec::new();
    let mut saboteurs = Vec::new();
    for (i, peer) in peers.iter().enumerate() {
        let storage_dir = (i == restarted).then(|| dir.clone());
        let node = match i.checked_sub(first_faulty).map(|b| scenario.byzantine[b]) {
            None => {
                common::start_validator(&genesis, i, peer.clone(), storage_dir.as_deref()).await
            }
            Some(Behaviour::Invalid) => {
                saboteurs.push(tokio::spawn(send_invalid_blocks(
                    peer.clone(),
                    chain,
                    i as u32,
                    common::validator_key(i),
                    blocks_topic(&chain),
                )));
                nodes.push(None);
                continue;
            }
            Some(behaviour) => {
                let faulty = Faulty::new(peer.clone(), behaviour, common::validator_key(i));
                ledger::spawn(
                    &genesis,
                    Some(common::validator_key(i)),
                    common::node_config(),
                    faulty,
                    None,
                )
                .await
                .expect("starts")
            }
        };
        if i < first_faulty {
            collectors.push(node.commit_log().await.expect("running"));
        }
        nodes.push(Some(node));
    }

    let mut submitted = Vec::new();
    let mut nonces = [0u64; 8];
    let mut second_life = None;
    // Transactions sent to the validator that will crash: a mempool is not durable, so the client
    // sends them again elsewhere once that validator has failed (a duplicate takes effect once).
    let mut at_risk = Vec::new();
    for tenth in 0..300u64 {
        match tenth {
            30 => sim.partition(vec![vec![0, 1]]).await.expect("valid"),
            70 => sim.heal().await.expect("heal"),
            100 => {
                let node = nodes[restarted].take().expect("running");
                node.shutdown().await.expect("stops");
                sim.crash(restarted).await.expect("valid");
                for tx in at_risk.drain(..) {
                    let node = nodes[0].as_ref().expect("running");
                    match node.submit(tx).await.expect("running") {
                        // Committed before the crash: node 0 has it already.
                        Ok(_) | Err(SubmitError::StaleNonce { .. }) => {}
                        Err(error) => panic!("resubmission refused: {error}"),
                    }
                }
            }
            140 => {
                sim.restart(restarted).await.expect("valid");
                let node = common::start_validator(
                    &genesis,
                    restarted,
                    peers[restarted].clone(),
                    Some(&dir),
                )
                .await;
                second_life = Some(node.commit_log().await.expect("running"));
                nodes[restarted] = Some(node);
            }
            _ => {}
        }
        if tenth % 5 == 0 && tenth < 250 {
            let from = (tenth / 5) as usize % 8;
            let tx = Transaction::Transfer {
                from: common::account(from),
                to: common::account((from + 3) % 8),
                amount: 10 + tenth,
                nonce: nonces[from],
            };
            let signed = SignedTransaction::sign(&chain, tx, &common::account_key(from));
            let target = (tenth / 5) as usize % first_faulty;
            if let Some(node) = &nodes[target] {
                if let Ok(Ok(_)) = node.submit(signed.clone()).await {
                    nonces[from] += 1;
                    submitted.push(signed.id());
                    if target == restarted && tenth < 100 {
                        at_risk.push(signed);
                    }
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    for node in nodes.iter().flatten() {
        node.shutdown().await.expect("stops");
    }
    saboteurs.iter().for_each(JoinHandle::abort);
    let mut commits = Vec::new();
    for collector in collectors {
        commits.push(collector.commits().await.expect("a complete commit log"));
    }
    if let Some(second) = second_life {
        // The restart replayed the first life's commits before the node started, each checked
        // against its stored record; the second life's log goes on from there.
        let resumed = second.commits().await.expect("a complete commit log");
        let first = &mut commits[restarted];
        let next = first.len() as u64 + 1;
        assert!(
            resumed.first().is_none_or(|c| c.height == next),
            "the restarted node resumes at height {next}"
        );
        first.extend(resumed);
    }
    let _ = std::fs::remove_dir_all(&dir);
    Run {
        commits,
        submitted,
        sim,
    }
}

fn tempdir(seed: u64) -> std::path::PathBuf {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let unique = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    std::env::temp_dir().join(format!(
        "ledger-agreement-{}-{seed}-{unique}",
        std::process::id()
    ))
}

/// One commit sequence is a prefix of the other, commit by commit.
fn check_prefix(a: &[Arc<Commit>], b: &[Arc<Commit>], what: &str) {
    for (x, y) in a.iter().zip(b) {
        assert_eq!(x, y, "{what}: commits at height {} differ", x.height);
    }
}

fn check(run: &Run, scenario: &Scenario, seed: u64) {
    let heights: Vec<usize> = run.commits.iter().map(Vec::len).collect();
    for (i, a) in run.commits.iter().enumerate() {
        for b in &run.commits[i + 1..] {
            check_prefix(
                a,
                b,
                &format!("seed {seed}, {} validators", scenario.validators),
            );
        }
        for (h, commit) in a.iter().enumerate() {
            assert_eq!(
                commit.height,
                h as u64 + 1,
                "seed {seed}: heights must be consecutive"
            );
        }
    }
    let common = *heights.iter().min().expect("honest nodes");
    assert!(
        common >= 20,
        "seed {seed}: honest nodes reached only {heights:?} commits"
    );
    let roots: BTreeSet<_> = run
        .commits
        .iter()
        .map(|c| c[common - 1].state_root)
        .collect();
    assert_eq!(
        roots.len(),
        1,
        "seed {seed}: state roots differ at height {common}"
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
        "seed {seed}: of {} transactions, these never committed: {missing:?}",
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
        drop(run.sim);
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
