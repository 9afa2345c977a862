//! An account proof as a light client receives it (`GET /v1/accounts/{key}?proof=true`, checked
//! by `ledger-node query balance --verify`): the state blocks from a root to an account, each
//! untrusted DAG-CBOR. The root is the first block's CID, so the fuzzer gets past the first hash.
//! Nothing panics, and a proof that verifies stops verifying when any byte of any of its blocks
//! changes: no block is read beyond what its hash covers, and none is ignored.
//!
//! The input: the account's 32-byte key, then each block as a 2-byte little-endian length and its
//! bytes.
#![no_main]

use bytes::Bytes;
use comms::Codec;
use ledger_core::{state::verify_account, PublicKey};
use libfuzzer_sys::fuzz_target;

/// The key and the blocks framed in `data`; a last, cut-off block is taken as it is.
fn split(data: &[u8]) -> Option<(PublicKey, Vec<Bytes>)> {
    let key: [u8; 32] = data.get(..32)?.try_into().ok()?;
    let (mut rest, mut blocks) = (&data[32..], Vec::new());
    while let Some((length, tail)) = rest.split_first_chunk::<2>() {
        let length = usize::from(u16::from_le_bytes(*length)).min(tail.len());
        blocks.push(Bytes::copy_from_slice(&tail[..length]));
        rest = &tail[length..];
    }
    Some((PublicKey(key), blocks))
}

fuzz_target!(|data: &[u8]| {
    let Some((key, blocks)) = split(data) else {
        return;
    };
    let Some(first) = blocks.first() else {
        let _ = verify_account(&comms::cid_for(Codec::DagCbor, b""), &key, &blocks);
        return;
    };
    let root = comms::cid_for(Codec::DagCbor, first);
    if verify_account(&root, &key, &blocks).is_err() {
        return;
    }
    for (index, block) in blocks.iter().enumerate() {
        for at in [0, block.len() / 2, block.len().saturating_sub(1)] {
            let Some(&byte) = block.get(at) else {
                continue;
            };
            let mut changed = blocks.clone();
            let mut bytes = block.to_vec();
            bytes[at] = byte ^ 0x01;
            changed[index] = Bytes::from(bytes);
            assert!(
                verify_account(&root, &key, &changed).is_err(),
                "block {index} changed at byte {at} still proves the account"
            );
        }
    }
});
