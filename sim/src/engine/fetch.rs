//! Blocks: `put`, and `fetch` modelled on bitswap.
//!
//! Model: a fetch sends its want to reachable peers holding the block (at most
//! `max_providers_per_want`, picked at random), each holder answers, and the first response whose
//! bytes verify wins; the fetched block is then kept, so the fetcher serves it too. Every
//! `want_retry` the want goes out again, which heals losses, partitions and blocks that appear
//! later; a holder whose response is on its way is not asked again. A response that does not
//! verify is counted and ignored while others are outstanding, and ends the fetch with
//! `CidMismatch` when none is. At the deadline the fetch ends with `Timeout`. Each leg pays the
//! link's latency and loss; the response leaves after the holder's `serve_delay` and its serving
//! path (see `SenderModel`), and also pays the transfer time of its bytes.

use std::{collections::BTreeSet, time::Duration};

use bytes::Bytes;
use comms::{check_supported, cid_for, verify, Cid, Codec, Error, Operation};
use tokio::sync::oneshot;

use super::{Engine, Event, Path, PeerIdx, NOBODY};
use crate::stats::TraceKind;

/// Bytes a want costs on the wire (a CID and framing).
const WANT_BYTES: usize = 64;

/// A fetch waiting for a verified response.
pub(crate) struct PendingFetch {
    peer: PeerIdx,
    cid: Cid,
    started: u64,
    deadline: u64,
    timeout: Duration,
    /// The holders whose response is on its way: a holder answers a want once, however often
    /// the want is repeated meanwhile (as a bitswap peer's want list is a set).
    answering: BTreeSet<PeerIdx>,
    reply: oneshot::Sender<Result<Bytes, Error>>,
}

impl Engine {
    /// Stores a block at `peer` and returns its CID.
    pub(crate) fn put(&mut self, peer: PeerIdx, codec: Codec, data: Bytes) -> Result<Cid, Error> {
        self.config.limits.check_block(data.len())?;
        self.ensure_up(peer, Operation::Put)?;
        let cid = cid_for(codec, &data);
        self.store(peer, cid, data);
        self.counters.puts += 1;
        Ok(cid)
    }

    fn store(&mut self, peer: PeerIdx, cid: Cid, data: Bytes) {
        let size = data.len() as u64;
        if self.peers[peer as usize].store.insert(cid, data).is_none() {
            self.counters.stored_bytes += size;
            self.holders.entry(cid).or_default().insert(peer);
            self.trace(TraceKind::Put, peer, NOBODY, 0, size);
        }
    }

    /// Starts fetching `cid` for `peer`; the outcome goes to `reply` within `timeout`.
    pub(crate) fn fetch(
        &mut self,
        peer: PeerIdx,
        cid: Cid,
        timeout: Duration,
        reply: oneshot::Sender<Result<Bytes, Error>>,
    ) {
        if let Err(error) =
            check_supported(&cid).and_then(|_| self.ensure_up(peer, Operation::Fetch))
        {
            let _ = reply.send(Err(error));
            return;
        }
        self.counters.fetches += 1;
        if let Some(data) = self.peers[peer as usize].store.get(&cid) {
            self.counters.fetches_local += 1;
            let _ = reply.send(Ok(data.clone()));
            return;
        }
        let id = self.next_id();
        let deadline = self.now.saturating_add(timeout.as_nanos() as u64);
        let pending = PendingFetch {
            peer,
            cid,
            started: self.now,
            deadline,
            timeout,
            answering: BTreeSet::new(),
            reply,
        };
        self.fetches.insert(id, pending);
        self.peers[peer as usize].fetches.insert(id);
        self.trace(TraceKind::FetchStart, NOBODY, peer, id, 0);
        self.schedule(deadline - self.now, Event::Deadline { fetch: id });
        self.send_wants(id);
    }

    /// Sends fetch `id`'s want to reachable holders and schedules their responses and the next retry.
    fn send_wants(&mut self, id: u64) {
        let Some(fetch) = self.fetches.get(&id) else {
            return;
        };
        let (peer, cid, deadline) = (fetch.peer, fetch.cid, fetch.deadline);
        let mut holders: Vec<PeerIdx> = self
            .holders
            .get(&cid)
            .into_iter()
            .flatten()
            .copied()
            .filter(|&h| h != peer && self.reachable(peer, h) && !fetch.answering.contains(&h))
            .collect();
        let keep = self.config.max_providers_per_want.max(1);
        if holders.len() > keep {
            let start = self.rng.below(holders.len());
            holders.rotate_left(start);
            holders.truncate(keep);
        }
        for holder in holders {
            self.ask(id, peer, holder, cid);
        }
        let retry = self.config.want_retry.as_nanos() as u64;
        if retry > 0 && self.now.saturating_add(retry) < deadline {
            self.schedule(retry, Event::Retry { fetch: id });
        }
    }

    /// One want to one holder, and its response if neither leg is lost.
    fn ask(&mut self, id: u64, peer: PeerIdx, holder: PeerIdx, cid: Cid) {
        let Some(mut data) = self.peers[holder as usize].store.get(&cid).cloned() else {
            return;
        };
        if self.peers[holder as usize].corrupt {
            data = corrupt(&data);
        }
        let Some(request) = self.transit(peer, holder, WANT_BYTES, self.now) else {
            self.counters.blocks_lost += 1;
            return;
        };
        let served = request.saturating_add(self.config.serve_delay.sample(&mut self.rng));
        let answered = self.occupy(holder, Path::Serve, data.len(), served);
        let Some(response) = self.transit(holder, peer, data.len(), answered) else {
            self.counters.blocks_lost += 1;
            return;
        };
        self.counters.blocks_served += 1;
        self.counters.blocks_served_bytes += data.len() as u64;
        self.trace(TraceKind::Serve, holder, peer, id, data.len() as u64);
        if let Some(fetch) = self.fetches.get_mut(&id) {
            fetch.answering.insert(holder);
        }
        self.schedule(
            response,
            Event::Response {
                fetch: id,
                from: holder,
                data,
            },
        );
    }

    pub(super) fn handle_retry(&mut self, id: u64) {
        self.send_wants(id);
    }

    pub(super) fn handle_deadline(&mut self, id: u64) {
        let Some(fetch) = self.fetches.get(&id) else {
            return;
        };
        let after = fetch.timeout;
        self.counters.fetches_timed_out += 1;
        self.finish_fetch(
            id,
            Err(Error::Timeout {
                operation: Operation::Fetch,
                after,
            }),
        );
    }

    pub(super) fn handle_response(&mut self, id: u64, from: PeerIdx, data: Bytes) {
        let Some(fetch) = self.fetches.get_mut(&id) else {
            return;
        };
        fetch.answering.remove(&from);
        let (peer, cid, outstanding) = (fetch.peer, fetch.cid, fetch.answering.len());
        if !self.reachable(peer, from) || data.len() > self.config.limits.max_block_bytes {
            self.counters.blocks_lost += 1;
            return;
        }
        match verify(&cid, &data) {
            Ok(()) => {
                self.counters.fetches_ok += 1;
                self.store(peer, cid, data.clone());
                self.finish_fetch(id, Ok(data));
            }
            Err(mismatch) => {
                self.counters.blocks_corrupt += 1;
                if outstanding == 0 {
                    self.counters.fetches_mismatched += 1;
                    self.finish_fetch(id, Err(mismatch));
                }
            }
        }
    }

    /// Ends fetch `id` with `outcome`; a caller that stopped waiting is no concern.
    pub(super) fn finish_fetch(&mut self, id: u64, outcome: Result<Bytes, Error>) {
        let Some(fetch) = self.fetches.remove(&id) else {
            return;
        };
        self.peers[fetch.peer as usize].fetches.remove(&id);
        let (kind, size) = match &outcome {
            Ok(data) => {
                self.fetch_latency
                    .record(Duration::from_nanos(self.now - fetch.started));
                (TraceKind::FetchOk, data.len() as u64)
            }
            Err(_) => (TraceKind::FetchFail, 0),
        };
        self.trace(kind, NOBODY, fetch.peer, id, size);
        let _ = fetch.reply.send(outcome);
    }
}

/// The same bytes with the first one flipped (or one byte, for an empty block).
fn corrupt(data: &Bytes) -> Bytes {
    let mut bad = data.to_vec();
    match bad.first_mut() {
        Some(first) => *first ^= 0xFF,
        None => bad.push(0),
    }
    Bytes::from(bad)
}
