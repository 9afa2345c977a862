//! A signed transaction (a client's submission, or one inside a block): decoded strictly, or
//! refused; a decoded one's signature check never panics.
#![no_main]

use ledger_core::{codec, SignedTransaction};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(transaction) = codec::decode::<SignedTransaction>(data) {
        let bytes = codec::encode(&transaction);
        assert_eq!(bytes, data, "a decoded transaction re-encodes to other bytes");
        assert_eq!(codec::cid_of(&bytes), codec::cid_of(data));
        let chain = codec::cid_of(b"a chain");
        let _ = transaction.verify(&chain);
        assert_eq!(transaction.id(), codec::cid_of(data));
    }
});
