//! Receiving blocks: validate, wait for missing ancestors and batches (fetching them), accept in
//! causal order. Iterative throughout, so a history of any depth costs no stack.

use std::sync::Arc;

use bytes::Bytes;
use comms::Cid;

use super::{fetches::Want, Core, Output, DRAIN_BUDGET};
use crate::{
    codec::{cid_of, decode},
    dag::AcceptedBlock,
    types::{Payload, SignedBlock, SignedTransaction},
    validate::{check_block, check_parents, check_transactions},
    Error,
};

/// How a block's bytes reached the core.
#[derive(Clone, Copy)]
enum Source {
    Broadcast,
    Fetch,
    Disk,
}

impl Core {
    /// Block bytes arrived by broadcast.
    pub fn receive(&mut self, now_ms: u64, bytes: Bytes, out: &mut Vec<Output>) {
        self.receive_block(bytes, Source::Broadcast, out);
        self.after_change(now_ms, out);
    }

    /// A fetch asked for by [`Output::Fetch`] succeeded (the bytes match the CID).
    pub fn fetched(&mut self, now_ms: u64, cid: Cid, bytes: Bytes, out: &mut Vec<Output>) {
        match self.unwant(cid, out) {
            Some(Want { batch: true, .. }) => self.receive_batch(cid, bytes, out),
            Some(Want { batch: false, .. }) => self.receive_block(bytes, Source::Fetch, out),
            None => {}
        }
        self.after_change(now_ms, out);
    }

    /// A block from our own storage, at start, in round order (batches are read from the store
    /// when their block is accepted). Nothing is stored again; our own blocks set the round we
    /// propose next, so that a restarted validator never signs a second block for a round. Leaders
    /// decided on the way commit at once (nothing is proposed), so that the blocks below each new
    /// floor leave memory while the rest is still being read.
    pub fn restore(&mut self, bytes: Bytes, out: &mut Vec<Output>) {
        self.restoring = true;
        self.receive_block(bytes, Source::Disk, out);
        self.drain(out);
        self.commit(out);
        self.restoring = false;
    }

    /// Accepts up to [`DRAIN_BUDGET`] more blocks whose dependencies all arrived, then proposes and
    /// commits what that allows. The node calls it while [`Core::has_backlog`].
    pub fn resume(&mut self, now_ms: u64, out: &mut Vec<Output>) {
        self.drain(out);
        self.after_change(now_ms, out);
    }

    /// Whether blocks are ready to be accepted (a long history arrived all at once).
    pub fn has_backlog(&self) -> bool {
        !self.ready.is_empty()
    }

    /// A fetch failed for good: the blocks waiting for it are dropped; a later reference to the CID
    /// (a re-broadcast of one of them, say) asks for it again.
    pub fn fetch_failed(&mut self, cid: Cid, out: &mut Vec<Output>) {
        self.unwant(cid, out);
        self.discard_descendants(cid);
    }

    /// Asks for `dependency` on behalf of a block by `author` (see [`super::fetches::Fetches::want`]).
    fn want(&mut self, dependency: Cid, batch: bool, author: u32, out: &mut Vec<Output>) {
        if let Some(now) = self.fetches.want(dependency, batch, author) {
            out.push(Output::Fetch(now));
        }
    }

    /// `cid` is no longer being fetched: frees its author's turn for the next queued fetch.
    fn unwant(&mut self, cid: Cid, out: &mut Vec<Output>) -> Option<Want> {
        let (want, next) = self.fetches.unwant(&cid);
        out.extend(next.map(Output::Fetch));
        want
    }

    fn receive_block(&mut self, bytes: Bytes, source: Source, out: &mut Vec<Output>) {
        let cid = cid_of(&bytes);
        if self.dag.contains(&cid) || self.parking.contains(&cid) || self.refused.contains(&cid) {
            return;
        }
        let checked = SignedBlock::decode(&bytes).and_then(|block| {
            // Accepted before, and since left memory (a late re-broadcast): nothing to check again.
            if block.block.round < self.floor && self.knows(&cid) {
                return Ok(None);
            }
            check_block(
                &block,
                bytes.len(),
                &self.chain,
                &self.committee,
                &self.limits,
            )?;
            Ok(Some(block))
        });
        match checked {
            Ok(None) => {}
            Ok(Some(block)) => {
                match source {
                    Source::Broadcast => self.stats.new_blocks_by_broadcast += 1,
                    Source::Fetch => self.stats.new_blocks_by_fetch += 1,
                    Source::Disk => {}
                }
                let broadcast = matches!(source, Source::Broadcast);
                self.admit(cid, block, bytes, broadcast, out)
            }
            Err(error) => self.reject(Some(cid), error, out),
        }
    }

    fn receive_batch(&mut self, cid: Cid, bytes: Bytes, out: &mut Vec<Output>) {
        let checked = decode::<Vec<SignedTransaction>>(&bytes).and_then(|txs| {
            check_transactions(&txs, &self.chain, &self.limits)?;
            Ok(txs)
        });
        match checked {
            Ok(_) => {
                self.parking.put_batch(&cid, &bytes);
                if !self.restoring {
                    out.push(Output::Store {
                        cid,
                        bytes,
                        batch: true,
                        own: false,
                    });
                }
                self.resolved(cid, out);
            }
            Err(error) => self.reject(Some(cid), error, out),
        }
    }

    /// A valid block: accepted now if its dependencies are here, else parked until they are.
    /// `broadcast`: it came unasked, so it counts against its author's parked broadcasts.
    pub(super) fn admit(
        &mut self,
        cid: Cid,
        block: SignedBlock,
        bytes: Bytes,
        broadcast: bool,
        out: &mut Vec<Output>,
    ) {
        let mut missing: Vec<(Cid, bool)> = block
            .block
            .parents
            .iter()
            .filter(|p| !self.knows(p))
            .map(|p| (*p, false))
            .collect();
        if let Payload::Batch { cid: batch, .. } = &block.block.payload {
            if !self.parking.has_batch(batch) {
                missing.push((*batch, true));
            }
        }
        let author = block.block.author;
        let slot = author as usize;
        let parked = self.parked_broadcasts_by_author[slot];
        if broadcast && !missing.is_empty() && parked >= self.config.parked_broadcasts_per_author {
            return self.report(Some(cid), Error::ParkingFull { author, parked }, out);
        }
        // A parked dependency is here already, only waiting itself: nothing to fetch for it.
        let to_fetch: Vec<(Cid, bool)> = missing
            .iter()
            .copied()
            .filter(|(dependency, _)| !self.parking.contains(dependency))
            .collect();
        let new = to_fetch
            .iter()
            .filter(|(d, _)| !self.fetches.contains(d))
            .count();
        let room = self.fetches.room(author);
        let (queued, to_queue) = (self.fetches.queued(author), new.saturating_sub(room));
        if to_queue > 0 && queued + to_queue > self.config.queued_fetches_per_author {
            let error = Error::FetchQueueFull { author, queued };
            return self.report(Some(cid), error, out);
        }
        for (dependency, batch) in to_fetch {
            self.want(dependency, batch, author, out);
        }
        if missing.is_empty() {
            if self.insert(cid, block, bytes, out) {
                self.resolved(cid, out);
            } else {
                self.discard_descendants(cid);
            }
        } else {
            let missing: Vec<Cid> = missing.into_iter().map(|(cid, _)| cid).collect();
            self.parking.park(&cid, &bytes, &missing);
            if broadcast {
                self.parked_broadcasts.insert(cid, author);
                self.parked_broadcasts_by_author[slot] += 1;
            }
        }
    }

    /// Block `cid` left the parking (accepted or discarded): if it came by broadcast, its
    /// author has room for one more.
    fn unparked(&mut self, cid: &Cid) {
        if let Some(author) = self.parked_broadcasts.remove(cid) {
            let count = &mut self.parked_broadcasts_by_author[author as usize];
            *count = count.saturating_sub(1);
        }
    }

    /// `dependency` is now here: the blocks that waited only for it are ready, and are accepted
    /// (and theirs after them) up to the budget.
    fn resolved(&mut self, dependency: Cid, out: &mut Vec<Output>) {
        self.ready.extend(self.parking.resolve(&dependency));
        self.drain(out);
    }

    /// Accepts ready blocks, in causal order, until none is left or [`DRAIN_BUDGET`] were: a
    /// history that arrives all at once is taken in slices, so that what the node writes and sends
    /// for it never piles up, and commands and fetches are served in between.
    fn drain(&mut self, out: &mut Vec<Output>) {
        let mut budget = DRAIN_BUDGET;
        while budget > 0 {
            let Some(cid) = self.ready.pop() else {
                return;
            };
            let Some(bytes) = self.parking.take(&cid) else {
                continue;
            };
            self.unparked(&cid);
            budget -= 1;
            let inserted = match SignedBlock::decode(&bytes) {
                Ok(block) => self.insert(cid, block, bytes, out),
                Err(error) => {
                    self.reject(Some(cid), error, out);
                    false
                }
            };
            match inserted {
                true => self.ready.extend(self.parking.resolve(&cid)),
                false => self.discard_descendants(cid),
            }
        }
    }

    /// Checks a block against its parents and batch, and adds it to the DAG.
    fn insert(
        &mut self,
        cid: Cid,
        block: SignedBlock,
        bytes: Bytes,
        out: &mut Vec<Output>,
    ) -> bool {
        let parents: Vec<(u32, u64)> = block
            .block
            .parents
            .iter()
            .filter_map(|p| self.slot_of(p))
            .collect();
        if let Err(error) = check_parents(
            block.block.author,
            block.block.round,
            &parents,
            &self.committee,
        ) {
            self.reject(Some(cid), error.into(), out);
            return false;
        }
        let transactions = match &block.block.payload {
            Payload::Inline(txs) => Arc::new(txs.clone()),
            Payload::Batch {
                cid: batch,
                count,
                size,
            } => match self.batch_of(batch, *count, *size) {
                Some(transactions) => transactions,
                None => {
                    self.reject(
                        Some(cid),
                        Error::BatchMismatch {
                            cid: Box::new(*batch),
                        },
                        out,
                    );
                    return false;
                }
            },
        };
        let (author, round) = (block.block.author, block.block.round);
        if round < self.floor {
            // Valid, but no leader can order it any more (it arrived late, or is replayed from
            // disk): only its slot is kept, for the blocks that link it.
            self.forget(&cid, author, round);
        } else {
            if !transactions.is_empty() {
                self.unordered.insert(cid);
            }
            let accepted = Arc::new(AcceptedBlock {
                cid,
                block,
                bytes: bytes.clone(),
                transactions,
            });
            let others = self.dag.insert(accepted);
            if !others.is_empty() {
                self.stats.equivocations += 1;
                out.push(Output::Equivocation {
                    author,
                    round,
                    blocks: [others, vec![cid]].concat(),
                });
            }
        }
        self.stats.accepted += 1;
        let own = self.me.as_ref().is_some_and(|(me, _)| *me == author);
        if own && round >= self.round {
            self.round = round + 1;
            self.last_own = Some(super::OwnBlock {
                cid,
                round,
                bytes: bytes.clone(),
                at_ms: 0,
            });
        }
        if !self.restoring {
            out.push(Output::Store {
                cid,
                bytes,
                batch: false,
                own,
            });
        }
        true
    }

    /// The transactions of a kept batch, if it has the `count` and encoded `size` a block says.
    fn batch_of(&self, cid: &Cid, count: u64, size: u64) -> Option<Arc<Vec<SignedTransaction>>> {
        let bytes = self.parking.batch(cid)?;
        let transactions: Vec<SignedTransaction> = decode(&bytes).ok()?;
        (transactions.len() as u64 == count && bytes.len() as u64 == size)
            .then(|| Arc::new(transactions))
    }

    /// Drops every parked block that depends, directly or not, on an invalid one.
    fn discard_descendants(&mut self, invalid: Cid) {
        let mut stack = vec![invalid];
        while let Some(cid) = stack.pop() {
            let discarded = self.parking.discard(&cid);
            for child in &discarded {
                self.unparked(child);
            }
            stack.extend(discarded);
        }
    }
}
