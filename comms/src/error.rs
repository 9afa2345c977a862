//! The one error type every backend returns.

use std::time::Duration;

use cid::Cid;

/// A boxed error from a backend's transport, kept as the source of [`Error::Unavailable`].
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// What an oversized payload was.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SizeKind {
    /// A broadcast message.
    Message,
    /// A content-addressed block.
    Block,
}

/// The operations of the contract, named in errors.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Operation {
    /// `broadcast`.
    Broadcast,
    /// `subscribe`.
    Subscribe,
    /// `put`.
    Put,
    /// `fetch`.
    Fetch,
    /// `peers` and `topic_peers`.
    Peers,
}

/// Why a `Communication` call failed. CIDs are boxed to keep the error small (a `Cid` is 96 bytes).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The operation did not complete within its deadline. For `fetch` this is also how "nobody has
    /// it" shows, as in bitswap: absence cannot be proven, only waited out.
    #[error("{operation:?} timed out after {after:?}")]
    Timeout {
        operation: Operation,
        after: Duration,
    },
    /// The backend knows for certain that the block is not available.
    #[error("block {cid} not found")]
    NotFound { cid: Box<Cid> },
    /// The bytes received do not hash to the CID asked for.
    #[error("CID mismatch: expected {expected}, received bytes hash to {actual}")]
    CidMismatch {
        expected: Box<Cid>,
        actual: Box<Cid>,
    },
    /// The CID is not CIDv1 with sha2-256 and a codec this contract knows, so it cannot be verified.
    #[error("unsupported CID {cid}: need CIDv1, sha2-256, codec raw or dag-cbor")]
    UnsupportedCid { cid: Box<Cid> },
    /// A message or block exceeds the configured limit.
    #[error("{kind:?} of {size} bytes exceeds the limit of {limit} bytes")]
    TooLarge {
        kind: SizeKind,
        size: usize,
        limit: usize,
    },
    /// A topic name that is empty or too long.
    #[error("invalid topic name of {len} bytes (1 to {max} allowed)")]
    InvalidTopic { len: usize, max: usize },
    /// The transport or the daemon behind it cannot be reached or answered wrongly (after any retries).
    #[error("{operation:?} failed: backend unavailable: {source}")]
    Unavailable {
        operation: Operation,
        #[source]
        source: BoxError,
    },
    /// The backend was shut down (or the local peer crashed, in the simulator).
    #[error("the communication backend is closed")]
    Closed,
}

impl Error {
    /// Builds [`Error::Unavailable`] from any transport error.
    pub fn unavailable(operation: Operation, source: impl Into<BoxError>) -> Error {
        Error::Unavailable {
            operation,
            source: source.into(),
        }
    }

    /// Whether trying again later may succeed (timeouts and unavailability), as opposed to errors that
    /// the same request will always meet (mismatch, too large, invalid input, closed).
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Error::Timeout { .. } | Error::Unavailable { .. } | Error::NotFound { .. }
        )
    }
}
