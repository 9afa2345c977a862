//! `ledger-node simulate`: a network of peers over the embedded simulator, in virtual time.
//!
//! Until the ledger drives it, the workload is the pattern ledger sync is made of: every peer
//! periodically stores a block and broadcasts its CID; every peer that hears a CID fetches the block.
//! Midway the network is partitioned and healed, and one peer crashes and restarts.

use std::{path::PathBuf, time::Duration};

use anyhow::Context;
use bytes::Bytes;
use comms::{Cid, Codec, Communication, Topic};
use serde::Serialize;
use sim::{LatencySummary, Sim, SimConfig, SimPeer, Stats, TraceEvent};
use tokio::time::Instant;
use tracing::{info, warn, Instrument};

/// Options of `simulate`.
#[derive(clap::Args)]
pub struct Args {
    /// Number of peers.
    #[arg(long, default_value_t = 10)]
    peers: usize,
    /// Simulated duration.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// How often each peer announces a new block.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    interval: Duration,
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
    peers: usize,
    seed: u64,
    #[serde(with = "humantime_serde")]
    simulated: Duration,
    wall_seconds: f64,
    /// Delivered copies over published messages times the other peers.
    delivery_ratio: f64,
    delivery_latency: LatencySummary,
    fetches_ok: u64,
    fetches_failed: u64,
    fetch_latency: LatencySummary,
    stats: Stats,
}

pub fn main(args: Args) -> anyhow::Result<()> {
    anyhow::ensure!(args.peers >= 2, "a network needs at least 2 peers");
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
    let (stats, trace) = runtime.block_on(run(&args, config.clone()))?;
    let report = Report {
        peers: args.peers,
        seed: config.seed,
        simulated: args.duration,
        wall_seconds: wall.elapsed().as_secs_f64(),
        delivery_ratio: stats.counters.delivered as f64
            / (stats.counters.published * (args.peers as u64 - 1)).max(1) as f64,
        delivery_latency: stats.delivery_latency,
        fetches_ok: stats.counters.fetches_ok,
        fetches_failed: stats.counters.fetches_timed_out + stats.counters.fetches_mismatched,
        fetch_latency: stats.fetch_latency,
        stats,
    };
    print_report(&report);
    if let Some(path) = &args.json {
        write_json(path, &report, "report")?;
    }
    if let Some(path) = &args.trace {
        write_json(path, &trace, "trace")?;
    }
    Ok(())
}

fn write_json(path: &std::path::Path, value: &impl Serialize, what: &str) -> anyhow::Result<()> {
    let text = serde_json::to_string_pretty(value)?;
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
    println!("{what} written to {}", path.display());
    Ok(())
}

async fn run(args: &Args, config: SimConfig) -> anyhow::Result<(Stats, Vec<TraceEvent>)> {
    let topic = Topic::new("blocks")?;
    info!(peers = args.peers, seed = config.seed, link = ?config.link, "starting simulated network");
    let (sim, peers) = Sim::builder().config(config).peers(args.peers).build();
    for peer in &peers {
        spawn_peer(peer.clone(), topic.clone(), args.interval).await?;
    }
    let start = Instant::now();
    let at = |fraction: f64| start + args.duration.mul_f64(fraction);
    if !args.no_faults {
        let half = args.peers / 2;
        tokio::time::sleep_until(at(0.3)).await;
        info!(t = ?start.elapsed(), "partition: peers 0..{half} | {half}..{}", args.peers);
        sim.partition(vec![(0..half).collect()]).await?;
        tokio::time::sleep_until(at(0.45)).await;
        info!(t = ?start.elapsed(), "heal");
        sim.heal().await?;
        let victim = args.peers - 1;
        tokio::time::sleep_until(at(0.6)).await;
        info!(t = ?start.elapsed(), peer = victim, "crash");
        sim.crash(victim).await?;
        tokio::time::sleep_until(at(0.7)).await;
        info!(t = ?start.elapsed(), peer = victim, "restart");
        sim.restart(victim).await?;
        spawn_listener(peers[victim].clone(), topic.clone()).await?;
    }
    tokio::time::sleep_until(at(1.0)).await;
    info!(t = ?start.elapsed(), "done");
    Ok((sim.stats().await?, sim.trace().await?))
}

/// Starts a peer's announcer and listener, in a span naming the peer.
async fn spawn_peer(peer: SimPeer, topic: Topic, interval: Duration) -> anyhow::Result<()> {
    spawn_listener(peer.clone(), topic.clone()).await?;
    let span = tracing::info_span!("peer", node = %peer.local_peer());
    tokio::spawn(announce(peer, topic, interval).instrument(span));
    Ok(())
}

/// Every `interval`, stores a block and broadcasts its CID.
async fn announce(peer: SimPeer, topic: Topic, interval: Duration) {
    let phase = interval.mul_f64(peer.index() as f64 / 16.0 % 1.0);
    let mut tick = tokio::time::interval_at(Instant::now() + phase, interval);
    for round in 0u64.. {
        tick.tick().await;
        let block = Bytes::from(format!("block {round} of {}", peer.local_peer()).repeat(64));
        let announced = match peer.put(Codec::Raw, block).await {
            Ok(cid) => peer.broadcast(&topic, Bytes::from(cid.to_bytes())).await,
            Err(error) => Err(error),
        };
        if let Err(error) = announced {
            tracing::debug!(%error, "announcement failed");
        }
    }
}

/// Subscribes, and fetches every block announced to it.
async fn spawn_listener(peer: SimPeer, topic: Topic) -> anyhow::Result<()> {
    let mut sub = peer.subscribe(&topic).await?;
    let span = tracing::info_span!("peer", node = %peer.local_peer());
    tokio::spawn(
        async move {
            while let Some(message) = sub.recv().await {
                let Ok(cid) = Cid::try_from(message.data.as_ref()) else {
                    warn!(from = %message.from, "announcement is not a CID");
                    continue;
                };
                let peer = peer.clone();
                tokio::spawn(
                    async move { peer.fetch(&cid, Duration::from_secs(5)).await }.in_current_span(),
                );
            }
        }
        .instrument(span),
    );
    Ok(())
}

fn print_report(r: &Report) {
    let c = &r.stats.counters;
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
        "simulated {:?} of {} peers (seed {}) in {:.2} s of wall time",
        r.simulated, r.peers, r.seed, r.wall_seconds
    );
    println!(
        "  broadcast            published {}, delivered {}, ratio {:.3}",
        c.published, c.delivered, r.delivery_ratio
    );
    println!(
        "  dropped              partition {}, crashed {}, loss {}, queue full {}",
        c.dropped_partition, c.dropped_crashed, c.dropped_loss, c.dropped_queue_full
    );
    line("delivery latency", &r.delivery_latency);
    println!(
        "  fetch                ok {}, failed {}, served {} blocks ({} bytes)",
        r.fetches_ok, r.fetches_failed, c.blocks_served, c.blocks_served_bytes
    );
    line("fetch latency", &r.fetch_latency);
    println!("  trace digest         {}", r.stats.trace_digest);
}
