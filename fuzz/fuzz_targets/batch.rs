//! A batch of transactions, fetched by CID: decoded strictly, or refused.
#![no_main]

use ledger_core::{codec, SignedTransaction};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(batch) = codec::decode::<Vec<SignedTransaction>>(data) {
        let bytes = codec::encode(&batch);
        assert_eq!(bytes, data, "a decoded batch re-encodes to other bytes");
        assert_eq!(codec::cid_of(&bytes), codec::cid_of(data));
    }
});
