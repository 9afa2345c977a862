//! The HTTP API's bodies: one type per request and reply, shared by the server ([`crate::api`]) and
//! its clients (`tx`, `query`, `load`), so that the two ends cannot drift apart. CIDs travel as
//! their text form, keys as hex.

use comms::Cid;
use ledger::{
    dag::AcceptedBlock, Account, Commit, Outcome, Payload, ProvenAccount, PublicKey,
    SignedTransaction, Status, Transaction, TxStatus,
};
use serde::{Deserialize, Serialize};

/// `POST /v1/transactions`: a signed transaction, DAG-CBOR in hex.
#[derive(Debug, Serialize, Deserialize)]
pub struct SubmitRequest {
    pub transaction: String,
}

impl SubmitRequest {
    /// The request that submits `tx`.
    pub fn of(tx: &SignedTransaction) -> SubmitRequest {
        SubmitRequest {
            transaction: ledger::hex(&ledger::codec::encode(tx)),
        }
    }
}

/// Every refusal: a stable kind and a message for people.
#[derive(Debug, Serialize, Deserialize)]
pub struct ErrorReply {
    pub error: String,
    pub message: String,
}

/// `GET /v1/status`: the chain, this node, and its progress.
#[derive(Debug, Serialize, Deserialize)]
pub struct StatusReply {
    #[serde(with = "as_text")]
    pub chain: Cid,
    pub chain_id: String,
    /// This node's validator index; none for an observer.
    pub validator: Option<u32>,
    pub backend: String,
    pub peer: String,
    #[serde(flatten)]
    pub status: Status,
    /// The health probes' answer.
    pub health: Health,
}

/// `GET /livez`: 200 when `live`, else 503.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Liveness {
    /// The node's tasks run and its actor answers.
    pub live: bool,
    /// Why it is not live.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// `GET /readyz` (200 when `ready`, else 503), and `health` in `GET /v1/status`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Health {
    /// The node's tasks run and its actor answers.
    pub live: bool,
    /// Live, its network backend answers, and it is within `node.ready_lag_rounds` of the
    /// highest round it has seen.
    pub ready: bool,
    /// How many rounds its DAG is below the highest round it has seen.
    pub lag_rounds: u64,
    /// Why it is not live or not ready.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// `POST /v1/transactions` (`pending`) and `GET /v1/transactions/{id}`: where a transaction stands.
#[derive(Debug, Serialize, Deserialize)]
pub struct TransactionReply {
    #[serde(with = "as_text")]
    pub id: Cid,
    #[serde(flatten)]
    pub status: TxStatus,
}

/// `GET /v1/accounts/{key}`.
#[derive(Debug, Serialize, Deserialize)]
pub struct AccountReply {
    pub account: PublicKey,
    pub balance: u64,
    /// Its committed transactions so far: the nonce of its next one.
    pub nonce: u64,
    /// With `?proof=true`: the account at the latest certified checkpoint, and its proof.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proof: Option<ProofView>,
}

/// An account at a certified checkpoint, and what proves it to a client that trusts the genesis
/// alone (`ledger-node query balance --verify` checks it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProofView {
    /// The checkpoint: a commit height and the CID of the state's root block there.
    pub checkpoint: CheckpointView,
    /// The account there; `null` when the state has none, which the blocks prove.
    pub account: Option<Account>,
    /// The state blocks from the root block to the account's bucket, or to where it would be:
    /// DAG-CBOR, hex.
    pub blocks: Vec<String>,
    /// The certificate: signed blocks of validators holding a quorum of stake, each naming the
    /// checkpoint. DAG-CBOR, hex.
    pub certificate: Vec<String>,
}

impl From<&ProvenAccount> for ProofView {
    fn from(proven: &ProvenAccount) -> ProofView {
        let hex = |blocks: &[bytes::Bytes]| blocks.iter().map(|b| ledger::hex(b)).collect();
        ProofView {
            checkpoint: CheckpointView {
                height: proven.checkpoint.height,
                state_root: proven.checkpoint.state_root,
            },
            account: proven.account,
            blocks: hex(&proven.proof),
            certificate: hex(&proven.certificate),
        }
    }
}

/// `GET /v1/blocks/{cid}`: an accepted block with its transactions.
#[derive(Debug, Serialize, Deserialize)]
pub struct BlockReply {
    #[serde(with = "as_text")]
    pub cid: Cid,
    pub author: u32,
    pub round: u64,
    #[serde(with = "as_texts")]
    pub parents: Vec<Cid>,
    pub timestamp_ms: u64,
    /// The latest checkpoint its author executed: height and state root.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint: Option<CheckpointView>,
    pub payload: PayloadView,
    pub transactions: Vec<TransactionView>,
}

/// A checkpoint as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckpointView {
    pub height: u64,
    #[serde(with = "as_text")]
    pub state_root: Cid,
}

/// Where a block's transactions are.
#[derive(Debug, Serialize, Deserialize)]
#[serde(untagged)]
pub enum PayloadView {
    /// In a batch block of their own.
    Batch {
        #[serde(with = "as_text")]
        batch: Cid,
        count: u64,
        size: u64,
    },
    /// In the block (`inline` is always true).
    Inline { inline: bool },
}

/// A transaction as the API shows it.
#[derive(Debug, Serialize, Deserialize)]
pub struct TransactionView {
    #[serde(with = "as_text")]
    pub id: Cid,
    #[serde(flatten)]
    pub tx: TransactionKind,
}

/// What a transaction does.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum TransactionKind {
    Transfer {
        from: PublicKey,
        to: PublicKey,
        amount: u64,
        nonce: u64,
    },
    Record {
        author: PublicKey,
        nonce: u64,
        #[serde(with = "as_text")]
        payload: Cid,
        size: u64,
    },
}

/// A commit as the API shows it, in `GET /v1/commits` and in the commit stream.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CommitView {
    pub height: u64,
    pub round: u64,
    pub leader: String,
    /// How many blocks it ordered.
    pub blocks: usize,
    pub transactions: Vec<TransactionOutcome>,
    /// The CID of the state's root block after it.
    pub state_root: String,
}

/// A committed transaction's ID and outcome.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TransactionOutcome {
    pub id: String,
    pub outcome: Outcome,
}

/// `GET /v1/commits`: the latest commits, newest first.
#[derive(Debug, Serialize, Deserialize)]
pub struct CommitsReply {
    pub commits: Vec<CommitView>,
}

/// `GET /v1/peers`: the backend's peers, and those on the chain's topic.
#[derive(Debug, Serialize, Deserialize)]
pub struct PeersReply {
    /// Always true in a reply: a backend that cannot answer gets a 502.
    pub healthy: bool,
    pub peers: Vec<String>,
    pub topic_peers: Vec<String>,
}

impl From<&AcceptedBlock> for BlockReply {
    fn from(accepted: &AcceptedBlock) -> BlockReply {
        let block = &accepted.block.block;
        BlockReply {
            cid: accepted.cid,
            author: block.author,
            round: block.round,
            parents: block.parents.clone(),
            timestamp_ms: block.timestamp_ms,
            checkpoint: block.checkpoint.map(|c| CheckpointView {
                height: c.height,
                state_root: c.state_root,
            }),
            payload: match &block.payload {
                Payload::Inline(_) => PayloadView::Inline { inline: true },
                Payload::Batch { cid, count, size } => PayloadView::Batch {
                    batch: *cid,
                    count: *count,
                    size: *size,
                },
            },
            transactions: accepted
                .transactions
                .iter()
                .map(TransactionView::from)
                .collect(),
        }
    }
}

impl From<&SignedTransaction> for TransactionView {
    fn from(signed: &SignedTransaction) -> TransactionView {
        let tx = match signed.tx.clone() {
            Transaction::Transfer {
                from,
                to,
                amount,
                nonce,
            } => TransactionKind::Transfer {
                from,
                to,
                amount,
                nonce,
            },
            Transaction::Record {
                author,
                nonce,
                payload,
                size,
            } => TransactionKind::Record {
                author,
                nonce,
                payload,
                size,
            },
        };
        TransactionView {
            id: signed.id(),
            tx,
        }
    }
}

impl From<&Commit> for CommitView {
    fn from(commit: &Commit) -> CommitView {
        CommitView {
            height: commit.height,
            round: commit.round,
            leader: commit.leader.to_string(),
            blocks: commit.blocks.len(),
            transactions: (commit.transactions.iter())
                .map(|(id, outcome)| TransactionOutcome {
                    id: id.to_string(),
                    outcome: *outcome,
                })
                .collect(),
            state_root: commit.state_root.to_string(),
        }
    }
}

/// A value as its `Display` text, read back with `FromStr`.
mod as_text {
    use std::{fmt::Display, str::FromStr};

    use serde::{de::Error, Deserialize, Deserializer, Serializer};

    pub fn serialize<T: Display, S: Serializer>(value: &T, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(value)
    }

    pub fn deserialize<'de, T, D>(d: D) -> Result<T, D::Error>
    where
        T: FromStr,
        T::Err: Display,
        D: Deserializer<'de>,
    {
        String::deserialize(d)?.parse().map_err(D::Error::custom)
    }
}

/// A list of values as their `Display` texts.
mod as_texts {
    use std::{fmt::Display, str::FromStr};

    use serde::{de::Error, ser::SerializeSeq, Deserialize, Deserializer, Serializer};

    pub fn serialize<T: Display, S: Serializer>(values: &[T], s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(values.len()))?;
        for value in values {
            seq.serialize_element(&value.to_string())?;
        }
        seq.end()
    }

    pub fn deserialize<'de, T, D>(d: D) -> Result<Vec<T>, D::Error>
    where
        T: FromStr,
        T::Err: Display,
        D: Deserializer<'de>,
    {
        let texts = Vec::<String>::deserialize(d)?;
        texts
            .iter()
            .map(|t| t.parse().map_err(D::Error::custom))
            .collect()
    }
}
