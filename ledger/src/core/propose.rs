//! Proposing our blocks, committing leaders, and the mempool.

use std::{sync::Arc, time::Duration};

use bytes::Bytes;
use comms::Cid;

use super::{Commit, Core, Output};
use crate::{
    codec::{cid_of, encode},
    consensus::stake_where,
    types::{Block, Payload, SignedBlock, SignedTransaction, Transaction},
    Error, Outcome,
};

/// Why a submitted transaction was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SubmitError {
    /// Its signature does not verify for this chain.
    #[error("invalid transaction: {0}")]
    Invalid(#[from] Error),
    /// The mempool is full.
    #[error("mempool full ({0} transactions)")]
    Full(usize),
    /// The signer's committed nonce has passed this one: the transaction committed already, or
    /// another one took its place. It could never take effect.
    #[error("stale nonce {got}: the signer's next nonce is {next}")]
    StaleNonce { next: u64, got: u64 },
    /// This node is not a validator, so it proposes no blocks.
    #[error("this node is an observer: submit to a validator")]
    NotValidator,
}

fn ms(duration: Duration) -> u64 {
    duration.as_millis() as u64
}

impl Core {
    /// A client's transaction, to include in our next block. Returns its ID; submitting one
    /// that is still pending here again changes nothing.
    pub fn submit(&mut self, tx: SignedTransaction) -> Result<Cid, SubmitError> {
        if self.me.is_none() {
            return Err(SubmitError::NotValidator);
        }
        let id = tx.id();
        if self.is_pending(&id) {
            return Ok(id);
        }
        if self.mempool_len() >= self.config.max_mempool {
            return Err(SubmitError::Full(self.config.max_mempool));
        }
        let next = self.state().account(tx.tx.signer()).nonce;
        if tx.tx.nonce() < next {
            return Err(SubmitError::StaleNonce {
                next,
                got: tx.tx.nonce(),
            });
        }
        tx.verify(&self.chain)?;
        self.queued_ids.insert(id);
        self.mempool.push_back(tx);
        Ok(id)
    }

    /// Time passed: propose if a leader wait ran out, re-broadcast, re-queue stale transactions.
    pub fn tick(&mut self, now_ms: u64, out: &mut Vec<Output>) {
        self.after_change(now_ms, out);
        let Some(own) = &self.last_own else {
            return;
        };
        if now_ms >= self.last_rebroadcast + ms(self.config.rebroadcast_interval) {
            self.last_rebroadcast = now_ms;
            out.push(Output::Broadcast(own.bytes.clone()));
        }
    }

    pub(super) fn after_change(&mut self, now_ms: u64, out: &mut Vec<Output>) {
        self.commit(out);
        while self.try_propose(now_ms, out) {
            self.commit(out);
        }
    }

    /// Proposes the next block if its round is ready. True when it proposed.
    fn try_propose(&mut self, now_ms: u64, out: &mut Vec<Output>) -> bool {
        let Some((author, _)) = self.me else {
            return false;
        };
        // Catch up: skip rounds the others completed without us.
        while self.round > 0 && self.round <= self.dag.highest_round() && self.quorum_of(self.round)
        {
            self.round += 1;
        }
        if let Some(own) = &self.last_own {
            if now_ms < own.at_ms + ms(self.config.min_block_interval) {
                return false;
            }
        }
        let round = self.round;
        if round > 0 {
            if !self.quorum_of(round - 1) {
                return false;
            }
            let leader_here = self
                .dag
                .slot(round - 1, self.committee.leader(round - 1))
                .next()
                .is_some();
            let since = *self.quorum_since.get_or_insert(now_ms);
            if !leader_here && now_ms < since + ms(self.config.leader_timeout) {
                return false;
            }
        }
        self.propose(author, round, now_ms, out);
        true
    }

    /// Whether the DAG holds blocks of `round` from a quorum of authors.
    fn quorum_of(&self, round: u64) -> bool {
        stake_where(&self.dag, &self.committee, round, |_| true) >= self.committee.quorum()
    }

    fn propose(&mut self, author: u32, round: u64, now_ms: u64, out: &mut Vec<Output>) {
        let mut parents = Vec::new();
        if round > 0 {
            let mut last_author = None;
            for block in self.dag.round(round - 1) {
                if last_author != Some(block.author()) {
                    last_author = Some(block.author());
                    parents.push(block.cid);
                }
            }
            // After skipping rounds, link our previous block anyway: our blocks stay a chain, so
            // one that nobody else referenced commits before our later ones, in order.
            if let Some(own) = self.last_own.as_ref().filter(|own| own.round + 1 < round) {
                parents.push(own.cid);
            }
            parents.sort_by_key(|c| c.to_bytes());
        }
        let payload = self.payload(round, out);
        let block = Block {
            chain: self.chain,
            author,
            round,
            parents,
            payload,
            timestamp_ms: now_ms,
        };
        let Some((_, key)) = &self.me else { return };
        let signed = SignedBlock::sign(block, key);
        let bytes = Bytes::from(encode(&signed));
        let cid = cid_of(&bytes);
        self.round = round + 1;
        self.quorum_since = None;
        self.last_own = Some(super::OwnBlock {
            cid,
            round,
            bytes: bytes.clone(),
            at_ms: now_ms,
        });
        self.last_rebroadcast = now_ms;
        out.push(Output::Broadcast(bytes.clone()));
        tracing::debug!(round, %cid, "proposed");
        self.admit(cid, signed, bytes, false, out);
    }

    /// Takes transactions from the mempool (re-queuing stale in-flight ones first) into a payload,
    /// inline or as a batch.
    fn payload(&mut self, round: u64, out: &mut Vec<Output>) -> Payload {
        let stale_before = round.saturating_sub(self.config.resubmit_after_rounds);
        let stale: Vec<_> = self
            .inflight
            .iter()
            .filter(|(_, (_, r))| *r < stale_before)
            .map(|(id, _)| *id)
            .collect();
        for id in stale {
            if let Some((tx, _)) = self.inflight.remove(&id) {
                self.queued_ids.insert(id);
                self.mempool.push_front(tx);
            }
        }
        let (mut txs, mut size) = (Vec::new(), 0u64);
        while let Some(tx) = self.mempool.front() {
            let encoded = encode(tx);
            // The same CID as `tx.id()`, without encoding the transaction a second time.
            let id = cid_of(&encoded);
            if !self.queued_ids.contains(&id) {
                // Committed meanwhile, through another validator.
                self.mempool.pop_front();
                continue;
            }
            let tx_size = encoded.len() as u64 + 1;
            if txs.len() as u64 >= self.config.max_block_transactions
                || size + tx_size > self.config.max_block_bytes - 1024
            {
                break;
            }
            size += tx_size;
            let Some(tx) = self.mempool.pop_front() else {
                break;
            };
            self.queued_ids.remove(&id);
            self.inflight.insert(id, (tx.clone(), round));
            txs.push(tx);
        }
        if size <= self.config.inline_bytes {
            return Payload::Inline(txs);
        }
        let bytes = Bytes::from(encode(&txs));
        let cid = cid_of(&bytes);
        let size = bytes.len() as u64;
        let payload = Payload::Batch {
            cid,
            count: txs.len() as u64,
            size,
        };
        self.parking.put_batch(&cid, &bytes);
        out.push(Output::Store {
            cid,
            bytes,
            batch: true,
        });
        payload
    }

    /// Commits every newly decided leader: orders its history and applies its transactions.
    pub(super) fn commit(&mut self, out: &mut Vec<Output>) {
        for (round, leader) in self.committer.try_decide(&self.dag, &self.committee) {
            let Some(leader) = leader else {
                self.stats.skipped_slots += 1;
                continue;
            };
            let blocks = self.linearizer.linearize(&self.dag, &leader);
            let (mut transactions, mut touched) = (Vec::new(), Vec::new());
            for cid in &blocks {
                let Some(block) = self.dag.get(cid) else {
                    continue;
                };
                for tx in block.transactions.iter() {
                    let id = tx.id();
                    self.inflight.remove(&id);
                    self.queued_ids.remove(&id);
                    let outcome = self.state.apply(&tx.tx);
                    if outcome == Outcome::Applied {
                        touched.push(*tx.tx.signer());
                        if let Transaction::Transfer { to, .. } = &tx.tx {
                            touched.push(*to);
                        }
                    }
                    transactions.push((id, outcome));
                }
            }
            touched.sort_unstable();
            touched.dedup();
            let changed = touched
                .into_iter()
                .map(|key| (key, self.state.account(&key)))
                .collect();
            self.height += 1;
            self.stats.committed_transactions += transactions.len() as u64;
            let commit = Commit {
                height: self.height,
                round,
                leader,
                blocks,
                transactions,
                changed,
                state_root: self.state.root(),
            };
            tracing::debug!(height = commit.height, round, %leader, blocks = commit.blocks.len(), "committed");
            out.push(Output::Committed(Arc::new(commit)));
            self.collect_garbage(round);
        }
    }
}
