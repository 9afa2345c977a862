//! Start-up: the stored blocks replayed through the core.

use comms::Communication;
use tracing::info;

use super::{actor::Node, NodeError, REPLAY_SLICE};
use crate::{core::Output, store::StoreError};

impl<C: Communication + Clone> Node<C> {
    /// Replays the store through the core, carrying out what it decides on the way, so that memory
    /// holds only what is above the floor by the end. Each re-derived commit must equal the stored
    /// one (one above the stored height, which a crash lost, is written): a store that replays
    /// differently is corrupt, and the node does not start on it. Goes [`REPLAY_SLICE`] blocks at
    /// a time, carrying out each slice's outputs before the next, so that a long store does not
    /// hold up the runtime's other tasks.
    pub(super) async fn replay(&mut self) -> Result<(), NodeError> {
        let Some(storage) = self.storage.clone() else {
            return Ok(());
        };
        let (mut from, mut count) = (Vec::new(), 0);
        loop {
            let mut rest = Vec::new();
            let (read, next) = storage.replay_slice(&from, REPLAY_SLICE, &mut |bytes| {
                let mut out = Vec::new();
                self.core.restore(bytes, &mut out)?;
                for output in out {
                    match output {
                        Output::Committed { commit, tree } => storage.commit(&commit, &tree)?,
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
