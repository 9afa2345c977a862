//! The ledger's history as IPLD on a real kubo daemon: 4 validators build a DAG of `blocks` blocks in
//! `sim` (virtual time), one validator's store is then put into a kubo daemon the way a node puts
//! what it accepts (its own blocks and the genesis pinned, copies of the others' unpinned, many per
//! `block/put`), and kubo's own commands work on it:
//! `pin add --recursive` of the last commit's leader (the whole history below it), `repo gc` (which
//! walks every pin), `dag export` of the leader, and `dag import` of that CAR into a fresh daemon
//! that knows no one. Reports the wall time of each, the pin count and the CAR's size.
//!
//! `cargo bench -p benches --bench ipld_pin` runs 10,000 blocks; `-- --quick` 400 (CI runs it so
//! that it cannot rot); `--blocks N` any other size.

use std::{
    path::Path,
    time::{Duration, Instant},
};

use bytes::Bytes;
use comms::{Codec, Communication};
use comms_ipfs::{testnet::Daemon, IpfsComms, IpfsConfig};
use futures::{stream, StreamExt};
use ledger::{devnet, Commit, NodeConfig, SignedBlock};
use ledger_rocksdb::Storage;
use sim::{LinkModel, Sim};

const VALIDATORS: usize = 4;

fn main() {
    let mut blocks = 10_000u64;
    let mut words = std::env::args().skip(1);
    while let Some(word) = words.next() {
        match word.as_str() {
            "--quick" => blocks = 400,
            "--blocks" => {
                blocks = words
                    .next()
                    .and_then(|w| w.parse().ok())
                    .expect("--blocks takes a number")
            }
            _ => {} // cargo bench passes --bench
        }
    }
    let dir = std::env::temp_dir().join(format!("ipld-pin-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let started = Instant::now();
    let (genesis, leader) = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("a tokio runtime")
        .block_on(build_history(blocks, &dir));
    let storage = Storage::open(&dir).expect("the history's store");
    let mut history = vec![genesis];
    storage
        .replay(|bytes| {
            history.push(bytes);
            Ok(())
        })
        .expect("read the history");
    drop(storage);
    println!(
        "ipld pin: {} blocks and the genesis from {VALIDATORS} validators in sim ({:.1} s wall); \
         the last commit's leader {leader}",
        history.len() - 1,
        started.elapsed().as_secs_f64()
    );
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime")
        .block_on(on_kubo(history, &leader.to_string(), &dir));
    let _ = std::fs::remove_dir_all(&dir);
}

/// Blocks per call of copies.
const KEPT_PER_CALL: usize = 64;

/// Runs `VALIDATORS` validators in sim until validator 0 holds `blocks` blocks in its store at `dir`;
/// the genesis's bytes and the leader of validator 0's last commit.
async fn build_history(blocks: u64, dir: &Path) -> (Bytes, comms::Cid) {
    let seed = sim::seed_from_env(1);
    let genesis = devnet::genesis("ipld-pin", seed, VALIDATORS, 1, 1);
    let (_sim, peers) = Sim::builder()
        .seed(seed)
        .link(LinkModel::default())
        .peers(VALIDATORS)
        .build();
    let config = NodeConfig {
        epoch_ms: Some(0),
        ..NodeConfig::default()
    };
    let mut nodes = Vec::new();
    for (i, peer) in peers.iter().enumerate() {
        let key = devnet::key(seed, devnet::Role::Validator, i);
        let storage = (i == 0).then(|| Storage::open(dir).expect("an empty store").into_store());
        let node = ledger::spawn(&genesis, Some(key), config.clone(), peer.clone(), storage)
            .await
            .expect("a validator starts");
        nodes.push(node);
    }
    let log = scenario::CommitLog::open(&nodes[0]).await.expect("running");
    let rounds = blocks.div_ceil(VALIDATORS as u64);
    while nodes[0].status().await.expect("running").highest_round < rounds {
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    for node in &nodes {
        node.shutdown().await.expect("stops");
    }
    let commits: Vec<std::sync::Arc<Commit>> = log.commits().await.expect("the commit log");
    let leader = commits.last().expect("commits").leader;
    (genesis.encode().0.into(), leader)
}

/// Puts `history` into a fresh kubo daemon as a node would, then times kubo's commands on it.
async fn on_kubo(history: Vec<Bytes>, leader: &str, dir: &Path) {
    let daemon = Daemon::start();
    let comms = IpfsComms::connect(IpfsConfig {
        api: daemon.api(),
        ..IpfsConfig::default()
    })
    .await
    .expect("connect to the daemon");
    let count = history.len();
    let started = Instant::now();
    // As validator 0's keeper does (`ledger/src/node.rs`): in acceptance order, a call of copies of
    // others' blocks at a time, then its own blocks (and the genesis) pinned.
    for calls in history.chunks(KEPT_PER_CALL) {
        let (own, others): (Vec<Bytes>, Vec<Bytes>) = calls
            .iter()
            .cloned()
            .partition(|bytes| SignedBlock::decode(bytes).map_or(true, |b| b.block.author == 0));
        comms.keep(Codec::DagCbor, others).await.expect("keep");
        let puts = own
            .into_iter()
            .map(|bytes| comms.put(Codec::DagCbor, bytes));
        let failed = stream::iter(puts)
            .buffer_unordered(16)
            .filter(|put| std::future::ready(put.is_err()))
            .count()
            .await;
        assert_eq!(failed, 0, "puts failed");
    }
    let what = format!("own pinned, copies {KEPT_PER_CALL} per call");
    report(&what, started.elapsed(), count);

    let (took, _) = timed(&daemon, &["pin", "add", "--recursive", leader]);
    report("pin add --recursive <leader>", took, count);
    let (_, pins) = timed(&daemon, &["pin", "ls", "--type=recursive", "--quiet"]);
    println!("  recursive pins       {}", lines(&pins));
    let (took, _) = timed(&daemon, &["repo", "gc", "--quiet"]);
    report("repo gc", took, count);
    let car = dir.with_extension("car");
    let (took, exported) = timed(&daemon, &["dag", "export", leader]);
    report("dag export <leader>", took, count);
    println!("  CAR                  {} KiB", exported.len() >> 10);
    std::fs::write(&car, &exported).expect("write the CAR");
    let fresh = Daemon::start();
    let car_path = car.to_str().expect("a UTF-8 temp path");
    let (took, _) = timed(&fresh, &["dag", "import", "--pin-roots", car_path]);
    report("dag import (fresh)", took, count);
    let (took, below) = timed(&daemon, &["refs", "-r", "--unique", leader]);
    report("refs -r <leader>", took, count);
    let (_, imported) = timed(&fresh, &["refs", "-r", "--unique", "--offline", leader]);
    assert_eq!(
        imported, below,
        "the fresh daemon has the same history below the leader"
    );
    println!("  below the leader     {} blocks", lines(&below));
    let _ = std::fs::remove_file(&car);
}

/// How long one command may take: kubo's own bound, so that a walk that waits for a block no one
/// has fails rather than hangs.
const COMMAND_TIMEOUT: &str = "--timeout=300s";

/// Runs the daemon's command line; how long it took and its standard output. Panics if it fails.
fn timed(daemon: &Daemon, args: &[&str]) -> (Duration, Vec<u8>) {
    let started = Instant::now();
    let output = daemon
        .command()
        .arg(COMMAND_TIMEOUT)
        .args(args)
        .output()
        .expect("run the ipfs command line");
    let took = started.elapsed();
    assert!(
        output.status.success(),
        "`ipfs {}` failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr)
    );
    (took, output.stdout)
}

/// How many lines a command printed.
fn lines(output: &[u8]) -> usize {
    String::from_utf8_lossy(output).lines().count()
}

fn report(what: &str, took: Duration, blocks: usize) {
    println!(
        "  {what:<34} {:>8.2} s  ({:.0} blocks/s)",
        took.as_secs_f64(),
        blocks as f64 / took.as_secs_f64()
    );
}
