//! Proofs: the blocks from a tree's root to the bucket that holds a key, or to the place where
//! it would be. Checked against the root's CID alone, each block against the link to it.

use bytes::Bytes;
use comms::Cid;

use super::{
    check_block, codec, digest, index, read_block, ReadBlock, Slot, Tree, TreeError, TreeKey,
    TreeValue,
};

/// The blocks from a tree's root to a key's bucket, or to the empty slot where it would be.
pub type Proof = Vec<Bytes>;

impl<K: TreeKey, V: TreeValue> Tree<K, V> {
    /// The proof for `key` as of the last flush; `None` if the tree changed since.
    pub fn prove(&self, key: &K) -> Option<Proof> {
        self.cid?;
        let digest = digest(key.bytes());
        let mut node = &self.root;
        let mut proof = vec![Bytes::from(codec::encode(node))];
        for depth in 0.. {
            let (at, used) = node.position(index(&digest, depth));
            match node.slots.get(at) {
                Some(Slot::Child { node: child, .. }) if used => {
                    node = child;
                    proof.push(Bytes::from(codec::encode(node)));
                }
                _ => break,
            }
        }
        Some(proof)
    }
}

/// The proof for `key` in the stored tree of root `root`, read a block at a time through `read`
/// (each checked against its CID): for a tree that is not the one in memory, such as an older
/// state's.
pub fn prove_stored<K: TreeKey, V: TreeValue, E: From<TreeError>>(
    root: &Cid,
    key: &K,
    read: &mut ReadBlock<E>,
) -> Result<Proof, E> {
    let digest = digest(key.bytes());
    let (mut cid, mut proof) = (*root, Vec::new());
    for depth in 0.. {
        let bytes = read_block(&cid, read)?;
        let node = codec::decode::<K, V>(&cid, &bytes, depth)?;
        proof.push(Bytes::from(bytes));
        let (at, used) = node.position(index(&digest, depth));
        match node.slots.get(at) {
            Some(Slot::Child {
                cid: Some(link), ..
            }) if used => cid = *link,
            _ => break,
        }
    }
    Ok(proof)
}

/// Checks `proof` for `key` against the tree root `root`: the value at `key`, or `None` if the
/// proof shows that the tree has none.
pub fn verify<K: TreeKey, V: TreeValue>(
    root: &Cid,
    key: &K,
    proof: &[Bytes],
) -> Result<Option<V>, TreeError> {
    let digest = digest(key.bytes());
    let mut expected = *root;
    for (depth, bytes) in proof.iter().enumerate() {
        check_block(&expected, bytes)?;
        let node = codec::decode::<K, V>(&expected, bytes, depth)?;
        let (at, used) = node.position(index(&digest, depth));
        let found = match node.slots.into_iter().nth(at) {
            Some(Slot::Child {
                cid: Some(link), ..
            }) if used => {
                expected = link;
                continue;
            }
            Some(Slot::Bucket(pairs)) if used => pairs
                .into_iter()
                .find(|(k, _)| k == key)
                .map(|(_, value)| value),
            _ => None,
        };
        return match proof.len() - depth - 1 {
            0 => Ok(found),
            extra => Err(TreeError::ProofTooLong { extra }),
        };
    }
    Err(TreeError::ProofTooShort)
}
