//! Where received blocks wait for their missing ancestors and batches, and where batches wait for
//! the blocks that carry them. In memory by default; a node with a store parks on disk, so that a
//! node syncing a long history holds only the fetch frontier and the DAG above the floor.

use std::collections::{HashMap, HashSet};

use bytes::Bytes;
use comms::Cid;

use super::StoreError;

/// Blocks waiting for dependencies, and batches waiting to be read when their block is accepted.
/// Blocks are parked only after their own checks (signature, limits) passed, so what comes out
/// is not checked again. A store that fails says so ([`StoreError`]); a failure is never taken for
/// an absent item, and the node stops on it.
pub trait Parking: Send + Sync {
    /// Parks block `cid`, which waits for each of `missing` (not empty, no repeats).
    fn park(&mut self, cid: &Cid, bytes: &Bytes, missing: &[Cid]) -> Result<(), StoreError>;

    /// Whether block `cid` is parked.
    fn contains(&self, cid: &Cid) -> Result<bool, StoreError>;

    /// `dependency` arrived: the parked blocks for which it was the last one missing. They stay
    /// parked until [`Parking::take`].
    fn resolve(&mut self, dependency: &Cid) -> Result<Vec<Cid>, StoreError>;

    /// Removes parked block `cid` and returns its bytes.
    fn take(&mut self, cid: &Cid) -> Result<Option<Bytes>, StoreError>;

    /// `dependency` will not arrive: removes the blocks waiting for it and returns their CIDs.
    fn discard(&mut self, dependency: &Cid) -> Result<Vec<Cid>, StoreError>;

    /// How many blocks are parked.
    fn len(&self) -> usize;

    /// Whether no block is parked.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Keeps a checked batch until the blocks that carry it are accepted.
    fn put_batch(&mut self, cid: &Cid, bytes: &Bytes) -> Result<(), StoreError>;

    /// A batch kept by [`Parking::put_batch`].
    fn batch(&self, cid: &Cid) -> Result<Option<Bytes>, StoreError>;

    /// Whether batch `cid` is kept (without reading it).
    fn has_batch(&self, cid: &Cid) -> Result<bool, StoreError>;

    /// The block that carried batch `cid` left memory: the batch is no longer needed here.
    fn drop_batch(&mut self, cid: &Cid) -> Result<(), StoreError>;
}

/// Parking in memory: for nodes without a store, and for tests.
#[derive(Default)]
pub struct MemoryParking {
    /// Parked blocks and how many of their dependencies are still missing.
    blocks: HashMap<Cid, (Bytes, usize)>,
    /// The parked blocks waiting for each dependency. A set: a block discarded (through another
    /// dependency) leaves its links here, and must not be counted twice if it is parked again.
    waiting: HashMap<Cid, HashSet<Cid>>,
    batches: HashMap<Cid, Bytes>,
}

impl Parking for MemoryParking {
    fn park(&mut self, cid: &Cid, bytes: &Bytes, missing: &[Cid]) -> Result<(), StoreError> {
        self.blocks.insert(*cid, (bytes.clone(), missing.len()));
        for dependency in missing {
            self.waiting.entry(*dependency).or_default().insert(*cid);
        }
        Ok(())
    }

    fn contains(&self, cid: &Cid) -> Result<bool, StoreError> {
        Ok(self.blocks.contains_key(cid))
    }

    fn resolve(&mut self, dependency: &Cid) -> Result<Vec<Cid>, StoreError> {
        let mut ready = Vec::new();
        for child in self.waiting.remove(dependency).unwrap_or_default() {
            if let Some((_, missing)) = self.blocks.get_mut(&child) {
                *missing = missing.saturating_sub(1);
                if *missing == 0 {
                    ready.push(child);
                }
            }
        }
        // In CID byte order, as the store's key order gives them: never in hash order.
        ready.sort_unstable_by_key(|cid| cid.to_bytes());
        Ok(ready)
    }

    fn take(&mut self, cid: &Cid) -> Result<Option<Bytes>, StoreError> {
        Ok(self.blocks.remove(cid).map(|(bytes, _)| bytes))
    }

    fn discard(&mut self, dependency: &Cid) -> Result<Vec<Cid>, StoreError> {
        let children = self.waiting.remove(dependency).unwrap_or_default();
        let mut discarded: Vec<Cid> = children
            .into_iter()
            .filter(|child| self.blocks.remove(child).is_some())
            .collect();
        discarded.sort_unstable_by_key(|cid| cid.to_bytes());
        Ok(discarded)
    }

    fn len(&self) -> usize {
        self.blocks.len()
    }

    fn put_batch(&mut self, cid: &Cid, bytes: &Bytes) -> Result<(), StoreError> {
        self.batches.insert(*cid, bytes.clone());
        Ok(())
    }

    fn batch(&self, cid: &Cid) -> Result<Option<Bytes>, StoreError> {
        Ok(self.batches.get(cid).cloned())
    }

    fn has_batch(&self, cid: &Cid) -> Result<bool, StoreError> {
        Ok(self.batches.contains_key(cid))
    }

    fn drop_batch(&mut self, cid: &Cid) -> Result<(), StoreError> {
        self.batches.remove(cid);
        Ok(())
    }
}
