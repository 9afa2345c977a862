//! Proposing our blocks, committing leaders, and the mempool.

use std::{sync::Arc, time::Duration};

use bytes::Bytes;
use comms::Cid;

use super::{
    pool::{Refusal, Room},
    Core, Output,
};
use crate::{
    codec::{cid_of, encode},
    consensus::stake_where,
    types::{Block, Payload, SignedBlock, SignedTransaction},
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
}

/// How often the pool drops the held transactions that expired.
const EXPIRY_INTERVAL_MS: u64 = 1000;

fn ms(duration: Duration) -> u64 {
    duration.as_millis() as u64
}

impl Core {
    /// A client's transaction, to include in one of our blocks once the signer's transactions
    /// before it are near (see `pool`). Returns its ID; submitting one that is still waiting here
    /// again changes nothing.
    pub fn submit(&mut self, tx: SignedTransaction) -> Result<Cid, SubmitError> {
        if self.me.is_none() {
            return Err(SubmitError::NotValidator);
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
    pub fn tick(&mut self, now_ms: u64, out: &mut Vec<Output>) {
        self.after_change(now_ms, out);
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
        let Some(own) = &self.last_own else {
            return;
        };
        if now_ms >= self.last_rebroadcast + ms(self.config.rebroadcast_interval) {
            self.last_rebroadcast = now_ms;
            out.push(Output::Broadcast(own.bytes.clone()));
        }
    }

    pub(super) fn after_change(&mut self, now_ms: u64, out: &mut Vec<Output>) {
        self.now_ms = self.now_ms.max(now_ms);
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
        // Catch up: skip rounds the others completed without us, but not one we lead while the
        // others may still wait for our block (until a quorum of the next round forms without it).
        while self.round > 0 && self.round <= self.dag.highest_round() && self.quorum_of(self.round)
        {
            if self.committee.leads(self.round, author) && !self.quorum_of(self.round + 1) {
                break;
            }
            self.round += 1;
        }
        self.propose_at = None;
        let round = self.round;
        let (mut due, mut leader_here) = (0, true);
        if round > 0 {
            if !self.quorum_of(round - 1) {
                return false;
            }
            leader_here = self.has_leader(round - 1);
            let since = *self.quorum_since.get_or_insert(now_ms);
            if !leader_here {
                due = since + ms(self.config.leader_timeout);
            } else if self.stragglers(round - 1) {
                due = since + self.straggler_wait(round - 1, since);
            }
        }
        if let Some(own) = &self.last_own {
            due = due.max(own.at_ms + ms(self.block_interval()));
        }
        if now_ms < due {
            self.propose_at = Some(due);
            return false;
        }
        if !leader_here {
            self.stats.leader_timeouts += 1;
            tracing::debug!(
                round,
                leader = self.committee.leader(round - 1),
                "proposing without the leader"
            );
        }
        self.propose(author, round, now_ms, out);
        true
    }

    /// Whether the first leader of `round` has a block here.
    fn has_leader(&self, round: u64) -> bool {
        let leader = self.committee.leader(round);
        self.dag.slot(round, leader).next().is_some()
    }

    /// Whether a leader of `round` other than its first, which had a block in the round before, has
    /// none in `round` yet. Its slot is likely to be certified if our block votes for it, and left
    /// undecided (holding back every later slot until an anchor decides it) if we propose without.
    fn stragglers(&self, round: u64) -> bool {
        if round == 0 {
            return false;
        }
        let per_round = self.committee.leaders_per_round();
        (1..per_round).any(|k| {
            let (_, author) = self.committee.slot(round * per_round + k);
            self.dag.slot(round, author).next().is_none()
                && self.dag.slot(round - 1, author).next().is_some()
        })
    }

    /// How long after a quorum of `round` formed (at `since`) we wait for its other leaders: as long
    /// again as that quorum took to form after our own block of `round`, so the wait follows the
    /// network's delay, at most `leader_timeout`. Nothing when we did not propose in `round`.
    fn straggler_wait(&self, round: u64, since: u64) -> u64 {
        match &self.last_own {
            Some(own) if own.round == round && own.at_ms > 0 => since
                .saturating_sub(own.at_ms)
                .min(ms(self.config.leader_timeout)),
            _ => 0,
        }
    }

    /// The pace of our blocks: `min_block_interval` while there is work (see `Core::unordered`),
    /// `idle_block_interval` otherwise.
    fn block_interval(&self) -> Duration {
        match !self.unordered.is_empty() || self.pool.has_work() {
            true => self.config.min_block_interval,
            false => self.config.idle_block_interval,
        }
    }

    /// The earliest time at which [`Core::tick`] has something to do, unless an input comes first
    /// (a block, a fetch, a transaction): propose, re-broadcast, or drop expired transactions. The
    /// shell sleeps until then.
    pub fn next_wake(&self) -> Option<u64> {
        let rebroadcast = self
            .last_own
            .as_ref()
            .map(|_| self.last_rebroadcast + ms(self.config.rebroadcast_interval));
        let expiry = (self.pool.len() > 0).then_some(self.last_expiry_ms + EXPIRY_INTERVAL_MS);
        [self.propose_at, rebroadcast, expiry]
            .into_iter()
            .flatten()
            .min()
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

    /// Takes transactions from the pool into a payload, inline or as a batch.
    fn payload(&mut self, round: u64, out: &mut Vec<Output>) -> Payload {
        let room = Room {
            transactions: self.config.max_block_transactions,
            bytes: self.config.max_block_bytes.saturating_sub(1024),
        };
        let (state, limits) = (self.executor.state(), self.pool_limits());
        let (txs, size) = self
            .pool
            .take(round, room, |k| state.account(k).nonce, &limits);
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
            own: true,
        });
        payload
    }

    /// Commits every newly decided leader: orders its history and applies its transactions.
    pub(super) fn commit(&mut self, out: &mut Vec<Output>) {
        for (round, leader) in self.executor.decide(&self.dag, &self.committee) {
            let Some(leader) = leader else {
                self.stats.skipped_slots += 1;
                continue;
            };
            let (commit, waiting) = self.executor.execute(&self.dag, round, leader);
            for cid in &commit.blocks {
                self.unordered.remove(cid);
            }
            for (id, _) in &commit.transactions {
                self.pool.ordered(id);
            }
            for id in &waiting {
                self.pool.ordered(id);
            }
            self.stats.committed_transactions += commit.transactions.len() as u64;
            tracing::debug!(height = commit.height, round, %leader, blocks = commit.blocks.len(), "committed");
            out.push(Output::Committed(Arc::new(commit)));
            self.collect_garbage(round);
        }
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
                self.cores[i].tick(self.now, &mut out);
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
            core.receive(self.now, bytes, &mut out);
            while core.has_backlog() {
                core.resume(self.now, &mut out);
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
            assert_eq!(core.round, expected, "validator {i}");
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
        assert!(net.cores.iter().all(|core| core.stats.leader_timeouts == 0));
    }
}
