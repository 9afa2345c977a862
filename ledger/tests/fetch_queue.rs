//! A faulty validator's blocks that reference blocks nobody has cannot make a node queue fetches
//! without bound, and do not hold up fetches for other validators' blocks.

use bytes::Bytes;
use comms::Cid;
use ledger::{codec::cid_of, Block, Core, CoreConfig, Output, Payload, SignedBlock};

mod common;

/// A block by validator `author` in round 5 whose three parents exist nowhere; `salt` makes each
/// one different.
fn junk(chain: &Cid, author: usize, salt: u64) -> Bytes {
    let mut parents: Vec<Cid> = (0..3u64)
        .map(|i| cid_of(&[salt.to_be_bytes(), i.to_be_bytes()].concat()))
        .collect();
    parents.sort();
    let block = Block {
        chain: *chain,
        author: author as u32,
        round: 5,
        parents,
        payload: Payload::Inline(Vec::new()),
        timestamp_ms: salt,
    };
    Bytes::from(
        SignedBlock::sign(block, &common::validator_key(author))
            .encode()
            .0,
    )
}

fn fetches(out: &[Output]) -> usize {
    out.iter().filter(|o| matches!(o, Output::Fetch(_))).count()
}

#[test]
fn one_authors_fetch_queue_is_bounded_and_others_still_fetch() {
    let genesis = common::genesis(4, 1);
    let chain = genesis.encode().1;
    let config = CoreConfig {
        fetches_per_author: 4,
        queued_fetches_per_author: 16,
        ..CoreConfig::default()
    };
    let mut core = Core::new(&genesis, None, config);
    let mut out = Vec::new();
    for salt in 0..100 {
        core.receive(0, junk(&chain, 0, salt), &mut out);
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
    core.receive(0, junk(&chain, 1, 1_000), &mut out);
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
    core.receive(0, junk(&chain, 0, 1), &mut out);
    core.receive(0, junk(&chain, 0, 2), &mut out);
    assert_eq!(core.pending_blocks(), 1, "the second would queue fetches");
    for salt in 0..3u64 {
        let parent = cid_of(&[1u64.to_be_bytes(), salt.to_be_bytes()].concat());
        core.fetch_failed(parent, &mut out);
    }
    core.receive(0, junk(&chain, 0, 2), &mut out);
    assert_eq!(core.pending_blocks(), 1, "taken when it came again");
}
