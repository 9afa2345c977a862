//! What a node keeps durably, as an interface the core's driver writes through and a store
//! implements outside the core: RocksDB (`ledger-rocksdb`) on a real node, [`MemoryStore`] in a
//! simulation, where it survives a simulated crash because it lives outside the node.
//!
//! A store holds accepted blocks and batches (blocks indexed in round order, for replay), the
//! committed sequence, each committed transaction's place and outcome, and parking for blocks that
//! wait for ancestors. On restart the node replays the stored blocks through the deterministic core,
//! which re-derives the same commits; [`Store::commit`] checks each against its record.

use std::{
    collections::{hash_map::Entry, BTreeMap, HashMap},
    sync::{Arc, Mutex, MutexGuard},
};

use bytes::Bytes;
use comms::Cid;
use serde::{Deserialize, Serialize};

use crate::{
    codec::encode,
    core::{Archive, Commit, MemoryParking, Parking},
    types::SignedBlock,
    Error, Outcome,
};

/// Where a committed transaction is in the sequence, and what it did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Committed {
    /// The commit's height.
    pub height: u64,
    /// Its position among the commit's transactions.
    pub index: u64,
    /// What it did.
    pub outcome: Outcome,
}

/// Why a store failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The store's database or disk failed.
    #[error("storage: {0}")]
    Disk(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The store holds something this version cannot read, or replays differently from what it
    /// recorded.
    #[error("corrupt store: {reason}")]
    Corrupt { reason: String },
    /// A stored record that does not decode, or a stored block the core refused on replay.
    #[error("stored record: {0}")]
    Record(#[from] Error),
}

/// A node's durable store. Shared (`Arc`) between the node, its parking and its archive.
pub trait Store: Send + Sync {
    /// Stores an accepted block (indexed by round and author) or a batch.
    fn put_block(&self, cid: &Cid, bytes: &[u8], batch: bool) -> Result<(), StoreError>;

    /// Hands up to `limit` stored blocks to `visit`, one at a time, in round order from index key
    /// `from` on (empty: from the start). Returns how many there were and the key to go on from,
    /// `None` at the end. Stops at the first error `visit` returns.
    fn replay_slice(
        &self,
        from: &[u8],
        limit: usize,
        visit: &mut dyn FnMut(Bytes) -> Result<(), StoreError>,
    ) -> Result<(usize, Option<Vec<u8>>), StoreError>;

    /// The stored bytes of a block, if any.
    fn block(&self, cid: &Cid) -> Result<Option<Vec<u8>>, StoreError>;

    /// The stored bytes of a batch, if any.
    fn batch(&self, cid: &Cid) -> Result<Option<Vec<u8>>, StoreError>;

    /// The committed height stored.
    fn height(&self) -> Result<u64, StoreError>;

    /// Writes a commit, atomically; a commit at or below the stored height (a replay) is checked
    /// against its record instead.
    fn commit(&self, commit: &Commit) -> Result<(), StoreError>;

    /// Where and how transaction `id` committed, if it did.
    fn transaction(&self, id: &Cid) -> Result<Option<Committed>, StoreError>;

    /// Makes everything written durable (on shutdown).
    fn flush(&self) -> Result<(), StoreError>;

    /// Parking for the core in this store (blocks parked by an earlier run are gone).
    fn parking(&self) -> Box<dyn Parking>;

    /// The core's view of blocks that left memory.
    fn archive(&self) -> Box<dyn Archive>;
}

/// The key that orders stored blocks for replay: round and author big-endian, then the CID.
pub fn index_key(round: u64, author: u32, cid: &[u8]) -> Vec<u8> {
    [&round.to_be_bytes()[..], &author.to_be_bytes(), cid].concat()
}

/// Per transaction of `commit`: the record where it took effect, or else its first.
pub fn records(commit: &Commit) -> Vec<(Cid, Committed)> {
    let mut records: Vec<(Cid, Committed)> = Vec::with_capacity(commit.transactions.len());
    let mut at = HashMap::with_capacity(commit.transactions.len());
    for (index, (id, outcome)) in commit.transactions.iter().enumerate() {
        let record = Committed {
            height: commit.height,
            index: index as u64,
            outcome: *outcome,
        };
        match at.entry(id) {
            Entry::Vacant(slot) => {
                slot.insert(records.len());
                records.push((*id, record));
            }
            Entry::Occupied(slot) if *outcome == Outcome::Applied => {
                records[*slot.get()].1 = record
            }
            Entry::Occupied(_) => {}
        }
    }
    records
}

/// The error of a replayed commit that differs from its record.
pub fn replay_differs(height: u64) -> StoreError {
    StoreError::Corrupt {
        reason: format!("replayed commit {height} differs from the stored one"),
    }
}

/// A store in memory: for simulations, where a validator that crashes and restarts gets the same
/// `MemoryStore` back (clones share it), as a real one gets its directory back.
#[derive(Clone, Default)]
pub struct MemoryStore(Arc<Mutex<Stored>>);

#[derive(Default)]
struct Stored {
    blocks: HashMap<Cid, (Vec<u8>, u32, u64)>,
    /// Replay order: index key to CID.
    index: BTreeMap<Vec<u8>, Cid>,
    batches: HashMap<Cid, Vec<u8>>,
    /// Encoded commit records, height 1 first.
    commits: Vec<Vec<u8>>,
    transactions: HashMap<Cid, Committed>,
}

impl MemoryStore {
    fn stored(&self) -> MutexGuard<'_, Stored> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Store for MemoryStore {
    fn put_block(&self, cid: &Cid, bytes: &[u8], batch: bool) -> Result<(), StoreError> {
        let mut stored = self.stored();
        if batch {
            stored.batches.insert(*cid, bytes.to_vec());
            return Ok(());
        }
        let block = SignedBlock::decode(bytes)?.block;
        let key = index_key(block.round, block.author, &cid.to_bytes());
        stored.index.insert(key, *cid);
        let entry = (bytes.to_vec(), block.author, block.round);
        stored.blocks.insert(*cid, entry);
        Ok(())
    }

    fn replay_slice(
        &self,
        from: &[u8],
        limit: usize,
        visit: &mut dyn FnMut(Bytes) -> Result<(), StoreError>,
    ) -> Result<(usize, Option<Vec<u8>>), StoreError> {
        // Read the slice first: `visit` may write to the store.
        let (slice, next) = {
            let stored = self.stored();
            let mut keys = stored.index.range(from.to_vec()..);
            let slice: Vec<Vec<u8>> = (keys.by_ref().take(limit))
                .map(|(_, cid)| stored.blocks[cid].0.clone())
                .collect();
            (slice, keys.next().map(|(key, _)| key.clone()))
        };
        let count = slice.len();
        for bytes in slice {
            visit(Bytes::from(bytes))?;
        }
        Ok((count, next))
    }

    fn block(&self, cid: &Cid) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self
            .stored()
            .blocks
            .get(cid)
            .map(|(bytes, ..)| bytes.clone()))
    }

    fn batch(&self, cid: &Cid) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.stored().batches.get(cid).cloned())
    }

    fn height(&self) -> Result<u64, StoreError> {
        Ok(self.stored().commits.len() as u64)
    }

    fn commit(&self, commit: &Commit) -> Result<(), StoreError> {
        let mut stored = self.stored();
        let record = encode(commit);
        if commit.height <= stored.commits.len() as u64 {
            return match stored.commits[commit.height as usize - 1] == record {
                true => Ok(()),
                false => Err(replay_differs(commit.height)),
            };
        }
        stored.commits.push(record);
        for (id, record) in records(commit) {
            let applied =
                (stored.transactions.get(&id)).is_some_and(|r| r.outcome == Outcome::Applied);
            if !applied {
                stored.transactions.insert(id, record);
            }
        }
        Ok(())
    }

    fn transaction(&self, id: &Cid) -> Result<Option<Committed>, StoreError> {
        Ok(self.stored().transactions.get(id).copied())
    }

    fn flush(&self) -> Result<(), StoreError> {
        Ok(())
    }

    fn parking(&self) -> Box<dyn Parking> {
        Box::new(MemoryStoreParking {
            blocks: MemoryParking::default(),
            store: self.clone(),
        })
    }

    fn archive(&self) -> Box<dyn Archive> {
        Box::new(self.clone())
    }
}

impl Archive for MemoryStore {
    fn slot(&self, cid: &Cid) -> Option<(u32, u64)> {
        (self.stored().blocks.get(cid)).map(|(_, author, round)| (*author, *round))
    }
}

/// A memory store's parking: blocks in memory (a restart drops them, as it does on disk), batches
/// in the store, where they stay.
struct MemoryStoreParking {
    blocks: MemoryParking,
    store: MemoryStore,
}

impl Parking for MemoryStoreParking {
    fn park(&mut self, cid: &Cid, bytes: &Bytes, missing: &[Cid]) {
        self.blocks.park(cid, bytes, missing)
    }

    fn contains(&self, cid: &Cid) -> bool {
        self.blocks.contains(cid)
    }

    fn resolve(&mut self, dependency: &Cid) -> Vec<Cid> {
        self.blocks.resolve(dependency)
    }

    fn take(&mut self, cid: &Cid) -> Option<Bytes> {
        self.blocks.take(cid)
    }

    fn discard(&mut self, dependency: &Cid) -> Vec<Cid> {
        self.blocks.discard(dependency)
    }

    fn len(&self) -> usize {
        self.blocks.len()
    }

    fn put_batch(&mut self, cid: &Cid, bytes: &Bytes) {
        self.store.stored().batches.insert(*cid, bytes.to_vec());
    }

    fn batch(&self, cid: &Cid) -> Option<Bytes> {
        self.store
            .stored()
            .batches
            .get(cid)
            .cloned()
            .map(Bytes::from)
    }

    fn has_batch(&self, cid: &Cid) -> bool {
        self.store.stored().batches.contains_key(cid)
    }

    fn drop_batch(&mut self, _cid: &Cid) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dag_builder::DagBuilder;

    #[test]
    fn a_memory_store_replays_in_round_order_by_slices_and_checks_replayed_commits() {
        let mut dag = DagBuilder::new(4);
        dag.full(0..=2);
        let store = MemoryStore::default();
        for round in (0..=2).rev() {
            for author in dag.all() {
                let block = dag.dag.get(&dag.cid(round, author)).expect("built").clone();
                store
                    .put_block(&block.cid, &block.bytes, false)
                    .expect("stored");
            }
        }
        let (mut rounds, mut from) = (Vec::new(), Vec::new());
        loop {
            let mut visit = |bytes: Bytes| {
                rounds.push(SignedBlock::decode(&bytes)?.block.round);
                Ok(())
            };
            let (read, next) = store.replay_slice(&from, 5, &mut visit).expect("replays");
            assert!(read <= 5);
            let Some(next) = next else { break };
            from = next;
        }
        assert_eq!(rounds, [0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2]);
        assert_eq!(store.archive().slot(&dag.cid(1, 2)), Some((2, 1)));

        let id = comms::cid_for(comms::Codec::Raw, b"tx");
        let commit = |height, outcome| Commit {
            height,
            round: 0,
            leader: dag.cid(0, 0),
            blocks: vec![dag.cid(0, 0)],
            transactions: vec![(id, outcome)],
            changed: Vec::new(),
            state_root: [height as u8; 32],
        };
        store.commit(&commit(1, Outcome::Applied)).expect("written");
        store
            .commit(&commit(1, Outcome::Applied))
            .expect("the same, replayed");
        let differs = commit(
            1,
            Outcome::BadNonce {
                expected: 1,
                got: 0,
            },
        );
        assert!(matches!(
            store.commit(&differs),
            Err(StoreError::Corrupt { .. })
        ));
        store
            .commit(&commit(
                2,
                Outcome::BadNonce {
                    expected: 1,
                    got: 0,
                },
            ))
            .expect("written");
        assert_eq!(store.height().expect("read"), 2);
        let record = store.transaction(&id).expect("read").expect("recorded");
        assert_eq!(
            (record.height, record.outcome),
            (1, Outcome::Applied),
            "where it took effect"
        );
    }
}
