//! Validation of received blocks: what can be checked from the block alone, and what needs its parents.

use comms::Cid;

use crate::{
    committee::Committee,
    crypto::{verify_batch, Domain},
    types::{Payload, SignedBlock, SignedTransaction},
    Error, ParentsError,
};

/// Limits on what a block may carry.
#[derive(Clone, Copy, Debug)]
pub struct BlockLimits {
    /// Transactions per block, inline or in its batch.
    pub max_transactions: u64,
    /// Encoded bytes of a block, and of a batch.
    pub max_bytes: u64,
}

/// Checks everything that needs only the block: chain, author, signature, parent list shape, size,
/// and the signatures of inline transactions (in one batch verification).
pub fn check_block(
    block: &SignedBlock,
    size: usize,
    chain: &Cid,
    committee: &Committee,
    limits: &BlockLimits,
) -> Result<(), Error> {
    let b = &block.block;
    if b.chain != *chain {
        return Err(Error::WrongChain {
            expected: Box::new(*chain),
            actual: Box::new(b.chain),
        });
    }
    let key = committee.key(b.author).ok_or(Error::UnknownAuthor {
        author: b.author,
        validators: committee.size(),
    })?;
    if size as u64 > limits.max_bytes {
        return Err(Error::TooLarge {
            size: size as u64,
            limit: limits.max_bytes,
        });
    }
    let parents = b.parents.len();
    if (b.round == 0) != (parents == 0) || parents > committee.size() {
        return Err(ParentsError::Count {
            round: b.round,
            count: parents,
        }
        .into());
    }
    if b.parents
        .windows(2)
        .any(|w| w[0].to_bytes() >= w[1].to_bytes())
    {
        return Err(ParentsError::Unsorted.into());
    }
    block.verify(key)?;
    match &b.payload {
        Payload::Inline(txs) => check_transactions(txs, chain, limits),
        Payload::Batch { count, size, .. } => {
            check_count(*count, limits)?;
            match *size > limits.max_bytes {
                true => Err(Error::TooLarge {
                    size: *size,
                    limit: limits.max_bytes,
                }),
                false => Ok(()),
            }
        }
    }
}

/// Checks a list of transactions: count, then all signatures in one batch.
pub fn check_transactions(
    txs: &[SignedTransaction],
    chain: &Cid,
    limits: &BlockLimits,
) -> Result<(), Error> {
    check_count(txs.len() as u64, limits)?;
    let bodies: Vec<Vec<u8>> = txs
        .iter()
        .map(|t| SignedTransaction::signed_bytes(chain, &t.tx))
        .collect();
    let items: Vec<_> = txs
        .iter()
        .zip(&bodies)
        .map(|(t, body)| (t.tx.signer(), body.as_slice(), &t.signature))
        .collect();
    match items.is_empty() {
        true => Ok(()),
        false => verify_batch(Domain::Transaction, &items),
    }
}

fn check_count(count: u64, limits: &BlockLimits) -> Result<(), Error> {
    match count > limits.max_transactions {
        true => Err(Error::TooLarge {
            size: count,
            limit: limits.max_transactions,
        }),
        false => Ok(()),
    }
}

/// Checks a block against its parents' `(author, round)`: all from the previous round, one per
/// author, with a quorum of stake.
pub fn check_parents(
    round: u64,
    parents: &[(u32, u64)],
    committee: &Committee,
) -> Result<(), ParentsError> {
    let mut authors = Vec::with_capacity(parents.len());
    for &(author, parent_round) in parents {
        if parent_round + 1 != round {
            return Err(ParentsError::WrongRound {
                round,
                parent_round,
            });
        }
        if authors.contains(&author) {
            return Err(ParentsError::DuplicateAuthor { author });
        }
        authors.push(author);
    }
    let (stake, quorum) = (committee.stake(authors), committee.quorum());
    match round == 0 || stake >= quorum {
        true => Ok(()),
        false => Err(ParentsError::NoQuorum { stake, quorum }),
    }
}
