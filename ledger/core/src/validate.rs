//! Validation of received blocks: what can be checked from the block alone, and what needs its parents.

use comms::Cid;

use crate::{
    committee::Committee,
    crypto::{verify_batch, Domain, PublicKey},
    types::{Block, Payload, SignedBlock, SignedTransaction},
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

/// The key of `block`'s author, if the block is of the chain `chain` and its author is one of
/// `committee`'s validators: what its signature is checked against.
pub fn author_key<'a>(
    block: &Block,
    chain: &Cid,
    committee: &'a Committee,
) -> Result<&'a PublicKey, Error> {
    if block.chain != *chain {
        return Err(Error::WrongChain {
            expected: Box::new(*chain),
            actual: Box::new(block.chain),
        });
    }
    committee.key(block.author).ok_or(Error::UnknownAuthor {
        author: block.author,
        validators: committee.size(),
    })
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
    let key = author_key(b, chain, committee)?;
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
    if let Some(checkpoint) = &b.checkpoint {
        let interval = crate::checkpoint::CHECKPOINT_INTERVAL;
        if checkpoint.height == 0 || checkpoint.height % interval != 0 {
            return Err(Error::BadCheckpoint {
                height: checkpoint.height,
                interval,
            });
        }
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

/// Checks a block of `author` at `round` against its parents' `(author, round)`: from the previous
/// round, one per author, with a quorum of stake; plus, when the author has no block among them,
/// possibly the author's own earlier block, which keeps its blocks a chain after it skipped rounds
/// (it counts for no quorum).
pub fn check_parents(
    author: u32,
    round: u64,
    parents: &[(u32, u64)],
    committee: &Committee,
) -> Result<(), ParentsError> {
    let mut authors = Vec::with_capacity(parents.len());
    let mut previous_round = Vec::with_capacity(parents.len());
    for &(parent_author, parent_round) in parents {
        let own_earlier = parent_author == author && parent_round + 1 < round;
        if parent_round + 1 != round && !own_earlier {
            return Err(ParentsError::WrongRound {
                round,
                parent_round,
            });
        }
        if authors.contains(&parent_author) {
            return Err(ParentsError::DuplicateAuthor {
                author: parent_author,
            });
        }
        authors.push(parent_author);
        if !own_earlier {
            previous_round.push(parent_author);
        }
    }
    let (stake, quorum) = (committee.stake(previous_round), committee.quorum());
    match round == 0 || stake >= quorum {
        true => Ok(()),
        false => Err(ParentsError::NoQuorum { stake, quorum }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devnet;

    fn committee() -> Committee {
        Committee::new(&devnet::genesis("parents", 1, 4, 0, 0))
    }

    #[test]
    fn parents_are_a_quorum_of_the_previous_round() {
        let c = committee();
        assert!(check_parents(0, 5, &[(0, 4), (1, 4), (2, 4)], &c).is_ok());
        assert!(matches!(
            check_parents(0, 5, &[(0, 4), (1, 4)], &c),
            Err(ParentsError::NoQuorum { .. })
        ));
        assert!(matches!(
            check_parents(0, 5, &[(0, 4), (1, 4), (1, 4)], &c),
            Err(ParentsError::DuplicateAuthor { author: 1 })
        ));
        assert!(matches!(
            check_parents(0, 5, &[(0, 4), (1, 4), (2, 3)], &c),
            Err(ParentsError::WrongRound {
                parent_round: 3,
                ..
            })
        ));
    }

    #[test]
    fn only_the_authors_own_earlier_block_may_join_and_it_counts_for_no_quorum() {
        let c = committee();
        assert!(check_parents(0, 5, &[(0, 1), (1, 4), (2, 4), (3, 4)], &c).is_ok());
        // Someone else's earlier block.
        assert!(matches!(
            check_parents(0, 5, &[(1, 1), (2, 4), (3, 4), (0, 4)], &c),
            Err(ParentsError::WrongRound {
                parent_round: 1,
                ..
            })
        ));
        // Besides the author's block of the previous round.
        assert!(matches!(
            check_parents(0, 5, &[(0, 4), (0, 2), (1, 4), (2, 4)], &c),
            Err(ParentsError::DuplicateAuthor { author: 0 })
        ));
        // Not a quorum without it.
        assert!(matches!(
            check_parents(0, 5, &[(0, 1), (1, 4), (2, 4)], &c),
            Err(ParentsError::NoQuorum { .. })
        ));
        // A later round is never a parent, own or not.
        assert!(matches!(
            check_parents(0, 5, &[(0, 5), (1, 4), (2, 4), (3, 4)], &c),
            Err(ParentsError::WrongRound {
                parent_round: 5,
                ..
            })
        ));
    }
}
