//! Disk use against age, with and without a retention: four validators run in `sim` (virtual
//! time, default link) for `hours` simulated hours with a transfer every `every` simulated seconds
//! (so that the state changes all along); validator 0 keeps a RocksDB store. Reports the store's
//! size on disk (every file of its directory) and what it holds after the first hour and at the
//! end, once as an archive node and once with `node.retention_rounds`, seed for seed the same
//! network.
//!
//! `cargo bench -p benches --bench retention` runs 10 hours with a 3,600-round retention;
//! `-- --quick` 20 simulated minutes with the least retention (CI runs it so that it cannot rot);
//! `--hours H --retention R --every S` other sizes.

use std::{path::Path, sync::Arc, time::Duration};

use ledger::{NodeConfig, NodeHandle, Status, Store, MIN_RETENTION};
use ledger_rocksdb::Storage;
use scenario::Network;

struct Args {
    seconds: u64,
    retention: u64,
    every: u64,
}

fn args() -> Args {
    let mut args = Args {
        seconds: 10 * 3600,
        retention: 3600,
        every: 10,
    };
    let mut words = std::env::args().skip(1);
    while let Some(word) = words.next() {
        let mut number = || words.next().and_then(|w| w.parse::<u64>().ok());
        match word.as_str() {
            "--quick" => {
                args.seconds = 1200;
                args.retention = MIN_RETENTION;
            }
            "--hours" => args.seconds = 3600 * number().expect("--hours takes a number"),
            "--retention" => args.retention = number().expect("--retention takes rounds"),
            "--every" => args.every = number().expect("--every takes seconds"),
            _ => {} // cargo bench passes --bench.
        }
    }
    args
}

fn main() {
    let args = args();
    println!(
        "retention: 4 validators, {:.1} simulated hours, a transfer every {} s",
        args.seconds as f64 / 3600.0,
        args.every
    );
    for retention in [0, args.retention] {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .expect("a tokio runtime");
        runtime.block_on(run(&args, retention));
    }
}

async fn status(node: &NodeHandle) -> Status {
    node.status().await.expect("the node runs")
}

/// Every file's bytes under `dir`.
fn disk_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    (entries.filter_map(Result::ok))
        .map(|entry| match entry.metadata() {
            Ok(meta) if meta.is_dir() => disk_bytes(&entry.path()),
            Ok(meta) => meta.len(),
            Err(_) => 0,
        })
        .sum()
}

async fn run(args: &Args, retention: u64) {
    let open = Arc::new(|dir: &Path| Ok(Storage::open(dir)?.into_store()));
    let config = NodeConfig {
        epoch_ms: Some(0),
        fetch_timeout: Duration::from_secs(2),
        retention_rounds: retention,
        ..NodeConfig::default()
    };
    let mut network = Network::builder()
        .validators(4)
        .seed(sim::seed_from_env(1))
        .chain_id("retention")
        .accounts(100, 1_000_000)
        .node_config(config)
        .stores([0])
        .open_store(open)
        .start()
        .await
        .expect("the validators start");
    let dir = network.store_dir(0).expect("a store").to_owned();
    let mut accounts = network.accounts(100);
    let node = network.node(0).expect("running").clone();
    let what = match retention {
        0 => "archive".to_string(),
        rounds => format!("retention {rounds} rounds"),
    };
    let mut next_report = 3600.min(args.seconds);
    for second in (args.every..=args.seconds).step_by(args.every as usize) {
        let (from, to) = ((second / args.every) as usize % 100, 0);
        let tx = accounts.transfer(from, to, 1);
        let _ = accounts.submit(&node, from, tx).await;
        tokio::time::sleep(Duration::from_secs(args.every)).await;
        if second >= next_report {
            let status = status(&node).await;
            println!(
                "  {what:<24} after {:>5.1} h: {:>7.1} MB on disk, height {}, round {}, pruned below {}",
                second as f64 / 3600.0,
                disk_bytes(&dir) as f64 / 1e6,
                status.height,
                status.highest_round,
                status.pruned_below
            );
            next_report = (next_report * 10).min(args.seconds.max(next_report + 1));
        }
    }
    network.crash(0).await.expect("stops");
    let storage = Storage::open(&dir).expect("reopens");
    println!(
        "  {what:<24} at the end: {} state blocks, {} commits from height {}",
        storage.state_blocks().expect("readable"),
        storage.height().expect("readable"),
        (1..=storage.height().expect("readable"))
            .find(|h| storage.commit_at(*h).ok().flatten().is_some())
            .unwrap_or(0)
    );
    drop(storage);
    let _ = network.finish().await;
}
