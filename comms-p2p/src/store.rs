//! Where the embedded peer keeps the blocks it serves: in memory, or on disk in RocksDB, so that a
//! restarted peer still serves what it held.

use std::{collections::HashMap, path::Path, sync::Mutex};

use bytes::Bytes;
use comms::Cid;

/// A failed read or write of the blockstore.
#[derive(Debug, thiserror::Error)]
#[error("blockstore: {0}")]
pub struct StoreError(String);

/// The blocks a peer holds, by CID.
pub trait BlockStore: Send + Sync + 'static {
    /// The bytes of `cid`, if held.
    fn get(&self, cid: &Cid) -> Result<Option<Bytes>, StoreError>;
    /// Holds `data` under `cid` (which it hashes to).
    fn put(&self, cid: &Cid, data: &Bytes) -> Result<(), StoreError>;
    /// Lets go of `cid` (not held: no error).
    fn delete(&self, cid: &Cid) -> Result<(), StoreError>;
}

/// Blocks in memory, gone with the process.
#[derive(Default)]
pub struct MemoryBlocks(Mutex<HashMap<Cid, Bytes>>);

impl BlockStore for MemoryBlocks {
    fn get(&self, cid: &Cid) -> Result<Option<Bytes>, StoreError> {
        let blocks = self.0.lock().unwrap_or_else(|p| p.into_inner());
        Ok(blocks.get(cid).cloned())
    }

    fn put(&self, cid: &Cid, data: &Bytes) -> Result<(), StoreError> {
        let mut blocks = self.0.lock().unwrap_or_else(|p| p.into_inner());
        blocks.insert(*cid, data.clone());
        Ok(())
    }

    fn delete(&self, cid: &Cid) -> Result<(), StoreError> {
        let mut blocks = self.0.lock().unwrap_or_else(|p| p.into_inner());
        blocks.remove(cid);
        Ok(())
    }
}

/// Blocks in a RocksDB database of their own, keyed by CID bytes.
pub struct RocksBlocks(rocksdb::DB);

impl RocksBlocks {
    /// Opens (creating if needed) the blockstore in `dir`.
    pub fn open(dir: &Path) -> Result<RocksBlocks, StoreError> {
        let mut options = rocksdb::Options::default();
        options.create_if_missing(true);
        options.set_max_total_wal_size(16 << 20);
        rocksdb::DB::open(&options, dir)
            .map(RocksBlocks)
            .map_err(|e| StoreError(e.to_string()))
    }
}

impl BlockStore for RocksBlocks {
    fn get(&self, cid: &Cid) -> Result<Option<Bytes>, StoreError> {
        (self.0.get(cid.to_bytes()))
            .map(|found| found.map(Bytes::from))
            .map_err(|e| StoreError(e.to_string()))
    }

    fn put(&self, cid: &Cid, data: &Bytes) -> Result<(), StoreError> {
        (self.0.put(cid.to_bytes(), data)).map_err(|e| StoreError(e.to_string()))
    }

    fn delete(&self, cid: &Cid) -> Result<(), StoreError> {
        (self.0.delete(cid.to_bytes())).map_err(|e| StoreError(e.to_string()))
    }
}
