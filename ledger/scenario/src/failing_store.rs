//! A store that fails: every operation on a wrapped store (its reads, writes, parking and archive)
//! is counted, and from the `n`th on each fails with a disk error, as a disk that died would.

use std::sync::{
    atomic::{AtomicU64, Ordering},
    Arc,
};

use bytes::Bytes;
use comms::Cid;
use ledger::{
    store::Base, tree::TreeBlock, Archive, Commit, Committed, Parking, Pruned, Store, StoreError,
};

/// The count of operations shared by a store, its parking and its archive.
#[derive(Clone, Debug)]
pub struct Countdown {
    done: Arc<AtomicU64>,
    fail_from: u64,
}

impl Countdown {
    /// Fails the `fail_from`th operation (counting from 1) and every one after it.
    pub fn new(fail_from: u64) -> Countdown {
        Countdown {
            done: Arc::new(AtomicU64::new(0)),
            fail_from,
        }
    }

    /// Operations so far, failed ones included.
    pub fn operations(&self) -> u64 {
        self.done.load(Ordering::Relaxed)
    }

    /// Whether an operation has failed.
    pub fn failed(&self) -> bool {
        self.operations() >= self.fail_from
    }

    /// Counts an operation: an error from the `fail_from`th on.
    fn tick(&self, operation: &'static str) -> Result<(), StoreError> {
        let number = self.done.fetch_add(1, Ordering::Relaxed) + 1;
        if number < self.fail_from {
            return Ok(());
        }
        let error =
            std::io::Error::other(format!("injected fault: {operation} (operation {number})"));
        Err(StoreError::Disk(Box::new(error)))
    }
}

/// `inner` failing as `countdown` says.
pub struct FailingStore {
    inner: Arc<dyn Store>,
    countdown: Countdown,
}

impl FailingStore {
    /// Wraps `inner`.
    pub fn new(inner: Arc<dyn Store>, countdown: Countdown) -> FailingStore {
        FailingStore { inner, countdown }
    }
}

impl Store for FailingStore {
    fn put_block(&self, cid: &Cid, bytes: &[u8], batch: bool) -> Result<(), StoreError> {
        self.countdown.tick("put_block")?;
        self.inner.put_block(cid, bytes, batch)
    }

    fn put_own_block(&self, cid: &Cid, bytes: &[u8]) -> Result<(), StoreError> {
        self.countdown.tick("put_own_block")?;
        self.inner.put_own_block(cid, bytes)
    }

    fn last_signed(&self) -> Result<Option<u64>, StoreError> {
        self.countdown.tick("last_signed")?;
        self.inner.last_signed()
    }

    fn replay_slice(
        &self,
        from: &[u8],
        limit: usize,
        visit: &mut dyn FnMut(Bytes) -> Result<(), StoreError>,
    ) -> Result<(usize, Option<Vec<u8>>), StoreError> {
        self.countdown.tick("replay_slice")?;
        self.inner.replay_slice(from, limit, visit)
    }

    fn block(&self, cid: &Cid) -> Result<Option<Vec<u8>>, StoreError> {
        self.countdown.tick("block")?;
        self.inner.block(cid)
    }

    fn batch(&self, cid: &Cid) -> Result<Option<Vec<u8>>, StoreError> {
        self.countdown.tick("batch")?;
        self.inner.batch(cid)
    }

    fn height(&self) -> Result<u64, StoreError> {
        self.countdown.tick("height")?;
        self.inner.height()
    }

    fn commit(
        &self,
        commit: &Commit,
        tree: &[TreeBlock],
        dropped: &[Cid],
    ) -> Result<(), StoreError> {
        self.countdown.tick("commit")?;
        self.inner.commit(commit, tree, dropped)
    }

    fn state_block(&self, cid: &Cid) -> Result<Option<Vec<u8>>, StoreError> {
        self.countdown.tick("state_block")?;
        self.inner.state_block(cid)
    }

    fn put_base(&self, base: &Base, tree: &[TreeBlock]) -> Result<(), StoreError> {
        self.countdown.tick("put_base")?;
        self.inner.put_base(base, tree)
    }

    fn base(&self) -> Result<Option<Base>, StoreError> {
        self.countdown.tick("base")?;
        self.inner.base()
    }

    fn prune(&self, round: u64, own: Option<u32>) -> Result<Pruned, StoreError> {
        self.countdown.tick("prune")?;
        self.inner.prune(round, own)
    }

    fn pruned_below(&self) -> Result<u64, StoreError> {
        self.countdown.tick("pruned_below")?;
        self.inner.pruned_below()
    }

    fn commit_at(&self, height: u64) -> Result<Option<Commit>, StoreError> {
        self.countdown.tick("commit_at")?;
        self.inner.commit_at(height)
    }

    fn transaction(&self, id: &Cid) -> Result<Option<Committed>, StoreError> {
        self.countdown.tick("transaction")?;
        self.inner.transaction(id)
    }

    fn flush(&self) -> Result<(), StoreError> {
        self.countdown.tick("flush")?;
        self.inner.flush()
    }

    fn parking(&self) -> Box<dyn Parking> {
        Box::new(FailingParking {
            inner: self.inner.parking(),
            countdown: self.countdown.clone(),
        })
    }

    fn archive(&self) -> Box<dyn Archive> {
        Box::new(FailingArchive {
            inner: self.inner.archive(),
            countdown: self.countdown.clone(),
        })
    }
}

struct FailingArchive {
    inner: Box<dyn Archive>,
    countdown: Countdown,
}

impl Archive for FailingArchive {
    fn slot(&self, cid: &Cid) -> Result<Option<(u32, u64)>, StoreError> {
        self.countdown.tick("archive slot")?;
        self.inner.slot(cid)
    }
}

struct FailingParking {
    inner: Box<dyn Parking>,
    countdown: Countdown,
}

impl Parking for FailingParking {
    fn park(&mut self, cid: &Cid, bytes: &Bytes, missing: &[Cid]) -> Result<(), StoreError> {
        self.countdown.tick("park")?;
        self.inner.park(cid, bytes, missing)
    }

    fn contains(&self, cid: &Cid) -> Result<bool, StoreError> {
        self.countdown.tick("parking contains")?;
        self.inner.contains(cid)
    }

    fn resolve(&mut self, dependency: &Cid) -> Result<Vec<Cid>, StoreError> {
        self.countdown.tick("parking resolve")?;
        self.inner.resolve(dependency)
    }

    fn take(&mut self, cid: &Cid) -> Result<Option<Bytes>, StoreError> {
        self.countdown.tick("parking take")?;
        self.inner.take(cid)
    }

    fn discard(&mut self, dependency: &Cid) -> Result<Vec<Cid>, StoreError> {
        self.countdown.tick("parking discard")?;
        self.inner.discard(dependency)
    }

    fn len(&self) -> usize {
        self.inner.len()
    }

    fn put_batch(&mut self, cid: &Cid, bytes: &Bytes) -> Result<(), StoreError> {
        self.countdown.tick("put_batch")?;
        self.inner.put_batch(cid, bytes)
    }

    fn batch(&self, cid: &Cid) -> Result<Option<Bytes>, StoreError> {
        self.countdown.tick("parked batch")?;
        self.inner.batch(cid)
    }

    fn has_batch(&self, cid: &Cid) -> Result<bool, StoreError> {
        self.countdown.tick("has_batch")?;
        self.inner.has_batch(cid)
    }

    fn drop_batch(&mut self, cid: &Cid) -> Result<(), StoreError> {
        self.countdown.tick("drop_batch")?;
        self.inner.drop_batch(cid)
    }
}
