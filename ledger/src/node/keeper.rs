//! The keeper: makes the blocks and batches the node accepted available from its backend.

use bytes::Bytes;
use comms::{Codec, Communication};
use tokio::{sync::mpsc, task::JoinHandle};
use tracing::{warn, Instrument};

/// Bytes of blocks the keeper stores in one round of calls, at most.
const KEEP_ROUND_BYTES: usize = 4 << 20;

/// Blocks and batches waiting for the keeper, at most. When the daemon falls this far behind, the
/// node waits for it (it takes no new input meanwhile) rather than holding ever more in memory.
pub(super) const KEEPER_QUEUE: usize = 4096;

/// A block or batch for the keeper: ours (`put`, pinned) or another's (`keep`, a copy).
pub(super) struct ToKeep {
    pub(super) bytes: Bytes,
    pub(super) own: bool,
}

/// Starts the keeper, which makes the blocks and batches the node accepted available from its
/// backend, in the order they were accepted: ours with `put` (pinned: we are their first source),
/// and a copy of every other with `keep` (so that they stay available from here if their author's
/// daemon goes). What queued during one round of calls goes in the next: the copies in one `keep`
/// call, then our blocks. Since a block is accepted only after everything it links, every link of
/// a pinned block is on the daemon before it is pinned, which kubo's garbage collector needs (it
/// aborts on a pinned block with a missing link). So nothing is dropped: the queue holds
/// [`KEEPER_QUEUE`] entries, and a node whose daemon falls that far behind waits for it.
/// A backend that fails a call is logged (the backend counts its errors) and the keeper goes on.
pub(super) fn spawn<C: Communication>(
    comms: C,
    span: tracing::Span,
) -> (mpsc::Sender<ToKeep>, JoinHandle<()>) {
    let (sender, mut queue) = mpsc::channel::<ToKeep>(KEEPER_QUEUE);
    let task = tokio::spawn(
        async move {
            while let Some(first) = queue.recv().await {
                let (mut bytes, mut copies, mut own) = (0, Vec::new(), Vec::new());
                let mut next = Some(first);
                while let Some(entry) = next.take() {
                    bytes += entry.bytes.len();
                    match entry.own {
                        true => own.push(entry.bytes),
                        false => copies.push(entry.bytes),
                    }
                    if bytes < KEEP_ROUND_BYTES {
                        next = queue.try_recv().ok();
                    }
                }
                let count = copies.len();
                if count > 0 {
                    if let Err(error) = comms.keep(Codec::DagCbor, copies).await {
                        warn!(count, %error, "keeping copies of others' blocks failed");
                    }
                }
                // A crash while our blocks go to the daemon (tests).
                fail::fail_point!("keeper::put", |_| {
                    tracing::error!("crashing at a fail point");
                    std::process::abort()
                });
                for bytes in own {
                    if let Err(error) = comms.put(Codec::DagCbor, bytes).await {
                        warn!(%error, "making one of our blocks available failed");
                    }
                }
            }
        }
        .instrument(span),
    );
    (sender, task)
}
