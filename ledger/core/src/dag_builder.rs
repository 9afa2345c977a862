//! Hand-made DAGs for unit tests of the ordering rule: blocks named by (round, author, version),
//! signed by the devnet keys, inserted straight into a [`Dag`] with no validation, network or store.

use std::{collections::BTreeMap, sync::Arc};

use bytes::Bytes;
use comms::Cid;

use crate::{
    committee::Committee,
    dag::{AcceptedBlock, Dag},
    devnet::{self, Role},
    types::{Block, Genesis, Payload, SignedBlock},
    Keypair,
};

/// A DAG under construction for an equal-weight committee of `n` devnet validators.
pub(crate) struct DagBuilder {
    /// The chain's genesis: `n` devnet validators, no accounts.
    pub(crate) genesis: Genesis,
    pub(crate) committee: Committee,
    pub(crate) dag: Dag,
    keys: Vec<Keypair>,
    chain: Cid,
    /// Every block added, by (round, author, version): version 0 is an author's first block of a
    /// round, 1 and up its equivocations.
    blocks: BTreeMap<(u64, u32, u64), Cid>,
}

impl DagBuilder {
    /// An empty DAG over `n` validators.
    pub(crate) fn new(n: usize) -> DagBuilder {
        let genesis = devnet::genesis("dag-builder", 1, n, 0, 0);
        DagBuilder {
            committee: Committee::new(&genesis),
            dag: Dag::default(),
            keys: (0..n).map(|i| devnet::key(1, Role::Validator, i)).collect(),
            chain: genesis.encode().1,
            blocks: BTreeMap::new(),
            genesis,
        }
    }

    /// The block built of `author`'s `version` at `round`, not yet inserted.
    pub(crate) fn build(
        &self,
        round: u64,
        author: u32,
        version: u64,
        mut parents: Vec<Cid>,
    ) -> Arc<AcceptedBlock> {
        parents.sort_unstable_by_key(|cid| cid.to_bytes());
        let block = Block {
            chain: self.chain,
            author,
            round,
            parents,
            payload: Payload::Inline(Vec::new()),
            // Tells an author's versions of a round apart.
            timestamp_ms: version,
            checkpoint: None,
        };
        let block = SignedBlock::sign(block, &self.keys[author as usize]);
        let (bytes, cid) = block.encode();
        Arc::new(AcceptedBlock {
            cid,
            block,
            bytes: Bytes::from(bytes),
            transactions: Arc::new(Vec::new()),
        })
    }

    /// Adds `author`'s `version` at `round` with these parents, returning its CID.
    pub(crate) fn add(&mut self, round: u64, author: u32, version: u64, parents: Vec<Cid>) -> Cid {
        let block = self.build(round, author, version, parents);
        let cid = block.cid;
        self.blocks.insert((round, author, version), cid);
        self.dag.insert(block);
        cid
    }

    /// The CID of `author`'s first block at `round`.
    pub(crate) fn cid(&self, round: u64, author: u32) -> Cid {
        self.version(round, author, 0)
    }

    /// The CID of `author`'s `version` at `round`.
    pub(crate) fn version(&self, round: u64, author: u32, version: u64) -> Cid {
        self.blocks[&(round, author, version)]
    }

    /// The first blocks of `authors` at `round`.
    pub(crate) fn cids(&self, round: u64, authors: &[u32]) -> Vec<Cid> {
        authors.iter().map(|a| self.cid(round, *a)).collect()
    }

    /// Adds a block of each of `authors` at `round`, each linking the first blocks of `links` at
    /// `round - 1` (none at round 0).
    pub(crate) fn round(&mut self, round: u64, authors: &[u32], links: &[u32]) {
        for author in authors {
            let parents = match round {
                0 => Vec::new(),
                _ => self.cids(round - 1, links),
            };
            self.add(round, *author, 0, parents);
        }
    }

    /// Adds rounds `rounds` in full: every validator, linking every validator's block before.
    pub(crate) fn full(&mut self, rounds: std::ops::RangeInclusive<u64>) {
        let all = self.all();
        for round in rounds {
            self.round(round, &all, &all);
        }
    }

    /// Every validator's index.
    pub(crate) fn all(&self) -> Vec<u32> {
        (0..self.committee.size() as u32).collect()
    }
}
