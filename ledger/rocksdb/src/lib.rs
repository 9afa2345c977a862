//! RocksDB storage: accepted blocks and batches, the DAG index, the committed sequence, the
//! state-tree blocks by CID, the committed transactions by ID, metadata, and the blocks parked
//! while they wait for ancestors ([`StoreParking`]), each in its own column family. A commit (its
//! record, the state-tree blocks it made, the blocks its state no longer needs, its
//! transactions' positions, the new height) is one atomic write batch. Pruning (`prune`) deletes
//! what is older than a round.
//!
//! Each state block is stored behind the height of the last commit that wrote it (8 bytes,
//! big-endian), and each commit's list of the state blocks it stopped needing is kept: pruning a
//! commit deletes those of its list that no later commit wrote again (the same bytes can come back
//! under the same CID). Each batch has the highest round of a stored block that carries it, so that
//! pruning keeps a batch a later block carries again.
//!
//! On restart the node replays the stored blocks through the protocol core, which is deterministic:
//! it re-derives the same commits, and [`Storage::commit`] checks each against the stored record,
//! so a node resumes without refetching anything it stored and with the same state root.

use std::{path::Path, sync::Arc};

use bytes::Bytes;
use comms::Cid;
use rocksdb::{
    BlockBasedOptions, Cache, ColumnFamilyDescriptor, IteratorMode, Options, WriteBatch, DB,
};

mod prune;

use ledger_core::{
    codec::{decode, encode},
    store::{index_key, records, replay_differs, Archive, Base, Commit, Parking, Pruned},
    tree::TreeBlock,
    types::{Payload, SignedBlock},
    Committed, Outcome, Store, StoreError,
};

/// RocksDB's errors as the store's.
trait Disk<T> {
    fn disk(self) -> Result<T, StoreError>;
}

impl<T> Disk<T> for Result<T, rocksdb::Error> {
    fn disk(self) -> Result<T, StoreError> {
        self.map_err(|error| StoreError::Disk(Box::new(error)))
    }
}

const BLOCKS: &str = "blocks";
const BATCHES: &str = "batches";
const DAG_INDEX: &str = "dag_index";
const COMMITS: &str = "commits";
const STATE: &str = "state";
const META: &str = "meta";
const TRANSACTIONS: &str = "transactions";
const PARKING: &str = "parking";
/// Per commit height, the CIDs of the state blocks that commit stopped needing.
const DROPPED: &str = "dropped";
/// Per batch CID, the highest round of a stored block that carries it (u64, big-endian).
const BATCH_USE: &str = "batch_use";
const FAMILIES: [&str; 10] = [
    BLOCKS,
    BATCHES,
    DAG_INDEX,
    COMMITS,
    STATE,
    META,
    TRANSACTIONS,
    PARKING,
    DROPPED,
    BATCH_USE,
];
/// What the memtables of all families may hold together.
const MEMTABLES_BYTES: usize = 64 << 20;
/// The block cache all families share.
const BLOCK_CACHE_BYTES: usize = 32 << 20;
/// The write-ahead log's size at most, about.
const WAL_BYTES: u64 = 16 << 20;
/// The window of entries in which many deletions mark a table file for compaction.
const DELETION_WINDOW: usize = 4096;
/// Bloom filter bits per key (about 1 % false positives): most point lookups are for keys that
/// are not there (a transaction not yet recorded, a parent not yet stored, a parked block's
/// count), and without a filter each of those searches every file that may hold the key.
const FILTER_BITS_PER_KEY: f64 = 10.0;
const HEIGHT: &[u8] = b"height";
/// The layout of the store (u32, big-endian), written when it is created: 2 since the state is
/// a tree of blocks and commits name its root by CID, 3 since state blocks carry the height that
/// wrote them and commits the list of those they dropped (for pruning).
const FORMAT: &[u8] = b"format";
const FORMAT_VERSION: u32 = 3;
/// The round below which the store pruned (u64, big-endian).
const PRUNED: &[u8] = b"pruned";
/// Where a node that joined by snapshot started (a [`Base`], DAG-CBOR).
const BASE: &[u8] = b"base";
/// The highest round we signed a block for (u64, big-endian): see [`Store::last_signed`].
const LAST_SIGNED: &[u8] = b"last_signed";

/// A state block's stored value: the height of the commit that wrote it, then its bytes.
fn born(height: u64, bytes: &[u8]) -> Vec<u8> {
    [&height.to_be_bytes()[..], bytes].concat()
}

/// A stored big-endian u64, if any.
fn read_u64(value: Option<Vec<u8>>) -> Result<Option<u64>, StoreError> {
    value
        .map(|bytes| {
            let bytes: [u8; 8] = bytes.try_into().map_err(|_| StoreError::Corrupt {
                reason: "a stored number is not 8 bytes".into(),
            })?;
            Ok(u64::from_be_bytes(bytes))
        })
        .transpose()
}

/// A node's on-disk store. Clones share the database, which closes when the last one is dropped.
#[derive(Clone)]
pub struct Storage {
    db: Arc<DB>,
}

/// When RocksDB's info log rolls over, and how many old ones it keeps: at most about 5 MiB.
const INFO_LOG_BYTES: usize = 1 << 20;
const INFO_LOGS_KEPT: usize = 4;

impl Storage {
    /// Opens (creating if needed) the store in `dir`. Blocks parked by an earlier run are dropped
    /// (they are fetched again if still needed).
    pub fn open(dir: &Path) -> Result<Storage, StoreError> {
        let mut options = Options::default();
        options.create_if_missing(true);
        options.create_missing_column_families(true);
        // All families' memtables together: RocksDB's default is 64 MiB for each of them, which
        // a node syncing a long history fills in every family at once.
        options.set_db_write_buffer_size(MEMTABLES_BYTES);
        // The write-ahead log is kept until the memtables it covers are flushed: an idle node
        // fills 64 MiB of memtables in hours, and its log held every write meanwhile, deletions
        // of the pruned history included. Past this size the oldest memtables are flushed, so that
        // what pruning deleted leaves the disk with the next compactions.
        options.set_max_total_wal_size(WAL_BYTES);
        // RocksDB's own info log (`LOG`) grew about 0.9 MB an hour on an idle devnet node, without
        // end: it rolls over at 1 MiB, and the last few are kept.
        options.set_max_log_file_size(INFO_LOG_BYTES);
        options.set_keep_log_file_num(INFO_LOGS_KEPT);
        // One block cache for all families (each family's table would make its own otherwise),
        // and a filter on whole keys. Files written before without filters are read as they are.
        // Indexes and filters live in that cache too, not beside it, so that they do not grow
        // with the store; level 0's stay pinned, as they are read on every lookup.
        let mut table = BlockBasedOptions::default();
        table.set_block_cache(&Cache::new_lru_cache(BLOCK_CACHE_BYTES));
        table.set_bloom_filter(FILTER_BITS_PER_KEY, false);
        table.set_cache_index_and_filter_blocks(true);
        table.set_pin_l0_filter_and_index_blocks_in_cache(true);
        let mut family = Options::default();
        family.set_block_based_table_factory(&table);
        // Pruning deletes the history below its window: a table file in which a quarter of a
        // window of entries are deletions is compacted soon, so that the space of what was
        // deleted comes back rather than waiting behind its tombstones.
        family.add_compact_on_deletion_collector_factory(
            DELETION_WINDOW,
            DELETION_WINDOW / 4,
            0.25,
        );
        let families = FAMILIES
            .iter()
            .map(|name| ColumnFamilyDescriptor::new(*name, family.clone()));
        let storage = Storage {
            db: Arc::new(DB::open_cf_descriptors(&options, dir, families).disk()?),
        };
        storage.check_format()?;
        let parking = storage.family(PARKING)?;
        storage
            .db
            .delete_range_cf(parking, [0u8], [u8::MAX])
            .disk()?;
        Ok(storage)
    }

    /// How many state-tree blocks the store holds (a scan: for tests and measurements).
    pub fn state_blocks(&self) -> Result<u64, StoreError> {
        let mut count = 0;
        for item in self
            .db
            .iterator_cf(self.family(STATE)?, IteratorMode::Start)
        {
            item.disk()?;
            count += 1;
        }
        Ok(count)
    }

    /// Refuses a store of another layout (one written before the format was recorded holds a
    /// height but no format); marks a new one with this layout.
    fn check_format(&self) -> Result<(), StoreError> {
        let meta = self.family(META)?;
        let found = match self.db.get_cf(meta, FORMAT).disk()? {
            Some(bytes) => bytes.try_into().ok().map(u32::from_be_bytes),
            None if self.height()? > 0 || self.last_signed()?.is_some() => Some(1),
            None => {
                return self
                    .db
                    .put_cf(meta, FORMAT, FORMAT_VERSION.to_be_bytes())
                    .disk()
            }
        };
        match found {
            Some(FORMAT_VERSION) => Ok(()),
            found => Err(StoreError::Corrupt {
                reason: format!(
                    "the store is of format {found:?}, and this version reads format {FORMAT_VERSION} only: \
                     start from an empty data directory (keep the signing record: see the README)"
                ),
            }),
        }
    }

    /// This store as the node takes it.
    pub fn into_store(self) -> Arc<dyn Store> {
        Arc::new(self)
    }

    /// Parking for the protocol core in this store (see [`StoreParking`]).
    pub fn parking(&self) -> StoreParking {
        StoreParking {
            storage: self.clone(),
            len: 0,
        }
    }

    fn family(&self, name: &str) -> Result<&rocksdb::ColumnFamily, StoreError> {
        self.db.cf_handle(name).ok_or_else(|| StoreError::Corrupt {
            reason: format!("column family {name} missing"),
        })
    }

    /// Hands every stored block in round order to `visit`, one at a time (see
    /// [`Store::replay_slice`]). Returns how many there were.
    pub fn replay(
        &self,
        mut visit: impl FnMut(Bytes) -> Result<(), StoreError>,
    ) -> Result<u64, StoreError> {
        let (count, _) = self.replay_slice(&[], usize::MAX, &mut visit)?;
        Ok(count as u64)
    }

    /// Adds a block and its place in the replay order to `write`; returns its round.
    fn add_block(
        &self,
        write: &mut WriteBatch,
        cid: &Cid,
        bytes: &[u8],
    ) -> Result<u64, StoreError> {
        let block = SignedBlock::decode(bytes)?.block;
        let key = cid.to_bytes();
        if let Payload::Batch { cid: batch, .. } = &block.payload {
            let used = self.family(BATCH_USE)?;
            let batch = batch.to_bytes();
            if read_u64(self.db.get_cf(used, &batch).disk()?)?.is_none_or(|r| r < block.round) {
                write.put_cf(used, &batch, block.round.to_be_bytes());
            }
        }
        write.put_cf(self.family(BLOCKS)?, &key, bytes);
        write.put_cf(
            self.family(DAG_INDEX)?,
            index_key(block.round, block.author, &key),
            [],
        );
        Ok(block.round)
    }

    /// Author and round of a stored block (read from the block itself: the lookup is for blocks
    /// that left memory, which is rare).
    fn slot(&self, cid: &Cid) -> Result<Option<(u32, u64)>, StoreError> {
        let Some(bytes) = self.block(cid)? else {
            return Ok(None);
        };
        let block = SignedBlock::decode(&bytes)?;
        Ok(Some((block.block.author, block.block.round)))
    }
}

impl Store for Storage {
    /// Stores an accepted block (indexed by round and author) or a batch, unsynced.
    fn put_block(&self, cid: &Cid, bytes: &[u8], batch: bool) -> Result<(), StoreError> {
        let key = cid.to_bytes();
        if batch {
            return self.db.put_cf(self.family(BATCHES)?, key, bytes).disk();
        }
        let mut write = WriteBatch::default();
        self.add_block(&mut write, cid, bytes)?;
        self.db.write(write).disk()
    }

    /// Stores our block and records that we signed its round, in one write batch synced to disk
    /// before this returns (RocksDB syncs its write-ahead log, and with it every earlier write,
    /// our batch among them). The record never goes down.
    fn put_own_block(&self, cid: &Cid, bytes: &[u8]) -> Result<(), StoreError> {
        let mut write = WriteBatch::default();
        let round = self.add_block(&mut write, cid, bytes)?;
        if self.last_signed()?.is_none_or(|last| last < round) {
            write.put_cf(self.family(META)?, LAST_SIGNED, round.to_be_bytes());
        }
        let mut options = rocksdb::WriteOptions::default();
        options.set_sync(true);
        self.db.write_opt(write, &options).disk()
    }

    /// The round in the signing record, if any.
    fn last_signed(&self) -> Result<Option<u64>, StoreError> {
        let Some(bytes) = self.db.get_cf(self.family(META)?, LAST_SIGNED).disk()? else {
            return Ok(None);
        };
        let bytes: [u8; 8] = bytes.try_into().map_err(|_| StoreError::Corrupt {
            reason: "the signing record is not 8 bytes".into(),
        })?;
        Ok(Some(u64::from_be_bytes(bytes)))
    }

    /// Hands up to `limit` stored blocks to `visit`, one at a time, in round order from index key
    /// `from` on (empty: from the start): what a restart replays, slice by slice (the core reads
    /// batches from the store when it needs them). Returns how many there were and the key to go
    /// on from, `None` at the end. Stops at the first error `visit` returns.
    fn replay_slice(
        &self,
        from: &[u8],
        limit: usize,
        visit: &mut dyn FnMut(Bytes) -> Result<(), StoreError>,
    ) -> Result<(usize, Option<Vec<u8>>), StoreError> {
        let mut count = 0;
        let start = IteratorMode::From(from, rocksdb::Direction::Forward);
        for item in self.db.iterator_cf(self.family(DAG_INDEX)?, start) {
            let (key, _) = item.disk()?;
            if count == limit {
                return Ok((count, Some(key.into_vec())));
            }
            let cid = &key[12..];
            let bytes = self
                .db
                .get_cf(self.family(BLOCKS)?, cid)
                .disk()?
                .ok_or_else(|| StoreError::Corrupt {
                    reason: "indexed block missing".into(),
                })?;
            visit(Bytes::from(bytes))?;
            count += 1;
        }
        Ok((count, None))
    }

    /// The stored bytes of a block, if any.
    fn block(&self, cid: &Cid) -> Result<Option<Vec<u8>>, StoreError> {
        self.db.get_cf(self.family(BLOCKS)?, cid.to_bytes()).disk()
    }

    /// The stored bytes of a batch, if any.
    fn batch(&self, cid: &Cid) -> Result<Option<Vec<u8>>, StoreError> {
        self.db.get_cf(self.family(BATCHES)?, cid.to_bytes()).disk()
    }

    /// The committed height on disk.
    fn height(&self) -> Result<u64, StoreError> {
        let bytes = self.db.get_cf(self.family(META)?, HEIGHT).disk()?;
        Ok(bytes
            .and_then(|b| b.try_into().ok())
            .map_or(0, u64::from_be_bytes))
    }

    /// Writes a commit and the state-tree blocks it made, atomically. A commit at or below the
    /// stored height (a replay) is checked against the record instead.
    fn commit(
        &self,
        commit: &Commit,
        tree: &[TreeBlock],
        dropped: &[Cid],
    ) -> Result<(), StoreError> {
        let height_key = commit.height.to_be_bytes();
        if commit.height <= self.height()? {
            let stored = self.db.get_cf(self.family(COMMITS)?, height_key).disk()?;
            return match stored == Some(encode(commit)) {
                true => Ok(()),
                false => Err(replay_differs(commit.height)),
            };
        }
        let mut write = WriteBatch::default();
        write.put_cf(self.family(COMMITS)?, height_key, encode(commit));
        // A transaction ordered twice (proposed again, or by two validators) took effect at most
        // once: that is the record to keep. Otherwise the latest failure is kept (one that
        // expired waiting for an earlier nonce may be submitted again and take effect later). So
        // per transaction, this commit's record where it took effect, or else its first, is
        // written unless the stored one says it took effect. The lookups go to RocksDB as one batch.
        let transactions = self.family(TRANSACTIONS)?;
        let records: Vec<(Vec<u8>, Committed)> = (records(commit).into_iter())
            .map(|(id, record)| (id.to_bytes(), record))
            .collect();
        let stored =
            self.db
                .batched_multi_get_cf(transactions, records.iter().map(|(key, _)| key), false);
        for ((key, record), stored) in records.iter().zip(stored) {
            let applied = match stored.disk()? {
                Some(bytes) => decode::<Committed>(&bytes)?.outcome == Outcome::Applied,
                None => false,
            };
            if !applied {
                write.put_cf(transactions, key, encode(record));
            }
        }
        let state = self.family(STATE)?;
        for (cid, bytes) in tree {
            write.put_cf(state, cid.to_bytes(), born(commit.height, bytes));
        }
        if !dropped.is_empty() {
            write.put_cf(self.family(DROPPED)?, height_key, encode(&dropped));
        }
        write.put_cf(self.family(META)?, HEIGHT, height_key);
        self.db.write(write).disk()
    }

    /// Writes the base, its state's blocks and its height in one synced batch.
    fn put_base(&self, base: &Base, tree: &[TreeBlock]) -> Result<(), StoreError> {
        let mut write = WriteBatch::default();
        let state = self.family(STATE)?;
        for (cid, bytes) in tree {
            write.put_cf(state, cid.to_bytes(), born(base.checkpoint.height, bytes));
        }
        let meta = self.family(META)?;
        write.put_cf(meta, BASE, encode(base));
        write.put_cf(meta, HEIGHT, base.checkpoint.height.to_be_bytes());
        let mut options = rocksdb::WriteOptions::default();
        options.set_sync(true);
        self.db.write_opt(write, &options).disk()
    }

    fn base(&self) -> Result<Option<Base>, StoreError> {
        match self.db.get_pinned_cf(self.family(META)?, BASE).disk()? {
            Some(bytes) => Ok(Some(decode(&bytes)?)),
            None => Ok(None),
        }
    }

    /// The stored commit at `height`, if any.
    fn commit_at(&self, height: u64) -> Result<Option<Commit>, StoreError> {
        let key = height.to_be_bytes();
        match self.db.get_pinned_cf(self.family(COMMITS)?, key).disk()? {
            Some(bytes) => Ok(Some(decode(&bytes)?)),
            None => Ok(None),
        }
    }

    /// Where and how transaction `id` committed, if it did.
    fn transaction(&self, id: &Cid) -> Result<Option<Committed>, StoreError> {
        let Some(bytes) = self
            .db
            .get_pinned_cf(self.family(TRANSACTIONS)?, id.to_bytes())
            .disk()?
        else {
            return Ok(None);
        };
        Ok(Some(decode(&bytes)?))
    }

    /// The stored bytes of a state-tree block, if any.
    fn state_block(&self, cid: &Cid) -> Result<Option<Vec<u8>>, StoreError> {
        let stored = self.db.get_cf(self.family(STATE)?, cid.to_bytes()).disk()?;
        Ok(stored.map(|mut value| value.split_off(8.min(value.len()))))
    }

    fn prune(&self, round: u64, own: Option<u32>) -> Result<Pruned, StoreError> {
        Storage::prune_below(self, round, own)
    }

    fn pruned_below(&self) -> Result<u64, StoreError> {
        Ok(read_u64(self.db.get_cf(self.family(META)?, PRUNED).disk()?)?.unwrap_or(0))
    }

    /// Flushes memtables to disk (on shutdown).
    fn flush(&self) -> Result<(), StoreError> {
        for name in FAMILIES {
            self.db.flush_cf(self.family(name)?).disk()?;
        }
        Ok(())
    }

    fn parking(&self) -> Box<dyn Parking> {
        Box::new(Storage::parking(self))
    }

    fn archive(&self) -> Box<dyn Archive> {
        Box::new(self.clone())
    }
}

impl Archive for Storage {
    fn slot(&self, cid: &Cid) -> Result<Option<(u32, u64)>, StoreError> {
        Storage::slot(self, cid)
    }
}

/// Parking on disk: blocks that wait for dependencies, the count each still misses and the links
/// from each dependency to its waiting blocks sit in the `parking` column family (written without
/// the write-ahead log: a restart drops them anyway); batches go to the `batches` family, where
/// they stay. Only the number of parked blocks is in memory.
pub struct StoreParking {
    storage: Storage,
    len: usize,
}

/// Key prefixes in the `parking` family.
const PARKED: u8 = b'b';
const MISSING: u8 = b'm';
const WAITING: u8 = b'w';

fn parking_key(kind: u8, cid: &Cid) -> Vec<u8> {
    [&[kind][..], &cid.to_bytes()].concat()
}

/// The prefix of the links from `dependency`: its length first, so that no CID's prefix is a
/// prefix of another's.
fn waiting_prefix(dependency: &Cid) -> Vec<u8> {
    let bytes = dependency.to_bytes();
    [&[WAITING, bytes.len() as u8][..], &bytes].concat()
}

/// The first key after every key that starts with `prefix` (which starts with `WAITING`, so it is
/// never all `0xff`).
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while end.last() == Some(&u8::MAX) {
        end.pop();
    }
    if let Some(last) = end.last_mut() {
        *last += 1;
    }
    end
}

impl StoreParking {
    fn write(&self, write: WriteBatch) -> Result<(), StoreError> {
        let mut options = rocksdb::WriteOptions::default();
        options.disable_wal(true);
        self.storage.db.write_opt(write, &options).disk()
    }

    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        let family = self.storage.family(PARKING)?;
        self.storage.db.get_cf(family, key).disk()
    }

    /// The blocks linked from `dependency`, with the links removed.
    fn unlink(&self, dependency: &Cid, write: &mut WriteBatch) -> Result<Vec<Cid>, StoreError> {
        let family = self.storage.family(PARKING)?;
        let prefix = waiting_prefix(dependency);
        let mut children = Vec::new();
        // Bounded to the prefix: the family is full of deleted links, which an unbounded seek
        // would step over to find the next live key.
        let mut options = rocksdb::ReadOptions::default();
        options.set_iterate_upper_bound(prefix_end(&prefix));
        let items = self.storage.db.iterator_cf_opt(
            family,
            options,
            IteratorMode::From(&prefix, rocksdb::Direction::Forward),
        );
        for item in items {
            let (key, _) = item.disk()?;
            write.delete_cf(family, &key);
            children.push(Cid::try_from(&key[prefix.len()..]).map_err(|_| {
                StoreError::Corrupt {
                    reason: "a parking link holds no CID".into(),
                }
            })?);
        }
        Ok(children)
    }

    /// Adds the removal of parked block `cid` to `write`.
    fn remove(&self, cid: &Cid, write: &mut WriteBatch) -> Result<(), StoreError> {
        let family = self.storage.family(PARKING)?;
        write.delete_cf(family, parking_key(PARKED, cid));
        write.delete_cf(family, parking_key(MISSING, cid));
        Ok(())
    }
}

impl Parking for StoreParking {
    fn park(&mut self, cid: &Cid, bytes: &Bytes, missing: &[Cid]) -> Result<(), StoreError> {
        let family = self.storage.family(PARKING)?;
        let mut write = WriteBatch::default();
        write.put_cf(family, parking_key(PARKED, cid), bytes);
        write.put_cf(
            family,
            parking_key(MISSING, cid),
            (missing.len() as u32).to_be_bytes(),
        );
        for dependency in missing {
            write.put_cf(
                family,
                [waiting_prefix(dependency), cid.to_bytes()].concat(),
                [],
            );
        }
        self.write(write)?;
        self.len += 1;
        Ok(())
    }

    fn contains(&self, cid: &Cid) -> Result<bool, StoreError> {
        Ok(self.get(&parking_key(MISSING, cid))?.is_some())
    }

    fn resolve(&mut self, dependency: &Cid) -> Result<Vec<Cid>, StoreError> {
        let family = self.storage.family(PARKING)?;
        let mut write = WriteBatch::default();
        let mut ready = Vec::new();
        for child in self.unlink(dependency, &mut write)? {
            let key = parking_key(MISSING, &child);
            let Some(count) = self.get(&key)? else {
                continue;
            };
            let count =
                count
                    .try_into()
                    .map(u32::from_be_bytes)
                    .map_err(|_| StoreError::Corrupt {
                        reason: "a parked block's count is not 4 bytes".into(),
                    })?;
            let left = count.saturating_sub(1);
            write.put_cf(family, key, left.to_be_bytes());
            if left == 0 {
                ready.push(child);
            }
        }
        self.write(write)?;
        Ok(ready)
    }

    fn take(&mut self, cid: &Cid) -> Result<Option<Bytes>, StoreError> {
        let Some(bytes) = self.get(&parking_key(PARKED, cid))? else {
            return Ok(None);
        };
        let mut write = WriteBatch::default();
        self.remove(cid, &mut write)?;
        self.write(write)?;
        self.len -= 1;
        Ok(Some(bytes.into()))
    }

    fn discard(&mut self, dependency: &Cid) -> Result<Vec<Cid>, StoreError> {
        let mut write = WriteBatch::default();
        let mut discarded = Vec::new();
        for child in self.unlink(dependency, &mut write)? {
            if self.get(&parking_key(MISSING, &child))?.is_some() {
                self.remove(&child, &mut write)?;
                discarded.push(child);
            }
        }
        self.write(write)?;
        self.len -= discarded.len();
        Ok(discarded)
    }

    fn len(&self) -> usize {
        self.len
    }

    fn put_batch(&mut self, cid: &Cid, bytes: &Bytes) -> Result<(), StoreError> {
        self.storage.put_block(cid, bytes, true)
    }

    fn batch(&self, cid: &Cid) -> Result<Option<Bytes>, StoreError> {
        Ok(self.storage.batch(cid)?.map(Bytes::from))
    }

    fn has_batch(&self, cid: &Cid) -> Result<bool, StoreError> {
        let family = self.storage.family(BATCHES)?;
        let found = self
            .storage
            .db
            .get_pinned_cf(family, cid.to_bytes())
            .disk()?;
        Ok(found.is_some())
    }

    /// Batches stay in the store, which serves them.
    fn drop_batch(&mut self, _cid: &Cid) -> Result<(), StoreError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_info_log_is_bounded() {
        let dir = std::env::temp_dir().join(format!("ledger-storage-log-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let storage = Storage::open(&dir).expect("opens");
        // RocksDB writes the options it runs with to OPTIONS-<n>.
        let options: String = std::fs::read_dir(&dir)
            .expect("readable")
            .filter_map(|entry| entry.ok())
            .filter(|entry| entry.file_name().to_string_lossy().starts_with("OPTIONS-"))
            .filter_map(|entry| std::fs::read_to_string(entry.path()).ok())
            .collect();
        assert!(
            options.contains(&format!("max_log_file_size={INFO_LOG_BYTES}")),
            "{options}"
        );
        assert!(
            options.contains(&format!("keep_log_file_num={INFO_LOGS_KEPT}")),
            "{options}"
        );
        drop(storage);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_store_of_another_format_is_refused() {
        let dir = std::env::temp_dir().join(format!("ledger-format-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let storage = Storage::open(&dir).expect("a new store");
        let meta = storage.family(META).expect("meta");
        // What a store written before the format was recorded holds: a height, no format.
        storage.db.delete_cf(meta, FORMAT).expect("written");
        storage
            .db
            .put_cf(meta, HEIGHT, 5u64.to_be_bytes())
            .expect("written");
        drop(storage);
        let refused = Storage::open(&dir).err().expect("refused");
        assert!(refused.to_string().contains("format Some(1)"), "{refused}");
        let _ = std::fs::remove_dir_all(&dir);
        Storage::open(&dir).expect("a new store");
        Storage::open(&dir).expect("and again: it is of this format");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
