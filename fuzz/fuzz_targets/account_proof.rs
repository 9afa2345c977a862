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
use ledger_fuzz::{every_change_fails, framed_blocks};
use libfuzzer_sys::fuzz_target;

/// The key, then the blocks framed after it.
fn split(data: &[u8]) -> Option<(PublicKey, Vec<Bytes>)> {
    let key: [u8; 32] = data.get(..32)?.try_into().ok()?;
    Some((PublicKey(key), framed_blocks(&data[32..])))
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
    every_change_fails(&blocks, |changed| {
        verify_account(&root, &key, changed).is_ok()
    });
});
