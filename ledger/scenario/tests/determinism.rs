//! The ledger is deterministic: one scenario run twice with one seed, in one process (so every
//! `HashMap` and `HashSet` gets other hash keys), gives every honest validator the same commits at
//! the same virtual times, and the simulator the same trace. Another seed gives another run.

use std::{sync::Arc, time::Duration};

use ledger::{Commit, NodeConfig};
use scenario::{agreement, byzantine::Behaviour, Accounts, Network};
use sim::{Latency, LinkModel};
use tokio::time::Instant;

/// What a run produced: per honest validator, each commit with its virtual time from the start;
/// and the simulator's trace digest.
type Outcome = (Vec<Vec<(Duration, Arc<Commit>)>>, String);

/// 4 validators, one equivocating, over lossy links with spread; a partition, a crash and restart
/// from the store, and transfers 20 a second throughout, for 8 simulated seconds.
async fn run(seed: u64) -> Outcome {
    let link = LinkModel {
        latency: Latency::LogNormal {
            median: Duration::from_millis(20),
            sigma: 0.5,
        },
        jitter: Duration::from_millis(5),
        loss: 0.05,
        bandwidth: Some(12_500_000),
    };
    let mut network = Network::builder()
        .validators(4)
        .byzantine(vec![Behaviour::Equivocate])
        .seed(seed)
        .link(link)
        .node_config(NodeConfig {
            epoch_ms: Some(0),
            fetch_timeout: Duration::from_secs(1),
            ..NodeConfig::default()
        })
        .stores([2])
        .start()
        .await
        .expect("the network starts");
    let mut accounts = Accounts::new(network.chain(), seed, 8);
    let start = Instant::now();
    for k in 0..160usize {
        match k {
            20 => network.partition(vec![vec![0]]).await.expect("valid"),
            40 => network.heal().await.expect("valid"),
            60 => network.crash(2).await.expect("crashes"),
            80 => network.restart(2).await.expect("restarts"),
            _ => {}
        }
        let from = k % accounts.len();
        let tx = accounts.transfer(from, (from + 1) % accounts.len(), 1 + k as u64);
        if let Some(node) = network.node(k % 3).cloned() {
            let _ = accounts.submit(&node, from, tx).await.expect("running");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let finished = network.finish().await.expect("a complete run");
    let histories = (finished.histories.into_iter())
        .map(|h| h.into_iter().map(|(at, c)| (at - start, c)).collect())
        .collect();
    (histories, finished.stats.trace_digest)
}

#[tokio::test(start_paused = true)]
async fn one_seed_gives_the_same_commits_and_trace_twice_and_another_seed_another_run() {
    let seed = sim::seed_from_env(11);
    let (first, second) = (run(seed).await, run(seed).await);
    let commits: Vec<Vec<Arc<Commit>>> = (first.0.iter())
        .map(|h| h.iter().map(|(_, c)| c.clone()).collect())
        .collect();
    let agreed = agreement::check(&commits, 20).expect("agreement");
    assert!(
        agreed.common >= 10,
        "seed {seed}: only {:?}",
        agreed.heights
    );
    for (validator, (a, b)) in first.0.iter().zip(&second.0).enumerate() {
        assert_eq!(
            a.len(),
            b.len(),
            "seed {seed}: validator {validator}'s heights"
        );
        for (x, y) in a.iter().zip(b) {
            assert_eq!(
                x, y,
                "seed {seed}: validator {validator} at height {}",
                x.1.height
            );
        }
    }
    assert_eq!(first.1, second.1, "seed {seed}: the trace digests");

    let other = run(seed + 1).await;
    assert_ne!(first.1, other.1, "seeds {seed} and {}", seed + 1);
}
