//! Restart time against the length of the history. Four validators' cores exchange their blocks
//! directly (no network: every block reaches every core at once, in steps of 10 ms of virtual
//! time), with a transfer submitted to each validator every step, until validator 0's RocksDB
//! store holds `--blocks` blocks. Then validator 0 restarts from that store twice, timed, in this
//! run: as a node does now (the last commit's state read back, and the stored blocks from that
//! commit's memory floor up), and, as the baseline, replaying every stored block from genesis (as
//! it did before the state was stored as a tree). Both must reach the same height and state root.
//!
//! `cargo bench --workspace --bench restart -- --blocks N [--accounts N] [--no-baseline]`;
//! `-- --quick`: 2,000 blocks (CI runs it, so that it cannot rot).

use std::{
    path::Path,
    time::{Duration, Instant},
};

use bytes::Bytes;
use ledger::{
    devnet::{self, Role},
    Core, CoreConfig, Genesis, Keypair, Output, SignedTransaction, Start, Store, Transaction,
};
use ledger_rocksdb::Storage;

const SEED: u64 = 11;
const VALIDATORS: usize = 4;
const STEP_MS: u64 = 10;

struct Args {
    blocks: u64,
    accounts: usize,
    baseline: bool,
}

fn args() -> Args {
    let mut args = Args {
        blocks: 100_000,
        accounts: 10_000,
        baseline: true,
    };
    let mut words = std::env::args().skip(1);
    while let Some(word) = words.next() {
        let mut number = || words.next().and_then(|w| w.parse::<u64>().ok());
        match word.as_str() {
            "--quick" => (args.blocks, args.accounts) = (2_000, 1_000),
            "--blocks" => args.blocks = number().expect("--blocks takes a number"),
            "--accounts" => args.accounts = number().expect("--accounts takes a number") as usize,
            "--no-baseline" => args.baseline = false,
            _ => {} // cargo bench passes --bench.
        }
    }
    args
}

fn config() -> CoreConfig {
    CoreConfig {
        idle_block_interval: Duration::from_millis(STEP_MS),
        ..CoreConfig::default()
    }
}

fn validator(i: usize) -> Keypair {
    devnet::key(SEED, Role::Validator, i)
}

/// Writes what validator 0's core asks to be written, as the node does; returns the blocks it
/// stored and the block bytes to broadcast.
fn carry_out(storage: Option<&Storage>, out: Vec<Output>) -> (u64, Vec<Bytes>) {
    let (mut stored, mut sent) = (0, Vec::new());
    for output in out {
        match (output, storage) {
            (Output::Broadcast(bytes), _) => sent.push(bytes),
            (Output::Store { batch: true, .. }, _) | (_, None) => {}
            (
                Output::Store {
                    cid, bytes, own, ..
                },
                Some(storage),
            ) => {
                match own {
                    true => storage.put_own_block(&cid, &bytes),
                    false => storage.put_block(&cid, &bytes, false),
                }
                .expect("stored");
                stored += 1;
            }
            (
                Output::Committed {
                    commit,
                    tree,
                    dropped,
                },
                Some(storage),
            ) => storage.commit(&commit, &tree, &dropped).expect("committed"),
            _ => {}
        }
    }
    (stored, sent)
}

/// Runs the four validators until validator 0 stored `blocks` blocks; returns its height.
fn build(dir: &Path, genesis: &Genesis, blocks: u64, accounts: usize) -> u64 {
    let storage = Storage::open(dir).expect("a new store");
    let mut cores: Vec<Core> = (0..VALIDATORS)
        .map(|i| match i {
            0 => Core::with_store(genesis, Some(validator(0)), config(), &storage)
                .expect("a core on the store"),
            _ => Core::new(genesis, Some(validator(i)), config()),
        })
        .collect();
    let chain = genesis.encode().1;
    let keys: Vec<Keypair> = (0..accounts)
        .map(|i| devnet::key(SEED, Role::Account, i))
        .collect();
    let mut nonces = vec![0u64; accounts];
    let (mut now, mut stored, mut step) = (0, 0, 0usize);
    while stored < blocks {
        now += STEP_MS;
        let mut queue = Vec::new();
        for (i, core) in cores.iter_mut().enumerate() {
            let from = (step * VALIDATORS + i) % accounts;
            let tx = Transaction::Transfer {
                from: keys[from].public(),
                to: keys[(from * 7 + 1) % accounts].public(),
                amount: 1,
                nonce: nonces[from],
            };
            if core
                .submit(SignedTransaction::sign(&chain, tx, &keys[from]))
                .is_ok()
            {
                nonces[from] += 1;
            }
            let mut out = Vec::new();
            core.tick(now, &mut out).expect("in memory");
            let (written, sent) = carry_out((i == 0).then_some(&storage), out);
            stored += written;
            queue.extend(sent.into_iter().map(|bytes| (i, bytes)));
        }
        while let Some((from, bytes)) = queue.pop() {
            for (to, core) in cores.iter_mut().enumerate().filter(|(to, _)| *to != from) {
                let mut out = Vec::new();
                core.receive(now, bytes.clone(), &mut out)
                    .expect("in memory");
                while core.has_backlog() {
                    core.resume(now, &mut out).expect("in memory");
                }
                let (written, sent) = carry_out((to == 0).then_some(&storage), out);
                stored += written;
                queue.extend(sent.into_iter().map(|bytes| (to, bytes)));
            }
        }
        step += 1;
    }
    storage.flush().expect("flushed");
    cores[0].height()
}

/// Restarts validator 0 from the store in `dir`: from its stored state, or (`from_state` false)
/// replaying every stored block. Returns the height, the state root and the blocks read.
fn restart(dir: &Path, genesis: &Genesis, from_state: bool) -> (u64, String, usize) {
    let storage = Storage::open(dir).expect("reopens");
    let mut core = Core::with_store(genesis, Some(validator(0)), config(), &storage)
        .expect("a core on the store");
    let mut from = Vec::new();
    if from_state {
        if let Some(start) = Start::read(&storage).expect("readable") {
            from = start.replay_from();
            core.start_after(start).expect("starts");
        }
    }
    let mut read = 0;
    loop {
        let (count, next) = storage
            .replay_slice(&from, ledger::REPLAY_SLICE, &mut |bytes| {
                let mut out = Vec::new();
                core.restore(bytes, &mut out)?;
                carry_out(Some(&storage), out);
                Ok(())
            })
            .expect("replays");
        read += count;
        let Some(next) = next else { break };
        from = next;
    }
    (core.height(), core.state().root().to_string(), read)
}

fn main() {
    let args = args();
    let dir = std::env::temp_dir().join(format!("ledger-restart-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let genesis = devnet::genesis("restart", SEED, VALIDATORS, args.accounts, 1_000_000);
    let built = Instant::now();
    let height = build(&dir, &genesis, args.blocks, args.accounts);
    println!(
        "history: {} blocks stored, height {height}, {} accounts, built in {:.1} s",
        args.blocks,
        args.accounts,
        built.elapsed().as_secs_f64()
    );
    let timed = |from_state| {
        let start = Instant::now();
        let (at, root, read) = restart(&dir, &genesis, from_state);
        (start.elapsed(), at, root, read)
    };
    let (ours, at, root, read) = timed(true);
    assert!(at >= height, "restarted at {at}, below {height}");
    println!(
        "restart from the stored state: {:.3} s ({read} blocks read), height {at}",
        ours.as_secs_f64()
    );
    if args.baseline {
        let (all, at_all, root_all, read_all) = timed(false);
        assert_eq!(
            (at_all, &root_all),
            (at, &root),
            "both restarts reach one state"
        );
        println!(
            "baseline, every block replayed: {:.3} s ({read_all} blocks read); {:.1} times as long",
            all.as_secs_f64(),
            all.as_secs_f64() / ours.as_secs_f64()
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
