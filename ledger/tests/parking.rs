//! The store's parking behaves exactly as the one in memory, for any sequence of operations, and a
//! store reopened holds nothing parked.

use bytes::Bytes;
use comms::Cid;
use ledger::{codec::cid_of, MemoryParking, Parking};
use ledger_rocksdb::Storage;
use proptest::prelude::*;

/// A small universe of CIDs, so that operations meet.
fn cid(i: u8) -> Cid {
    cid_of(&[i])
}

#[derive(Clone, Debug)]
enum Op {
    /// Parks block `.0`, waiting for its dependencies.
    Park(u8),
    Resolve(u8),
    Take(u8),
    Discard(u8),
    PutBatch(u8),
    DropBatch(u8),
}

/// The dependencies of block `c`: fixed, as a block's parents are.
fn dependencies(c: u8) -> Vec<Cid> {
    let mut deps = vec![cid((c + 1) % 12), cid((c + 5) % 12)];
    if c % 3 == 0 {
        deps.push(cid((c + 7) % 12));
    }
    deps
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0..12u8).prop_map(Op::Park),
        (0..12u8).prop_map(Op::Resolve),
        (0..12u8).prop_map(Op::Take),
        (0..12u8).prop_map(Op::Discard),
        (0..12u8).prop_map(Op::PutBatch),
        (0..12u8).prop_map(Op::DropBatch),
    ]
}

/// What an operation answered, to compare the two implementations.
#[derive(Debug, PartialEq)]
enum Answer {
    Cids(Vec<Cid>),
    Bytes(Option<Bytes>),
    None,
}

fn apply(parking: &mut dyn Parking, op: &Op) -> Answer {
    match op {
        Op::Park(c) => {
            // The core parks a block only while it is not parked.
            if !parking.contains(&cid(*c)).expect("read") {
                let bytes = Bytes::from(vec![*c; 3]);
                parking
                    .park(&cid(*c), &bytes, &dependencies(*c))
                    .expect("written");
            }
            Answer::None
        }
        Op::Resolve(c) => Answer::Cids(sorted(parking.resolve(&cid(*c)).expect("resolved"))),
        Op::Take(c) => Answer::Bytes(parking.take(&cid(*c)).expect("taken")),
        Op::Discard(c) => Answer::Cids(sorted(parking.discard(&cid(*c)).expect("discarded"))),
        Op::PutBatch(c) => {
            (parking.put_batch(&cid(100 + *c), &Bytes::from(vec![*c; 5]))).expect("written");
            Answer::None
        }
        Op::DropBatch(c) => {
            parking.drop_batch(&cid(100 + *c)).expect("dropped");
            Answer::None
        }
    }
}

fn sorted(mut cids: Vec<Cid>) -> Vec<Cid> {
    cids.sort();
    cids
}

fn tempdir(name: &str) -> std::path::PathBuf {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let unique = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    std::env::temp_dir().join(format!("ledger-{name}-{}-{unique}", std::process::id()))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn the_store_parks_as_memory_does(ops in prop::collection::vec(op(), 1..60)) {
        let dir = tempdir("parking");
        let storage = Storage::open(&dir).expect("open");
        let (mut memory, mut disk) = (MemoryParking::default(), storage.parking());
        for op in &ops {
            prop_assert_eq!(apply(&mut memory, op), apply(&mut disk, op), "{:?}", op);
            prop_assert_eq!(memory.len(), disk.len());
            for i in 0..12 {
                prop_assert_eq!(memory.contains(&cid(i)).ok(), disk.contains(&cid(i)).ok());
            }
        }
        // Batches stay in the store, which serves them; memory drops them when told.
        for i in 0..12 {
            let kept = memory.batch(&cid(100 + i)).expect("read");
            let stored = disk.batch(&cid(100 + i)).expect("read");
            prop_assert!(kept.is_none() || kept == stored);
            prop_assert_eq!(disk.has_batch(&cid(100 + i)).ok(), Some(stored.is_some()));
            prop_assert_eq!(memory.has_batch(&cid(100 + i)).ok(), Some(kept.is_some()));
        }
        drop((disk, storage));
        let reopened = Storage::open(&dir).expect("reopen").parking();
        for i in 0..12 {
            prop_assert_eq!(reopened.contains(&cid(i)).ok(), Some(false), "parked blocks are dropped at open");
        }
        drop(reopened);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
