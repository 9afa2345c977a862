//! `latency`: broadcast and fetch latency of the `Communication` backends, measured the same way on
//! each: the simulator (in virtual time, under any link model) and real IPFS daemons on loopback.
//!
//!     cargo run --release -p benches --bin latency -- --json latency.json --plot latency.svg
//!     cargo run -p benches --bin latency -- --quick        # what CI runs, so that it cannot rot
//!
//! Peer 0 publishes and puts; peers 1.. subscribe, and peer 1 fetches. See `benches/RESULTS.md`.

use std::{path::PathBuf, sync::Arc, time::Duration};

use anyhow::Context;
use benches::{
    calibrate,
    latency::{Batches, Listeners, Operation, Plan},
    raw::RawIpfs,
    report::{self, Cell},
};
use clap::Parser;
use comms::{conformance::wait_for_subscribers, Communication, Topic};
use comms_ipfs::{testnet, IpfsComms, IpfsConfig};
use comms_p2p::{P2pConfig, P2pPeer};
use sim::{Latency, LinkModel, Sim, SimConfig};

#[derive(Parser)]
#[command(about, long_about)]
/// Broadcast-to-delivery and put-to-fetch latency of the Communication backends.
struct Args {
    /// Backends to measure: `sim`; `ipfs` (our kubo backend, and the raw RPC baseline beside it,
    /// on the same daemons); `embedded` (IPFS peers in this process, no daemon). Repeat; default
    /// all three. `ipfs` and `embedded` take turns in one run.
    #[arg(long = "backend", value_name = "NAME")]
    backends: Vec<String>,
    /// Operations to measure: `broadcast`, `put-fetch`. Repeat; default both.
    #[arg(long = "operation", value_name = "NAME")]
    operations: Vec<Operation>,
    /// Broadcasts of the smallest size each backend sends first, unrecorded, so that the daemons'
    /// connections and gossipsub meshes (grafted at its heartbeats, one a second) have formed
    /// before anything is recorded.
    #[arg(long, default_value_t = 3000)]
    settle: usize,
    /// Peers per backend: one publisher, the rest subscribers (at least 2).
    #[arg(long, default_value_t = 3)]
    peers: usize,
    /// Payload sizes in bytes (a broadcast is capped at the backend's message limit).
    #[arg(long, value_delimiter = ',', default_value = "256,4096,65536,1048576")]
    sizes: Vec<usize>,
    /// Operations in flight at once.
    #[arg(long, value_delimiter = ',', default_value = "1,8,64")]
    concurrency: Vec<usize>,
    /// Recorded samples per cell (a broadcast gives one per subscriber).
    #[arg(long, default_value_t = 200)]
    samples: usize,
    /// Operations before recording starts, per cell.
    #[arg(long, default_value_t = 20)]
    warmup: usize,
    /// How long one batch may take; what is missing then counts as lost.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    bound: Duration,
    /// A short run: 256 B and 64 KiB, concurrency 1 and 8, 20 samples.
    #[arg(long)]
    quick: bool,
    /// The simulator's link latency (the median with `--sim-sigma`).
    #[arg(long, default_value = "20ms", value_parser = humantime::parse_duration)]
    sim_latency: Duration,
    /// Makes the simulated latency log-normal with this shape.
    #[arg(long)]
    sim_sigma: Option<f64>,
    /// A simulator scenario file (its link model replaces the `--sim-*` flags).
    #[arg(long)]
    scenario: Option<PathBuf>,
    /// Use these running IPFS daemons (RPC URLs, already connected to each other) instead of
    /// starting local ones. Repeat.
    #[arg(long = "ipfs-api", value_name = "URL")]
    ipfs_apis: Vec<String>,
    /// Use the running IPFS daemons listed in this file, one `API_URL SWARM_MULTIADDR` per line
    /// (what `ipfs-testnet --out` writes), connecting them to each other.
    #[arg(long, value_name = "FILE", conflicts_with = "ipfs_apis")]
    ipfs_daemons: Option<PathBuf>,
    /// Fit the simulator (link delay, publishing and serving paths, serve delay) to the IPFS latencies, write it to this
    /// scenario file, and measure the simulator with it: predicted and measured side by side.
    #[arg(long, value_name = "FILE.toml")]
    calibrate: Option<PathBuf>,
    /// The backend whose cells `--calibrate` fits: `ipfs` or `embedded`.
    #[arg(long, default_value = "ipfs")]
    calibrate_to: String,
    /// Also measure the two crossings of our layer and the raw baseline on the IPFS daemons: our
    /// publisher with raw subscribers (`ipfs-pub`), raw publisher with our subscribers
    /// (`ipfs-sub`), to tell which side a difference comes from.
    #[arg(long)]
    cross: bool,
    /// Start from the cells of an earlier run (its `--json` file) instead of measuring its
    /// backends again: with `--calibrate`, fits the simulator to them, without daemons. Its peer
    /// count replaces `--peers`; the backends given are measured as well (none by default).
    #[arg(long, value_name = "FILE.json")]
    cells: Option<PathBuf>,
    /// Write the cells as JSON.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Draw p50 and p99 by size, one line per backend, at the lowest concurrency (SVG).
    #[arg(long)]
    plot: Option<PathBuf>,
}

fn main() -> anyhow::Result<()> {
    let mut args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    if args.quick {
        args.sizes = vec![256, 64 << 10];
        args.concurrency = vec![1, 8];
        args.samples = 20;
        args.warmup = 2;
        args.settle = 20;
    }
    let mut cells = Vec::new();
    if let Some(path) = &args.cells {
        let earlier: EarlierRun = serde_json::from_str(
            &std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?,
        )
        .with_context(|| format!("parsing {}", path.display()))?;
        (args.peers, cells) = (earlier.peers, earlier.cells);
        // A new fit replaces the earlier one's predictions.
        if args.calibrate.is_some() {
            cells.retain(|c| c.backend != "sim-fit");
        }
    } else if args.backends.is_empty() {
        args.backends = vec!["sim".into(), "ipfs".into(), "embedded".into()];
    }
    if args.operations.is_empty() {
        args.operations = vec![Operation::Broadcast, Operation::PutFetch];
    }
    anyhow::ensure!(
        args.peers >= 2,
        "--peers: at least a publisher and a subscriber"
    );
    let plan = Plan {
        samples: args.samples,
        warmup: args.warmup,
        bound: args.bound,
    };
    let named = |name: &str| args.backends.iter().any(|b| b == name);
    if let Some(other) =
        (args.backends.iter()).find(|b| !["sim", "ipfs", "embedded"].contains(&b.as_str()))
    {
        anyhow::bail!("unknown backend {other:?}: sim, ipfs or embedded");
    }
    if named("sim") {
        cells.extend(measure_sim("sim", sim_config(&args)?, &args, plan)?);
    }
    if named("ipfs") || named("embedded") {
        cells.extend(measure_networked(
            &args,
            plan,
            named("ipfs"),
            named("embedded"),
        )?);
    }
    println!(
        "{} samples per cell after {} warm-up operations; {} peers per backend",
        plan.samples, plan.warmup, args.peers
    );
    let mut calibration = None;
    if let Some(path) = &args.calibrate {
        let base = SimConfig {
            seed: sim::seed_from_env(1),
            // The same limits, so that capped broadcast sizes match cell for cell.
            limits: IpfsConfig::default().limits,
            ..SimConfig::default()
        };
        let to = args.calibrate_to.as_str();
        let config = calibrate::fit(&cells, to, args.peers - 1, base).with_context(|| {
            format!("--calibrate needs the {to} backend's broadcast cells at concurrency 1")
        })?;
        let text = format!(
            "# Fitted by `latency --calibrate --calibrate-to {to}` to its latencies on loopback.\n{}",
            toml::to_string_pretty(&config)?
        );
        std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
        eprintln!(
            "fitted model written to {}: link {:?}, publisher {:?}, server {:?}, serve delay {:?}",
            path.display(),
            config.link,
            config.publisher,
            config.server,
            config.serve_delay
        );
        cells.extend(measure_sim("sim-fit", config.clone(), &args, plan)?);
        calibration = Some(config);
    }
    report::print_table(&cells);
    if calibration.is_some() {
        report::print_comparison(&cells, "sim-fit", &args.calibrate_to);
    }
    let ratios = report::ratios(&cells, "ipfs", "ipfs-raw");
    if !ratios.is_empty() {
        let goal = "at most 1.05 at p50 and 1.10 at p99";
        report::print_ratios(&ratios, "ipfs", "ipfs-raw", goal);
    }
    let embedded = report::ratios(&cells, "embedded", "ipfs");
    if !embedded.is_empty() {
        let goal = "at most 0.5 at p50, and less CPU per sample";
        report::print_ratios(&embedded, "embedded", "ipfs", goal);
    }
    if let Some(path) = &args.json {
        let all = serde_json::json!({
            "plan": plan,
            "peers": args.peers,
            "cells": cells,
            "ipfs_over_raw": ratios,
            "embedded_over_ipfs": embedded,
            "fitted": calibration,
        });
        let text = serde_json::to_string_pretty(&all)?;
        std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
        println!("cells written to {}", path.display());
    }
    if let Some(path) = &args.plot {
        let lowest = args.concurrency.iter().copied().min().unwrap_or(1);
        report::plot(path, &cells, lowest)?;
        println!("chart written to {}", path.display());
    }
    Ok(())
}

/// What `--cells` reads of an earlier run's `--json` file.
#[derive(serde::Deserialize)]
struct EarlierRun {
    peers: usize,
    cells: Vec<Cell>,
}

/// A backend under measurement: its name, its peers, and the processes whose CPU time its
/// operations cost besides this one's (its daemons; None: CPU not counted).
struct Backend {
    name: &'static str,
    peers: Vec<Arc<dyn Communication>>,
    cpu_of: Option<Vec<u32>>,
}

/// Every cell of the `backends`, which take turns batch by batch within each cell (see
/// [`measure_cell`]), after `--settle` broadcasts that are not recorded. Peer 0 publishes and puts;
/// the others subscribe, and peer 1 fetches.
async fn measure(backends: &[Backend], args: &Args, plan: Plan) -> anyhow::Result<Vec<Cell>> {
    let mut listeners = Vec::new();
    for backend in backends {
        let topic = Topic::new(format!("latency-bench-{}", backend.name))?;
        let (publisher, subscribers) = (&backend.peers[0], &backend.peers[1..]);
        let mut subscriptions = Vec::new();
        for peer in subscribers {
            subscriptions.push(peer.subscribe(&topic).await?);
        }
        let ids: Vec<_> = subscribers.iter().map(|p| p.local_peer()).collect();
        wait_for_subscribers(&**publisher, &topic, &ids, Duration::from_secs(60)).await;
        listeners.push((topic, Listeners::new(subscriptions)));
    }
    let mut next_id = 0;
    let smallest = args.sizes.iter().copied().min();
    if let (Some(size), true) = (smallest, args.settle > 0) {
        let settle = Plan {
            samples: 0,
            warmup: args.settle * (args.peers - 1),
            ..plan
        };
        let cell = (Operation::Broadcast, size, 1);
        measure_cell(backends, &mut listeners, cell, settle, &mut next_id).await?;
    }
    let mut cells = Vec::new();
    for &size in &args.sizes {
        for &concurrency in &args.concurrency {
            for &operation in &args.operations {
                let cell = (operation, size, concurrency.max(1));
                cells.extend(
                    measure_cell(backends, &mut listeners, cell, plan, &mut next_id).await?,
                );
            }
            eprintln!(
                "{} at concurrency {concurrency} done",
                report::size_name(size)
            );
        }
    }
    Ok(cells)
}

/// One cell (operation, size, concurrency) on every backend. The backends take turns batch by
/// batch, the first alternating, so that a drift of the machine's load or of the daemons' speed
/// affects them alike and their ratio stays fair. Operation ids are taken from `next_id` on.
async fn measure_cell(
    backends: &[Backend],
    listeners: &mut [(Topic, Listeners)],
    (operation, size, concurrency): (Operation, usize, usize),
    plan: Plan,
    next_id: &mut u64,
) -> anyhow::Result<Vec<Cell>> {
    // A broadcast is capped at its backend's message limit.
    let sizes: Vec<usize> = backends
        .iter()
        .map(|backend| match operation {
            Operation::Broadcast => size.min(backend.peers[0].limits().max_message_bytes),
            Operation::PutFetch => size,
        })
        .collect();
    let mut batches: Vec<Batches> = backends
        .iter()
        .map(|backend| {
            let samples_per_operation = match operation {
                Operation::Broadcast => backend.peers.len() - 1,
                Operation::PutFetch => 1,
            };
            let mut batches = Batches::new(plan, samples_per_operation, concurrency, *next_id);
            if let Some(pids) = &backend.cpu_of {
                batches = batches.counting_cpu_of(pids.clone());
            }
            *next_id += (plan.samples + plan.warmup + 2 * concurrency) as u64;
            batches
        })
        .collect();
    for turn in 0.. {
        let mut order: Vec<usize> = (0..backends.len()).collect();
        if turn % 2 == 1 {
            order.reverse();
        }
        let mut ran = false;
        for index in order {
            let (publisher, fetcher) = (&*backends[index].peers[0], &*backends[index].peers[1]);
            let (size, batches) = (sizes[index], &mut batches[index]);
            ran |= match operation {
                Operation::Broadcast => {
                    let (topic, listeners) = &mut listeners[index];
                    batches
                        .broadcast(publisher, listeners, topic, size, plan.bound)
                        .await?
                }
                Operation::PutFetch => {
                    batches
                        .put_fetch(publisher, fetcher, size, plan.bound)
                        .await?
                }
            };
        }
        if !ran {
            break;
        }
    }
    let cells = backends.iter().zip(sizes).zip(batches);
    Ok(cells
        .map(|((backend, size), batches)| {
            let measured = batches.into_measured();
            Cell::new(backend.name, operation, size, concurrency, &measured)
        })
        .collect())
}

/// The simulator's config: the scenario file's, or the `--sim-*` flags'.
fn sim_config(args: &Args) -> anyhow::Result<SimConfig> {
    if let Some(path) = &args.scenario {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let config: SimConfig =
            toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        (config.check()).with_context(|| format!("in {}", path.display()))?;
        return Ok(config);
    }
    let latency = match args.sim_sigma {
        Some(sigma) => Latency::LogNormal {
            median: args.sim_latency,
            sigma,
        },
        None => Latency::Constant {
            value: args.sim_latency,
        },
    };
    Ok(SimConfig {
        seed: sim::seed_from_env(1),
        link: LinkModel {
            latency,
            ..LinkModel::default()
        },
        ..SimConfig::default()
    })
}

fn measure_sim(
    name: &'static str,
    config: SimConfig,
    args: &Args,
    plan: Plan,
) -> anyhow::Result<Vec<Cell>> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()?;
    runtime.block_on(async {
        let (_sim, peers) = Sim::builder().config(config).peers(args.peers).build();
        let peers = peers
            .into_iter()
            .map(|p| Arc::new(p) as Arc<dyn Communication>)
            .collect();
        let backend = Backend {
            name,
            peers,
            cpu_of: None,
        };
        measure(&[backend], args, plan).await
    })
}

/// A daemon's RPC API URL and swarm multiaddr (empty where not known).
type Addresses = (String, String);

/// The daemons' RPC API and swarm addresses: those `--ipfs-daemons` or `--ipfs-api` name, or
/// `--peers` local ones started here (returned, to be stopped with the run).
fn daemons(args: &Args) -> anyhow::Result<(Vec<testnet::Daemon>, Vec<Addresses>)> {
    let listed = match &args.ipfs_daemons {
        Some(path) => std::fs::read_to_string(path)
            .with_context(|| format!("reading {}", path.display()))?
            .lines()
            .filter_map(|line| {
                let mut words = line.split_whitespace();
                let api = words.next()?.to_string();
                Some((api, words.next().unwrap_or_default().to_string()))
            })
            .collect(),
        None => args
            .ipfs_apis
            .iter()
            .map(|a| (a.clone(), String::new()))
            .collect::<Vec<_>>(),
    };
    match listed.len() {
        0 => {
            eprintln!("starting {} local IPFS daemons", args.peers);
            let daemons = testnet::start_daemons(args.peers);
            let apis = daemons
                .iter()
                .map(|d| (d.api(), d.swarm_address()))
                .collect();
            Ok((daemons, apis))
        }
        n if n >= 2 => Ok((Vec::new(), listed)),
        _ => anyhow::bail!("--ipfs-api, --ipfs-daemons: at least two daemons"),
    }
}

/// The networked backends, taking turns in every cell: with `ipfs`, ours and the raw RPC
/// baseline on the same daemons (and the crossings with `--cross`); with `embedded`, as many
/// embedded peers in this process, dialled into a full mesh of their own. The CPU time of each
/// recorded batch is counted: this process's, plus the daemons' for the daemon backends.
fn measure_networked(
    args: &Args,
    plan: Plan,
    ipfs: bool,
    embedded: bool,
) -> anyhow::Result<Vec<Cell>> {
    let (daemons, apis) = match ipfs {
        true => daemons(args)?,
        false => (Vec::new(), Vec::new()),
    };
    // Only local daemons' CPU can be read.
    let pids: Vec<u32> = daemons.iter().filter_map(testnet::Daemon::pid).collect();
    let cpu_of = (pids.len() == daemons.len() && !daemons.is_empty()).then_some(pids);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let cells = runtime.block_on(async {
        let mut backends = Vec::new();
        if ipfs {
            backends = ipfs_backends(&apis, args.cross, cpu_of).await?;
        }
        if embedded {
            backends.push(Backend {
                name: "embedded",
                peers: embedded_peers(args.peers).await?,
                cpu_of: Some(Vec::new()),
            });
        }
        measure(&backends, args, plan).await
    });
    drop(daemons);
    cells
}

/// `n` embedded peers on loopback, each dialling those before it.
async fn embedded_peers(n: usize) -> anyhow::Result<Vec<Arc<dyn Communication>>> {
    let mut peers: Vec<P2pPeer> = Vec::new();
    for _ in 0..n {
        let mut dial = Vec::new();
        for peer in &peers {
            dial.extend(peer.listening().await?);
        }
        let config = P2pConfig {
            peers: dial,
            ..P2pConfig::default()
        };
        peers.push(P2pPeer::start(comms_p2p::Keypair::generate_ed25519(), config).await?);
    }
    Ok(peers
        .into_iter()
        .map(|p| Arc::new(p) as Arc<dyn Communication>)
        .collect())
}

/// Our kubo backend and the raw RPC baseline on the daemons `apis` (and, with `cross`, the two
/// crossings of them).
async fn ipfs_backends(
    apis: &[(String, String)],
    cross: bool,
    cpu_of: Option<Vec<u32>>,
) -> anyhow::Result<Vec<Backend>> {
    let mut ours: Vec<Arc<dyn Communication>> = Vec::new();
    let mut raw: Vec<Arc<dyn Communication>> = Vec::new();
    for (i, (api, _)) in apis.iter().enumerate() {
        let config = IpfsConfig {
            api: api.clone(),
            peers: apis[..i]
                .iter()
                .map(|(_, swarm)| swarm.clone())
                .filter(|s| !s.is_empty())
                .collect(),
            ..IpfsConfig::default()
        };
        ours.push(Arc::new(IpfsComms::connect(config).await?));
        raw.push(Arc::new(RawIpfs::connect(api).await?));
    }
    let backend = |name, peers| Backend {
        name,
        peers,
        cpu_of: cpu_of.clone(),
    };
    let mut backends = Vec::new();
    if cross {
        // The publisher (and putter) is peer 0; the subscribers (and fetcher) the others.
        let crossed = |first: &[Arc<dyn Communication>], rest: &[Arc<dyn Communication>]| {
            [&first[..1], &rest[1..]].concat()
        };
        backends.push(backend("ipfs-pub", crossed(&ours, &raw)));
        backends.push(backend("ipfs-sub", crossed(&raw, &ours)));
    }
    backends.insert(0, backend("ipfs", ours));
    backends.insert(1, backend("ipfs-raw", raw));
    Ok(backends)
}
