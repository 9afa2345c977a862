//! State checkpoints: how a state root comes to be attested by the validators, so that a light
//! client, or a node joining late, can trust a state it did not compute.
//!
//! No validator signs a commit. But every commit height that is a multiple of
//! [`CHECKPOINT_INTERVAL`] is a checkpoint, and each validator names, in every block it signs, the
//! latest checkpoint it executed and the state root it computed there ([`Checkpoint`]). Execution
//! is deterministic, so honest validators name the same root for a height; blocks of a quorum of
//! stake naming one checkpoint, each signed by its author, are its [`Certificate`]. A quorum holds
//! more than `f` honest stake, so a certified root is the state the honest validators computed.
//! [`verify_certificate`] checks one against the genesis committee alone.
//!
//! A node collects the checkpoints that accepted blocks name ([`Checkpoints`]), keeping each
//! author's last few, and holds the latest certificate it saw form.

use std::collections::VecDeque;

use bytes::Bytes;
use comms::Cid;

use crate::{
    committee::Committee,
    types::{Checkpoint, SignedBlock},
    validate::author_key,
    Error,
};

/// Commits between two checkpoints: a protocol constant, as every validator must name the same
/// heights. At two commits a round, a checkpoint every 8 rounds.
pub const CHECKPOINT_INTERVAL: u64 = 16;

/// The checkpoints named by one author that are kept, at most: its blocks name its latest, so a
/// few cover the time the others take to reach the same one.
const KEPT_PER_AUTHOR: usize = 4;

/// A checkpoint and the signed blocks (DAG-CBOR) of validators holding a quorum of stake that
/// name it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Certificate {
    /// The checkpoint certified.
    pub checkpoint: Checkpoint,
    /// One block of each validator that named it, enough of them for a quorum.
    pub blocks: Vec<Bytes>,
}

/// Why a certificate does not certify.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CertificateError {
    /// A block that does not decode, is of another chain or author, or whose signature fails.
    #[error("certificate block {index}: {error}")]
    Block { index: usize, error: Error },
    /// A block that names no checkpoint, or another one than the first block.
    #[error("certificate block {index} names another checkpoint than the first")]
    Disagrees { index: usize },
    /// Two blocks by one author.
    #[error("certificate blocks {index} and an earlier one are both by validator {author}")]
    DuplicateAuthor { index: usize, author: u32 },
    /// The authors hold less than a quorum of stake.
    #[error("the certificate's validators hold {stake} of stake, and a quorum is {quorum}")]
    NoQuorum { stake: u64, quorum: u64 },
}

/// What a certificate that holds shows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Certified {
    /// The checkpoint its blocks name.
    pub checkpoint: Checkpoint,
    /// The validators that signed them, in the certificate's order.
    pub authors: Vec<u32>,
    /// Their stake, a quorum or more.
    pub stake: u64,
}

/// Checks that `blocks` certify one checkpoint for the chain `chain` of `committee`: each decodes
/// strictly, is of the chain, is signed by its author, and names the same checkpoint; their
/// distinct authors hold a quorum. Returns the checkpoint and who certified it.
pub fn verify_certificate(
    blocks: &[Bytes],
    chain: &Cid,
    committee: &Committee,
) -> Result<Certified, CertificateError> {
    let (mut named, mut authors) = (None, Vec::with_capacity(blocks.len()));
    for (index, bytes) in blocks.iter().enumerate() {
        let block = check(bytes, chain, committee)
            .map_err(|error| CertificateError::Block { index, error })?;
        let checkpoint = block.block.checkpoint;
        if checkpoint.is_none() || named.is_some_and(|named| Some(named) != checkpoint) {
            return Err(CertificateError::Disagrees { index });
        }
        named = checkpoint;
        let author = block.block.author;
        if authors.contains(&author) {
            return Err(CertificateError::DuplicateAuthor { index, author });
        }
        authors.push(author);
    }
    let (stake, quorum) = (committee.stake(authors.iter().copied()), committee.quorum());
    match named {
        Some(checkpoint) if stake >= quorum => Ok(Certified {
            checkpoint,
            authors,
            stake,
        }),
        _ => Err(CertificateError::NoQuorum { stake, quorum }),
    }
}

/// One certificate block, decoded and checked: of the chain, by a validator, signed by it.
fn check(bytes: &[u8], chain: &Cid, committee: &Committee) -> Result<SignedBlock, Error> {
    let block = SignedBlock::decode(bytes)?;
    block.verify(author_key(&block.block, chain, committee)?)?;
    Ok(block)
}

/// The checkpoints accepted blocks name, and the latest certificate they formed.
#[derive(Debug, Default)]
pub struct Checkpoints {
    /// Per author, the last checkpoints its blocks named (newest last), each with the smallest
    /// block that named it (the certificate carries whole blocks, payload and all).
    named: Vec<VecDeque<(Checkpoint, Bytes)>>,
    certified: Option<Certificate>,
}

impl Checkpoints {
    /// Nothing named yet, for a committee of `size` validators.
    pub fn new(size: usize) -> Checkpoints {
        Checkpoints {
            named: vec![VecDeque::new(); size],
            certified: None,
        }
    }

    /// The latest certificate formed, if any.
    pub fn certified(&self) -> Option<&Certificate> {
        self.certified.as_ref()
    }

    /// An accepted block of `author` (its bytes) named `checkpoint`. Returns the certificate it
    /// completed, if it did.
    pub fn named(
        &mut self,
        author: u32,
        checkpoint: Checkpoint,
        bytes: &Bytes,
        committee: &Committee,
    ) -> Option<&Certificate> {
        let latest = self.certified.as_ref().map_or(0, |c| c.checkpoint.height);
        let named = self.named.get_mut(author as usize)?;
        if checkpoint.height <= latest {
            return None;
        }
        if let Some((_, kept)) = named.iter_mut().find(|(c, _)| *c == checkpoint) {
            if bytes.len() < kept.len() {
                *kept = bytes.clone();
            }
            return None;
        }
        if named.len() == KEPT_PER_AUTHOR {
            named.pop_front();
        }
        named.push_back((checkpoint, bytes.clone()));
        let blocks: Vec<(u32, Bytes)> = (self.named.iter().enumerate())
            .filter_map(|(author, named)| {
                let (_, bytes) = named.iter().find(|(c, _)| *c == checkpoint)?;
                Some((author as u32, bytes.clone()))
            })
            .collect();
        if committee.stake(blocks.iter().map(|(author, _)| *author)) < committee.quorum() {
            return None;
        }
        self.certified = Some(Certificate {
            checkpoint,
            blocks: blocks.into_iter().map(|(_, bytes)| bytes).collect(),
        });
        self.certified.as_ref()
    }
}

/// Made-up checkpoints and the signed blocks that name them, for tests.
#[cfg(test)]
pub(crate) mod test_support {
    use super::*;
    use crate::{
        codec::cid_of,
        devnet::{self, Role},
        types::{Block, Payload},
    };

    /// The `n`th checkpoint, its leader and root made up.
    pub(crate) fn checkpoint(n: u64) -> Checkpoint {
        Checkpoint {
            height: n * CHECKPOINT_INTERVAL,
            round: n * 8,
            leader: cid_of(&n.to_le_bytes()),
            state_root: cid_of(&n.to_be_bytes()),
        }
    }

    /// Validator `author`'s (of the devnet keys of seed 1) signed block of `round` in `chain`,
    /// naming `checkpoint`, with a made-up parent above round 0.
    pub(crate) fn block(
        chain: Cid,
        author: u32,
        round: u64,
        checkpoint: Option<Checkpoint>,
    ) -> Bytes {
        let block = Block {
            chain,
            author,
            round,
            parents: (round > 0)
                .then(|| cid_of(&round.to_be_bytes()))
                .into_iter()
                .collect(),
            payload: Payload::Inline(Vec::new()),
            timestamp_ms: 0,
            checkpoint,
        };
        let key = devnet::key(1, Role::Validator, author as usize);
        Bytes::from(SignedBlock::sign(block, &key).encode().0)
    }
}

#[cfg(test)]
mod tests {
    use super::{test_support::checkpoint, *};
    use crate::{codec::cid_of, devnet};

    const VALIDATORS: usize = 4;

    fn committee() -> (Cid, Committee) {
        let genesis = devnet::genesis("checkpoints", 1, VALIDATORS, 0, 0);
        (genesis.encode().1, Committee::new(&genesis))
    }

    /// `author`'s block of `round` naming `checkpoint`.
    fn block(author: u32, round: u64, checkpoint: Checkpoint) -> Bytes {
        test_support::block(committee().0, author, round, Some(checkpoint))
    }

    #[test]
    fn a_quorum_naming_one_checkpoint_certifies_it_and_earlier_ones_are_then_ignored() {
        let (chain, committee) = committee();
        let mut checkpoints = Checkpoints::new(VALIDATORS);
        let (one, two) = (checkpoint(1), checkpoint(2));
        for author in 0..2 {
            let bytes = block(author, 5, one);
            assert_eq!(checkpoints.named(author, one, &bytes, &committee), None);
        }
        // Validator 2 names another root for the same height: no quorum for either.
        let forged = Checkpoint {
            state_root: cid_of(b"forged"),
            ..one
        };
        assert_eq!(
            checkpoints.named(2, forged, &block(2, 5, forged), &committee),
            None
        );
        // Validator 3 goes on to checkpoint 2, and names 1 late: 0, 1 and 3 are a quorum.
        assert_eq!(
            checkpoints.named(3, two, &block(3, 6, two), &committee),
            None
        );
        let certificate = (checkpoints.named(3, one, &block(3, 7, one), &committee))
            .expect("three of four")
            .clone();
        assert_eq!(certificate.checkpoint, one);
        assert_eq!(certificate.blocks.len(), 3);
        assert_eq!(
            verify_certificate(&certificate.blocks, &chain, &committee)
                .ok()
                .map(|c| c.checkpoint),
            Some(one)
        );
        assert_eq!(
            checkpoints.named(2, one, &block(2, 8, one), &committee),
            None,
            "certified already"
        );
        for author in [0, 1] {
            let done = checkpoints.named(author, two, &block(author, 9, two), &committee);
            assert_eq!(done.map(|c| c.checkpoint), (author == 1).then_some(two));
        }
        assert_eq!(checkpoints.certified().map(|c| c.checkpoint), Some(two));
    }

    #[test]
    fn an_author_naming_many_checkpoints_is_held_to_its_last_few() {
        let (_, committee) = committee();
        let mut checkpoints = Checkpoints::new(VALIDATORS);
        for n in 1..100 {
            checkpoints.named(0, checkpoint(n), &block(0, n, checkpoint(n)), &committee);
        }
        assert_eq!(checkpoints.named[0].len(), KEPT_PER_AUTHOR);
        assert_eq!(
            checkpoints.named(9, checkpoint(1), &block(0, 1, checkpoint(1)), &committee),
            None,
            "not a validator"
        );
    }

    #[test]
    fn a_certificate_that_is_short_mixed_repeated_or_tampered_is_refused() {
        let (chain, committee) = committee();
        let one = checkpoint(1);
        let blocks: Vec<Bytes> = (0..3).map(|author| block(author, 5, one)).collect();
        assert!(verify_certificate(&blocks, &chain, &committee).is_ok());
        assert!(matches!(
            verify_certificate(&blocks[..2], &chain, &committee),
            Err(CertificateError::NoQuorum {
                stake: 2,
                quorum: 3
            })
        ));
        let repeated = [blocks[..2].to_vec(), vec![block(1, 6, one)]].concat();
        assert!(matches!(
            verify_certificate(&repeated, &chain, &committee),
            Err(CertificateError::DuplicateAuthor {
                index: 2,
                author: 1
            })
        ));
        let mixed = [blocks[..2].to_vec(), vec![block(2, 5, checkpoint(2))]].concat();
        assert!(matches!(
            verify_certificate(&mixed, &chain, &committee),
            Err(CertificateError::Disagrees { index: 2 })
        ));
        let mut tampered = blocks.clone();
        let mut bytes = tampered[1].to_vec();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        tampered[1] = Bytes::from(bytes);
        assert!(matches!(
            verify_certificate(&tampered, &chain, &committee),
            Err(CertificateError::Block { index: 1, .. })
        ));
        let other = devnet::genesis("another chain", 1, VALIDATORS, 0, 0)
            .encode()
            .1;
        assert!(matches!(
            verify_certificate(&blocks, &other, &committee),
            Err(CertificateError::Block {
                index: 0,
                error: Error::WrongChain { .. }
            })
        ));
    }
}
