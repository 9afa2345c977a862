//! A node joining a long history: `validators` validators build a DAG of `blocks` blocks in `sim`
//! (virtual time, default link), then an observer joins with an empty store and syncs all of it
//! from its peers while they go on. Reports the simulated and wall time of both phases, the most
//! blocks the joining node held in memory and waiting for ancestors, and how much the process's
//! resident memory grew during the sync (the peak is reset when the node joins).
//!
//! `cargo bench -p benches --bench sync_scale` runs the full size (10 validators, 100,000 blocks);
//! `-- --quick` a small one (CI runs it so that it cannot rot); `--validators N --blocks N` any
//! other; `--no-store` joins without a store (blocks wait for their ancestors in memory);
//! `--idle S` joins no one and lets the validators run S more simulated seconds: the growth of the
//! rest of the process (the simulated network's content store, the validators) to subtract;
//! `--snapshot` joins by snapshot (`node.snapshot_sync`): a certified checkpoint's state and the
//! last rounds of the DAG rather than the whole history, and reports when it joined;
//! `--accounts N` gives the genesis N accounts (a state of that size to fetch).

use std::time::{Duration, Instant};

use benches::memory_kib;
use ledger::{NodeConfig, NodeHandle, Status};
use ledger_rocksdb::Storage;
use scenario::Network;
use sim::{LinkModel, Sim};

struct Args {
    validators: usize,
    blocks: u64,
    store: bool,
    idle: Option<u64>,
    snapshot: bool,
    accounts: usize,
}

fn args() -> Args {
    let mut args = Args {
        validators: 10,
        blocks: 100_000,
        store: true,
        idle: None,
        snapshot: false,
        accounts: 1,
    };
    let mut words = std::env::args().skip(1);
    while let Some(word) = words.next() {
        let mut number = || words.next().and_then(|w| w.parse().ok());
        match word.as_str() {
            "--quick" => {
                args.validators = 4;
                args.blocks = 2_000;
            }
            "--validators" => args.validators = number().expect("--validators takes a number"),
            "--blocks" => args.blocks = number().expect("--blocks takes a number") as u64,
            "--no-store" => args.store = false,
            "--snapshot" => args.snapshot = true,
            "--accounts" => args.accounts = number().expect("--accounts takes a number"),
            "--idle" => args.idle = Some(number().expect("--idle takes seconds") as u64),
            _ => {} // cargo bench passes --bench; criterion-style filters do not apply here.
        }
    }
    args
}

fn main() {
    let args = args();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("a tokio runtime");
    runtime.block_on(run(args));
}

fn config() -> NodeConfig {
    NodeConfig {
        epoch_ms: Some(0),
        fetch_timeout: Duration::from_secs(2),
        ..NodeConfig::default()
    }
}

async fn status(node: &NodeHandle) -> Status {
    node.status().await.expect("the node runs")
}

/// Polls `node` every 100 simulated milliseconds until `done`, calling `watch` on each status;
/// panics after `bound` of simulated time.
async fn poll(
    node: &NodeHandle,
    bound: Duration,
    what: &str,
    mut watch: impl FnMut(&Status) -> bool,
) {
    let deadline = tokio::time::Instant::now() + bound;
    while !watch(&status(node).await) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: not within {bound:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn run(args: Args) {
    let Args {
        validators,
        blocks,
        store,
        idle,
        snapshot,
        accounts,
    } = args;
    let seed = sim::seed_from_env(1);
    let network = Network::builder()
        .validators(validators)
        .observers(1)
        .seed(seed)
        .link(LinkModel::default())
        .chain_id("sync-scale")
        .accounts(accounts, 1)
        .node_config(config())
        .start()
        .await
        .expect("the validators start");
    let genesis = network.genesis().clone();
    let nodes: Vec<NodeHandle> = (0..validators)
        .map(|i| network.node(i).expect("running").clone())
        .collect();
    println!(
        "sync scale: {validators} validators, a {blocks}-block history, {accounts} accounts, seed {seed}"
    );

    let (wall, virtual_start) = (Instant::now(), tokio::time::Instant::now());
    let rounds = blocks.div_ceil(validators as u64);
    let generous = Duration::from_secs(rounds) * 10;
    poll(&nodes[0], generous, "the history is built", |s| {
        s.highest_round >= rounds
    })
    .await;
    let target = status(&nodes[0]).await.height;
    print_phase(
        "history built",
        wall.elapsed(),
        virtual_start.elapsed(),
        &format!("height {target}"),
    );

    let dir = std::env::temp_dir().join(format!("sync-scale-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let storage = store.then(|| Storage::open(&dir).expect("an empty store"));
    let stored_before = stored_bytes(network.sim()).await;
    let rss_before = memory_kib("VmRSS:");
    let peak_reset = std::fs::write("/proc/self/clear_refs", "5").is_ok();
    let (wall, virtual_start) = (Instant::now(), tokio::time::Instant::now());
    if let Some(seconds) = idle {
        tokio::time::sleep(Duration::from_secs(seconds)).await;
        print_phase(
            "validators idle",
            wall.elapsed(),
            virtual_start.elapsed(),
            "no one joined",
        );
        println!("  RSS growth idle      {}", growth(rss_before, peak_reset));
        print_stored(stored_bytes(network.sim()).await - stored_before);
        return;
    }
    let storage = storage.map(Storage::into_store);
    let config = NodeConfig {
        snapshot_sync: snapshot,
        ..config()
    };
    let fresh = ledger::spawn(&genesis, None, config, network.peer(validators), storage)
        .await
        .expect("the fresh node starts");
    let (mut most_in_memory, mut most_parked, mut joined) = (0, 0, None);
    poll(&fresh, generous, "the fresh node syncs", |s| {
        most_in_memory = most_in_memory.max(s.dag_blocks);
        most_parked = most_parked.max(s.pending_blocks);
        if joined.is_none() && !s.joining {
            joined = Some((virtual_start.elapsed(), wall.elapsed(), s.clone()));
        }
        s.height >= target
    })
    .await;
    if let (true, Some((simulated, wall, s))) = (snapshot, &joined) {
        let at = s.stats.joined_at_height;
        print_phase(
            "fresh node joined",
            *wall,
            *simulated,
            &format!(
                "at checkpoint {at:?}, {} state blocks, {} DAG blocks accepted",
                s.stats.snapshot_blocks, s.stats.accepted
            ),
        );
    }
    let synced = status(&fresh).await;
    print_phase(
        "fresh node synced",
        wall.elapsed(),
        virtual_start.elapsed(),
        &format!(
            "{} blocks accepted, height {}",
            synced.stats.accepted, synced.height
        ),
    );
    println!(
        "  joining node         with {}; at most {most_in_memory} DAG blocks in memory, \
         {most_parked} waiting for ancestors",
        if store { "a store" } else { "no store" }
    );
    println!("  RSS growth in sync   {}", growth(rss_before, peak_reset));
    print_stored(stored_bytes(network.sim()).await - stored_before);
    fresh.shutdown().await.expect("stops");
    network.finish().await.expect("the validators stop");
    let _ = std::fs::remove_dir_all(&dir);
}

fn print_phase(what: &str, wall: Duration, simulated: Duration, detail: &str) {
    println!(
        "  {what:<20} {:.1} s simulated, {:.1} s wall ({detail})",
        simulated.as_secs_f64(),
        wall.as_secs_f64()
    );
}

/// The bytes the simulated peers' stores hold (the IPFS blockstores they stand for, in memory).
async fn stored_bytes(sim: &Sim) -> u64 {
    sim.stats().await.expect("running").counters.stored_bytes
}

fn print_stored(bytes: u64) {
    println!(
        "    of which stored    {} MB more in the simulated peers' blockstores (payload only)",
        bytes >> 20
    );
}

/// The peak resident memory since the peak was reset, against `before`.
fn growth(before: Option<u64>, peak_reset: bool) -> String {
    match (before, memory_kib("VmHWM:"), peak_reset) {
        (Some(before), Some(peak), true) => format!(
            "{} MB (peak {} MB, {} MB before)",
            peak.saturating_sub(before) / 1024,
            peak / 1024,
            before / 1024
        ),
        _ => "unknown".into(),
    }
}
