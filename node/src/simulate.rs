//! `ledger-node simulate`: a network of ledger validators over the embedded simulator, in virtual
//! time. A load of signed transfers goes to the validators round-robin; midway the network is
//! partitioned and healed, and one validator crashes and restarts from its RocksDB directory.

use std::{collections::HashMap, path::PathBuf, sync::Arc, time::Duration};

use anyhow::Context;
use comms::Cid;
use ledger::{
    devnet::{self, Role},
    Commit, NodeConfig, NodeHandle, SignedTransaction, Transaction,
};
use serde::Serialize;
use sim::{LatencyHistogram, LatencySummary, Sim, SimConfig, Stats, TraceEvent};
use tokio::{task::JoinHandle, time::Instant};
use tracing::info;

/// Options of `simulate`.
#[derive(clap::Args)]
pub struct Args {
    /// Number of validators.
    #[arg(long, default_value_t = 4)]
    validators: usize,
    /// Simulated duration.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Transactions submitted per simulated second.
    #[arg(long, default_value_t = 50)]
    tps: u32,
    /// Seed of every random choice (overrides the scenario file; `SIM_SEED` overrides the default).
    #[arg(long)]
    seed: Option<u64>,
    /// A TOML scenario: the simulator's config (seed, link model, limits, queues).
    #[arg(long)]
    scenario: Option<PathBuf>,
    /// Skip the partition and the crash.
    #[arg(long)]
    no_faults: bool,
    /// Write the report as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Record every simulator event and write them as JSON to this file.
    #[arg(long)]
    trace: Option<PathBuf>,
}

/// What the run measured.
#[derive(Serialize)]
struct Report {
    validators: usize,
    seed: u64,
    #[serde(with = "humantime_serde")]
    simulated: Duration,
    wall_seconds: f64,
    submitted: u64,
    committed: u64,
    committed_per_second: f64,
    /// Submission to commit at the first validator.
    commit_latency: LatencySummary,
    height: u64,
    state_root: String,
    /// Whether every validator committed the same sequence (and so the same state roots).
    agreement: bool,
    /// Delivered broadcast copies over published messages times the other validators.
    delivery_ratio: f64,
    rejected_inputs: u64,
    network: Stats,
}

pub fn main(args: Args) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.validators >= 1,
        "a network needs at least one validator"
    );
    let mut config = match &args.scenario {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            toml::from_str(&text).with_context(|| format!("parsing scenario {}", path.display()))?
        }
        None => SimConfig {
            seed: sim::seed_from_env(1),
            ..SimConfig::default()
        },
    };
    config.seed = args.seed.unwrap_or(config.seed);
    config.record_trace |= args.trace.is_some();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()?;
    let wall = std::time::Instant::now();
    let (mut report, trace) = runtime.block_on(run(&args, config))?;
    report.wall_seconds = wall.elapsed().as_secs_f64();
    print_report(&report);
    if let Some(path) = &args.json {
        write_json(path, &report, "report")?;
    }
    if let Some(path) = &args.trace {
        write_json(path, &trace, "trace")?;
    }
    anyhow::ensure!(report.agreement, "validators disagree: see the report");
    Ok(())
}

fn write_json(path: &std::path::Path, value: &impl Serialize, what: &str) -> anyhow::Result<()> {
    let text = serde_json::to_string_pretty(value)?;
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
    println!("{what} written to {}", path.display());
    Ok(())
}

const ACCOUNTS: usize = 64;

/// Collects a node's commits (with the simulated time they happened) until it stops.
async fn collect(node: &NodeHandle) -> anyhow::Result<JoinHandle<Vec<(Instant, Arc<Commit>)>>> {
    let mut commits = node.commits().await?;
    Ok(tokio::spawn(async move {
        let mut all = Vec::new();
        while let Ok(commit) = commits.recv().await {
            all.push((Instant::now(), commit));
        }
        all
    }))
}

async fn run(args: &Args, config: SimConfig) -> anyhow::Result<(Report, Vec<TraceEvent>)> {
    let (n, seed) = (args.validators, config.seed);
    let genesis = devnet::genesis(
        &format!("simulation-{seed}"),
        seed,
        n,
        ACCOUNTS,
        1_000_000_000,
    );
    let chain = genesis.encode().1;
    info!(validators = n, seed, link = ?config.link, "starting simulated ledger network");
    let (sim, peers) = Sim::builder().config(config).peers(n).build();
    let node_config = NodeConfig {
        epoch_ms: Some(1_700_000_000_000),
        ..NodeConfig::default()
    };
    let victim = n - 1;
    let dir = std::env::temp_dir().join(format!("ledger-simulate-{}-{seed}", std::process::id()));
    let start_node = |i: usize, storage: bool| {
        let (genesis, peer, node_config, dir) =
            (&genesis, peers[i].clone(), node_config.clone(), dir.clone());
        async move {
            let storage = if storage {
                Some(ledger::Storage::open(&dir)?)
            } else {
                None
            };
            anyhow::Ok(
                ledger::spawn(
                    genesis,
                    Some(devnet::key(seed, Role::Validator, i)),
                    node_config,
                    peer,
                    storage,
                )
                .await?,
            )
        }
    };
    let mut nodes = Vec::new();
    let mut collectors = Vec::new();
    for i in 0..n {
        let node = start_node(i, i == victim && !args.no_faults).await?;
        collectors.push(collect(&node).await?);
        nodes.push(Some(node));
    }

    let start = Instant::now();
    let step = Duration::from_secs(1) / args.tps.max(1);
    let steps = (args.duration.as_secs_f64() / step.as_secs_f64()) as u64;
    let mut submitted_at: HashMap<Cid, Instant> = HashMap::new();
    let mut nonces = [0u64; ACCOUNTS];
    let mut second_life = None;
    let fault_at = |fraction: f64| (steps as f64 * fraction) as u64;
    for k in 0..steps {
        if !args.no_faults {
            if k == fault_at(0.3) {
                info!(t = ?start.elapsed(), "partition: validators 0..{} | the rest", n / 2);
                sim.partition(vec![(0..n / 2).collect()]).await?;
            } else if k == fault_at(0.45) {
                info!(t = ?start.elapsed(), "heal");
                sim.heal().await?;
            } else if k == fault_at(0.6) {
                info!(t = ?start.elapsed(), validator = victim, "crash");
                if let Some(node) = nodes[victim].take() {
                    node.shutdown().await?;
                }
                sim.crash(victim).await?;
            } else if k == fault_at(0.7) {
                info!(t = ?start.elapsed(), validator = victim, "restart from disk");
                sim.restart(victim).await?;
                let node = start_node(victim, true).await?;
                second_life = Some(collect(&node).await?);
                nodes[victim] = Some(node);
            }
        }
        if k % (steps / 10).max(1) == 0 {
            if let Some(node) = nodes[0].as_ref() {
                let status = node.status().await?;
                info!(t = ?start.elapsed(), height = status.height, round = status.highest_round, submitted = submitted_at.len(), "progress");
            }
        }
        let account = (k as usize) % ACCOUNTS;
        let tx = Transaction::Transfer {
            from: devnet::key(seed, Role::Account, account).public(),
            to: devnet::key(seed, Role::Account, (account * 7 + 1) % ACCOUNTS).public(),
            amount: 1 + k % 100,
            nonce: nonces[account],
        };
        let signed =
            SignedTransaction::sign(&chain, tx, &devnet::key(seed, Role::Account, account));
        if let Some(node) = nodes[k as usize % n].as_ref() {
            if let Ok(Ok(_)) = node.submit(signed.clone()).await {
                nonces[account] += 1;
                submitted_at.insert(signed.id(), Instant::now());
            }
        }
        tokio::time::sleep(step).await;
    }

    let mut rejected = 0;
    for node in nodes.iter().flatten() {
        rejected += node.status().await?.stats.rejected.values().sum::<u64>();
        node.shutdown().await?;
    }
    let mut histories = Vec::new();
    for collector in collectors {
        histories.push(collector.await?);
    }
    if let Some(second) = second_life {
        histories[victim] = second.await?;
    }
    let _ = std::fs::remove_dir_all(&dir);

    let agreement = histories
        .iter()
        .all(|h| h.iter().zip(&histories[0]).all(|((_, a), (_, b))| a == b));
    let mut latency = LatencyHistogram::default();
    let mut committed = 0;
    for (at, commit) in &histories[0] {
        for (id, _) in &commit.transactions {
            if let Some(submitted) = submitted_at.get(id) {
                latency.record(at.duration_since(*submitted));
                committed += 1;
            }
        }
    }
    let last = histories[0].last().map(|(_, c)| c.clone());
    let network = sim.stats().await?;
    let published = network.counters.published * (n as u64 - 1);
    let report = Report {
        validators: n,
        seed,
        simulated: args.duration,
        wall_seconds: 0.0,
        submitted: submitted_at.len() as u64,
        committed,
        committed_per_second: committed as f64 / args.duration.as_secs_f64(),
        commit_latency: latency.summary(),
        height: last.as_ref().map_or(0, |c| c.height),
        state_root: last.map_or_else(String::new, |c| ledger::node::hex(&c.state_root)),
        agreement,
        delivery_ratio: network.counters.delivered as f64 / published.max(1) as f64,
        rejected_inputs: rejected,
        network,
    };
    Ok((report, sim.trace().await?))
}

fn print_report(r: &Report) {
    let c = &r.network.counters;
    let ms = |us: u64| us as f64 / 1000.0;
    let line = |name: &str, l: &LatencySummary| {
        println!(
            "  {name:<20} p50 {:.1} ms  p95 {:.1} ms  p99 {:.1} ms  max {:.1} ms  (n={})",
            ms(l.p50_us),
            ms(l.p95_us),
            ms(l.p99_us),
            ms(l.max_us),
            l.count
        );
    };
    println!(
        "simulated {:?} of {} validators (seed {}) in {:.2} s of wall time",
        r.simulated, r.validators, r.seed, r.wall_seconds
    );
    println!(
        "  transactions         submitted {}, committed {} ({:.1} per simulated second)",
        r.submitted, r.committed, r.committed_per_second
    );
    line("commit latency", &r.commit_latency);
    println!(
        "  ledger               height {}, state root {}",
        r.height,
        &r.state_root[..r.state_root.len().min(16)]
    );
    println!(
        "  agreement            {}",
        if r.agreement {
            "all validators committed the same sequence"
        } else {
            "DISAGREEMENT"
        }
    );
    println!(
        "  broadcast            published {}, delivered {}, ratio {:.3}",
        c.published, c.delivered, r.delivery_ratio
    );
    println!(
        "  dropped              partition {}, crashed {}, loss {}, queue full {}",
        c.dropped_partition, c.dropped_crashed, c.dropped_loss, c.dropped_queue_full
    );
    line("delivery latency", &r.network.delivery_latency);
    println!(
        "  fetch                ok {}, timed out {}, mismatched {}, served {} blocks ({} bytes)",
        c.fetches_ok,
        c.fetches_timed_out,
        c.fetches_mismatched,
        c.blocks_served,
        c.blocks_served_bytes
    );
    line("fetch latency", &r.network.fetch_latency);
    println!("  invalid inputs       {} rejected", r.rejected_inputs);
    println!("  trace digest         {}", r.network.trace_digest);
}
