//! The values that cross the contract: peer ids, topics, messages and size limits.

use std::{fmt, sync::Arc};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::Error;

/// A peer's identity as its backend names it (a libp2p peer id for IPFS, `sim-7` in the simulator).
///
/// Cheap to clone: the text is shared.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PeerId(Arc<str>);

impl PeerId {
    /// Wraps a backend's textual peer id.
    pub fn new(id: impl Into<Arc<str>>) -> PeerId {
        PeerId(id.into())
    }

    /// The textual form.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for PeerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for PeerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PeerId({})", self.0)
    }
}

/// A pubsub topic name: 1 to [`Topic::MAX_LEN`] bytes of UTF-8. Cheap to clone.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct Topic(Arc<str>);

impl Topic {
    /// The longest topic name accepted, in bytes.
    pub const MAX_LEN: usize = 256;

    /// Validates and wraps a topic name.
    pub fn new(name: impl Into<Arc<str>>) -> Result<Topic, Error> {
        let name = name.into();
        if name.is_empty() || name.len() > Topic::MAX_LEN {
            return Err(Error::InvalidTopic {
                len: name.len(),
                max: Topic::MAX_LEN,
            });
        }
        Ok(Topic(name))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl<'de> Deserialize<'de> for Topic {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Topic, D::Error> {
        Topic::new(String::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Topic({})", self.0)
    }
}

/// A broadcast message as a subscriber receives it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    /// The peer that published it, as its transport reports it (not authenticated by the contract:
    /// a layer above signs what it needs to trust).
    pub from: PeerId,
    /// The topic it was published on.
    pub topic: Topic,
    /// The payload, at most [`Limits::max_message_bytes`] long.
    pub data: Bytes,
}

/// Size limits a backend enforces on what it sends and on what it accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Largest broadcast payload, in bytes. Larger ones are refused when sent and dropped when received.
    pub max_message_bytes: usize,
    /// Largest block for `put` and `fetch`, in bytes.
    pub max_block_bytes: usize,
}

impl Limits {
    /// One mebibyte, the default for both limits (also gossipsub's and bitswap's usual ceiling).
    pub const MIB: usize = 1 << 20;

    /// Refuses a broadcast payload above the limit.
    pub fn check_message(&self, len: usize) -> Result<(), Error> {
        check(crate::SizeKind::Message, len, self.max_message_bytes)
    }

    /// Refuses a block above the limit.
    pub fn check_block(&self, len: usize) -> Result<(), Error> {
        check(crate::SizeKind::Block, len, self.max_block_bytes)
    }
}

fn check(kind: crate::SizeKind, size: usize, limit: usize) -> Result<(), Error> {
    if size > limit {
        Err(Error::TooLarge { kind, size, limit })
    } else {
        Ok(())
    }
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_message_bytes: Limits::MIB,
            max_block_bytes: Limits::MIB,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_bounds() {
        assert!(Topic::new("").is_err());
        assert!(Topic::new("x".repeat(Topic::MAX_LEN)).is_ok());
        assert!(matches!(
            Topic::new("x".repeat(Topic::MAX_LEN + 1)),
            Err(Error::InvalidTopic { len: 257, .. })
        ));
        assert!(serde_json::from_str::<Topic>("\"\"").is_err());
    }

    #[test]
    fn limits_refuse_one_byte_over() {
        let limits = Limits::default();
        assert!(limits.check_block(Limits::MIB).is_ok());
        assert!(
            matches!(limits.check_message(Limits::MIB + 1), Err(Error::TooLarge { size, .. }) if size == Limits::MIB + 1)
        );
    }
}
