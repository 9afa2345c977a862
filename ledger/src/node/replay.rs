//! Start-up: the state of the last stored commit, then the stored blocks above its memory floor
//! replayed through the core.

use comms::Communication;
use tracing::info;

use super::{actor::Node, NodeError, REPLAY_SLICE};
use crate::{
    core::Output,
    store::{Start, StoreError},
};

impl<C: Communication + Clone> Node<C> {
    /// Starts the core after the last stored commit, from the state it left (every block of it
    /// checked against its CID), and replays the stored blocks from that commit's memory floor up
    /// through the core, carrying out what it decides on the way: what it reads grows with the
    /// state and the last [`GC_DEPTH`](crate::consensus::GC_DEPTH) rounds, not with the history.
    /// A commit re-derived at or below the stored height must equal the stored one (one above it,
    /// which a crash lost, is written): a store that replays differently is corrupt, and the node
    /// does not start on it. Goes [`REPLAY_SLICE`] blocks at a time, carrying out each slice's
    /// outputs before the next, so that a long store does not hold up the runtime's other tasks.
    pub(super) async fn replay(&mut self) -> Result<(), NodeError> {
        let Some(storage) = self.storage.clone() else {
            return Ok(());
        };
        let (mut from, mut count) = (Vec::new(), 0);
        if let Some(start) = Start::read(&*storage)? {
            info!(
                height = start.last.height,
                accounts = start.state.len(),
                state_root = %start.last.state_root,
                "starting from the stored state"
            );
            from = start.replay_from();
            self.core.start_after(start)?;
        }
        loop {
            let mut rest = Vec::new();
            let (read, next) = storage.replay_slice(&from, REPLAY_SLICE, &mut |bytes| {
                let mut out = Vec::new();
                self.core.restore(bytes, &mut out)?;
                for output in out {
                    match output {
                        Output::Committed {
                            commit,
                            tree,
                            dropped,
                        } => storage.commit(&commit, &tree, &dropped)?,
                        other => rest.push(other),
                    }
                }
                Ok::<(), StoreError>(())
            })?;
            self.dispatch(rest).await?;
            count += read;
            let Some(next) = next else { break };
            from = next;
            tokio::task::yield_now().await;
        }
        info!(
            blocks = count,
            height = self.core.height(),
            "replayed stored blocks"
        );
        Ok(())
    }
}
