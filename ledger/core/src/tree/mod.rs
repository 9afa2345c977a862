//! The state tree: a hash array mapped trie (HAMT) whose nodes are DAG-CBOR blocks named by
//! sha2-256 CIDv1, so that a state is one CID, any IPFS tool can walk it (`ipfs dag get`), and a
//! commit rewrites only the paths to what it changed.
//!
//! Shape, as in the IPLD HAMT specification and Filecoin's state tree: a key is placed by the
//! sha2-256 digest of its bytes, [`BIT_WIDTH`] bits per level, most significant first. A node is
//! `[bitmap, slots]`: a 4-byte big-endian bitmap of the 32 indexes in use, and per index in use,
//! in index order, either a link to a child node or a bucket of 1 to [`BUCKET`] `[key, value]`
//! pairs sorted by key bytes. A slot is a bucket exactly when at most [`BUCKET`] keys share its
//! digest prefix, on insertion and removal alike, so that the tree, and its root CID, is a
//! function of its contents, not of their history.
//!
//! Every node is held in memory, decoded; [`Tree::flush`] encodes the nodes changed since the
//! last flush (children first) and hands them out to be stored. [`Tree::load`] reads a stored tree
//! back, checking every block against its CID. [`Tree::prove`] gives the blocks from the root to
//! a key, which [`verify`] checks against a root CID alone.

mod codec;
mod proof;

use std::mem;

use bytes::Bytes;
use comms::Cid;
use ipld_core::ipld::Ipld;
use sha2::{Digest, Sha256};
use smallvec::{smallvec, SmallVec};

pub use codec::{array, pair, unsigned};
pub use proof::{prove_stored, verify, Proof};

/// Digest bits per level: 32 slots a node.
pub const BIT_WIDTH: usize = 5;

/// Pairs a bucket holds before they move into a child node.
pub const BUCKET: usize = 3;

/// The deepest level: the one whose index takes the digest's last whole [`BIT_WIDTH`] bits. Keys
/// whose digests agree that far (a sha2-256 collision) share a bucket there, unbounded.
const MAX_DEPTH: usize = 256 / BIT_WIDTH - 1;

/// A key of the tree: its bytes are what is hashed and stored.
pub trait TreeKey: Clone + Eq + std::fmt::Debug {
    /// The bytes that stand for the key.
    fn bytes(&self) -> &[u8];
    /// The key of stored bytes, if they are one.
    fn from_bytes(bytes: &[u8]) -> Option<Self>;
}

/// A value of the tree, with its DAG-CBOR form inside a tree node.
pub trait TreeValue: Clone + Eq + std::fmt::Debug {
    /// Writes the value's canonical DAG-CBOR bytes to `out`.
    fn encode(&self, out: &mut Vec<u8>);
    /// The value of a decoded DAG-CBOR item, if it is one.
    fn decode(item: &Ipld) -> Option<Self>;
}

impl TreeValue for u64 {
    fn encode(&self, out: &mut Vec<u8>) {
        codec::unsigned(out, *self);
    }

    fn decode(item: &Ipld) -> Option<u64> {
        match item {
            Ipld::Integer(value) => u64::try_from(*value).ok(),
            _ => None,
        }
    }
}

/// Why a stored tree or a proof does not hold.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TreeError {
    /// A block the tree links is not stored.
    #[error("state tree block {cid} is missing")]
    Missing { cid: Box<Cid> },
    /// A block's bytes do not hash to the CID that names it.
    #[error("state tree block {expected} hashes to {actual}")]
    CidMismatch {
        expected: Box<Cid>,
        actual: Box<Cid>,
    },
    /// A block that is not a tree node, or not in its canonical form.
    #[error("state tree block {cid} is malformed: {reason}")]
    Malformed { cid: Box<Cid>, reason: String },
    /// A proof that ends before it reaches its key's bucket.
    #[error("the proof ends before it reaches the key")]
    ProofTooShort,
    /// A proof with blocks after the one that decides its key.
    #[error("the proof has {extra} blocks past the one that decides the key")]
    ProofTooLong { extra: usize },
}

/// A bucket's pairs, in the node itself.
type Pairs<K, V> = SmallVec<[(K, V); BUCKET]>;

/// A block of the tree as it is stored: its CID and DAG-CBOR bytes.
pub type TreeBlock = (Cid, Bytes);

/// Where [`Tree::load`] reads a block: its bytes, `None` if it is not stored.
pub type ReadBlock<'a, E> = dyn FnMut(&Cid) -> Result<Option<Vec<u8>>, E> + 'a;

/// A map from keys to values, kept as a HAMT of content-addressed nodes (see the module doc).
/// Two trees are equal when their nodes and CIDs are, whatever they dropped.
#[derive(Clone, Debug)]
pub struct Tree<K, V> {
    root: Node<K, V>,
    /// The root's CID, when nothing changed since the last flush.
    cid: Option<Cid>,
    len: usize,
    /// The CIDs of the nodes, as stored at the last flush, that changes since replaced or removed:
    /// what the state as of that flush needs and the next one does not.
    dropped: Vec<Cid>,
}

impl<K: PartialEq, V: PartialEq> PartialEq for Tree<K, V> {
    fn eq(&self, other: &Tree<K, V>) -> bool {
        (&self.root, self.cid, self.len) == (&other.root, other.cid, other.len)
    }
}

impl<K: Eq, V: Eq> Eq for Tree<K, V> {}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Node<K, V> {
    /// Bit `i` set: index `i` has a slot.
    bitmap: u32,
    /// The slots, in index order.
    slots: Vec<Slot<K, V>>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Slot<K, V> {
    /// 1 to [`BUCKET`] pairs, sorted by key bytes.
    Bucket(Pairs<K, V>),
    /// A child node, and its CID unless it changed since the last flush.
    Child {
        cid: Option<Cid>,
        node: Box<Node<K, V>>,
    },
}

/// The digest that places `key`.
fn digest(key: &[u8]) -> [u8; 32] {
    Sha256::digest(key).into()
}

/// The slot index of `digest` at level `depth`: its bits `5 depth .. 5 depth + 5`.
fn index(digest: &[u8; 32], depth: usize) -> u32 {
    let bit = depth * BIT_WIDTH;
    let next = digest.get(bit / 8 + 1).copied().unwrap_or(0);
    let word = u16::from_be_bytes([digest[bit / 8], next]);
    u32::from((word >> (16 - BIT_WIDTH - bit % 8)) & 0x1f)
}

impl<K, V> Node<K, V> {
    fn empty() -> Node<K, V> {
        Node {
            bitmap: 0,
            slots: Vec::new(),
        }
    }

    /// The position in `slots` of index `i`'s slot, and whether it has one.
    fn position(&self, i: u32) -> (usize, bool) {
        let below = self.bitmap & ((1u32 << i) - 1);
        (below.count_ones() as usize, self.bitmap & (1 << i) != 0)
    }
}

impl<K: TreeKey, V: TreeValue> Node<K, V> {
    fn get(&self, digest: &[u8; 32], depth: usize, key: &K) -> Option<&V> {
        let (at, used) = self.position(index(digest, depth));
        if !used {
            return None;
        }
        match &self.slots[at] {
            Slot::Bucket(pairs) => pairs.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            Slot::Child { node, .. } => node.get(digest, depth + 1, key),
        }
    }

    /// Puts `value` at `key`; returns the value it replaced. The CIDs of the stored nodes it
    /// changes (their versions as stored) go to `dropped`.
    fn insert(
        &mut self,
        digest: &[u8; 32],
        depth: usize,
        (key, value): (K, V),
        dropped: &mut Vec<Cid>,
    ) -> Option<V> {
        let i = index(digest, depth);
        let (at, used) = self.position(i);
        if !used {
            self.bitmap |= 1 << i;
            self.slots.insert(at, Slot::Bucket(smallvec![(key, value)]));
            return None;
        }
        let pairs = match &mut self.slots[at] {
            Slot::Child { cid, node } => {
                dropped.extend(cid.take());
                return node.insert(digest, depth + 1, (key, value), dropped);
            }
            Slot::Bucket(pairs) => pairs,
        };
        match pairs.binary_search_by(|(k, _)| k.bytes().cmp(key.bytes())) {
            Ok(found) => Some(mem::replace(&mut pairs[found].1, value)),
            Err(place) if pairs.len() < BUCKET || depth == MAX_DEPTH => {
                pairs.insert(place, (key, value));
                None
            }
            Err(_) => {
                let mut child = Node::empty();
                for (k, v) in mem::take(pairs).into_iter().chain([(key, value)]) {
                    child.insert(&self::digest(k.bytes()), depth + 1, (k, v), dropped);
                }
                self.slots[at] = Slot::Child {
                    cid: None,
                    node: Box::new(child),
                };
                None
            }
        }
    }

    /// Takes `key` out; a child left with at most [`BUCKET`] pairs becomes a bucket again. The
    /// CIDs of the stored nodes it changes or removes go to `dropped`.
    fn remove(
        &mut self,
        digest: &[u8; 32],
        depth: usize,
        key: &K,
        dropped: &mut Vec<Cid>,
    ) -> Option<V> {
        let i = index(digest, depth);
        let (at, used) = self.position(i);
        if !used {
            return None;
        }
        let (removed, emptied) = match &mut self.slots[at] {
            Slot::Bucket(pairs) => {
                let found = pairs.iter().position(|(k, _)| k == key)?;
                let (_, value) = pairs.remove(found);
                (value, pairs.is_empty())
            }
            Slot::Child { cid, node } => {
                let value = node.remove(digest, depth + 1, key, dropped)?;
                dropped.extend(cid.take());
                if let Some(pairs) = node.collapsed() {
                    self.slots[at] = Slot::Bucket(pairs);
                }
                (value, false)
            }
        };
        if emptied {
            self.slots.remove(at);
            self.bitmap &= !(1 << i);
        }
        Some(removed)
    }

    /// The pairs of a node that holds at most [`BUCKET`] of them, all in buckets, sorted.
    fn collapsed(&mut self) -> Option<Pairs<K, V>> {
        let mut count = 0;
        for slot in &self.slots {
            match slot {
                Slot::Bucket(pairs) => count += pairs.len(),
                Slot::Child { .. } => return None,
            }
        }
        if count > BUCKET {
            return None;
        }
        let mut pairs: Pairs<K, V> = (mem::take(&mut self.slots).into_iter())
            .flat_map(|slot| match slot {
                Slot::Bucket(pairs) => pairs,
                Slot::Child { .. } => Pairs::new(),
            })
            .collect();
        pairs.sort_by(|a, b| a.0.bytes().cmp(b.0.bytes()));
        Some(pairs)
    }

    /// Encodes the changed nodes under this one and then this one, into `out`; returns its CID.
    fn flush(&mut self, out: &mut Vec<TreeBlock>) -> Cid {
        for slot in &mut self.slots {
            if let Slot::Child {
                cid: cid @ None,
                node,
            } = slot
            {
                *cid = Some(node.flush(out));
            }
        }
        let bytes = codec::encode(self);
        let cid = crate::codec::cid_of(&bytes);
        out.push((cid, Bytes::from(bytes)));
        cid
    }

    fn for_each<'a>(&'a self, visit: &mut impl FnMut(&'a K, &'a V)) {
        for slot in &self.slots {
            match slot {
                Slot::Bucket(pairs) => pairs.iter().for_each(|(k, v)| visit(k, v)),
                Slot::Child { node, .. } => node.for_each(visit),
            }
        }
    }
}

impl<K: TreeKey, V: TreeValue> Default for Tree<K, V> {
    fn default() -> Tree<K, V> {
        Tree {
            root: Node::empty(),
            cid: None,
            len: 0,
            dropped: Vec::new(),
        }
    }
}

impl<K: TreeKey, V: TreeValue> Tree<K, V> {
    /// The value at `key`.
    pub fn get(&self, key: &K) -> Option<&V> {
        self.root.get(&digest(key.bytes()), 0, key)
    }

    /// Puts `value` at `key`; returns the value it replaced.
    pub fn insert(&mut self, key: K, value: V) -> Option<V> {
        self.dropped.extend(self.cid.take());
        let digest = digest(key.bytes());
        let old = (self.root).insert(&digest, 0, (key, value), &mut self.dropped);
        self.len += usize::from(old.is_none());
        old
    }

    /// Takes `key` out; returns its value.
    pub fn remove(&mut self, key: &K) -> Option<V> {
        let old = (self.root).remove(&digest(key.bytes()), 0, key, &mut self.dropped)?;
        self.dropped.extend(self.cid.take());
        self.len -= 1;
        Some(old)
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether there are no keys.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Visits every pair, in tree order.
    pub fn for_each<'a>(&'a self, mut visit: impl FnMut(&'a K, &'a V)) {
        self.root.for_each(&mut visit)
    }

    /// The root's CID, encoding the nodes changed since the last flush (children first) into
    /// `out`: what must be stored for the tree to be read back from its root.
    pub fn flush(&mut self, out: &mut Vec<TreeBlock>) -> Cid {
        match self.cid {
            Some(cid) => cid,
            None => *self.cid.insert(self.root.flush(out)),
        }
    }

    /// The CIDs of the stored nodes that changes since the last call replaced or removed (each
    /// once): blocks the tree of the last flush needs and the next one does not (though the same
    /// bytes may come back, under the same CID, in a later flush).
    pub fn take_dropped(&mut self) -> Vec<Cid> {
        mem::take(&mut self.dropped)
    }

    /// The root's CID as of the last flush, unless something changed since.
    pub fn cid(&self) -> Option<Cid> {
        self.cid
    }

    /// Reads back the tree of root `root`, a block at a time through `read`, checking each block
    /// against the CID that links it and that the tree is in its canonical shape.
    pub fn load<E: From<TreeError>>(root: &Cid, read: &mut ReadBlock<E>) -> Result<Tree<K, V>, E> {
        let (root_node, len) = load_node(root, 0, read)?;
        Ok(Tree {
            root: root_node,
            cid: Some(*root),
            len,
            dropped: Vec::new(),
        })
    }
}

/// Checks that `bytes` hash to `cid`, the CID that names them.
pub fn check_block(cid: &Cid, bytes: &[u8]) -> Result<(), TreeError> {
    let actual = crate::codec::cid_of(bytes);
    match actual == *cid {
        true => Ok(()),
        false => Err(TreeError::CidMismatch {
            expected: Box::new(*cid),
            actual: Box::new(actual),
        }),
    }
}

/// Reads block `cid` through `read`, checked against its CID: one not stored is an error.
pub fn read_block<E: From<TreeError>>(cid: &Cid, read: &mut ReadBlock<E>) -> Result<Vec<u8>, E> {
    let missing = || TreeError::Missing {
        cid: Box::new(*cid),
    };
    let bytes = read(cid)?.ok_or_else(missing)?;
    check_block(cid, &bytes)?;
    Ok(bytes)
}

/// Reads node `cid` at level `depth` and everything under it; returns it and its pair count.
fn load_node<K: TreeKey, V: TreeValue, E: From<TreeError>>(
    cid: &Cid,
    depth: usize,
    read: &mut ReadBlock<E>,
) -> Result<(Node<K, V>, usize), E> {
    let bytes = read_block(cid, read)?;
    let mut node = codec::decode::<K, V>(cid, &bytes, depth)?;
    let mut len = 0;
    for slot in &mut node.slots {
        match slot {
            Slot::Bucket(pairs) => len += pairs.len(),
            Slot::Child {
                cid: Some(link),
                node: child,
            } => {
                let (loaded, count) = load_node(link, depth + 1, read)?;
                if count <= BUCKET {
                    return Err(TreeError::Malformed {
                        cid: Box::new(*cid),
                        reason: format!("a child of {count} pairs, which belong in a bucket"),
                    }
                    .into());
                }
                **child = loaded;
                len += count;
            }
            Slot::Child { cid: None, .. } => {}
        }
    }
    Ok((node, len))
}

impl TreeKey for crate::PublicKey {
    fn bytes(&self) -> &[u8] {
        &self.0
    }

    fn from_bytes(bytes: &[u8]) -> Option<Self> {
        Some(crate::PublicKey(bytes.try_into().ok()?))
    }
}

#[cfg(test)]
mod tests;
