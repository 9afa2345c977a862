//! A block as it comes from a peer (pubsub or bitswap): decoded strictly, or refused.
#![no_main]

use ledger_core::{codec, SignedBlock};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(block) = SignedBlock::decode(data) {
        // The one encoding of the value, with a stable CID.
        let (bytes, cid) = block.encode();
        assert_eq!(bytes, data, "a decoded block re-encodes to other bytes");
        assert_eq!(cid, codec::cid_of(data));
    }
});
