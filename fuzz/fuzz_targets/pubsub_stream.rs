//! What a kubo daemon's `pubsub/sub` stream brings the kubo backend: ndjson lines, each a message
//! whose data is a comms-ipfs frame or one broadcast, cut into chunks anywhere. Nothing panics, and
//! no broadcast handed on is over the limit.
#![no_main]

use comms::Topic;
use libfuzzer_sys::fuzz_target;

/// A small limit, so that the fuzzer reaches it.
const MAX_DATA: usize = 256;

fuzz_target!(|data: &[u8]| {
    // The first byte says where to cut the rest into chunks.
    let Some((&cut, stream)) = data.split_first() else {
        return;
    };
    let step = usize::from(cut).max(1);
    let chunks: Vec<&[u8]> = stream.chunks(step).collect();
    let topic = Topic::new("ledger/fuzz").expect("a topic");
    for line in comms_ipfs::decode_stream(&chunks, &topic, MAX_DATA) {
        for broadcast in line.unwrap_or_default() {
            assert!(broadcast.len() <= MAX_DATA + comms::frame::FRAME_SLACK);
        }
    }
});
