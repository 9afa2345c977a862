//! The transaction pool: transactions submitted here that wait for one of our blocks, or, once in
//! one, for their commit.
//!
//! Transactions are kept by signer and nonce, so the arrival order of a client's concurrent
//! requests does not matter: a block takes each signer's transactions in nonce order, and takes
//! those up to [`WAIT_WINDOW`] ahead of the signer's committed nonce, gaps and all, since an
//! ordered transaction waits for the ones before it (`State::execute`). Those further ahead are
//! **held** here until the committed nonce comes within the window, or expire after
//! `queued_timeout`. Every order here is a `BTreeMap`'s, so it is the same on every run.

use std::collections::{btree_map::Entry as Slot, BTreeMap, HashMap, HashSet, VecDeque};

use comms::Cid;

use crate::{state::WAIT_WINDOW, PublicKey, SignedTransaction};

/// Expired transactions remembered, so that their status says so.
const REMEMBERED_EXPIRED: usize = 100_000;

/// Why the pool refused a transaction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// The pool holds its limit.
    Full,
    /// The signer has its limit in the pool.
    SignerFull,
    /// Another transaction of the signer with this nonce waits here.
    NonceTaken,
}

/// Where a transaction of the pool stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Place {
    /// Waiting for a block; `held` when too far ahead of its signer's nonce to be proposed.
    Queued { held: bool },
    /// In one of our blocks, not yet ordered.
    InFlight,
    /// Held too long: dropped.
    Expired,
}

/// The pool's bounds.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Limits {
    pub total: usize,
    pub per_signer: usize,
    pub queued_timeout_ms: u64,
    pub resubmit_after_rounds: u64,
}

#[derive(Clone, Debug)]
struct Entry {
    tx: SignedTransaction,
    id: Cid,
    /// Its encoded size.
    size: u64,
    /// When it was submitted (or requeued).
    at_ms: u64,
}

/// What [`Pool::take`] may put in one block.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Room {
    pub transactions: u64,
    pub bytes: u64,
}

#[derive(Default)]
pub(crate) struct Pool {
    queued: BTreeMap<PublicKey, BTreeMap<u64, Entry>>,
    /// In our block of the round, by round and ID.
    inflight: BTreeMap<(u64, Cid), Entry>,
    /// The signer and nonce of each in-flight transaction (looked up only).
    inflight_nonces: HashSet<(PublicKey, u64)>,
    /// Every queued or in-flight transaction: its signer and nonce, or its round (looked up only).
    ids: HashMap<Cid, Where>,
    /// How many each signer has queued.
    per_signer: HashMap<PublicKey, usize>,
    /// The signer served first by the next block (rotates, so that none always goes first).
    first: Option<PublicKey>,
    expired: VecDeque<Cid>,
    expired_ids: HashSet<Cid>,
    /// Whether queued transactions within their signer's window wait (see [`Pool::has_work`]).
    ready: bool,
}

#[derive(Clone, Copy, Debug)]
enum Where {
    Queued(PublicKey, u64),
    InFlight(u64),
}

impl Pool {
    /// Transactions queued or in flight.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Whether a block of ours has work: transactions in flight (they may need proposing again),
    /// or queued ones within the window of their signer's committed nonce (as of the last
    /// [`Pool::take`] or [`Pool::expire`], or a submission since).
    pub fn has_work(&self) -> bool {
        !self.inflight.is_empty() || self.ready
    }

    /// Whether some signer's first queued transaction is within its window.
    fn any_ready(&self, nonce_of: impl Fn(&PublicKey) -> u64) -> bool {
        self.queued.iter().any(|(signer, nonces)| {
            nonces
                .first_key_value()
                .is_some_and(|(n, _)| *n < nonce_of(signer).saturating_add(WAIT_WINDOW))
        })
    }

    /// Adds a verified transaction with ID `id` and encoded size `size`, whose signer's committed
    /// nonce is `next`; one already here is kept.
    pub fn submit(
        &mut self,
        (tx, id, size): (SignedTransaction, Cid, u64),
        next: u64,
        now_ms: u64,
        limits: &Limits,
    ) -> Result<(), Refusal> {
        if self.ids.contains_key(&id) {
            return Ok(());
        }
        if self.ids.len() >= limits.total {
            return Err(Refusal::Full);
        }
        let signer = *tx.tx.signer();
        let count = self.per_signer.get(&signer).copied().unwrap_or(0);
        if count >= limits.per_signer {
            return Err(Refusal::SignerFull);
        }
        let nonce = tx.tx.nonce();
        if self.inflight_nonces.contains(&(signer, nonce)) {
            return Err(Refusal::NonceTaken);
        }
        let Slot::Vacant(slot) = self.queued.entry(signer).or_default().entry(nonce) else {
            return Err(Refusal::NonceTaken);
        };
        slot.insert(Entry {
            tx,
            id,
            size,
            at_ms: now_ms,
        });
        self.ids.insert(id, Where::Queued(signer, nonce));
        self.per_signer.insert(signer, count + 1);
        self.ready |= nonce < next.saturating_add(WAIT_WINDOW);
        if self.expired_ids.remove(&id) {
            self.expired.retain(|e| *e != id);
        }
        Ok(())
    }

    /// Where transaction `id` stands, given each signer's committed nonce.
    pub fn place(&self, id: &Cid, nonce_of: impl Fn(&PublicKey) -> u64) -> Option<Place> {
        match self.ids.get(id) {
            Some(Where::Queued(signer, nonce)) => Some(Place::Queued {
                held: *nonce >= nonce_of(signer).saturating_add(WAIT_WINDOW),
            }),
            Some(Where::InFlight(_)) => Some(Place::InFlight),
            None => self.expired_ids.contains(id).then_some(Place::Expired),
        }
    }

    /// Transaction `id` was ordered: it leaves the pool.
    pub fn ordered(&mut self, id: &Cid) {
        match self.ids.remove(id) {
            Some(Where::Queued(signer, nonce)) => {
                self.unqueue(&signer, nonce);
            }
            Some(Where::InFlight(round)) => {
                if let Some(entry) = self.inflight.remove(&(round, *id)) {
                    self.inflight_nonces
                        .remove(&(*entry.tx.tx.signer(), entry.tx.tx.nonce()));
                }
            }
            None => {}
        }
    }

    fn unqueue(&mut self, signer: &PublicKey, nonce: u64) -> Option<Entry> {
        let nonces = self.queued.get_mut(signer)?;
        let entry = nonces.remove(&nonce);
        if nonces.is_empty() {
            self.queued.remove(signer);
        }
        match self.per_signer.get_mut(signer) {
            Some(count) if *count > 1 => *count -= 1,
            _ => {
                self.per_signer.remove(signer);
            }
        }
        entry
    }

    /// The transactions for our block of `round`: first in-flight ones that have waited
    /// `resubmit_after_rounds` without being ordered go back to the queue; then each signer's
    /// queued ones in nonce order, from its committed nonce up to the window, signer after signer.
    /// Returns them with their encoded size (plus a byte each for the list).
    pub fn take(
        &mut self,
        round: u64,
        room: Room,
        nonce_of: impl Fn(&PublicKey) -> u64,
        limits: &Limits,
    ) -> (Vec<SignedTransaction>, u64) {
        self.requeue_stale(round.saturating_sub(limits.resubmit_after_rounds));
        let signers = self.signers_in_turn();
        self.first = signers.get(1).or(signers.first()).copied();
        let (mut taken, mut bytes) = (Vec::new(), 0u64);
        'signers: for signer in signers {
            let next = nonce_of(&signer);
            let window = next.saturating_add(WAIT_WINDOW);
            let nonces: Vec<u64> = match self.queued.get(&signer) {
                Some(nonces) => nonces.range(..window).map(|(n, _)| *n).collect(),
                None => continue,
            };
            for nonce in nonces {
                let size = self.queued[&signer][&nonce].size + 1;
                if nonce >= next
                    && (taken.len() as u64 >= room.transactions || bytes + size > room.bytes)
                {
                    break 'signers;
                }
                let Some(entry) = self.unqueue(&signer, nonce) else {
                    continue;
                };
                if nonce < next {
                    // Its nonce was used meanwhile (it committed through another validator, or
                    // another transaction took its place): it can never take effect.
                    self.ids.remove(&entry.id);
                    continue;
                }
                bytes += size;
                taken.push(entry.tx.clone());
                self.ids.insert(entry.id, Where::InFlight(round));
                self.inflight_nonces.insert((signer, nonce));
                self.inflight.insert((round, entry.id), entry);
            }
        }
        self.ready = self.any_ready(&nonce_of);
        (taken, bytes)
    }

    /// The signers with queued transactions, starting from the one whose turn it is.
    fn signers_in_turn(&self) -> Vec<PublicKey> {
        let Some(first) = self.first else {
            return self.queued.keys().copied().collect();
        };
        let later = self.queued.range(first..).map(|(k, _)| *k);
        later
            .chain(self.queued.range(..first).map(|(k, _)| *k))
            .collect()
    }

    fn requeue_stale(&mut self, before: u64) {
        while let Some(entry) = self.inflight.first_entry() {
            if entry.key().0 >= before {
                return;
            }
            let entry = entry.remove();
            let (signer, nonce) = (*entry.tx.tx.signer(), entry.tx.tx.nonce());
            self.inflight_nonces.remove(&(signer, nonce));
            match self.queued.entry(signer).or_default().entry(nonce) {
                Slot::Vacant(slot) => {
                    self.ids.insert(entry.id, Where::Queued(signer, nonce));
                    *self.per_signer.entry(signer).or_default() += 1;
                    slot.insert(entry);
                }
                Slot::Occupied(_) => {
                    // Another transaction took its nonce meanwhile; at most one can take effect.
                    self.ids.remove(&entry.id);
                }
            }
        }
    }

    /// Drops the held transactions submitted `queued_timeout` ago or earlier, and those whose
    /// nonce was used meanwhile. Returns the IDs of the expired ones.
    pub fn expire(
        &mut self,
        now_ms: u64,
        nonce_of: impl Fn(&PublicKey) -> u64,
        limits: &Limits,
    ) -> Vec<Cid> {
        let mut dropped = Vec::new();
        for (signer, nonces) in &self.queued {
            let next = nonce_of(signer);
            let window = next.saturating_add(WAIT_WINDOW);
            let stale = nonces.range(..next).map(|(n, e)| (*n, e.id, false));
            let held = nonces
                .range(window..)
                .filter(|(_, e)| e.at_ms + limits.queued_timeout_ms <= now_ms)
                .map(|(n, e)| (*n, e.id, true));
            dropped.extend(
                stale
                    .chain(held)
                    .map(|(n, id, expired)| (*signer, n, id, expired)),
            );
        }
        let mut expired = Vec::new();
        for (signer, nonce, id, is_expired) in dropped {
            self.unqueue(&signer, nonce);
            self.ids.remove(&id);
            if is_expired {
                self.remember_expired(id);
                expired.push(id);
            }
        }
        self.ready = self.any_ready(&nonce_of);
        expired
    }

    fn remember_expired(&mut self, id: Cid) {
        if self.expired.len() >= REMEMBERED_EXPIRED {
            if let Some(old) = self.expired.pop_front() {
                self.expired_ids.remove(&old);
            }
        }
        self.expired.push_back(id);
        self.expired_ids.insert(id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        devnet::{self, Role},
        Transaction,
    };

    const LIMITS: Limits = Limits {
        total: 8,
        per_signer: 5,
        queued_timeout_ms: 1000,
        resubmit_after_rounds: 3,
    };
    const ROOM: Room = Room {
        transactions: 100,
        bytes: 1 << 20,
    };

    fn signer(i: usize) -> PublicKey {
        devnet::key(1, Role::Account, i).public()
    }

    /// Account `from`'s transfer with `nonce`, as the pool takes it.
    fn tx(from: usize, nonce: u64) -> (SignedTransaction, Cid, u64) {
        let chain = devnet::genesis("pool", 1, 1, 0, 0).encode().1;
        let tx = Transaction::Transfer {
            from: signer(from),
            to: signer(99),
            amount: 1,
            nonce,
        };
        let signed = SignedTransaction::sign(&chain, tx, &devnet::key(1, Role::Account, from));
        let id = signed.id();
        (signed, id, 100)
    }

    fn nonces(taken: &[SignedTransaction]) -> Vec<(PublicKey, u64)> {
        taken
            .iter()
            .map(|t| (*t.tx.signer(), t.tx.nonce()))
            .collect()
    }

    #[test]
    fn a_signers_transactions_arriving_in_any_order_are_taken_in_nonce_order() {
        let mut pool = Pool::default();
        for nonce in [3, 1, 0, 2] {
            pool.submit(tx(0, nonce), 0, 0, &LIMITS).unwrap();
        }
        assert!(pool.has_work());
        let (taken, bytes) = pool.take(1, ROOM, |_| 0, &LIMITS);
        assert_eq!(
            nonces(&taken),
            (0..4).map(|n| (signer(0), n)).collect::<Vec<_>>()
        );
        assert_eq!(bytes, 4 * 101);
        assert_eq!(pool.place(&tx(0, 2).1, |_| 0), Some(Place::InFlight));
        pool.ordered(&tx(0, 2).1);
        assert_eq!((pool.len(), pool.place(&tx(0, 2).1, |_| 0)), (3, None));
    }

    #[test]
    fn the_pool_refuses_beyond_its_limits_and_a_second_transaction_for_a_nonce() {
        let mut pool = Pool::default();
        for nonce in 0..5 {
            pool.submit(tx(0, nonce), 0, 0, &LIMITS).unwrap();
        }
        assert_eq!(pool.submit(tx(0, 0), 0, 0, &LIMITS), Ok(()), "already here");
        assert_eq!(
            pool.submit(tx(0, 5), 0, 0, &LIMITS),
            Err(Refusal::SignerFull)
        );
        let mut other = tx(1, 0);
        pool.submit(other.clone(), 0, 0, &LIMITS).unwrap();
        other.0.signature = tx(1, 1).0.signature;
        other.1 = tx(1, 1).1;
        assert_eq!(pool.submit(other, 0, 0, &LIMITS), Err(Refusal::NonceTaken));
        for nonce in 1..3 {
            pool.submit(tx(1, nonce), 0, 0, &LIMITS).unwrap();
        }
        assert_eq!(pool.submit(tx(2, 0), 0, 0, &LIMITS), Err(Refusal::Full));
        pool.take(1, ROOM, |_| 0, &LIMITS);
        assert_eq!(
            pool.submit(tx(0, 4), 0, 0, &LIMITS),
            Ok(()),
            "in flight: the same one"
        );
    }

    #[test]
    fn a_transaction_beyond_the_window_is_held_then_expires_with_its_status_kept() {
        let mut pool = Pool::default();
        let far = tx(0, WAIT_WINDOW);
        pool.submit(far.clone(), 0, 0, &LIMITS).unwrap();
        assert!(!pool.has_work(), "nothing to propose");
        assert_eq!(
            pool.place(&far.1, |_| 0),
            Some(Place::Queued { held: true })
        );
        assert!(pool.take(1, ROOM, |_| 0, &LIMITS).0.is_empty());
        assert_eq!(
            pool.place(&far.1, |_| 1),
            Some(Place::Queued { held: false })
        );
        assert!(pool.expire(999, |_| 0, &LIMITS).is_empty());
        assert_eq!(pool.expire(1000, |_| 0, &LIMITS), [far.1]);
        assert_eq!(
            (pool.len(), pool.place(&far.1, |_| 0)),
            (0, Some(Place::Expired))
        );
    }

    #[test]
    fn a_block_takes_what_fits_and_signers_take_turns_going_first() {
        let mut pool = Pool::default();
        for (from, nonce) in [(0, 0), (0, 1), (1, 0), (1, 1)] {
            pool.submit(tx(from, nonce), 0, 0, &LIMITS).unwrap();
        }
        let room = Room {
            transactions: 1,
            bytes: 1 << 20,
        };
        let mut firsts = Vec::new();
        for round in 1..=4 {
            let (taken, _) = pool.take(round, room, |_| 0, &LIMITS);
            assert_eq!(taken.len(), 1);
            firsts.push(nonces(&taken)[0]);
            pool.ordered(&taken[0].id());
        }
        let mut sorted = firsts.clone();
        sorted.sort();
        assert_ne!(firsts, sorted, "turns alternate: {firsts:?}");
        assert_eq!(pool.len(), 0);
    }

    #[test]
    fn an_unordered_transaction_is_proposed_again_and_one_whose_nonce_was_used_is_dropped() {
        let mut pool = Pool::default();
        pool.submit(tx(0, 0), 0, 0, &LIMITS).unwrap();
        pool.submit(tx(1, 0), 0, 0, &LIMITS).unwrap();
        assert_eq!(pool.take(1, ROOM, |_| 0, &LIMITS).0.len(), 2);
        assert!(
            pool.take(3, ROOM, |_| 0, &LIMITS).0.is_empty(),
            "not stale yet"
        );
        // By round 5, signer 1's nonce 0 was used elsewhere.
        let nonce_of = |k: &PublicKey| u64::from(*k == signer(1));
        let (again, _) = pool.take(5, ROOM, nonce_of, &LIMITS);
        assert_eq!(nonces(&again), [(signer(0), 0)]);
        assert_eq!(pool.len(), 1);
    }
}
