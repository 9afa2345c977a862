//! Pruning: deleting the history below a round (see [`Store::prune`]), in write batches of a
//! bounded size, each atomic. The pruned round is recorded last: a crash midway leaves records
//! below it that the next prune, which starts from the lowest, deletes.

use comms::Cid;
use ledger_core::{
    codec::decode,
    store::{index_key, records, Commit, Pruned},
    types::{Payload, SignedBlock},
    Committed, Store, StoreError,
};
use rocksdb::{IteratorMode, ReadOptions, WriteBatch};

use super::{
    read_u64, Disk, Storage, BATCHES, BATCH_USE, BLOCKS, COMMITS, DAG_INDEX, DROPPED, META, PRUNED,
    STATE, TRANSACTIONS,
};

/// Deletions per write batch, about.
const BATCH_DELETES: usize = 4096;

impl Storage {
    pub(super) fn prune_below(&self, round: u64, own: Option<u32>) -> Result<Pruned, StoreError> {
        let mut pruned = Pruned::default();
        let mut write = WriteBatch::default();
        let height = self.height()?;
        for item in self
            .db
            .iterator_cf(self.family(COMMITS)?, IteratorMode::Start)
        {
            let (_, value) = item.disk()?;
            let commit: Commit = decode(&value)?;
            if commit.round >= round || commit.height >= height {
                break;
            }
            self.prune_commit(&commit, &mut write, &mut pruned)?;
            self.write_when_full(&mut write)?;
        }
        let mut options = ReadOptions::default();
        options.set_iterate_upper_bound(index_key(round, 0, &[]));
        let index = self.family(DAG_INDEX)?;
        for item in self.db.iterator_cf_opt(index, options, IteratorMode::Start) {
            let (key, _) = item.disk()?;
            // Round and author (12 bytes), then the CID.
            if let (Some(author), Some(cid)) = (key.get(8..12), key.get(12..)) {
                let ours = own.is_some_and(|own| author == own.to_be_bytes());
                self.prune_block(cid, round, ours, &mut write, &mut pruned)?;
            }
            write.delete_cf(index, &key);
            self.write_when_full(&mut write)?;
        }
        if self.pruned_below()? < round {
            write.put_cf(self.family(META)?, PRUNED, round.to_be_bytes());
        }
        self.db.write(write).disk()?;
        Ok(pruned)
    }

    fn write_when_full(&self, write: &mut WriteBatch) -> Result<(), StoreError> {
        if write.len() >= BATCH_DELETES {
            self.db.write(std::mem::take(write)).disk()?;
        }
        Ok(())
    }

    /// Adds the deletion of `commit`, its transactions' records (those it holds: a transaction
    /// that took effect later keeps that record) and the blocks of its state that the next commit
    /// dropped (its state is the last that needed them) and no commit wrote again since.
    fn prune_commit(
        &self,
        commit: &Commit,
        write: &mut WriteBatch,
        pruned: &mut Pruned,
    ) -> Result<(), StoreError> {
        let (key, next) = (commit.height.to_be_bytes(), commit.height + 1);
        let transactions = self.family(TRANSACTIONS)?;
        for (id, _) in records(commit) {
            let id = id.to_bytes();
            let Some(stored) = self.db.get_pinned_cf(transactions, &id).disk()? else {
                continue;
            };
            if decode::<Committed>(&stored)?.height <= commit.height {
                write.delete_cf(transactions, &id);
                pruned.transactions += 1;
            }
        }
        let (dropped, state) = (self.family(DROPPED)?, self.family(STATE)?);
        if let Some(list) = self.db.get_pinned_cf(dropped, next.to_be_bytes()).disk()? {
            for cid in decode::<Vec<Cid>>(&list)? {
                let cid = cid.to_bytes();
                let Some(value) = self.db.get_pinned_cf(state, &cid).disk()? else {
                    continue;
                };
                let born = read_u64(value.get(..8).map(<[u8]>::to_vec))?;
                if born.is_some_and(|born| born < next) {
                    write.delete_cf(state, &cid);
                    pruned.state_blocks += 1;
                }
            }
            write.delete_cf(dropped, next.to_be_bytes());
        }
        write.delete_cf(dropped, key);
        write.delete_cf(self.family(COMMITS)?, key);
        pruned.commits += 1;
        Ok(())
    }

    /// Adds the deletion of block `cid` (of a round below `round`), and of its batch unless a
    /// block at `round` or above carries it too; `ours`: their CIDs go to `pruned.own`.
    fn prune_block(
        &self,
        cid: &[u8],
        round: u64,
        ours: bool,
        write: &mut WriteBatch,
        pruned: &mut Pruned,
    ) -> Result<(), StoreError> {
        let blocks = self.family(BLOCKS)?;
        let Some(bytes) = self.db.get_pinned_cf(blocks, cid).disk()? else {
            return Ok(());
        };
        if let Payload::Batch { cid: batch, .. } = SignedBlock::decode(&bytes)?.block.payload {
            let (batches, used) = (self.family(BATCHES)?, self.family(BATCH_USE)?);
            let batch = batch.to_bytes();
            let last = read_u64(self.db.get_cf(used, &batch).disk()?)?;
            if last.is_none_or(|last| last < round) {
                write.delete_cf(batches, &batch);
                write.delete_cf(used, &batch);
                pruned.batches += 1;
                if ours {
                    pruned.own.extend(Cid::try_from(&batch[..]).ok());
                }
            }
        }
        write.delete_cf(blocks, cid);
        pruned.blocks += 1;
        if ours {
            pruned.own.extend(Cid::try_from(cid).ok());
        }
        Ok(())
    }
}
