//! Canonical encoding, CIDs and signatures, as properties.

use comms::Cid;
use ledger_core::{
    checkpoint::CHECKPOINT_INTERVAL,
    codec::{cid_of, decode, encode},
    validate::{check_block, BlockLimits},
    Block, Checkpoint, Committee, Error, Genesis, Payload, SignedBlock, SignedTransaction,
    Transaction,
};
use proptest::prelude::*;

mod support;

fn limits() -> BlockLimits {
    BlockLimits {
        max_transactions: 1000,
        max_bytes: 1 << 20,
    }
}

fn chain(genesis: &Genesis) -> Cid {
    genesis.encode().1
}

prop_compose! {
    fn transaction()(from in 0..4usize, to in 0..4usize, amount in any::<u64>(), nonce in any::<u64>(), record in any::<bool>(), size in any::<u64>()) -> (usize, Transaction) {
        let tx = match record {
            false => Transaction::Transfer { from: support::account(from), to: support::account(to), amount, nonce },
            true => Transaction::Record { author: support::account(from), nonce, payload: comms::cid_for(comms::Codec::Raw, &size.to_be_bytes()), size },
        };
        (from, tx)
    }
}

prop_compose! {
    fn signed_block()(author in 0..4u32, round in 1..1000u64, parents in 1..4usize, txs in proptest::collection::vec(transaction(), 0..5), timestamp_ms in any::<u64>(), checkpoint in proptest::option::of(1..100u64)) -> SignedBlock {
        let genesis = support::genesis(4, 4);
        let chain = chain(&genesis);
        let txs = txs.into_iter().map(|(signer, tx)| SignedTransaction::sign(&chain, tx, &support::account_key(signer))).collect();
        let mut parents: Vec<Cid> = (0..parents).map(|i| comms::cid_for(comms::Codec::DagCbor, &[i as u8, round as u8])).collect();
        parents.sort_by_key(|c| c.to_bytes());
        let checkpoint = checkpoint.map(|n| Checkpoint { height: n * CHECKPOINT_INTERVAL, round: n * 8, leader: comms::cid_for(comms::Codec::DagCbor, &n.to_le_bytes()), state_root: comms::cid_for(comms::Codec::DagCbor, &n.to_be_bytes()) });
        let block = Block { chain, author, round, parents, payload: Payload::Inline(txs), timestamp_ms, checkpoint };
        SignedBlock::sign(block, &support::validator_key(author as usize))
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn blocks_round_trip_with_a_stable_cid(block in signed_block()) {
        let (bytes, cid) = block.encode();
        let decoded = SignedBlock::decode(&bytes).expect("own encoding decodes");
        prop_assert_eq!(&decoded, &block);
        prop_assert_eq!(decoded.encode(), (bytes.clone(), cid));
        prop_assert_eq!(cid_of(&bytes), cid);
        let genesis = support::genesis(4, 4);
        prop_assert!(check_block(&block, bytes.len(), &chain(&genesis), &Committee::new(&genesis), &limits()).is_ok());
    }

    #[test]
    fn any_single_bit_flip_is_rejected(block in signed_block(), bit in any::<usize>()) {
        let genesis = support::genesis(4, 4);
        let (mut bytes, _) = block.encode();
        let bit = bit % (bytes.len() * 8);
        bytes[bit / 8] ^= 1 << (bit % 8);
        let outcome = SignedBlock::decode(&bytes).and_then(|b| check_block(&b, bytes.len(), &chain(&genesis), &Committee::new(&genesis), &limits()));
        prop_assert!(outcome.is_err(), "flipping bit {} went unnoticed", bit);
    }

    #[test]
    fn transactions_round_trip(tx in transaction()) {
        let genesis = support::genesis(4, 4);
        let signed = SignedTransaction::sign(&chain(&genesis), tx.1, &support::account_key(tx.0));
        prop_assert_eq!(decode::<SignedTransaction>(&encode(&signed)).expect("decodes"), signed.clone());
        prop_assert!(signed.verify(&chain(&genesis)).is_ok());
        let other = Genesis { chain_id: "other".into(), ..genesis };
        prop_assert!(signed.verify(&chain(&other)).is_err(), "a signature is bound to its chain");
    }
}

/// DAG-CBOR of `{"nonce": 1, "amount": 2}`-like maps, built by hand.
#[test]
fn non_canonical_encodings_are_refused() {
    #[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq)]
    struct Pair {
        a: u64,
        bb: u64,
    }
    let canonical = [0xa2, 0x61, b'a', 0x01, 0x62, b'b', b'b', 0x02];
    assert_eq!(
        decode::<Pair>(&canonical).expect("canonical"),
        Pair { a: 1, bb: 2 }
    );
    let cases: [(&str, &[u8]); 5] = [
        (
            "unsorted keys",
            &[0xa2, 0x62, b'b', b'b', 0x02, 0x61, b'a', 0x01],
        ),
        (
            "non-minimal integer",
            &[0xa2, 0x61, b'a', 0x18, 0x01, 0x62, b'b', b'b', 0x02],
        ),
        (
            "indefinite-length map",
            &[0xbf, 0x61, b'a', 0x01, 0x62, b'b', b'b', 0x02, 0xff],
        ),
        (
            "a float",
            &[0xa2, 0x61, b'a', 0xf9, 0x3c, 0x00, 0x62, b'b', b'b', 0x02],
        ),
        (
            "trailing bytes",
            &[0xa2, 0x61, b'a', 0x01, 0x62, b'b', b'b', 0x02, 0x00],
        ),
    ];
    for (what, bytes) in cases {
        let outcome = decode::<Pair>(bytes);
        assert!(
            matches!(outcome, Err(Error::Malformed { .. } | Error::NonCanonical)),
            "{what} accepted: {outcome:?}"
        );
    }
}

#[test]
fn parents_links_are_ipld_links() {
    let genesis = support::genesis(4, 0);
    let parent = comms::cid_for(comms::Codec::DagCbor, b"parent");
    let block = Block {
        chain: chain(&genesis),
        author: 0,
        round: 1,
        parents: vec![parent],
        payload: Payload::Inline(vec![]),
        timestamp_ms: 0,
        checkpoint: None,
    };
    let bytes = encode(&block);
    // A CID link is CBOR tag 42 (0xd8 0x2a) over the CID bytes with a leading zero.
    let link = [
        &[0xd8, 0x2a][..],
        &[0x58, 0x25, 0x00][..],
        &parent.to_bytes(),
    ]
    .concat();
    assert!(
        bytes.windows(link.len()).any(|w| w == link),
        "parent is not a tag-42 link"
    );
}

#[test]
fn a_checkpoint_is_at_a_checkpoint_height_and_absent_until_there_is_one() {
    let genesis = support::genesis(4, 0);
    let committee = Committee::new(&genesis);
    let state_root = comms::cid_for(comms::Codec::DagCbor, b"state");
    let signed = |height: Option<u64>| {
        let block = Block {
            chain: chain(&genesis),
            author: 0,
            round: 0,
            parents: vec![],
            payload: Payload::Inline(vec![]),
            timestamp_ms: 0,
            checkpoint: height.map(|height| Checkpoint {
                height,
                round: 1,
                leader: state_root,
                state_root,
            }),
        };
        SignedBlock::sign(block, &support::validator_key(0))
    };
    let check = |block: &SignedBlock| {
        let size = encode(block).len();
        check_block(block, size, &chain(&genesis), &committee, &limits())
    };
    assert!(check(&signed(Some(2 * CHECKPOINT_INTERVAL))).is_ok());
    assert!(check(&signed(None)).is_ok());
    for height in [0, CHECKPOINT_INTERVAL + 1] {
        assert!(matches!(
            check(&signed(Some(height))),
            Err(Error::BadCheckpoint { .. })
        ));
    }
    // No checkpoint: no `checkpoint` key at all (a `null` would be a second encoding).
    let bytes = encode(&signed(None));
    assert!(!bytes.windows(10).any(|w| w == b"checkpoint"));
    // The root is a byte string (`0x58 0x24`: 36 bytes), not a tag-42 link that pins would walk.
    let bytes = encode(&signed(Some(CHECKPOINT_INTERVAL)));
    let as_bytes = [&[0x58, 0x24][..], &state_root.to_bytes()].concat();
    assert!(bytes.windows(as_bytes.len()).any(|w| w == as_bytes));
    let as_link = [&[0xd8, 0x2a, 0x58, 0x25, 0x00][..], &state_root.to_bytes()].concat();
    assert!(!bytes.windows(as_link.len()).any(|w| w == as_link));
}
