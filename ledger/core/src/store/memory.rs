//! A store in memory, for simulations.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex, MutexGuard},
};

use bytes::Bytes;
use comms::Cid;

use super::{
    index_key, records, replay_differs, Archive, Base, Commit, Committed, MemoryParking, Parking,
    Pruned, Store, StoreError,
};
use crate::{
    codec::encode,
    tree::TreeBlock,
    types::{Payload, SignedBlock},
    Outcome,
};

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
    /// Encoded commit records, by height.
    commits: BTreeMap<u64, Vec<u8>>,
    /// The committed height: the last commit's, or the base's.
    height: u64,
    /// Where a node that joined by snapshot started.
    base: Option<Base>,
    transactions: HashMap<Cid, Committed>,
    last_signed: Option<u64>,
    /// State-tree blocks, each with the height of the last commit that wrote it.
    state: HashMap<Cid, (u64, Bytes)>,
    /// Per commit height, the state blocks it stopped needing.
    dropped: BTreeMap<u64, Vec<Cid>>,
    /// Per batch, the highest round of a stored block that carries it.
    batch_use: HashMap<Cid, u64>,
    pruned_below: u64,
}

impl MemoryStore {
    fn stored(&self) -> MutexGuard<'_, Stored> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Stored {
    /// Stores a block; returns its round.
    fn put_block(&mut self, cid: &Cid, bytes: &[u8]) -> Result<u64, StoreError> {
        let block = SignedBlock::decode(bytes)?.block;
        let key = index_key(block.round, block.author, &cid.to_bytes());
        if let Payload::Batch { cid: batch, .. } = &block.payload {
            let used = self.batch_use.entry(*batch).or_default();
            *used = (*used).max(block.round);
        }
        self.index.insert(key, *cid);
        let entry = (bytes.to_vec(), block.author, block.round);
        self.blocks.insert(*cid, entry);
        Ok(block.round)
    }
}

impl Stored {
    fn write_state(&mut self, height: u64, tree: &[TreeBlock]) {
        (self.state).extend(
            tree.iter()
                .map(|(cid, bytes)| (*cid, (height, bytes.clone()))),
        );
    }

    /// See [`Store::prune`]; as the RocksDB store does it.
    fn prune(&mut self, round: u64, own: Option<u32>) -> Pruned {
        let mut pruned = Pruned::default();
        // The commits below `round` (never the last), from the lowest: each decoded once, and
        // none read past the first that stays.
        let below: Vec<(u64, Commit)> = (self.commits.iter())
            .map_while(|(height, record)| {
                let commit: Commit = crate::codec::decode(record).ok()?;
                (commit.round < round && *height < self.height).then_some((*height, commit))
            })
            .collect();
        for (height, commit) in below {
            self.commits.remove(&height);
            pruned.commits += 1;
            for (id, _) in records(&commit) {
                if (self.transactions.get(&id)).is_some_and(|r| r.height <= height) {
                    self.transactions.remove(&id);
                    pruned.transactions += 1;
                }
            }
            self.dropped.remove(&height);
            // The blocks of its state that the next commit dropped: its state was the last to
            // need them, unless a commit wrote them again since.
            for cid in self.dropped.remove(&(height + 1)).unwrap_or_default() {
                if self
                    .state
                    .get(&cid)
                    .is_some_and(|(born, _)| *born <= height)
                {
                    self.state.remove(&cid);
                    pruned.state_blocks += 1;
                }
            }
        }
        let below = self.index.split_off(&index_key(round, 0, &[]));
        for cid in std::mem::replace(&mut self.index, below).into_values() {
            let Some((bytes, author, _)) = self.blocks.remove(&cid) else {
                continue;
            };
            pruned.blocks += 1;
            let ours = own == Some(author);
            if ours {
                pruned.own.push(cid);
            }
            let payload = SignedBlock::decode(&bytes).map(|b| b.block.payload);
            if let Ok(Payload::Batch { cid: batch, .. }) = payload {
                if self.batch_use.get(&batch).is_none_or(|last| *last < round) {
                    self.batches.remove(&batch);
                    self.batch_use.remove(&batch);
                    pruned.batches += 1;
                    if ours {
                        pruned.own.push(batch);
                    }
                }
            }
        }
        self.pruned_below = self.pruned_below.max(round);
        pruned
    }
}

impl Store for MemoryStore {
    fn put_block(&self, cid: &Cid, bytes: &[u8], batch: bool) -> Result<(), StoreError> {
        let mut stored = self.stored();
        if batch {
            stored.batches.insert(*cid, bytes.to_vec());
            return Ok(());
        }
        stored.put_block(cid, bytes).map(|_| ())
    }

    fn put_own_block(&self, cid: &Cid, bytes: &[u8]) -> Result<(), StoreError> {
        let mut stored = self.stored();
        let round = stored.put_block(cid, bytes)?;
        stored.last_signed = stored.last_signed.max(Some(round));
        Ok(())
    }

    fn last_signed(&self) -> Result<Option<u64>, StoreError> {
        Ok(self.stored().last_signed)
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
        Ok(self.stored().height)
    }

    fn commit(
        &self,
        commit: &Commit,
        tree: &[TreeBlock],
        dropped: &[Cid],
    ) -> Result<(), StoreError> {
        let mut stored = self.stored();
        let record = encode(commit);
        if commit.height <= stored.height {
            return match stored.commits.get(&commit.height) == Some(&record) {
                true => Ok(()),
                false => Err(replay_differs(commit.height)),
            };
        }
        stored.commits.insert(commit.height, record);
        stored.height = commit.height;
        stored.write_state(commit.height, tree);
        if !dropped.is_empty() {
            stored.dropped.insert(commit.height, dropped.to_vec());
        }
        for (id, record) in records(commit) {
            let applied =
                (stored.transactions.get(&id)).is_some_and(|r| r.outcome == Outcome::Applied);
            if !applied {
                stored.transactions.insert(id, record);
            }
        }
        Ok(())
    }

    fn commit_at(&self, height: u64) -> Result<Option<Commit>, StoreError> {
        let stored = self.stored();
        let Some(record) = stored.commits.get(&height) else {
            return Ok(None);
        };
        Ok(Some(crate::codec::decode(record)?))
    }

    fn transaction(&self, id: &Cid) -> Result<Option<Committed>, StoreError> {
        Ok(self.stored().transactions.get(id).copied())
    }

    fn state_block(&self, cid: &Cid) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self
            .stored()
            .state
            .get(cid)
            .map(|(_, bytes)| bytes.to_vec()))
    }

    fn put_base(&self, base: &Base, tree: &[TreeBlock]) -> Result<(), StoreError> {
        let mut stored = self.stored();
        stored.write_state(base.checkpoint.height, tree);
        stored.height = base.checkpoint.height;
        stored.base = Some(base.clone());
        Ok(())
    }

    fn base(&self) -> Result<Option<Base>, StoreError> {
        Ok(self.stored().base.clone())
    }

    fn prune(&self, round: u64, own: Option<u32>) -> Result<Pruned, StoreError> {
        Ok(self.stored().prune(round, own))
    }

    fn pruned_below(&self) -> Result<u64, StoreError> {
        Ok(self.stored().pruned_below)
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
    fn slot(&self, cid: &Cid) -> Result<Option<(u32, u64)>, StoreError> {
        Ok((self.stored().blocks.get(cid)).map(|(_, author, round)| (*author, *round)))
    }
}

/// A memory store's parking: blocks in memory (a restart drops them, as it does on disk), batches
/// in the store, where they stay.
struct MemoryStoreParking {
    blocks: MemoryParking,
    store: MemoryStore,
}

impl Parking for MemoryStoreParking {
    fn park(&mut self, cid: &Cid, bytes: &Bytes, missing: &[Cid]) -> Result<(), StoreError> {
        self.blocks.park(cid, bytes, missing)
    }

    fn contains(&self, cid: &Cid) -> Result<bool, StoreError> {
        self.blocks.contains(cid)
    }

    fn resolve(&mut self, dependency: &Cid) -> Result<Vec<Cid>, StoreError> {
        self.blocks.resolve(dependency)
    }

    fn take(&mut self, cid: &Cid) -> Result<Option<Bytes>, StoreError> {
        self.blocks.take(cid)
    }

    fn discard(&mut self, dependency: &Cid) -> Result<Vec<Cid>, StoreError> {
        self.blocks.discard(dependency)
    }

    fn len(&self) -> usize {
        self.blocks.len()
    }

    fn put_batch(&mut self, cid: &Cid, bytes: &Bytes) -> Result<(), StoreError> {
        self.store.put_block(cid, bytes, true)
    }

    fn batch(&self, cid: &Cid) -> Result<Option<Bytes>, StoreError> {
        Ok(self.store.batch(cid)?.map(Bytes::from))
    }

    fn has_batch(&self, cid: &Cid) -> Result<bool, StoreError> {
        Ok(self.store.stored().batches.contains_key(cid))
    }

    fn drop_batch(&mut self, _cid: &Cid) -> Result<(), StoreError> {
        Ok(())
    }
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
        assert_eq!(
            store.archive().slot(&dag.cid(1, 2)).expect("read"),
            Some((2, 1))
        );

        let id = comms::cid_for(comms::Codec::Raw, b"tx");
        let commit = |height, outcome| Commit {
            height,
            round: 0,
            leader: dag.cid(0, 0),
            blocks: vec![dag.cid(0, 0)],
            transactions: vec![(id, outcome)],
            changed: Vec::new(),
            state_root: comms::cid_for(comms::Codec::DagCbor, &[height as u8]),
        };
        let block = |height: u8| {
            let bytes = Bytes::from(vec![height]);
            (comms::cid_for(comms::Codec::DagCbor, &bytes), bytes)
        };
        (store.commit(&commit(1, Outcome::Applied), &[block(1)], &[])).expect("written");
        assert_eq!(
            store.state_block(&block(1).0).expect("read"),
            Some(vec![1]),
            "the tree blocks go with the commit"
        );
        (store.commit(&commit(1, Outcome::Applied), &[block(9)], &[])).expect("the same, replayed");
        assert_eq!(store.state_block(&block(9).0).expect("read"), None);
        let differs = commit(
            1,
            Outcome::BadNonce {
                expected: 1,
                got: 0,
            },
        );
        assert!(matches!(
            store.commit(&differs, &[], &[]),
            Err(StoreError::Corrupt { .. })
        ));
        store
            .commit(
                &commit(
                    2,
                    Outcome::BadNonce {
                        expected: 1,
                        got: 0,
                    },
                ),
                &[],
                &[],
            )
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
