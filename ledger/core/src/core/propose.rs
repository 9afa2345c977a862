//! The core's inputs and what they set off: blocks arriving go to the block manager, transactions
//! to the pool, time to the proposer; after each, newly decided leaders commit and our next block
//! is proposed if it is due.

use std::sync::Arc;

use bytes::Bytes;
use comms::Cid;

use super::{
    blocks::Source,
    execute::Executed,
    pool::{Refusal, Room},
    Core, Output,
};
use crate::{
    codec::{cid_of, encode},
    store::StoreError,
    types::{Payload, SignedTransaction},
    Error,
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
    /// The signer has as many transactions waiting here as one signer may.
    #[error("the signer has {0} transactions waiting here, the most one signer may")]
    SignerFull(usize),
    /// Another transaction of the signer with this nonce waits here.
    #[error("another transaction with nonce {0} of this signer waits here")]
    NonceTaken(u64),
    /// The signer's committed nonce has passed this one: the transaction committed already, or
    /// another one took its place. It could never take effect.
    #[error("stale nonce {got}: the signer's next nonce is {next}")]
    StaleNonce { next: u64, got: u64 },
    /// This node is not a validator, so it proposes no blocks.
    #[error("this node is an observer: submit to a validator")]
    NotValidator,
    /// This node is joining by snapshot: it has no state to check a transaction against yet.
    #[error("this node is joining the network: submit once it has")]
    Joining,
}

/// How often the pool drops the held transactions that expired.
const EXPIRY_INTERVAL_MS: u64 = 1000;

impl Core {
    /// Block bytes arrived by broadcast.
    pub fn receive(
        &mut self,
        now_ms: u64,
        bytes: Bytes,
        out: &mut Vec<Output>,
    ) -> Result<(), StoreError> {
        if self.deciding(now_ms, bytes.clone(), out)? {
            return Ok(());
        }
        self.blocks.receive(bytes, Source::Broadcast, out)?;
        self.after_change(now_ms, out)
    }

    /// A fetch asked for by [`Output::Fetch`] succeeded (the bytes match the CID).
    pub fn fetched(
        &mut self,
        now_ms: u64,
        cid: Cid,
        bytes: Bytes,
        out: &mut Vec<Output>,
    ) -> Result<(), StoreError> {
        let Some(bytes) = self.snapshot_fetched(cid, bytes, out) else {
            return self.after_change(now_ms, out);
        };
        self.blocks.fetched(cid, bytes, out)?;
        self.after_change(now_ms, out)
    }

    /// A fetch failed for good: the blocks waiting for it are dropped; a later reference to the CID
    /// (a re-broadcast of one of them, say) asks for it again.
    pub fn fetch_failed(&mut self, cid: Cid, out: &mut Vec<Output>) -> Result<(), StoreError> {
        if self.snapshot_failed(cid, out) {
            return Ok(());
        }
        self.blocks.fetch_failed(cid, out)
    }

    /// A block from our own storage, at start, in round order (batches are read from the store
    /// when their block is accepted). Nothing is stored again; our own blocks set the round we
    /// propose next, so that a restarted validator never signs a second block for a round. Leaders
    /// decided on the way commit at once (nothing is proposed), so that the blocks below each new
    /// floor leave memory while the rest is still being read.
    pub fn restore(&mut self, bytes: Bytes, out: &mut Vec<Output>) -> Result<(), StoreError> {
        self.blocks.set_restoring(true);
        self.blocks.receive(bytes, Source::Disk, out)?;
        self.blocks.drain(out)?;
        self.take_own();
        self.commit(out)?;
        self.blocks.set_restoring(false);
        Ok(())
    }

    /// Accepts up to `DRAIN_BUDGET` more blocks whose dependencies all arrived, then proposes and
    /// commits what that allows. The node calls it while [`Core::has_backlog`].
    pub fn resume(&mut self, now_ms: u64, out: &mut Vec<Output>) -> Result<(), StoreError> {
        self.blocks.drain(out)?;
        self.after_change(now_ms, out)
    }

    /// Whether blocks are ready to be accepted (a long history arrived all at once).
    pub fn has_backlog(&self) -> bool {
        self.blocks.has_backlog()
    }

    /// A client's transaction, to include in one of our blocks once the signer's transactions
    /// before it are near (see `pool`). Returns its ID; submitting one that is still waiting here
    /// again changes nothing.
    pub fn submit(&mut self, tx: SignedTransaction) -> Result<Cid, SubmitError> {
        if self.proposer.is_none() {
            return Err(SubmitError::NotValidator);
        }
        if self.joining() {
            return Err(SubmitError::Joining);
        }
        let encoded = encode(&tx);
        let id = cid_of(&encoded);
        let next = self.executor.state().account(tx.tx.signer()).nonce;
        if tx.tx.nonce() < next {
            return Err(SubmitError::StaleNonce {
                next,
                got: tx.tx.nonce(),
            });
        }
        tx.verify(&self.chain)?;
        let (nonce, limits) = (tx.tx.nonce(), self.pool_limits());
        let size = encoded.len() as u64;
        self.pool
            .submit((tx, id, size), next, self.now_ms, &limits)
            .map_err(|refusal| match refusal {
                Refusal::Full => SubmitError::Full(limits.total),
                Refusal::SignerFull => SubmitError::SignerFull(limits.per_signer),
                Refusal::NonceTaken => SubmitError::NonceTaken(nonce),
            })?;
        Ok(id)
    }

    /// Time passed: propose if a leader wait ran out, re-broadcast, re-queue stale transactions.
    pub fn tick(&mut self, now_ms: u64, out: &mut Vec<Output>) -> Result<(), StoreError> {
        self.join_tick(now_ms, out)?;
        self.after_change(now_ms, out)?;
        if now_ms >= self.last_expiry_ms + EXPIRY_INTERVAL_MS {
            self.last_expiry_ms = now_ms;
            let (state, limits) = (self.executor.state(), self.pool_limits());
            let expired = self
                .pool
                .expire(now_ms, |k| state.account(k).nonce, &limits);
            if !expired.is_empty() {
                tracing::info!(count = expired.len(), "held transactions expired");
            }
        }
        if let Some(bytes) = self.proposer.as_mut().and_then(|p| p.rebroadcast(now_ms)) {
            out.push(Output::Broadcast(bytes));
        }
        Ok(())
    }

    /// The earliest time at which [`Core::tick`] has something to do, unless an input comes first
    /// (a block, a fetch, a transaction): propose, re-broadcast, or drop expired transactions. The
    /// shell sleeps until then.
    pub fn next_wake(&self) -> Option<u64> {
        let proposer = self.proposer.as_ref().and_then(|p| p.next_wake());
        let expiry = (self.pool.len() > 0).then_some(self.last_expiry_ms + EXPIRY_INTERVAL_MS);
        [proposer, expiry].into_iter().flatten().min()
    }

    pub(super) fn after_change(
        &mut self,
        now_ms: u64,
        out: &mut Vec<Output>,
    ) -> Result<(), StoreError> {
        self.now_ms = self.now_ms.max(now_ms);
        self.take_own();
        self.commit(out)?;
        while self.try_propose(now_ms, out)? {
            self.commit(out)?;
        }
        Ok(())
    }

    /// Proposes our next block if it is due. True when it proposed.
    fn try_propose(&mut self, now_ms: u64, out: &mut Vec<Output>) -> Result<bool, StoreError> {
        let busy = self.blocks.has_unordered() || self.pool.has_work();
        let Some(proposer) = self.proposer.as_mut().filter(|_| self.joining.is_none()) else {
            return Ok(false);
        };
        let Some(round) = proposer.due(self.blocks.dag(), &self.committee, now_ms, busy) else {
            return Ok(false);
        };
        let payload = self.payload(round, out)?;
        let Some(proposer) = &mut self.proposer else {
            return Ok(false);
        };
        let checkpoint = self.executor.checkpoint();
        let (cid, signed, bytes) =
            proposer.sign(self.blocks.dag(), round, payload, checkpoint, now_ms);
        // Accepted (and so output to be stored) before it is output to be broadcast: the node
        // writes it durably before anything else sees it.
        self.blocks.admit(cid, signed, bytes.clone(), false, out)?;
        out.push(Output::Broadcast(bytes));
        Ok(true)
    }

    /// Tells the proposer of our own blocks the block manager accepted from elsewhere, at once,
    /// so that its round, re-broadcast and wake time never lag what is accepted.
    pub(super) fn take_own(&mut self) {
        if let (Some(own), Some(proposer)) = (self.blocks.take_own(), &mut self.proposer) {
            proposer.observed(own);
        }
    }

    /// Takes transactions from the pool into a payload, inline or as a batch.
    fn payload(&mut self, round: u64, out: &mut Vec<Output>) -> Result<Payload, StoreError> {
        let room = Room {
            transactions: self.config.max_block_transactions,
            bytes: self.config.max_block_bytes.saturating_sub(1024),
        };
        let (state, limits) = (self.executor.state(), self.pool_limits());
        let (txs, size) = self
            .pool
            .take(round, room, |k| state.account(k).nonce, &limits);
        if size <= self.config.inline_bytes {
            return Ok(Payload::Inline(txs));
        }
        let bytes = Bytes::from(encode(&txs));
        let cid = cid_of(&bytes);
        let size = bytes.len() as u64;
        let payload = Payload::Batch {
            cid,
            count: txs.len() as u64,
            size,
        };
        self.blocks.put_batch(&cid, &bytes)?;
        out.push(Output::Store {
            cid,
            bytes,
            batch: true,
            own: true,
        });
        Ok(payload)
    }

    /// Takes in the checkpoints that newly accepted blocks name; a certificate they complete for a
    /// checkpoint we executed must name the root we computed.
    fn take_checkpoints(&mut self) {
        for (author, checkpoint, bytes) in self.blocks.take_named() {
            let committee = &self.committee;
            let Some(certificate) = self
                .checkpoints
                .named(author, checkpoint, &bytes, committee)
            else {
                continue;
            };
            let height = certificate.checkpoint.height;
            let ours = self.executor.executed_checkpoint(height);
            if ours.is_some_and(|ours| ours != certificate.checkpoint) {
                self.checkpoint_mismatches += 1;
                tracing::error!(
                    height,
                    certified = %certificate.checkpoint.state_root,
                    ours = ?ours.map(|c| c.state_root.to_string()),
                    "a quorum certified another state than the one this node computed"
                );
            }
        }
    }

    /// Commits every newly decided leader: orders its history and applies its transactions.
    fn commit(&mut self, out: &mut Vec<Output>) -> Result<(), StoreError> {
        self.take_checkpoints();
        if !self.may_decide() {
            return Ok(());
        }
        for (round, leader) in self.executor.decide(self.blocks.dag(), &self.committee) {
            if self.executor.joining().is_some() {
                self.replay_decision(round, leader, out);
                continue;
            }
            let Some(leader) = leader else {
                self.skipped_slots += 1;
                continue;
            };
            let Executed {
                commit,
                tree,
                dropped,
                waiting,
            } = self.executor.execute(self.blocks.dag(), round, leader);
            self.blocks.ordered(&commit.blocks);
            for (id, _) in &commit.transactions {
                self.pool.ordered(id);
            }
            for id in &waiting {
                self.pool.ordered(id);
            }
            self.committed_transactions += commit.transactions.len() as u64;
            tracing::debug!(height = commit.height, round, %leader, blocks = commit.blocks.len(), "committed");
            let commit = Arc::new(commit);
            out.push(Output::Committed {
                commit,
                tree,
                dropped,
            });
            if let Some(floor) = self.blocks.collect_garbage(round)? {
                self.executor.prune_below(floor);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use crate::{
        core::{Core, CoreConfig, Output},
        devnet::{self, Role},
        types::SignedBlock,
    };

    /// Validators exchanging every block at once, in steps of virtual time; what is sent to the
    /// `held` one waits until it is released.
    struct Net {
        cores: Vec<Core>,
        now: u64,
        held: Option<usize>,
        stash: Vec<Bytes>,
    }

    impl Net {
        fn new(validators: usize) -> Net {
            let genesis = devnet::genesis("t", 1, validators, 0, 0);
            let config = CoreConfig {
                idle_block_interval: std::time::Duration::from_millis(5),
                ..CoreConfig::default()
            };
            let cores = (0..validators)
                .map(|i| {
                    let key = devnet::key(1, Role::Validator, i);
                    Core::new(&genesis, Some(key), config.clone())
                })
                .collect();
            Net {
                cores,
                now: 0,
                held: None,
                stash: Vec::new(),
            }
        }

        /// 10 ms later: every validator is told the time, and what they propose is delivered
        /// until nothing more is. Returns the blocks proposed, as (author, round).
        fn step(&mut self) -> Vec<(u32, u64)> {
            self.now += 10;
            let mut sent = Vec::new();
            for i in 0..self.cores.len() {
                let mut out = Vec::new();
                self.cores[i].tick(self.now, &mut out).expect("in memory");
                sent.extend(broadcasts(i, out));
            }
            self.deliver(sent)
        }

        /// Hands the held validator everything sent to it, and delivers what follows.
        fn release(&mut self) -> Vec<(u32, u64)> {
            let late = self.held.take().expect("a validator is held");
            let mut sent = Vec::new();
            for bytes in std::mem::take(&mut self.stash) {
                sent.extend(self.receive(late, bytes));
            }
            self.deliver(sent)
        }

        fn receive(&mut self, to: usize, bytes: Bytes) -> Vec<(usize, Bytes)> {
            let (core, mut out) = (&mut self.cores[to], Vec::new());
            core.receive(self.now, bytes, &mut out).expect("in memory");
            while core.has_backlog() {
                core.resume(self.now, &mut out).expect("in memory");
            }
            broadcasts(to, out)
        }

        fn deliver(&mut self, mut queue: Vec<(usize, Bytes)>) -> Vec<(u32, u64)> {
            let mut proposed = rounds(&queue);
            while let Some((from, bytes)) = queue.pop() {
                for to in (0..self.cores.len()).filter(|&to| to != from) {
                    if self.held == Some(to) {
                        self.stash.push(bytes.clone());
                        continue;
                    }
                    let sent = self.receive(to, bytes.clone());
                    proposed.extend(rounds(&sent));
                    queue.extend(sent);
                }
            }
            proposed
        }
    }

    fn broadcasts(from: usize, out: Vec<Output>) -> Vec<(usize, Bytes)> {
        out.into_iter()
            .filter_map(|output| match output {
                Output::Broadcast(bytes) => Some((from, bytes)),
                _ => None,
            })
            .collect()
    }

    fn rounds(sent: &[(usize, Bytes)]) -> Vec<(u32, u64)> {
        sent.iter()
            .map(|(_, bytes)| {
                let block = SignedBlock::decode(bytes).expect("our own encoding").block;
                (block.author, block.round)
            })
            .collect()
    }

    /// A leader that falls behind, and finds its round complete without it, still proposes its
    /// block for that round: the others wait for it (up to `leader_timeout`) before they go on.
    #[test]
    fn a_late_leader_proposes_the_round_it_leads_rather_than_skipping_it() {
        let mut net = Net::new(4);
        let round = 3;
        let late = net.cores[0].committee.leader(round);
        net.held = Some(late as usize);
        for _ in 0..10 {
            net.step();
        }
        // 100 ms in, well within the leader timeout: the others completed the late leader's round
        // and wait for its block there.
        for (i, core) in net.cores.iter().enumerate() {
            let expected = if i == late as usize { 1 } else { round + 1 };
            assert_eq!(
                core.proposer.as_ref().unwrap().round(),
                expected,
                "validator {i}"
            );
        }
        // It gets everything at once, answers round 0's quorum at once, and its next block is due
        // one block interval later.
        let mut proposed = net.release();
        assert_eq!(proposed, [(late, 1)]);
        proposed = net.step();
        assert!(
            proposed.contains(&(late, round)),
            "the late leader skipped its round: {proposed:?}"
        );
        for other in (0..4).filter(|&a| a != late) {
            assert!(
                proposed.contains(&(other, round + 1)),
                "validator {other} went on at once: {proposed:?}"
            );
        }
        assert!(net
            .cores
            .iter()
            .all(|core| core.stats().leader_timeouts == 0));
    }
}
