//! A pubsub message as a peer sends it: a comms-ipfs frame of broadcasts, or one broadcast. A
//! frame that decodes encodes back to a frame that decodes to the same link and broadcasts.
#![no_main]

use bytes::Bytes;
use comms::frame;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let data = Bytes::copy_from_slice(data);
    let Ok(decoded) = frame::decode(data.clone()) else {
        assert!(data.starts_with(frame::MAGIC), "only a frame can be malformed");
        return;
    };
    match &decoded.link {
        None => assert_eq!(decoded.messages, [data]),
        Some(link) => {
            let again = frame::decode(frame::encode(link, &decoded.messages));
            assert_eq!(again.as_ref(), Ok(&decoded));
        }
    }
});
