//! What one pubsub message carries: a frame of one or more broadcasts, and a link to the publisher's
//! previous frame on the same topic, so that a receiver that did not get that one can fetch it
//! (comms-ipfs's repair).
//!
//! The kubo backend (`comms-ipfs`) publishes frames; every backend that shares a topic with it
//! reads them (the embedded peer, `comms-p2p`).
//!
//! A frame is [`MAGIC`], a header, then each broadcast as a 4-byte big-endian length and its bytes.
//! The header is all big-endian:
//!
//! | field | bytes | |
//! |---|---|---|
//! | origin | 8 | the publishing queue's random number, one per daemon and process |
//! | seq | 8 | the frame's number from this origin, over all topics, from 0 |
//! | previous seq | 8 | the seq of the origin's previous frame on this topic |
//! | before | 8 | microseconds from the previous frame's publish to this one's |
//! | previous CID length | 1 | 0: no previous frame on this topic (the two fields before are 0) |
//! | previous CID | ≤ 64 | the previous frame, stored as a `raw` block on the publisher's daemon |
//!
//! Data that does not start with [`MAGIC`] is one broadcast, unlinked (a publisher other than this
//! backend). No DAG-CBOR value starts with `0xff` (CBOR's "break"), so a ledger block never looks
//! like a frame.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use std::time::Duration;

use crate::Cid;

/// What starts a frame.
pub const MAGIC: &[u8; 8] = b"\xffcomms/2";

/// The longest previous-frame CID a header carries (a CIDv1 of sha2-256 takes 36 bytes).
const MAX_CID: usize = 64;

/// The largest header.
const HEADER_MAX: usize = MAGIC.len() + FIXED + MAX_CID;

/// The header's fields before the CID.
const FIXED: usize = 8 + 8 + 8 + 8 + 1;

/// How much larger than the message limit a frame may be: a frame of one message.
pub const FRAME_SLACK: usize = HEADER_MAX + 4;

/// Where a frame sits in its publisher's sequence on a topic.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Link {
    /// The publishing queue's random number.
    pub origin: u64,
    /// The frame's number from this origin.
    pub seq: u64,
    /// The origin's previous frame on the topic.
    pub prev: Option<Prev>,
}

/// A frame's predecessor on its topic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Prev {
    /// Where the previous frame is stored (a `raw` block).
    pub cid: Cid,
    /// Its number from the origin.
    pub seq: u64,
    /// How long before the frame that names it it was published.
    pub before: Duration,
}

/// A decoded pubsub message.
#[derive(Debug, PartialEq, Eq)]
pub struct Frame {
    /// None for data that came unframed.
    pub link: Option<Link>,
    pub messages: Vec<Bytes>,
}

/// The frame carrying `messages` at `link`.
pub fn encode(link: &Link, messages: &[Bytes]) -> Bytes {
    let cid = link
        .prev
        .map(|prev| prev.cid.to_bytes())
        .unwrap_or_default();
    debug_assert!(cid.len() <= MAX_CID);
    let size =
        MAGIC.len() + FIXED + cid.len() + messages.iter().map(|m| 4 + m.len()).sum::<usize>();
    let mut frame = BytesMut::with_capacity(size);
    frame.put_slice(MAGIC);
    frame.put_u64(link.origin);
    frame.put_u64(link.seq);
    let (seq, before) = link.prev.map_or((0, 0), |prev| {
        let micros = u64::try_from(prev.before.as_micros()).unwrap_or(u64::MAX);
        (prev.seq, micros)
    });
    frame.put_u64(seq);
    frame.put_u64(before);
    frame.put_u8(cid.len() as u8);
    frame.put_slice(&cid);
    for message in messages {
        frame.put_u32(message.len() as u32);
        frame.put_slice(message);
    }
    frame.freeze()
}

/// Splits received data into its link and broadcasts; a broken frame gives the reason.
pub fn decode(data: Bytes) -> Result<Frame, &'static str> {
    if !data.starts_with(MAGIC) {
        return Ok(Frame {
            link: None,
            messages: vec![data],
        });
    }
    let mut rest = data.slice(MAGIC.len()..);
    if rest.len() < FIXED {
        return Err("a frame's header cut short");
    }
    let (origin, seq) = (rest.get_u64(), rest.get_u64());
    let (prev_seq, before) = (rest.get_u64(), rest.get_u64());
    let cid_len = usize::from(rest.get_u8());
    if cid_len > MAX_CID {
        return Err("a frame's link is longer than a CID may be");
    }
    if rest.len() < cid_len {
        return Err("a frame's link cut short");
    }
    let prev = match cid_len {
        0 => None,
        _ => Some(Prev {
            cid: Cid::try_from(&rest[..cid_len]).map_err(|_| "a frame's link is no CID")?,
            seq: prev_seq,
            before: Duration::from_micros(before),
        }),
    };
    rest.advance(cid_len);
    let link = Some(Link { origin, seq, prev });
    Ok(Frame {
        link,
        messages: messages(rest)?,
    })
}

/// A frame's broadcasts; none in a follow-up (comms-ipfs's publish).
fn messages(mut rest: Bytes) -> Result<Vec<Bytes>, &'static str> {
    let mut messages = Vec::new();
    while !rest.is_empty() {
        if rest.len() < 4 {
            return Err("a frame's length cut short");
        }
        let len = rest.get_u32() as usize;
        if rest.len() < len {
            return Err("a frame's message cut short");
        }
        messages.push(rest.split_to(len));
    }
    Ok(messages)
}

/// How `messages`, in order, go into frames: the number of broadcasts in each, so that every
/// frame of more than one stays within `limit` bytes.
pub fn groups(messages: &[Bytes], limit: usize) -> Vec<usize> {
    let mut out = Vec::new();
    let mut start = 0;
    while start < messages.len() {
        let mut size = HEADER_MAX + 4 + messages[start].len();
        let mut end = start + 1;
        while end < messages.len() && size + 4 + messages[end].len() <= limit {
            size += 4 + messages[end].len();
            end += 1;
        }
        out.push(end - start);
        start = end;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Codec;
    use proptest::prelude::*;

    fn link(seq: u64, prev: Option<&[u8]>) -> Link {
        Link {
            origin: 7,
            seq,
            prev: prev.map(|data| Prev {
                cid: crate::cid_for(Codec::Raw, data),
                seq: seq.saturating_sub(2),
                before: Duration::from_micros(1500),
            }),
        }
    }

    #[test]
    fn data_that_is_no_frame_is_one_unlinked_broadcast() {
        let plain = Bytes::from_static(b"\xa1ablock");
        assert_eq!(
            decode(plain.clone()),
            Ok(Frame {
                link: None,
                messages: vec![plain]
            })
        );
    }

    #[test]
    fn a_follow_up_is_a_frame_of_no_broadcasts() {
        let link = link(3, Some(b"before"));
        let decoded = decode(encode(&link, &[])).expect("a follow-up");
        assert_eq!(decoded.link, Some(link));
        assert!(decoded.messages.is_empty());
    }

    #[test]
    fn a_broken_frame_is_refused() {
        let link = link(3, Some(b"before"));
        let header = encode(&link, &[]).len();
        let good = encode(&link, &[Bytes::from_static(b"m")]);
        for cut in (MAGIC.len()..good.len()).filter(|&cut| cut != header) {
            assert!(decode(good.slice(..cut)).is_err(), "cut at {cut}");
        }
        let mut bad_cid = BytesMut::from(&MAGIC[..]);
        bad_cid.put_slice(&[0; 32]);
        bad_cid.put_u8(2);
        bad_cid.put_slice(b"\xff\xff");
        bad_cid.put_u32(0);
        assert_eq!(decode(bad_cid.freeze()), Err("a frame's link is no CID"));
    }

    /// Found by fuzzing (`fuzz/fuzz_targets/frame.rs`): a link of 71 bytes that parse as a CID
    /// (a long multihash), which the header's one-byte length allows but no frame of ours has.
    #[test]
    fn a_link_longer_than_a_cid_may_be_is_refused() {
        let found = hex_bytes("ff636f6d6d732f3200000000002f3200000000000000000000000000000000000000000000000800470180a509094009fef6636f6d6d732f3300000000000000005d6f6d6d732f32000000000000000000000000000002000000006f6d6d732f32000000000000000000000000090000");
        assert_eq!(found[MAGIC.len() + FIXED - 1] as usize, 71);
        assert_eq!(
            decode(Bytes::from(found)),
            Err("a frame's link is longer than a CID may be")
        );
    }

    fn hex_bytes(hex: &str) -> Vec<u8> {
        (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex"))
            .collect()
    }

    proptest! {
        /// Whatever is queued comes out whole and in order, in frames within the limit, each with
        /// its link.
        #[test]
        fn frames_carry_every_message_in_order_within_the_limit(
            messages in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..64), 1..20),
            limit in 16usize..512,
            prev in prop::option::of(prop::collection::vec(any::<u8>(), 0..8)),
        ) {
            let messages: Vec<Bytes> = messages.into_iter().map(Bytes::from).collect();
            let mut out = Vec::new();
            let mut start = 0;
            for (seq, count) in groups(&messages, limit).into_iter().enumerate() {
                let link = link(seq as u64, prev.as_deref());
                let frame = encode(&link, &messages[start..start + count]);
                prop_assert!(count == 1 || frame.len() <= limit, "{} > {}", frame.len(), limit);
                prop_assert!(frame.len() <= messages[start].len() + FRAME_SLACK || count > 1);
                let decoded = decode(frame).expect("our own frame");
                prop_assert_eq!(decoded.link, Some(link));
                prop_assert_eq!(decoded.messages.len(), count);
                out.extend(decoded.messages);
                start += count;
            }
            prop_assert_eq!(out, messages);
        }
    }
}
