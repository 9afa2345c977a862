//! Bitswap's wire message (`bitswap.proto` of go-bitswap/boxo, version 1.2.0), each sent as an
//! unsigned-varint length and the protobuf bytes.

use comms::Cid;
use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use prost::Message as _;

/// The largest message read: boxo's limit.
pub const MAX_MESSAGE_BYTES: usize = 4 << 20;

#[derive(Clone, PartialEq, prost::Message)]
pub struct Message {
    #[prost(message, optional, tag = "1")]
    pub wantlist: Option<Wantlist>,
    /// Blocks as bitswap 1.0.0 sends them (their CIDv0 implied).
    #[prost(bytes = "vec", repeated, tag = "2")]
    pub blocks: Vec<Vec<u8>>,
    /// Blocks as 1.1.0 and later send them: a CID prefix and the bytes.
    #[prost(message, repeated, tag = "3")]
    pub payload: Vec<Block>,
    #[prost(message, repeated, tag = "4")]
    pub block_presences: Vec<BlockPresence>,
    #[prost(int32, tag = "5")]
    pub pending_bytes: i32,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Wantlist {
    #[prost(message, repeated, tag = "1")]
    pub entries: Vec<Entry>,
    /// The whole wantlist, replacing the one sent before.
    #[prost(bool, tag = "2")]
    pub full: bool,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Entry {
    /// The CID's bytes.
    #[prost(bytes = "vec", tag = "1")]
    pub block: Vec<u8>,
    #[prost(int32, tag = "2")]
    pub priority: i32,
    #[prost(bool, tag = "3")]
    pub cancel: bool,
    #[prost(enumeration = "WantType", tag = "4")]
    pub want_type: i32,
    #[prost(bool, tag = "5")]
    pub send_dont_have: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, prost::Enumeration)]
#[repr(i32)]
pub enum WantType {
    Block = 0,
    Have = 1,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Block {
    /// The CID's version, codec, hash function and hash length, as unsigned varints.
    #[prost(bytes = "vec", tag = "1")]
    pub prefix: Vec<u8>,
    #[prost(bytes = "vec", tag = "2")]
    pub data: Vec<u8>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct BlockPresence {
    #[prost(bytes = "vec", tag = "1")]
    pub cid: Vec<u8>,
    #[prost(enumeration = "PresenceType", tag = "2")]
    pub r#type: i32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, prost::Enumeration)]
#[repr(i32)]
pub enum PresenceType {
    Have = 0,
    DontHave = 1,
}

/// The prefix of `cid` (version, codec, hash code, digest length).
pub fn prefix(cid: &Cid) -> Vec<u8> {
    let mut out = Vec::with_capacity(8);
    for value in [
        u64::from(cid.version()),
        cid.codec(),
        cid.hash().code(),
        u64::from(cid.hash().size()),
    ] {
        put_varint(&mut out, value);
    }
    out
}

/// The CID of a payload block: its prefix's version, codec and hash function applied to `data`.
/// `None` for a prefix this peer does not verify (anything but CIDv1 over sha2-256).
pub fn cid_of(prefix: &[u8], data: &[u8]) -> Option<Cid> {
    let mut rest = prefix;
    let mut next = || {
        let (value, tail) = read_varint(rest)?;
        rest = tail;
        Some(value)
    };
    let (version, codec, code, size) = (next()?, next()?, next()?, next()?);
    let codec = comms::Codec::from_code(codec)?;
    (version == 1 && code == 0x12 && size == 32).then(|| comms::cid_for(codec, data))
}

fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn read_varint(bytes: &[u8]) -> Option<(u64, &[u8])> {
    let mut value = 0u64;
    for (i, byte) in bytes.iter().enumerate().take(10) {
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Some((value, &bytes[i + 1..]));
        }
    }
    None
}

/// Why a message could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    #[error("a message of {0} bytes, above the limit")]
    TooLarge(u64),
    #[error("a length prefix that is no varint")]
    BadLength,
    #[error("undecodable: {0}")]
    Decode(#[from] prost::DecodeError),
}

/// Reads one message; `None` at the stream's end.
pub async fn read<S: AsyncRead + Unpin>(stream: &mut S) -> Result<Option<Message>, ReadError> {
    let mut length = 0u64;
    for i in 0..10 {
        let mut byte = [0u8];
        match stream.read(&mut byte).await? {
            0 if i == 0 => return Ok(None),
            0 => return Err(ReadError::BadLength),
            _ => {}
        }
        length |= u64::from(byte[0] & 0x7f) << (7 * i);
        if byte[0] & 0x80 == 0 {
            if length > MAX_MESSAGE_BYTES as u64 {
                return Err(ReadError::TooLarge(length));
            }
            let mut bytes = vec![0u8; length as usize];
            stream.read_exact(&mut bytes).await?;
            return Ok(Some(Message::decode(&bytes[..])?));
        }
    }
    Err(ReadError::BadLength)
}

/// Writes one message.
pub async fn write<S: AsyncWrite + Unpin>(
    stream: &mut S,
    message: &Message,
) -> std::io::Result<()> {
    let body = message.encode_to_vec();
    let mut framed = Vec::with_capacity(body.len() + 5);
    put_varint(&mut framed, body.len() as u64);
    framed.extend_from_slice(&body);
    stream.write_all(&framed).await?;
    stream.flush().await
}

#[cfg(test)]
mod tests {
    use futures::executor::block_on;
    use proptest::{collection::vec, prelude::*};

    use super::*;

    /// `body` after its length, as a peer frames a message.
    fn framed(body: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        put_varint(&mut out, body.len() as u64);
        out.extend_from_slice(body);
        out
    }

    proptest! {
        /// Whatever a peer sends, reading it gives a message, the stream's end or a typed error,
        /// never a panic; and a message read goes out and back unchanged.
        #[test]
        fn any_bytes_read_as_a_message_or_an_error(
            body in vec(any::<u8>(), 0..1024),
            frame in any::<bool>(),
        ) {
            let bytes = if frame { framed(&body) } else { body };
            if let Ok(Some(message)) = block_on(read(&mut &bytes[..])) {
                let mut again = Vec::new();
                block_on(write(&mut again, &message)).expect("in memory");
                let back = block_on(read(&mut &again[..])).expect("decodes");
                prop_assert_eq!(back, Some(message));
            }
        }

        /// Any prefix names a CIDv1 over sha2-256 of the data, or nothing.
        #[test]
        fn any_prefix_names_a_verified_cid_or_nothing(
            prefix in vec(any::<u8>(), 0..12),
            data in vec(any::<u8>(), 0..64),
        ) {
            if let Some(cid) = cid_of(&prefix, &data) {
                let codec = comms::Codec::from_code(cid.codec()).expect("a known codec");
                prop_assert_eq!(cid, comms::cid_for(codec, &data));
            }
        }
    }

    #[test]
    fn a_payload_block_names_its_cid_by_its_prefix() {
        let data = b"some block";
        for codec in [comms::Codec::Raw, comms::Codec::DagCbor] {
            let cid = comms::cid_for(codec, data);
            assert_eq!(cid_of(&prefix(&cid), data), Some(cid));
        }
        // CIDv0 (dag-pb, sha2-256) is not one this peer verifies.
        assert_eq!(cid_of(&[0, 0x70, 0x12, 0x20], data), None);
        assert_eq!(cid_of(&[0x80], data), None, "a cut varint");
    }

    #[test]
    fn messages_round_trip_through_their_framing() {
        let cid = comms::cid_for(comms::Codec::Raw, b"x");
        let message = Message {
            wantlist: Some(Wantlist {
                entries: vec![Entry {
                    block: cid.to_bytes(),
                    priority: 1,
                    cancel: false,
                    want_type: WantType::Have as i32,
                    send_dont_have: true,
                }],
                full: false,
            }),
            payload: vec![Block {
                prefix: prefix(&cid),
                data: b"x".to_vec(),
            }],
            ..Message::default()
        };
        let mut bytes = Vec::new();
        block_on(write(&mut bytes, &message)).expect("in memory");
        let mut reader = &bytes[..];
        let first = block_on(read(&mut reader)).expect("decodes");
        assert_eq!(first, Some(message));
        assert!(block_on(read(&mut reader)).expect("the end").is_none());
    }
}
