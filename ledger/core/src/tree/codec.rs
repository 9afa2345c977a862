//! A tree node's DAG-CBOR form: `[bitmap, [slot, ...]]`, a slot being a link or a bucket
//! `[[key, value], ...]`. Written by hand, as a commit encodes thousands of nodes (a general
//! serializer took 4 times as long); decoded through the IPLD data model, strictly: the block
//! must be the one encoding of its node.

use comms::Cid;
use ipld_core::ipld::Ipld;

use super::{Node, Pairs, Slot, TreeError, TreeKey, TreeValue, BUCKET, MAX_DEPTH};

/// CBOR major types.
const UNSIGNED: u8 = 0;
const BYTES: u8 = 2;
const ARRAY: u8 = 4;

/// Writes a CBOR head: major type `major` with argument `value`, in its shortest form.
pub fn head(out: &mut Vec<u8>, major: u8, value: u64) {
    let major = major << 5;
    match value {
        0..24 => out.push(major | value as u8),
        24..0x100 => out.extend([major | 24, value as u8]),
        0x100..0x1_0000 => {
            out.push(major | 25);
            out.extend((value as u16).to_be_bytes());
        }
        0x1_0000..0x1_0000_0000 => {
            out.push(major | 26);
            out.extend((value as u32).to_be_bytes());
        }
        _ => {
            out.push(major | 27);
            out.extend(value.to_be_bytes());
        }
    }
}

/// Writes an unsigned integer.
pub fn unsigned(out: &mut Vec<u8>, value: u64) {
    head(out, UNSIGNED, value);
}

/// The two items of a decoded list of two, if `item` is one.
pub fn pair(item: &Ipld) -> Option<(&Ipld, &Ipld)> {
    match item {
        Ipld::List(items) => match &items[..] {
            [first, second] => Some((first, second)),
            _ => None,
        },
        _ => None,
    }
}

/// Writes an array's head, for `len` items to follow.
pub fn array(out: &mut Vec<u8>, len: usize) {
    head(out, ARRAY, len as u64);
}

fn bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    head(out, BYTES, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

/// A link: tag 42 over the CID's bytes behind a zero (the identity multibase prefix).
fn link(out: &mut Vec<u8>, cid: &Cid) {
    out.extend([0xd8, 42]);
    head(out, BYTES, cid.encoded_len() as u64 + 1);
    out.push(0);
    cid.write_bytes(&mut *out)
        .expect("writing to memory cannot fail");
}

/// Writes the canonical bytes of `node`, whose children were all flushed, to `out`.
pub(super) fn encode_into<K: TreeKey, V: TreeValue>(node: &Node<K, V>, out: &mut Vec<u8>) {
    array(out, 2);
    bytes(out, &node.bitmap.to_be_bytes());
    array(out, node.slots.len());
    for slot in &node.slots {
        match slot {
            Slot::Child { cid: Some(cid), .. } => link(out, cid),
            Slot::Child { cid: None, .. } => unreachable!("children are flushed before parents"),
            Slot::Bucket(pairs) => {
                array(out, pairs.len());
                for (key, value) in pairs {
                    array(out, 2);
                    bytes(out, key.bytes());
                    value.encode(out);
                }
            }
        }
    }
}

/// The canonical bytes of `node`, whose children were all flushed.
pub(super) fn encode<K: TreeKey, V: TreeValue>(node: &Node<K, V>) -> Vec<u8> {
    let mut out = Vec::with_capacity(size_hint(node));
    encode_into(node, &mut out);
    out
}

/// About the encoded size of `node` (at most a few bytes over, for small values), so that
/// encoding allocates once.
fn size_hint<K: TreeKey, V: TreeValue>(node: &Node<K, V>) -> usize {
    let slots: usize = (node.slots.iter())
        .map(|slot| match slot {
            Slot::Child { .. } => 42,
            Slot::Bucket(pairs) => {
                1 + pairs
                    .iter()
                    .map(|(k, _)| k.bytes().len() + 24)
                    .sum::<usize>()
            }
        })
        .sum();
    10 + slots
}

/// Decodes block `cid` (whose bytes were checked against it) at level `depth`, its children as
/// links only (empty nodes behind their CIDs): every bucket holds 1 to [`BUCKET`] pairs (more
/// only at the deepest level), sorted, and the block is the one encoding of its node.
pub(super) fn decode<K: TreeKey, V: TreeValue>(
    cid: &Cid,
    bytes: &[u8],
    depth: usize,
) -> Result<Node<K, V>, TreeError> {
    let malformed = |reason: &str| TreeError::Malformed {
        cid: Box::new(*cid),
        reason: reason.to_string(),
    };
    let ipld: Ipld =
        serde_ipld_dagcbor::from_slice(bytes).map_err(|e| malformed(&e.to_string()))?;
    let Ipld::List(parts) = ipld else {
        return Err(malformed("not a list"));
    };
    let [Ipld::Bytes(bitmap), Ipld::List(slots)] = &parts[..] else {
        return Err(malformed("not [bitmap, slots]"));
    };
    let bitmap: [u8; 4] = (bitmap[..].try_into()).map_err(|_| malformed("bitmap not 4 bytes"))?;
    let bitmap = u32::from_be_bytes(bitmap);
    if bitmap.count_ones() as usize != slots.len() {
        return Err(malformed("bitmap and slots disagree"));
    }
    let mut node = Node {
        bitmap,
        slots: Vec::with_capacity(slots.len()),
    };
    for slot in slots {
        node.slots.push(match slot {
            Ipld::Link(link) => Slot::Child {
                cid: Some(*link),
                node: Box::new(Node::empty()),
            },
            Ipld::List(pairs) => Slot::Bucket(bucket(pairs, depth).map_err(|r| malformed(&r))?),
            _ => return Err(malformed("a slot neither link nor bucket")),
        });
    }
    if encode(&node) != bytes {
        return Err(malformed("not in canonical form"));
    }
    Ok(node)
}

fn bucket<K: TreeKey, V: TreeValue>(pairs: &[Ipld], depth: usize) -> Result<Pairs<K, V>, String> {
    if pairs.is_empty() || (pairs.len() > BUCKET && depth < MAX_DEPTH) {
        return Err(format!("a bucket of {} pairs", pairs.len()));
    }
    let mut out = Pairs::<K, V>::new();
    for item in pairs {
        let Some((Ipld::Bytes(key), value)) = pair(item) else {
            return Err("a pair that is not [key, value]".into());
        };
        let key = K::from_bytes(key).ok_or("a key of the wrong form")?;
        if out
            .last()
            .is_some_and(|(last, _)| last.bytes() >= key.bytes())
        {
            return Err("a bucket out of order".into());
        }
        out.push((key, V::decode(value).ok_or("a value of the wrong form")?));
    }
    Ok(out)
}
