use std::collections::{BTreeMap, HashMap};

use proptest::prelude::*;

use super::*;
use crate::PublicKey;

fn key(i: u32) -> PublicKey {
    let mut bytes = [0u8; 32];
    bytes[..4].copy_from_slice(&i.to_be_bytes());
    PublicKey(bytes)
}

fn tree_of(pairs: impl IntoIterator<Item = (u32, u64)>) -> Tree<PublicKey, u64> {
    let mut tree = Tree::default();
    for (k, v) in pairs {
        tree.insert(key(k), v);
    }
    tree
}

/// Every block any flush of `tree` wrote, by CID.
fn stored(blocks: Vec<TreeBlock>) -> HashMap<Cid, Vec<u8>> {
    (blocks.into_iter())
        .map(|(cid, bytes)| (cid, bytes.to_vec()))
        .collect()
}

fn load(root: &Cid, blocks: &HashMap<Cid, Vec<u8>>) -> Result<Tree<PublicKey, u64>, TreeError> {
    Tree::load(root, &mut |cid: &Cid| Ok(blocks.get(cid).cloned()))
}

#[test]
fn the_index_takes_five_bits_at_a_time_most_significant_first() {
    let mut digest = [0u8; 32];
    digest[0] = 0b1010_1110;
    digest[1] = 0b0110_0000;
    assert_eq!(index(&digest, 0), 0b10101);
    assert_eq!(index(&digest, 1), 0b11001);
    assert_eq!(index(&digest, 2), 0b10000);
    digest[31] = 0b0011_1110;
    assert_eq!(index(&digest, MAX_DEPTH), 0b11111, "bits 250 to 254");
}

#[test]
fn the_empty_tree_is_one_fixed_block() {
    let mut blocks = Vec::new();
    let cid = Tree::<PublicKey, u64>::default().flush(&mut blocks);
    assert_eq!(blocks.len(), 1);
    // [h'00000000', []], hashed independently (Python hashlib) to this CID.
    assert_eq!(&blocks[0].1[..], &[0x82, 0x44, 0, 0, 0, 0, 0x80]);
    assert_eq!(
        cid.to_string(),
        "bafyreidukezzhwnvofuipe43vkst3rlvxactalfia3y7qgfxcyktjsz5u4"
    );
}

#[test]
fn a_change_rewrites_only_the_path_to_it() {
    let mut tree = tree_of((0..10_000).map(|i| (i, 1)));
    let mut blocks = Vec::new();
    tree.flush(&mut blocks);
    let depth = tree.prove(&key(77)).expect("flushed").len();
    assert!(
        (3..=5).contains(&depth),
        "10,000 keys sit 3 to 5 levels deep, not {depth}"
    );
    tree.insert(key(77), 2);
    let mut changed = Vec::new();
    tree.flush(&mut changed);
    assert_eq!(changed.len(), depth, "one block per level on the path");
    let mut again = Vec::new();
    tree.flush(&mut again);
    assert!(again.is_empty(), "nothing changed since");
}

#[test]
fn a_tree_reads_back_from_its_blocks_and_refuses_a_wrong_one() {
    let mut tree = tree_of((0..500).map(|i| (i, u64::from(i))));
    let mut blocks = Vec::new();
    let root = tree.flush(&mut blocks);
    let blocks = stored(blocks);
    let loaded = load(&root, &blocks).expect("loads");
    assert_eq!(loaded, tree);
    assert_eq!(loaded.len(), 500);

    let (victim, bytes) = blocks
        .iter()
        .find(|(cid, _)| **cid != root)
        .expect("children");
    let mut missing = blocks.clone();
    missing.remove(victim);
    assert_eq!(
        load(&root, &missing),
        Err(TreeError::Missing {
            cid: Box::new(*victim)
        })
    );
    let mut swapped = blocks.clone();
    let other = blocks.get(&root).expect("root").clone();
    swapped.insert(*victim, other);
    assert!(
        matches!(load(&root, &swapped), Err(TreeError::CidMismatch { expected, .. }) if *expected == *victim)
    );
    assert!(!bytes.is_empty());
}

#[test]
fn proofs_show_presence_and_absence_and_refuse_tampering() {
    let mut tree = tree_of((0..2_000).map(|i| (i, u64::from(i) * 3)));
    let root = tree.flush(&mut Vec::new());
    for i in [0, 1, 999, 1_999] {
        let proof = tree.prove(&key(i)).expect("flushed");
        assert_eq!(verify(&root, &key(i), &proof), Ok(Some(u64::from(i) * 3)));
    }
    let absent = key(5_000);
    let proof = tree.prove(&absent).expect("flushed");
    assert_eq!(verify::<_, u64>(&root, &absent, &proof), Ok(None));

    let proof = tree.prove(&key(7)).expect("flushed");
    let mut tampered = proof.clone();
    let last = tampered.len() - 1;
    let mut bytes = tampered[last].to_vec();
    let at = bytes.len() - 1;
    bytes[at] ^= 1;
    tampered[last] = Bytes::from(bytes);
    assert!(matches!(
        verify::<_, u64>(&root, &key(7), &tampered),
        Err(TreeError::CidMismatch { .. })
    ));
    assert_eq!(
        verify::<_, u64>(&root, &key(7), &proof[..proof.len() - 1]),
        Err(TreeError::ProofTooShort)
    );
    let mut longer = proof.clone();
    longer.push(proof[0].clone());
    assert_eq!(
        verify::<_, u64>(&root, &key(7), &longer),
        Err(TreeError::ProofTooLong { extra: 1 })
    );
    let other_root = tree_of([(1, 1)]).flush(&mut Vec::new());
    assert!(matches!(
        verify::<_, u64>(&other_root, &key(7), &proof),
        Err(TreeError::CidMismatch { .. })
    ));
    tree.insert(key(7), 0);
    assert_eq!(tree.prove(&key(7)), None, "not flushed");
}

#[derive(Clone, Debug)]
enum Op {
    Insert(u32, u64),
    Remove(u32),
}

fn ops() -> impl Strategy<Value = Vec<Op>> {
    // Few distinct keys, so that buckets fill, split and collapse again.
    let op = prop_oneof![
        (0..300u32, any::<u64>()).prop_map(|(k, v)| Op::Insert(k, v)),
        (0..300u32).prop_map(Op::Remove),
    ];
    proptest::collection::vec(op, 1..600)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// The tree is a map, and its root depends on its contents only: the same pairs inserted in
    /// another order, with nothing ever removed, give the same root; and the blocks its flushes
    /// wrote read it back.
    #[test]
    fn a_tree_is_a_map_whose_root_depends_on_its_contents_only(ops in ops(), flush_every in 1..50usize) {
        let (mut tree, mut model) = (Tree::default(), BTreeMap::new());
        let mut blocks = Vec::new();
        for (n, op) in ops.iter().enumerate() {
            match *op {
                Op::Insert(k, v) => prop_assert_eq!(tree.insert(key(k), v), model.insert(k, v)),
                Op::Remove(k) => prop_assert_eq!(tree.remove(&key(k)), model.remove(&k)),
            }
            if n % flush_every == 0 {
                tree.flush(&mut blocks);
            }
        }
        prop_assert_eq!(tree.len(), model.len());
        for k in 0..300 {
            prop_assert_eq!(tree.get(&key(k)), model.get(&k));
        }
        let root = tree.flush(&mut blocks);
        let mut fresh = tree_of(model.iter().rev().map(|(k, v)| (*k, *v)));
        prop_assert_eq!(fresh.flush(&mut Vec::new()), root);
        prop_assert_eq!(&fresh, &tree);
        for (_, bytes) in &blocks {
            let item: ipld_core::ipld::Ipld = serde_ipld_dagcbor::from_slice(bytes).expect("DAG-CBOR");
            prop_assert_eq!(&serde_ipld_dagcbor::to_vec(&item).expect("encodes")[..], &bytes[..], "canonical");
        }
        let loaded = load(&root, &stored(blocks)).expect("every block was flushed");
        prop_assert_eq!(loaded, tree);
    }

    /// What the tree drops is exactly what it stops needing: blocks written by its flushes, less
    /// those dropped since (a block may come back, under the same CID), are the blocks its root
    /// reaches, no more and no fewer.
    #[test]
    fn a_tree_drops_exactly_the_blocks_it_no_longer_reaches(ops in ops(), flush_every in 1..50usize) {
        let mut tree = Tree::<PublicKey, u64>::default();
        let mut kept: HashMap<Cid, Vec<u8>> = HashMap::new();
        let mut flush = |tree: &mut Tree<PublicKey, u64>| {
            let mut blocks = Vec::new();
            let root = tree.flush(&mut blocks);
            for cid in tree.take_dropped() {
                prop_assert!(kept.remove(&cid).is_some(), "dropped {} it never wrote", cid);
            }
            kept.extend(stored(blocks));
            let mut reached = Vec::new();
            let mut reach = |cid: &Cid| {
                reached.push(*cid);
                Ok::<_, TreeError>(kept.get(cid).cloned())
            };
            prop_assert!(Tree::<PublicKey, u64>::load(&root, &mut reach).is_ok());
            reached.sort_by_key(|c| c.to_bytes());
            let mut all: Vec<Cid> = kept.keys().copied().collect();
            all.sort_by_key(|c| c.to_bytes());
            prop_assert_eq!(reached, all);
            Ok(())
        };
        for (n, op) in ops.iter().enumerate() {
            match *op {
                Op::Insert(k, v) => tree.insert(key(k), v),
                Op::Remove(k) => tree.remove(&key(k)),
            };
            if n % flush_every == 0 {
                flush(&mut tree)?;
            }
        }
        flush(&mut tree)?;
    }
}
