//! The core's errors: each rejection of received data has its own variant, so it can be counted by
//! kind. A store's failures are the store's own error type, outside the core.

use comms::Cid;

/// Why the ledger refused something or failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Bytes that are not DAG-CBOR of the expected shape.
    #[error("malformed encoding: {reason}")]
    Malformed { reason: String },
    /// Valid DAG-CBOR, but not the one canonical encoding of its value.
    #[error("non-canonical encoding")]
    NonCanonical,
    /// A signature that does not verify.
    #[error("bad signature")]
    BadSignature,
    /// A genesis that breaks its rules.
    #[error("bad genesis: {reason}")]
    BadGenesis { reason: String },
    /// A block of another chain.
    #[error("block of chain {actual}, expected {expected}")]
    WrongChain {
        expected: Box<Cid>,
        actual: Box<Cid>,
    },
    /// An author index outside the validator set.
    #[error("unknown author {author}: {validators} validators")]
    UnknownAuthor { author: u32, validators: usize },
    /// Parents that break the round rules.
    #[error("bad parents: {0}")]
    BadParents(#[from] ParentsError),
    /// More transactions, or more bytes, than a block may carry.
    #[error("block too large: {size} (limit {limit})")]
    TooLarge { size: u64, limit: u64 },
    /// A block whose checkpoint is not at a checkpoint height.
    #[error("a checkpoint at height {height}, which is not a positive multiple of {interval}")]
    BadCheckpoint { height: u64, interval: u64 },
    /// A batch whose count or size differs from what its block says.
    #[error("batch {cid} does not match its block")]
    BatchMismatch { cid: Box<Cid> },
    /// A block of a snapshot's state that does not hash to its CID, or is no state block.
    #[error("snapshot block: {0}")]
    BadSnapshotBlock(#[from] crate::tree::TreeError),
    /// A certified checkpoint whose leader is not the one this node's DAG commits at its round:
    /// more than `f` of the stake signed a false checkpoint. The node does not start from it.
    #[error("certified checkpoint {height} names leader {leader}, which the DAG does not commit")]
    SnapshotDiverges { height: u64, leader: Box<Cid> },
    /// A block whose missing ancestors would queue more fetches for its author than allowed
    /// (`CoreConfig::queued_fetches_per_author`). Not remembered as refused: it is taken when it
    /// comes again and the queue has room.
    #[error("author {author} already has {queued} fetches queued")]
    FetchQueueFull { author: u32, queued: usize },
    /// A block received by broadcast that would wait for missing ancestors while its author
    /// already has `CoreConfig::parked_broadcasts_per_author` such blocks waiting. Not remembered
    /// as refused: it is fetched when an accepted block references it, and taken when it comes
    /// again and there is room.
    #[error("author {author} already has {parked} broadcast blocks waiting for ancestors")]
    ParkingFull { author: u32, parked: usize },
}

/// How a block's parents break the rules.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParentsError {
    /// A round-0 block with parents, or a later block without.
    #[error("round {round} with {count} parents")]
    Count { round: u64, count: usize },
    /// Parents not strictly sorted by CID (unsorted or repeated).
    #[error("parents not strictly sorted")]
    Unsorted,
    /// A parent from a round other than the previous one (and not the author's own earlier block).
    #[error("parent of round {parent_round} for a block of round {round}")]
    WrongRound { round: u64, parent_round: u64 },
    /// Two parents by one author.
    #[error("two parents by author {author}")]
    DuplicateAuthor { author: u32 },
    /// Parents whose authors' stake is below the quorum.
    #[error("parents carry stake {stake}, quorum is {quorum}")]
    NoQuorum { stake: u64, quorum: u64 },
}

impl Error {
    /// A short stable name of the kind of error, for counting rejections.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::Malformed { .. } => "malformed",
            Error::NonCanonical => "non_canonical",
            Error::BadSignature => "bad_signature",
            Error::BadGenesis { .. } => "bad_genesis",
            Error::WrongChain { .. } => "wrong_chain",
            Error::UnknownAuthor { .. } => "unknown_author",
            Error::BadParents(_) => "bad_parents",
            Error::TooLarge { .. } => "too_large",
            Error::BatchMismatch { .. } => "batch_mismatch",
            Error::BadCheckpoint { .. } => "bad_checkpoint",
            Error::BadSnapshotBlock(_) => "bad_snapshot_block",
            Error::SnapshotDiverges { .. } => "snapshot_diverges",
            Error::FetchQueueFull { .. } => "fetch_queue_full",
            Error::ParkingFull { .. } => "parking_full",
        }
    }
}
