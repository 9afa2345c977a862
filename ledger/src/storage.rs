//! RocksDB storage: accepted blocks and batches, the DAG index, the committed sequence, the state,
//! the committed transactions by ID, and metadata, each in its own column family. A commit (its
//! record, the accounts it changed, its transactions' positions, the new height and root) is one
//! atomic write batch.
//!
//! On restart the node replays the stored blocks through the protocol core, which is deterministic:
//! it re-derives the same commits, and [`Storage::commit`] checks each against the stored record,
//! so a node resumes without refetching anything it stored and with the same state root.

use std::{collections::HashSet, path::Path, sync::Arc};

use bytes::Bytes;
use comms::Cid;
use rocksdb::{ColumnFamilyDescriptor, IteratorMode, Options, WriteBatch, DB};

use serde::{Deserialize, Serialize};

use crate::{
    codec::{decode, encode},
    core::{Archive, Commit},
    node::hex,
    Error, Outcome,
};

const BLOCKS: &str = "blocks";
const BATCHES: &str = "batches";
const DAG_INDEX: &str = "dag_index";
const COMMITS: &str = "commits";
const STATE: &str = "state";
const META: &str = "meta";
const TRANSACTIONS: &str = "transactions";
const FAMILIES: [&str; 7] = [
    BLOCKS,
    BATCHES,
    DAG_INDEX,
    COMMITS,
    STATE,
    META,
    TRANSACTIONS,
];
const HEIGHT: &[u8] = b"height";
const STATE_ROOT: &[u8] = b"state_root";

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

/// A node's on-disk store. Clones share the database, which closes when the last one is dropped.
#[derive(Clone)]
pub struct Storage {
    db: Arc<DB>,
}

impl Storage {
    /// Opens (creating if needed) the store in `dir`.
    pub fn open(dir: &Path) -> Result<Storage, Error> {
        let mut options = Options::default();
        options.create_if_missing(true);
        options.create_missing_column_families(true);
        let families = FAMILIES
            .iter()
            .map(|name| ColumnFamilyDescriptor::new(*name, Options::default()));
        Ok(Storage {
            db: Arc::new(DB::open_cf_descriptors(&options, dir, families)?),
        })
    }

    fn family(&self, name: &str) -> Result<&rocksdb::ColumnFamily, Error> {
        self.db.cf_handle(name).ok_or_else(|| Error::CorruptStore {
            reason: format!("column family {name} missing"),
        })
    }

    /// Stores an accepted block (indexed by round and author) or a batch.
    pub fn put_block(&self, cid: &Cid, bytes: &[u8], batch: bool) -> Result<(), Error> {
        let key = cid.to_bytes();
        if batch {
            return Ok(self.db.put_cf(self.family(BATCHES)?, key, bytes)?);
        }
        let block = crate::types::SignedBlock::decode(bytes)?;
        let mut write = WriteBatch::default();
        write.put_cf(self.family(BLOCKS)?, &key, bytes);
        write.put_cf(
            self.family(DAG_INDEX)?,
            index_key(block.block.round, block.block.author, &key),
            [],
        );
        Ok(self.db.write(write)?)
    }

    /// Hands every stored batch, then every stored block in round order, to `visit`, one at a time:
    /// what a restart replays. Returns how many there were.
    pub fn replay(&self, mut visit: impl FnMut(Bytes, bool)) -> Result<u64, Error> {
        let mut count = 0;
        for item in self
            .db
            .iterator_cf(self.family(BATCHES)?, IteratorMode::Start)
        {
            visit(Bytes::from(item?.1.into_vec()), true);
            count += 1;
        }
        for item in self
            .db
            .iterator_cf(self.family(DAG_INDEX)?, IteratorMode::Start)
        {
            let (key, _) = item?;
            let cid = &key[12..];
            let bytes =
                self.db
                    .get_cf(self.family(BLOCKS)?, cid)?
                    .ok_or_else(|| Error::CorruptStore {
                        reason: "indexed block missing".into(),
                    })?;
            visit(Bytes::from(bytes), false);
            count += 1;
        }
        Ok(count)
    }

    /// The stored bytes of a block, if any.
    pub fn block(&self, cid: &Cid) -> Result<Option<Vec<u8>>, Error> {
        Ok(self.db.get_cf(self.family(BLOCKS)?, cid.to_bytes())?)
    }

    /// The stored bytes of a batch, if any.
    pub fn batch(&self, cid: &Cid) -> Result<Option<Vec<u8>>, Error> {
        Ok(self.db.get_cf(self.family(BATCHES)?, cid.to_bytes())?)
    }

    /// Author and round of a stored block (read from the block itself: the lookup is for blocks
    /// that left memory, which is rare).
    fn slot(&self, cid: &Cid) -> Result<Option<(u32, u64)>, Error> {
        let Some(bytes) = self.block(cid)? else {
            return Ok(None);
        };
        let block = crate::types::SignedBlock::decode(&bytes)?;
        Ok(Some((block.block.author, block.block.round)))
    }

    /// The committed height on disk.
    pub fn height(&self) -> Result<u64, Error> {
        let bytes = self.db.get_cf(self.family(META)?, HEIGHT)?;
        Ok(bytes
            .and_then(|b| b.try_into().ok())
            .map_or(0, u64::from_be_bytes))
    }

    /// Writes a commit and the accounts it changed, atomically. A commit at or below the stored
    /// height (a replay) is checked against the record instead.
    pub fn commit(&self, commit: &Commit) -> Result<(), Error> {
        let height_key = commit.height.to_be_bytes();
        if commit.height <= self.height()? {
            let stored = self.db.get_cf(self.family(COMMITS)?, height_key)?;
            return match stored == Some(encode(commit)) {
                true => Ok(()),
                false => Err(Error::CorruptStore {
                    reason: format!(
                        "replayed commit {} differs from the stored one",
                        commit.height
                    ),
                }),
            };
        }
        let mut write = WriteBatch::default();
        write.put_cf(self.family(COMMITS)?, height_key, encode(commit));
        for (key, account) in &commit.changed {
            write.put_cf(self.family(STATE)?, key.0, encode(account));
        }
        let transactions = self.family(TRANSACTIONS)?;
        let mut seen = HashSet::with_capacity(commit.transactions.len());
        for (index, (id, outcome)) in commit.transactions.iter().enumerate() {
            // A transaction ordered twice (proposed again, or by two validators) took effect at
            // most the first time: that is the record to keep.
            let key = id.to_bytes();
            if seen.insert(id) && self.db.get_pinned_cf(transactions, &key)?.is_none() {
                let record = Committed {
                    height: commit.height,
                    index: index as u64,
                    outcome: *outcome,
                };
                write.put_cf(transactions, key, encode(&record));
            }
        }
        write.put_cf(self.family(META)?, HEIGHT, height_key);
        write.put_cf(self.family(META)?, STATE_ROOT, hex(&commit.state_root));
        Ok(self.db.write(write)?)
    }

    /// Where and how transaction `id` committed, if it did.
    pub fn transaction(&self, id: &Cid) -> Result<Option<Committed>, Error> {
        let Some(bytes) = self
            .db
            .get_pinned_cf(self.family(TRANSACTIONS)?, id.to_bytes())?
        else {
            return Ok(None);
        };
        Ok(Some(decode(&bytes)?))
    }

    /// Flushes memtables to disk (on shutdown).
    pub fn flush(&self) -> Result<(), Error> {
        for name in FAMILIES {
            self.db.flush_cf(self.family(name)?)?;
        }
        Ok(())
    }
}

impl Archive for Storage {
    fn slot(&self, cid: &Cid) -> Option<(u32, u64)> {
        match Storage::slot(self, cid) {
            Ok(slot) => slot,
            Err(error) => {
                tracing::warn!(%cid, %error, "reading a stored block failed");
                None
            }
        }
    }
}

/// Round and author big-endian, then the CID: iteration order is round order.
fn index_key(round: u64, author: u32, cid: &[u8]) -> Vec<u8> {
    [&round.to_be_bytes()[..], &author.to_be_bytes(), cid].concat()
}
