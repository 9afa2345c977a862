//! A state's root block, fetched by CID while joining by snapshot: decoded strictly, or refused.
#![no_main]

use ledger_core::{codec, StateRoot};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(root) = codec::decode::<StateRoot>(data) {
        let bytes = codec::encode(&root);
        assert_eq!(bytes, data, "a decoded state root re-encodes to other bytes");
    }
});
