//! A checkpoint's certificate as a light client or a joining node receives it: signed blocks of
//! validators naming one checkpoint, each untrusted DAG-CBOR. Nothing panics, a certificate that
//! verifies names distinct authors of a quorum of stake, and it stops verifying when any byte of
//! any of its blocks changes (decoding is strict and signatures cover every byte).
//!
//! The chain is the seeds' (`ledger/tests/fuzz_seeds.rs`: 4 validators, seed 7). The input: each
//! block as a 2-byte little-endian length and its bytes.
#![no_main]

use std::sync::OnceLock;

use bytes::Bytes;
use comms::Cid;
use ledger_core::{checkpoint::verify_certificate, devnet, Committee};
use libfuzzer_sys::fuzz_target;

/// The chain's CID and committee, made once.
fn chain() -> &'static (Cid, Committee) {
    static CHAIN: OnceLock<(Cid, Committee)> = OnceLock::new();
    CHAIN.get_or_init(|| {
        let genesis = devnet::genesis("simulation-7", 7, 4, 2, 1_000_000);
        (genesis.encode().1, Committee::new(&genesis))
    })
}

fn split(mut data: &[u8]) -> Vec<Bytes> {
    let mut blocks = Vec::new();
    while let Some((length, tail)) = data.split_first_chunk::<2>() {
        let length = usize::from(u16::from_le_bytes(*length)).min(tail.len());
        blocks.push(Bytes::copy_from_slice(&tail[..length]));
        data = &tail[length..];
    }
    blocks
}

fuzz_target!(|data: &[u8]| {
    let blocks = split(data);
    let (chain, committee) = chain();
    let Ok(certified) = verify_certificate(&blocks, chain, committee) else {
        return;
    };
    let mut authors = certified.authors.clone();
    authors.sort_unstable();
    authors.dedup();
    assert_eq!(authors.len(), blocks.len(), "one block per distinct author");
    assert!(certified.stake >= committee.quorum(), "a quorum of stake");
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
                verify_certificate(&changed, chain, committee).is_err(),
                "block {index} changed at byte {at} still certifies"
            );
        }
    }
});
