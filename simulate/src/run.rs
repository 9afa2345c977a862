//! A network of ledger validators over the embedded simulator, in virtual time. A load of signed
//! transfers goes to the honest validators round-robin; midway the network is partitioned and
//! healed, and one validator crashes and restarts from its store.
//! Optionally the last validators are Byzantine (equivocating, withholding, or sending junk).

use std::{collections::HashMap, path::PathBuf, time::Duration};

use anyhow::Context;
use comms::Cid;
use indicatif::{ProgressBar, ProgressStyle};
use ledger::NodeConfig;
use report::{latency_line, LatencyHistogram, LatencySummary};
use scenario::{agreement, byzantine::Behaviour, Accounts, Network};
use serde::Serialize;
use sim::{Latency, SimConfig, Stats, TraceEvent};
use tokio::time::Instant;
use tracing::info;

use crate::schedule::{self, Event, Span};

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
    /// One-way link latency, the median when `--sigma` is set (overrides the scenario's).
    #[arg(long, value_parser = humantime::parse_duration)]
    latency: Option<Duration>,
    /// Makes the latency log-normal with this shape (0.5 is a wide-area spread).
    #[arg(long)]
    sigma: Option<f64>,
    /// Extra delay per message, uniform from zero to this.
    #[arg(long, value_parser = humantime::parse_duration)]
    jitter: Option<Duration>,
    /// Probability that a message copy is lost.
    #[arg(long)]
    loss: Option<f64>,
    /// Byzantine validators (the last ones); at most f, a third of the others.
    #[arg(long, default_value_t = 0)]
    byzantine: usize,
    /// How they misbehave: `equivocate` (two blocks per round), `withhold` (half their blocks
    /// sent to nobody, none served), or `invalid` (junk: bad signatures, other chains,
    /// non-canonical bytes, missing parents).
    #[arg(long, default_value = "equivocate")]
    behaviour: Behaviour,
    /// Split the validators into two halves during START..END: durations from the start (`18s`)
    /// or shares of the run (`30%`). Repeat for several. Without `--partition` and `--crash` the
    /// run has one partition at 30%..45% and one crash at 60%..70%.
    #[arg(long = "partition", value_name = "START..END")]
    partitions: Vec<Span>,
    /// Crash a validator at START and restart it from its store at END. Each crash
    /// takes the next honest validator, from the last down to validator 1. Repeat for several.
    #[arg(long = "crash", value_name = "START..END")]
    crashes: Vec<Span>,
    /// No partition and no crash.
    #[arg(long, conflicts_with_all = ["partitions", "crashes"])]
    no_faults: bool,
    /// The most commits an honest validator may be behind the highest at the end and still count
    /// as in agreement (a validator restarted late may still be catching up).
    #[arg(long, default_value_t = 50)]
    max_lag: u64,
    /// Write the report as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Record every simulator event and write them as JSON to this file.
    #[arg(long)]
    trace: Option<PathBuf>,
    /// Draw each transaction's commit latency over simulated time as an SVG chart.
    #[arg(long)]
    plot: Option<PathBuf>,
}

/// What the run measured.
#[derive(Serialize)]
struct Report {
    validators: usize,
    byzantine: usize,
    behaviour: Behaviour,
    /// The fault schedule: simulated time and what happened.
    faults: Vec<String>,
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
    /// Each honest validator's height at the end.
    heights: Vec<u64>,
    /// Whether the honest validators' commit sequences are prefixes of each other, pair by pair,
    /// and none is more than `--max-lag` commits behind.
    agreement: bool,
    /// If not, why not.
    disagreement: Option<String>,
    /// Delivered broadcast copies over published messages times the other validators.
    delivery_ratio: f64,
    /// Invalid blocks and batches the honest validators refused.
    rejected_inputs: u64,
    /// At the end, the most DAG blocks an honest validator held in memory (the last `GC_DEPTH`
    /// rounds and up), and the most blocks below the floor it indexed in memory (none with a store).
    dag_blocks_in_memory: usize,
    pruned_in_memory: usize,
    network: Stats,
    /// Per committed transaction: simulated seconds since the start, and its commit latency in
    /// seconds (for `--plot`).
    #[serde(skip)]
    latencies: Vec<(f64, f64)>,
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
            let config: SimConfig = toml::from_str(&text)
                .with_context(|| format!("parsing scenario {}", path.display()))?;
            (config.check()).with_context(|| format!("in scenario {}", path.display()))?;
            config
        }
        None => SimConfig {
            seed: sim::seed_from_env(1),
            ..SimConfig::default()
        },
    };
    config.seed = args.seed.unwrap_or(config.seed);
    config.record_trace |= args.trace.is_some();
    apply_link_flags(&args, &mut config.link)?;
    let f = (args.validators - 1) / 3;
    anyhow::ensure!(
        args.byzantine <= f,
        "{} Byzantine validators of {}: at most {f} (fewer than a third) can be tolerated",
        args.byzantine,
        args.validators
    );
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
    if let Some(path) = &args.plot {
        let title = format!(
            "commit latency: {} validators, seed {}",
            report.validators, report.seed
        );
        ::report::chart::latency_over_time(
            path,
            &title,
            "commit time (simulated s)",
            &report.latencies,
        )?;
        println!("chart written to {}", path.display());
    }
    anyhow::ensure!(report.agreement, "validators disagree: see the report");
    Ok(())
}

/// `--latency`, `--sigma`, `--jitter`, `--loss` over the scenario's link model.
fn apply_link_flags(args: &Args, link: &mut sim::LinkModel) -> anyhow::Result<()> {
    let median = args.latency.unwrap_or(Duration::from_millis(20));
    match args.sigma {
        Some(sigma) if sigma > 0.0 => link.latency = Latency::LogNormal { median, sigma },
        Some(_) | None if args.latency.is_some() => {
            link.latency = Latency::Constant { value: median }
        }
        _ => {}
    }
    if let Some(jitter) = args.jitter {
        link.jitter = jitter;
    }
    if let Some(loss) = args.loss {
        anyhow::ensure!(
            (0.0..1.0).contains(&loss),
            "--loss {loss}: a probability below 1"
        );
        link.loss = loss;
    }
    Ok(())
}

fn write_json(path: &std::path::Path, value: &impl Serialize, what: &str) -> anyhow::Result<()> {
    let text = serde_json::to_string_pretty(value)?;
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
    println!("{what} written to {}", path.display());
    Ok(())
}

const ACCOUNTS: usize = 64;

async fn run(args: &Args, config: SimConfig) -> anyhow::Result<(Report, Vec<TraceEvent>)> {
    let (n, seed) = (args.validators, config.seed);
    let honest = n - args.byzantine;
    info!(validators = n, byzantine = args.byzantine, seed, link = ?config.link, "starting simulated ledger network");
    let (partitions, crashes) = match args.no_faults {
        true => (vec![], vec![]),
        false if args.partitions.is_empty() && args.crashes.is_empty() => {
            let crash = (honest > 1).then(|| Span::shares(0.6, 0.7));
            (vec![Span::shares(0.3, 0.45)], crash.into_iter().collect())
        }
        false => (args.partitions.clone(), args.crashes.clone()),
    };
    // Crashes take honest validators from the last down; validator 0 stays up, as the reference.
    let victims: Vec<usize> = (1..honest).rev().collect();
    let events = schedule::events(args.duration, &partitions, &crashes, &victims)
        .map_err(anyhow::Error::msg)?;
    // A validator that will crash keeps a store to restart from.
    let mut network = Network::builder()
        .validators(n)
        .byzantine(vec![args.behaviour; args.byzantine])
        .sim(config)
        .accounts(ACCOUNTS, 1_000_000_000)
        .node_config(NodeConfig {
            epoch_ms: Some(1_700_000_000_000),
            ..NodeConfig::default()
        })
        .stores(victims[..crashes.len()].to_vec())
        .start()
        .await?;
    let mut accounts = Accounts::new(network.chain(), seed, ACCOUNTS);

    let start = Instant::now();
    let step = Duration::from_secs(1) / args.tps.max(1);
    let steps = (args.duration.as_secs_f64() / step.as_secs_f64()) as u64;
    let bar = ProgressBar::new(args.duration.as_secs().max(1)).with_style(
        ProgressStyle::with_template(
            "{spinner} simulated {pos}/{len} s [{bar:30}] {msg} ({elapsed} wall)",
        )?
        .progress_chars("=> "),
    );
    let mut submitted_at: HashMap<Cid, Instant> = HashMap::new();
    let mut pending = events.iter().peekable();
    let mut faults = Vec::new();
    for k in 0..steps {
        while let Some((_, event)) = pending.next_if(|(at, _)| *at <= start.elapsed()) {
            let t = start.elapsed();
            bar.suspend(|| info!(?t, "{event}"));
            faults.push(format!("{:.1}s {event}", t.as_secs_f64()));
            match *event {
                Event::Partition => network.partition(vec![(0..n / 2).collect()]).await?,
                Event::Heal => network.heal().await?,
                Event::Crash(v) => network.crash(v).await?,
                Event::Restart(v) => network.restart(v).await?,
            }
        }
        if k % (steps / 100).max(1) == 0 {
            if let Some(node) = network.node(0) {
                let status = node.status().await?;
                bar.set_position(start.elapsed().as_secs());
                bar.set_message(format!(
                    "height {} round {} submitted {}",
                    status.height,
                    status.highest_round,
                    submitted_at.len()
                ));
            }
        }
        let account = (k as usize) % ACCOUNTS;
        let tx = accounts.transfer(account, (account * 7 + 1) % ACCOUNTS, 1 + k % 100);
        if let Some(node) = network.node(k as usize % honest).cloned() {
            if let Ok(Ok(id)) = accounts.submit(&node, account, tx).await {
                submitted_at.insert(id, Instant::now());
            }
        }
        tokio::time::sleep(step).await;
    }
    bar.finish_and_clear();

    let finished = network.finish().await?;
    let statuses = &finished.statuses;
    let rejected = statuses
        .iter()
        .map(|s| s.stats.rejected.values().sum::<u64>())
        .sum();
    let dag_blocks_in_memory = statuses.iter().map(|s| s.dag_blocks).max().unwrap_or(0);
    let pruned_in_memory = statuses
        .iter()
        .map(|s| s.pruned_in_memory)
        .max()
        .unwrap_or(0);
    let histories = &finished.histories;
    let commits = finished.commits();
    let agreement = agreement::check(&commits, args.max_lag);
    let mut latency = LatencyHistogram::default();
    let mut latencies = Vec::new();
    let submitted = submitted_at.len() as u64;
    for (at, commit) in &histories[0] {
        for (id, _) in &commit.transactions {
            // A transaction proposed again (its first block was slow to commit) may be ordered a
            // second time, without effect: it counts once, when it first committed.
            if let Some(submitted) = submitted_at.remove(id) {
                let took = at.duration_since(submitted);
                latency.record(took);
                latencies.push((at.duration_since(start).as_secs_f64(), took.as_secs_f64()));
            }
        }
    }
    let last = histories[0].last().map(|(_, c)| c.clone());
    let stats = finished.stats;
    let expected = stats.counters.published * (n as u64 - 1);
    let committed = latencies.len() as u64;
    let report = Report {
        validators: n,
        byzantine: args.byzantine,
        behaviour: args.behaviour,
        faults,
        seed,
        simulated: args.duration,
        wall_seconds: 0.0,
        submitted,
        committed,
        committed_per_second: committed as f64 / args.duration.as_secs_f64(),
        commit_latency: latency.summary(),
        height: last.as_ref().map_or(0, |c| c.height),
        state_root: last.map_or_else(String::new, |c| c.state_root.to_string()),
        heights: commits.iter().map(|c| c.len() as u64).collect(),
        agreement: agreement.is_ok(),
        disagreement: agreement.err().map(|e| e.to_string()),
        delivery_ratio: match expected {
            0 => 1.0,
            _ => stats.counters.delivered as f64 / expected as f64,
        },
        rejected_inputs: rejected,
        dag_blocks_in_memory,
        pruned_in_memory,
        network: stats,
        latencies,
    };
    Ok((report, finished.trace))
}

/// A report's line of latency percentiles, in milliseconds.
fn print_report(r: &Report) {
    let c = &r.network.counters;
    let line = |name: &str, l: &LatencySummary| println!("{}", latency_line(name, l));
    let byzantine = match r.byzantine {
        0 => String::new(),
        b => format!(", {b} Byzantine ({:?})", r.behaviour).to_lowercase(),
    };
    println!(
        "simulated {:?} of {} validators{byzantine} (seed {}) in {:.2} s of wall time",
        r.simulated, r.validators, r.seed, r.wall_seconds
    );
    for fault in &r.faults {
        println!("  fault                {fault}");
    }
    println!(
        "  transactions         submitted {}, committed {} ({:.1} per simulated second)",
        r.submitted, r.committed, r.committed_per_second
    );
    line("commit latency", &r.commit_latency);
    println!(
        "  ledger               height {}, state root {}",
        r.height, r.state_root
    );
    match &r.disagreement {
        None => println!(
            "  agreement            every pair of honest validators committed the same sequence \
             (heights {:?})",
            r.heights
        ),
        Some(why) => println!("  agreement            DISAGREEMENT: {why}"),
    }
    println!(
        "  broadcast            published {}, delivered {}, ratio {:.3}",
        c.published, c.delivered, r.delivery_ratio
    );
    println!(
        "  bytes moved          published {}, delivered {}, fetched {}",
        bytes(c.published_bytes),
        bytes(c.delivered_bytes),
        bytes(c.blocks_served_bytes)
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
    println!(
        "  memory per node      at most {} DAG blocks, {} older ones indexed",
        r.dag_blocks_in_memory, r.pruned_in_memory
    );
    println!("  trace digest         {}", r.network.trace_digest);
}

/// Bytes in binary units.
fn bytes(n: u64) -> String {
    match n {
        0..1024 => format!("{n} B"),
        1024..1_048_576 => format!("{:.1} KiB", n as f64 / 1024.0),
        _ => format!("{:.1} MiB", n as f64 / 1_048_576.0),
    }
}
