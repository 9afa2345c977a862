//! Micro-benchmarks of the ledger's hot paths (criterion): DAG-CBOR encoding, decoding and CIDs by
//! block size; ed25519 sign, verify and batch verify; validation of a received block; validating and
//! applying signed transfers; the state update of a commit by the number of accounts; a RocksDB
//! commit of a block by its number of transactions; one ordering step by committee size.
//!
//! `cargo bench -p benches --bench micro` measures (add a name to run only matching benchmarks);
//! `cargo test --workspace --bench micro` runs each benchmark once, as CI does, so none can rot.

use std::{collections::BTreeMap, hint::black_box, path::PathBuf, sync::Arc};

use bytes::Bytes;
use comms::Cid;
use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion, Throughput};
use ledger::Store;
use ledger::{
    codec::{cid_of, encode},
    consensus::{Committer, Linearizer},
    crypto::{verify_batch, Domain},
    dag::{AcceptedBlock, Dag},
    devnet::{self, Role},
    tree::Tree,
    validate::{check_block, check_transactions, BlockLimits},
    Account, Allocation, Block, Commit, Committee, Genesis, Keypair, Outcome, Payload, PublicKey,
    SignedBlock, SignedTransaction, State, Transaction,
};
use ledger_rocksdb::Storage;

const SEED: u64 = 7;
const TRANSACTIONS: [usize; 4] = [0, 10, 100, 1000];
const NO_LIMITS: BlockLimits = BlockLimits {
    max_transactions: u64::MAX,
    max_bytes: u64::MAX,
};

/// A chain whose `accounts` accounts each sign one transfer (nonce 0) to the next: all valid, all
/// from different signers, as in a block of a busy network.
struct Fixture {
    genesis: Genesis,
    chain: Cid,
    transfers: Vec<SignedTransaction>,
}

impl Fixture {
    fn new(accounts: usize) -> Fixture {
        let genesis = devnet::genesis("micro", SEED, 4, accounts.max(2), 1_000_000);
        let chain = genesis.encode().1;
        let keys: Vec<Keypair> = (0..accounts)
            .map(|i| devnet::key(SEED, Role::Account, i))
            .collect();
        let transfers = (0..accounts)
            .map(|i| {
                let tx = Transaction::Transfer {
                    from: keys[i].public(),
                    to: keys[(i + 1) % accounts].public(),
                    amount: 10,
                    nonce: 0,
                };
                SignedTransaction::sign(&chain, tx, &keys[i])
            })
            .collect();
        Fixture {
            genesis,
            chain,
            transfers,
        }
    }

    /// A signed round-0 block of validator 0 carrying the first `count` transfers inline.
    fn block(&self, count: usize) -> SignedBlock {
        let block = Block {
            chain: self.chain,
            author: 0,
            round: 0,
            parents: Vec::new(),
            payload: Payload::Inline(self.transfers[..count].to_vec()),
            timestamp_ms: 1_700_000_000_000,
            checkpoint: None,
        };
        SignedBlock::sign(block, &devnet::key(SEED, Role::Validator, 0))
    }
}

fn codec(c: &mut Criterion) {
    let fixture = Fixture::new(*TRANSACTIONS.iter().max().unwrap_or(&0));
    let mut group = c.benchmark_group("dag-cbor");
    for count in TRANSACTIONS {
        let block = fixture.block(count);
        let bytes = encode(&block);
        group.throughput(Throughput::Bytes(bytes.len() as u64));
        group.bench_with_input(BenchmarkId::new("encode", count), &block, |b, block| {
            b.iter(|| encode(black_box(block)))
        });
        group.bench_with_input(BenchmarkId::new("decode", count), &bytes, |b, bytes| {
            b.iter(|| SignedBlock::decode(black_box(bytes)).expect("canonical"))
        });
        group.bench_with_input(BenchmarkId::new("cid", count), &bytes, |b, bytes| {
            b.iter(|| cid_of(black_box(bytes)))
        });
    }
    group.finish();
}

fn ed25519(c: &mut Criterion) {
    let fixture = Fixture::new(1024);
    let key = devnet::key(SEED, Role::Account, 0);
    let bodies: Vec<Vec<u8>> = fixture
        .transfers
        .iter()
        .map(|t| SignedTransaction::signed_bytes(&fixture.chain, &t.tx))
        .collect();
    let mut group = c.benchmark_group("ed25519");
    group.throughput(Throughput::Elements(1));
    group.bench_function("sign", |b| {
        b.iter(|| key.sign(Domain::Transaction, black_box(&bodies[0])))
    });
    let first = &fixture.transfers[0];
    group.bench_function("verify", |b| {
        b.iter(|| {
            first
                .tx
                .signer()
                .verify(Domain::Transaction, black_box(&bodies[0]), &first.signature)
                .expect("valid")
        })
    });
    for count in [16, 64, 256, 1024] {
        let items: Vec<(&PublicKey, &[u8], _)> = fixture.transfers[..count]
            .iter()
            .zip(&bodies)
            .map(|(t, body)| (t.tx.signer(), body.as_slice(), &t.signature))
            .collect();
        group.throughput(Throughput::Elements(count as u64));
        group.bench_with_input(
            BenchmarkId::new("verify_batch", count),
            &items,
            |b, items| {
                b.iter(|| verify_batch(Domain::Transaction, black_box(items)).expect("valid"))
            },
        );
    }
    group.finish();
}

fn validation(c: &mut Criterion) {
    let fixture = Fixture::new(*TRANSACTIONS.iter().max().unwrap_or(&0));
    let committee = Committee::new(&fixture.genesis);
    let mut group = c.benchmark_group("validation");
    for count in TRANSACTIONS {
        let block = fixture.block(count);
        let size = encode(&block).len();
        group.throughput(Throughput::Elements(count.max(1) as u64));
        group.bench_with_input(
            BenchmarkId::new("check_block", count),
            &block,
            |b, block| {
                b.iter(|| {
                    check_block(block, size, &fixture.chain, &committee, &NO_LIMITS).expect("valid")
                })
            },
        );
    }
    // What the ledger does with a committed block's transfers, and the figure issue 3 sets a goal for
    // (20,000 per second per core): verify the signatures in one batch, then apply them in order.
    let count = 1000;
    let transfers = &fixture.transfers[..count];
    let genesis_state = State::genesis(&fixture.genesis);
    group.throughput(Throughput::Elements(count as u64));
    group.bench_function(BenchmarkId::new("verify_and_apply_transfers", count), |b| {
        b.iter_batched(
            || genesis_state.clone(),
            |mut state| {
                check_transactions(transfers, &fixture.chain, &NO_LIMITS).expect("valid");
                for t in transfers {
                    assert_eq!(state.apply(&t.tx), Outcome::Applied);
                }
                state
            },
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

/// The state update of a commit of 1,000 transfers between accounts drawn at random (about 2,000
/// accounts changed), by the number of accounts: apply them, then encode and hash the state-tree
/// blocks they changed (what the commit stores), as `Executor::execute` does. Issue 34's goal: 5 ms
/// at 1,000,000 accounts. The baseline hashes the whole state, as the root was computed before.
fn state(c: &mut Criterion) {
    const TRANSFERS: usize = 1000;
    let mut group = c.benchmark_group("state");
    group.sample_size(10);
    group.throughput(Throughput::Elements(TRANSFERS as u64));
    for accounts in [10_000u32, 100_000, 1_000_000] {
        let key = |i: u32| {
            PublicKey(
                *cid_of(&i.to_be_bytes())
                    .hash()
                    .digest()
                    .first_chunk()
                    .expect("32 bytes"),
            )
        };
        let genesis = Genesis {
            chain_id: "micro".into(),
            validators: devnet::genesis("micro", SEED, 1, 0, 0).validators,
            balances: (0..accounts)
                .map(|i| Allocation {
                    account: key(i),
                    balance: 1_000_000,
                })
                .collect(),
        };
        let mut state = State::genesis(&genesis);
        state.flush(&mut Vec::new());
        let mut nonces = vec![0u64; accounts as usize];
        // A fixed sequence of draws (a linear congruential generator), so runs compare.
        let mut draw = 12_345u64;
        let mut next = move || {
            draw = draw
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (draw >> 33) as u32 % accounts
        };
        group.bench_function(
            BenchmarkId::new("apply_and_flush_1000_transfers", accounts),
            |b| {
                b.iter_custom(|iterations| {
                    let mut spent = std::time::Duration::ZERO;
                    for _ in 0..iterations {
                        let transfers: Vec<Transaction> = (0..TRANSFERS)
                            .map(|_| {
                                let (from, to) = (next(), next());
                                let nonce = nonces[from as usize];
                                nonces[from as usize] += 1;
                                Transaction::Transfer {
                                    from: key(from),
                                    to: key(to),
                                    amount: 1,
                                    nonce,
                                }
                            })
                            .collect();
                        let start = std::time::Instant::now();
                        for tx in &transfers {
                            assert_eq!(state.apply(tx), Outcome::Applied);
                        }
                        let mut blocks = Vec::new();
                        black_box(state.flush(&mut blocks));
                        spent += start.elapsed();
                        drop(blocks);
                    }
                    spent
                })
            },
        );
        // The baseline, in the same run: the root as it was computed before the state tree, the
        // sha2-256 (a CID) of every account encoded in key order, after the same kind of commit.
        let mut all: BTreeMap<PublicKey, Account> = (0..accounts)
            .map(|i| {
                (
                    key(i),
                    Account {
                        balance: 1_000_000,
                        nonce: 0,
                    },
                )
            })
            .collect();
        let id = BenchmarkId::new("baseline_whole_state_hashed", accounts);
        group.bench_function(id, |b| {
            b.iter(|| {
                for _ in 0..TRANSFERS {
                    let (from, to) = (next(), next());
                    all.entry(key(from)).or_default().balance -= 1;
                    all.entry(key(to)).or_default().balance += 1;
                }
                black_box(cid_of(&encode(&all.iter().collect::<Vec<_>>())))
            })
        });
    }
    group.finish();
}

/// A scratch store, removed when dropped.
struct ScratchStore {
    storage: Option<Storage>,
    dir: PathBuf,
}

impl ScratchStore {
    fn open() -> ScratchStore {
        let dir = std::env::temp_dir().join(format!("ledger-micro-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let storage = Storage::open(&dir).expect("a scratch RocksDB store");
        ScratchStore {
            storage: Some(storage),
            dir,
        }
    }
}

impl Drop for ScratchStore {
    fn drop(&mut self) {
        drop(self.storage.take());
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn storage(c: &mut Criterion) {
    let fixture = Fixture::new(*TRANSACTIONS.iter().max().unwrap_or(&0));
    let store = ScratchStore::open();
    let storage = store.storage.as_ref().expect("open");
    let mut height = 0u64;
    let mut tree = Tree::<PublicKey, Account>::default();
    let mut group = c.benchmark_group("rocksdb");
    for count in TRANSACTIONS {
        let bytes = encode(&fixture.block(count));
        group.throughput(Throughput::Elements(count.max(1) as u64));
        group.bench_function(BenchmarkId::new("store_and_commit_block", count), |b| {
            b.iter_batched(
                || {
                    // Fresh CIDs every time: a transaction already recorded is not written again.
                    height += 1;
                    let fresh = |i: usize| {
                        cid_of(&[height.to_be_bytes(), (i as u64).to_be_bytes()].concat())
                    };
                    let block = fresh(usize::MAX);
                    let commit = Commit {
                        height,
                        round: height,
                        leader: block,
                        blocks: vec![block],
                        transactions: (0..count).map(|i| (fresh(i), Outcome::Applied)).collect(),
                        changed: fixture.transfers[..count]
                            .iter()
                            .map(|t| {
                                (
                                    *t.tx.signer(),
                                    Account {
                                        balance: 1,
                                        nonce: 1,
                                    },
                                )
                            })
                            .collect(),
                        state_root: block,
                    };
                    // The state-tree blocks such a commit writes: the paths to its accounts.
                    for (key, _) in &commit.changed {
                        tree.insert(
                            *key,
                            Account {
                                balance: height,
                                nonce: height,
                            },
                        );
                    }
                    let mut blocks = Vec::new();
                    tree.flush(&mut blocks);
                    (block, commit, blocks)
                },
                |(block, commit, blocks)| {
                    storage.put_block(&block, &bytes, false).expect("stored");
                    storage.commit(&commit, &blocks, &[]).expect("committed");
                },
                BatchSize::SmallInput,
            )
        });
    }
    group.finish();
}

/// A DAG of `validators` validators, `rounds` rounds, every block linking every block of the round
/// before: the network without faults. Returns the blocks' CIDs by round.
fn full_dag(genesis: &Genesis, validators: usize, rounds: u64) -> (Dag, Vec<Vec<Cid>>) {
    let chain = genesis.encode().1;
    let keys: Vec<Keypair> = (0..validators)
        .map(|i| devnet::key(SEED, Role::Validator, i))
        .collect();
    let (mut dag, mut by_round) = (Dag::default(), Vec::<Vec<Cid>>::new());
    for round in 0..rounds {
        let mut parents = by_round.last().cloned().unwrap_or_default();
        parents.sort_by_key(|cid| cid.to_bytes());
        let mut cids = Vec::with_capacity(validators);
        for (author, key) in keys.iter().enumerate() {
            let block = Block {
                chain,
                author: author as u32,
                round,
                parents: parents.clone(),
                payload: Payload::Inline(Vec::new()),
                timestamp_ms: round,
                checkpoint: None,
            };
            let block = SignedBlock::sign(block, key);
            let (bytes, cid) = block.encode();
            dag.insert(Arc::new(AcceptedBlock {
                cid,
                block,
                bytes: Bytes::from(bytes),
                transactions: Arc::new(Vec::new()),
            }));
            cids.push(cid);
        }
        by_round.push(cids);
    }
    (dag, by_round)
}

fn ordering(c: &mut Criterion) {
    const ROUNDS: u64 = 12;
    let mut group = c.benchmark_group("ordering");
    for validators in [4, 10, 31, 100] {
        let genesis = devnet::genesis("micro", SEED, validators, 0, 0);
        let committee = Committee::new(&genesis);
        let (dag, by_round) = full_dag(&genesis, validators, ROUNDS);
        // The step when round ROUNDS - 1 arrives: it decides the leader slots two rounds back, and
        // orders what of the first one's history the previous leader (the last slot of the round
        // before) did not: the rest of that round, and the leader.
        let slot = (ROUNDS - 3) * committee.leaders_per_round();
        let (round, author) = committee.slot(slot - 1);
        let previous = by_round[round as usize][author as usize];
        let fresh = || {
            let mut linearizer = Linearizer::default();
            linearizer.linearize(&dag, &previous);
            (Committer::resume(slot), linearizer)
        };
        let step = |(mut committer, mut linearizer): (Committer, Linearizer)| {
            let decided = committer.try_decide(&dag, &committee);
            let (_, leader) = decided.first().copied().expect("a decided slot");
            let leader = leader.expect("the leader commits");
            linearizer.linearize(&dag, &leader)
        };
        assert_eq!(
            step(fresh()).len(),
            validators,
            "the round before and the leader"
        );
        group.throughput(Throughput::Elements(validators as u64));
        group.bench_function(BenchmarkId::new("decide_and_linearize", validators), |b| {
            b.iter_batched(fresh, step, BatchSize::SmallInput)
        });
    }
    group.finish();
}

criterion_group!(benches, codec, ed25519, validation, state, storage, ordering);
criterion_main!(benches);
