//! A faulty validator's blocks that reference blocks nobody has cannot make a node queue fetches
//! or park blocks without bound, and do not hold up other validators' blocks.

use bytes::Bytes;
use comms::Cid;
use ledger_core::{codec::cid_of, Block, Core, CoreConfig, Output, Payload, SignedBlock};

mod support;

/// The three parents, which exist nowhere, of the blocks made with `salt`.
fn missing_parents(salt: u64) -> Vec<Cid> {
    let mut parents: Vec<Cid> = (0..3u64)
        .map(|i| cid_of(&[salt.to_be_bytes(), i.to_be_bytes()].concat()))
        .collect();
    parents.sort();
    parents
}

/// A block by validator `author` in round 5 whose three parents exist nowhere; `salt` makes each
/// one different.
fn junk(chain: &Cid, author: usize, salt: u64) -> Bytes {
    equivocation(chain, author, salt, salt)
}

/// A block by validator `author` in round 5 with the missing parents of `salt`; blocks that
/// differ only in `timestamp` share their parents (equivocations).
fn equivocation(chain: &Cid, author: usize, salt: u64, timestamp: u64) -> Bytes {
    let block = Block {
        chain: *chain,
        author: author as u32,
        round: 5,
        parents: missing_parents(salt),
        payload: Payload::Inline(Vec::new()),
        timestamp_ms: timestamp,
        checkpoint: None,
    };
    Bytes::from(
        SignedBlock::sign(block, &support::validator_key(author))
            .encode()
            .0,
    )
}

fn fetches(out: &[Output]) -> usize {
    out.iter().filter(|o| matches!(o, Output::Fetch(_))).count()
}

#[test]
fn one_authors_fetch_queue_is_bounded_and_others_still_fetch() {
    let genesis = support::genesis(4, 1);
    let chain = genesis.encode().1;
    let config = CoreConfig {
        fetches_per_author: 4,
        queued_fetches_per_author: 16,
        ..CoreConfig::default()
    };
    let mut core = Core::new(&genesis, None, config);
    let mut out = Vec::new();
    for salt in 0..100 {
        core.receive(0, junk(&chain, 0, salt), &mut out)
            .expect("in memory");
    }
    assert_eq!(fetches(&out), 4, "in flight for validator 0's blocks");
    assert!(
        core.wanted() <= 4 + 16,
        "{} CIDs wanted for one author",
        core.wanted()
    );
    let refused = core.stats().rejected.get("fetch_queue_full").copied();
    assert!(refused.is_some_and(|n| n >= 90), "refused: {refused:?}");
    assert!(
        core.pending_blocks() <= 16,
        "{} parked",
        core.pending_blocks()
    );

    // Another validator's block still gets its fetches at once.
    out.clear();
    core.receive(0, junk(&chain, 1, 1_000), &mut out)
        .expect("in memory");
    assert_eq!(fetches(&out), 3, "validator 1's parents are asked for");

    // A refused block is not remembered as refused: once the queue has room it is taken.
    let mut core = Core::new(
        &genesis,
        None,
        CoreConfig {
            queued_fetches_per_author: 0,
            fetches_per_author: 3,
            ..CoreConfig::default()
        },
    );
    core.receive(0, junk(&chain, 0, 1), &mut out)
        .expect("in memory");
    core.receive(0, junk(&chain, 0, 2), &mut out)
        .expect("in memory");
    assert_eq!(core.pending_blocks(), 1, "the second would queue fetches");
    for parent in missing_parents(1) {
        core.fetch_failed(parent, &mut out).expect("in memory");
    }
    core.receive(0, junk(&chain, 0, 2), &mut out)
        .expect("in memory");
    assert_eq!(core.pending_blocks(), 1, "taken when it came again");
}

#[test]
fn one_authors_parked_broadcasts_are_bounded_and_others_still_park() {
    let genesis = support::genesis(4, 1);
    let chain = genesis.encode().1;
    let config = CoreConfig {
        parked_broadcasts_per_author: 10,
        ..CoreConfig::default()
    };
    let mut core = Core::new(&genesis, None, config);
    let mut out = Vec::new();
    // Equivocations sharing their missing parents queue no new fetches: the fetch bounds do not
    // see them, this one does.
    for timestamp in 0..100 {
        core.receive(0, equivocation(&chain, 0, 7, timestamp), &mut out)
            .expect("in memory");
    }
    assert_eq!(fetches(&out), 3, "the shared parents are asked for once");
    assert_eq!(core.pending_blocks(), 10, "parked for validator 0");
    let refused = core.stats().rejected.get("parking_full").copied();
    assert_eq!(refused, Some(90));

    // Another validator's broadcast block still parks.
    core.receive(0, junk(&chain, 1, 1_000), &mut out)
        .expect("in memory");
    assert_eq!(core.pending_blocks(), 11);

    // Once validator 0's parked blocks are dropped (their parents will not come), it has room again,
    // and a refused block is taken when it comes again.
    for parent in missing_parents(7) {
        core.fetch_failed(parent, &mut out).expect("in memory");
    }
    assert_eq!(core.pending_blocks(), 1, "only validator 1's block is left");
    for timestamp in 90..100 {
        core.receive(0, equivocation(&chain, 0, 7, timestamp), &mut out)
            .expect("in memory");
    }
    assert_eq!(core.pending_blocks(), 11);
    assert_eq!(core.stats().rejected.get("parking_full").copied(), Some(90));
}
