//! The ledger's data: genesis, transactions and blocks, as canonical DAG-CBOR.

use comms::Cid;
use serde::{Deserialize, Serialize};

use crate::{
    codec::{cid_of, decode, encode},
    crypto::{Domain, Keypair, PublicKey, Signature},
    Error,
};

/// A validator: its key and its voting weight.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Validator {
    /// Signs this validator's blocks.
    pub key: PublicKey,
    /// Voting weight (stake); at least 1.
    pub weight: u64,
}

/// An account's starting balance.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Allocation {
    /// The account.
    pub account: PublicKey,
    /// Its balance at genesis.
    pub balance: u64,
}

/// The chain's first object; its CID names the chain and is in every block and transaction.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Genesis {
    /// A human-readable name, so that two chains with the same validators differ.
    pub chain_id: String,
    /// The validator set, in index order: a block's `author` is an index into it.
    pub validators: Vec<Validator>,
    /// Initial balances; their sum is the total supply forever.
    pub balances: Vec<Allocation>,
}

impl Genesis {
    /// The canonical bytes and CID.
    pub fn encode(&self) -> (Vec<u8>, Cid) {
        let bytes = encode(self);
        let cid = cid_of(&bytes);
        (bytes, cid)
    }

    /// Decodes and checks a genesis: at least one validator, positive weights, no duplicate keys or
    /// accounts, no overflow of total stake or supply.
    pub fn decode(bytes: &[u8]) -> Result<Genesis, Error> {
        let genesis: Genesis = decode(bytes)?;
        genesis.check()?;
        Ok(genesis)
    }

    /// The checks of [`Genesis::decode`], for a genesis built in code.
    pub fn check(&self) -> Result<(), Error> {
        let bad = |reason: &str| {
            Err(Error::BadGenesis {
                reason: reason.to_string(),
            })
        };
        if self.validators.is_empty() || self.validators.iter().any(|v| v.weight == 0) {
            return bad("needs at least one validator, each with a positive weight");
        }
        let mut keys: Vec<_> = self.validators.iter().map(|v| v.key).collect();
        keys.sort_unstable();
        keys.dedup();
        let mut accounts: Vec<_> = self.balances.iter().map(|a| a.account).collect();
        accounts.sort_unstable();
        accounts.dedup();
        if keys.len() != self.validators.len() || accounts.len() != self.balances.len() {
            return bad("duplicate validator key or account");
        }
        let stake = self
            .validators
            .iter()
            .try_fold(0u64, |sum, v| sum.checked_add(v.weight));
        let supply = self
            .balances
            .iter()
            .try_fold(0u64, |sum, a| sum.checked_add(a.balance));
        if stake.is_none() || supply.is_none() {
            return bad("total stake or supply overflows");
        }
        Ok(())
    }
}

/// What a transaction does.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Transaction {
    /// Moves `amount` from `from` to `to`; signed by `from`.
    Transfer {
        from: PublicKey,
        to: PublicKey,
        amount: u64,
        nonce: u64,
    },
    /// Anchors data that lives in IPFS (a sensor reading, a model update); signed by `author`.
    Record {
        author: PublicKey,
        nonce: u64,
        payload: Cid,
        size: u64,
    },
}

impl Transaction {
    /// The account that signs it and whose nonce it uses.
    pub fn signer(&self) -> &PublicKey {
        match self {
            Transaction::Transfer { from, .. } => from,
            Transaction::Record { author, .. } => author,
        }
    }

    /// Its nonce: the signer's count of transactions before it.
    pub fn nonce(&self) -> u64 {
        match self {
            Transaction::Transfer { nonce, .. } | Transaction::Record { nonce, .. } => *nonce,
        }
    }
}

/// What a transaction signature covers: the chain, so it cannot be replayed on another, and the
/// transaction.
#[derive(Serialize)]
struct TransactionBody<'a> {
    chain: &'a Cid,
    tx: &'a Transaction,
}

/// A transaction with its signer's signature.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedTransaction {
    /// The transaction.
    pub tx: Transaction,
    /// The signer's signature over the chain and the transaction.
    pub signature: Signature,
}

impl SignedTransaction {
    /// Signs `tx` for `chain`. The key must be the transaction's signer for it to verify.
    pub fn sign(chain: &Cid, tx: Transaction, key: &Keypair) -> SignedTransaction {
        let signature = key.sign(
            Domain::Transaction,
            &SignedTransaction::signed_bytes(chain, &tx),
        );
        SignedTransaction { tx, signature }
    }

    /// The bytes the signature is over.
    pub fn signed_bytes(chain: &Cid, tx: &Transaction) -> Vec<u8> {
        encode(&TransactionBody { chain, tx })
    }

    /// Checks the signature (one by one; blocks verify their transactions in a batch).
    pub fn verify(&self, chain: &Cid) -> Result<(), Error> {
        self.tx.signer().verify(
            Domain::Transaction,
            &SignedTransaction::signed_bytes(chain, &self.tx),
            &self.signature,
        )
    }

    /// The transaction's identity: the CID of its canonical encoding.
    pub fn id(&self) -> Cid {
        cid_of(&encode(self))
    }
}

/// A block's transactions: inline, or in a separate batch block fetched by CID when large.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Payload {
    /// The transactions themselves.
    Inline(Vec<SignedTransaction>),
    /// A link to a DAG-CBOR list of signed transactions, with its count and size for validation.
    Batch { cid: Cid, count: u64, size: u64 },
}

/// A validator's word on the state: the root it computed after commit `height`, a checkpoint
/// (a positive multiple of [`CHECKPOINT_INTERVAL`](crate::checkpoint::CHECKPOINT_INTERVAL)),
/// and which leader that commit committed. Blocks of a quorum of stake saying the same certify
/// that state and that place in the sequence (see [`crate::checkpoint`]): a node joining late
/// starts from them.
///
/// The CIDs are encoded as byte strings, not as IPLD links: a pin of a block walks its links, and
/// a faulty validator could name a root that exists nowhere, so that every pin below its block
/// (every honest block after it) would miss a link. A block's links stay what the node checked
/// before accepting it: its parents, its batch and the chain.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Checkpoint {
    /// The commit height.
    pub height: u64,
    /// The round of the leader it committed.
    pub round: u64,
    /// That leader block's CID (as bytes, see above).
    #[serde(with = "cid_bytes")]
    pub leader: Cid,
    /// The CID of the state's root block after that commit (as bytes, see above).
    #[serde(with = "cid_bytes")]
    pub state_root: Cid,
}

/// A CID as a CBOR byte string of its binary form, rather than a tag-42 link.
mod cid_bytes {
    use comms::Cid;
    use serde::{de::Error as _, Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(cid: &Cid, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(&cid.to_bytes())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Cid, D::Error> {
        let bytes = serde_bytes::ByteBuf::deserialize(deserializer)?;
        Cid::try_from(bytes.as_slice()).map_err(|error| D::Error::custom(error.to_string()))
    }
}

/// A DAG vertex: what a validator proposes for a round.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Block {
    /// The chain (genesis CID).
    pub chain: Cid,
    /// The author's index in the validator set.
    pub author: u32,
    /// The round; 0 for a validator's first block.
    pub round: u64,
    /// At most one block per author, sorted by CID: blocks of the previous round holding a quorum of
    /// stake, and the author's own block of an earlier round in place of the previous one after a
    /// gap.
    pub parents: Vec<Cid>,
    /// The transactions.
    pub payload: Payload,
    /// The author's clock when proposing, in milliseconds since the Unix epoch (informational).
    pub timestamp_ms: u64,
    /// The latest checkpoint the author executed, once it executed one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint: Option<Checkpoint>,
}

/// A block with its author's signature. Its CID is the CID of this, encoded.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedBlock {
    /// The block.
    pub block: Block,
    /// The author's signature over the block's canonical bytes.
    pub signature: Signature,
}

impl SignedBlock {
    /// Signs `block` with its author's key.
    pub fn sign(block: Block, key: &Keypair) -> SignedBlock {
        let signature = key.sign(Domain::Block, &encode(&block));
        SignedBlock { block, signature }
    }

    /// Canonical bytes and CID.
    pub fn encode(&self) -> (Vec<u8>, Cid) {
        let bytes = encode(self);
        let cid = cid_of(&bytes);
        (bytes, cid)
    }

    /// Strictly decodes a signed block (signature not yet checked: see `validate`).
    pub fn decode(bytes: &[u8]) -> Result<SignedBlock, Error> {
        decode(bytes)
    }

    /// Checks the author's signature, given the author's key.
    pub fn verify(&self, key: &PublicKey) -> Result<(), Error> {
        key.verify(Domain::Block, &encode(&self.block), &self.signature)
    }
}
