//! Scale of the simulator: `peers` peers, all subscribed to one topic, each broadcasting once per
//! simulated second for `seconds` seconds, through the `Communication` trait. Reports wall time,
//! deliveries per wall-second and peak memory.
//!
//! `cargo bench -p benches --bench sim_scale` runs the full size (1,000 peers, 60 s);
//! `-- --quick` a small one (CI runs it so that it cannot rot); `--peers N --seconds S` any other.

use std::time::{Duration, Instant};

use bytes::Bytes;
use comms::{Communication, Topic};
use futures::{future::join_all, StreamExt};
use sim::{Latency, LinkModel, Sim, SimPeer};

struct Args {
    peers: usize,
    seconds: u32,
}

fn args() -> Args {
    let mut args = Args {
        peers: 1000,
        seconds: 60,
    };
    let mut words = std::env::args().skip(1);
    while let Some(word) = words.next() {
        let mut number = || words.next().and_then(|w| w.parse().ok());
        match word.as_str() {
            "--quick" => {
                args = Args {
                    peers: 100,
                    seconds: 5,
                }
            }
            "--peers" => args.peers = number().expect("--peers takes a number"),
            "--seconds" => args.seconds = number().expect("--seconds takes a number") as u32,
            _ => {} // cargo bench passes --bench; criterion-style filters do not apply here.
        }
    }
    args
}

fn main() {
    let Args { peers, seconds } = args();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("a tokio runtime");
    let wall = Instant::now();
    let (delivered, stats) = runtime.block_on(run(peers, seconds));
    let wall = wall.elapsed();
    let expected = peers as u64 * (peers as u64 - 1) * seconds as u64;
    assert_eq!(
        delivered, expected,
        "every broadcast reached every other peer"
    );
    println!(
        "sim scale: {peers} peers x {seconds} simulated s, seed {}",
        sim::seed_from_env(1)
    );
    println!("  deliveries           {delivered}");
    println!("  wall time            {:.2} s", wall.as_secs_f64());
    println!(
        "  deliveries/wall-s    {:.0}",
        delivered as f64 / wall.as_secs_f64()
    );
    println!(
        "  simulated/wall time  {:.1}x",
        seconds as f64 / wall.as_secs_f64()
    );
    println!(
        "  peak memory (VmHWM)  {}",
        benches::memory_kib("VmHWM:").map_or_else(|| "unknown".into(), |kib| format!("{kib} kB"))
    );
    println!(
        "  delivery latency     p50 {} us, p99 {} us, max {} us",
        stats.delivery_latency.p50_us, stats.delivery_latency.p99_us, stats.delivery_latency.max_us
    );
}

/// Runs the scenario; returns the deliveries the subscribers counted and the simulator's figures.
async fn run(peers: usize, seconds: u32) -> (u64, sim::Stats) {
    let link = LinkModel {
        latency: Latency::LogNormal {
            median: Duration::from_millis(40),
            sigma: 0.5,
        },
        jitter: Duration::from_millis(5),
        loss: 0.0,
        bandwidth: Some(12_500_000),
    };
    let (sim, handles) = Sim::builder()
        .seed(sim::seed_from_env(1))
        .link(link)
        .peers(peers)
        .build();
    let topic = Topic::new("scale").expect("valid topic");
    let per_subscriber = (peers - 1) * seconds as usize;
    let mut subscribers = Vec::new();
    for peer in &handles {
        let sub = peer.subscribe(&topic).await.expect("subscribe");
        subscribers.push(tokio::spawn(sub.take(per_subscriber).count()));
    }
    let publishers = handles
        .into_iter()
        .enumerate()
        .map(|(i, peer)| tokio::spawn(publish(peer, topic.clone(), i, peers, seconds)));
    join_all(publishers).await;
    let counts = join_all(subscribers).await;
    let delivered = counts
        .into_iter()
        .map(|n| n.expect("subscriber task") as u64)
        .sum();
    (delivered, sim.stats().await.expect("running"))
}

/// One publisher: a phase offset spreading the peers over the second, then one broadcast a second.
async fn publish(peer: SimPeer, topic: Topic, index: usize, peers: usize, seconds: u32) {
    let phase = Duration::from_nanos(1_000_000_000 * index as u64 / peers as u64);
    let mut tick =
        tokio::time::interval_at(tokio::time::Instant::now() + phase, Duration::from_secs(1));
    let payload = Bytes::from(vec![7u8; 100]);
    for _ in 0..seconds {
        tick.tick().await;
        peer.broadcast(&topic, payload.clone())
            .await
            .expect("broadcast");
    }
}
