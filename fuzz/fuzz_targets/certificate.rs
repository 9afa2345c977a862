//! A checkpoint's certificate as a light client or a joining node receives it: signed blocks of
//! validators naming one checkpoint, each untrusted DAG-CBOR. Nothing panics, a certificate that
//! verifies names distinct authors of a quorum of stake, and it stops verifying when any byte of
//! any of its blocks changes (decoding is strict and signatures cover every byte).
//!
//! The chain is the seeds' (`ledger/tests/fuzz_seeds.rs`: 4 validators, seed 7). The input: each
//! block as a 2-byte little-endian length and its bytes.
#![no_main]

use std::sync::OnceLock;

use comms::Cid;
use ledger_core::{checkpoint::verify_certificate, devnet, Committee};
use ledger_fuzz::{every_change_fails, framed_blocks};
use libfuzzer_sys::fuzz_target;

/// The chain's CID and committee, made once.
fn chain() -> &'static (Cid, Committee) {
    static CHAIN: OnceLock<(Cid, Committee)> = OnceLock::new();
    CHAIN.get_or_init(|| {
        let genesis = devnet::genesis("simulation-7", 7, 4, 2, 1_000_000);
        (genesis.encode().1, Committee::new(&genesis))
    })
}

fuzz_target!(|data: &[u8]| {
    let blocks = framed_blocks(data);
    let (chain, committee) = chain();
    let Ok(certified) = verify_certificate(&blocks, chain, committee) else {
        return;
    };
    let mut authors = certified.authors.clone();
    authors.sort_unstable();
    authors.dedup();
    assert_eq!(authors.len(), blocks.len(), "one block per distinct author");
    assert!(certified.stake >= committee.quorum(), "a quorum of stake");
    every_change_fails(&blocks, |changed| {
        verify_certificate(changed, chain, committee).is_ok()
    });
});
