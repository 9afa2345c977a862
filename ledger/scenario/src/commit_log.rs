//! A node's commits, recorded as they happen.

use std::sync::Arc;

use ledger::{Commit, NodeError, NodeHandle};
use tokio::{sync::broadcast, task::JoinHandle, time::Instant};

/// A commit and when it arrived (tokio time: virtual in a simulation).
pub type TimedCommit = (Instant, Arc<Commit>);

/// Every commit of a node from when [`CommitLog::open`] was called until the node stopped.
pub struct CommitLog(JoinHandle<Result<Vec<TimedCommit>, CommitLogError>>);

/// A commit log that is not complete.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CommitLogError {
    /// Its reader fell more than the node's commit queue behind and lost some.
    #[error("the commit log fell behind and lost {0} commits")]
    Lagged(u64),
    /// Its task was cancelled (the runtime stopped) or panicked.
    #[error("the commit log's task ended: {0}")]
    Task(#[from] tokio::task::JoinError),
}

impl CommitLog {
    /// Records `node`'s commits from now until it stops.
    pub async fn open(node: &NodeHandle) -> Result<CommitLog, NodeError> {
        let mut commits = node.commits().await?;
        Ok(CommitLog(tokio::spawn(async move {
            let mut all = Vec::new();
            loop {
                match commits.recv().await {
                    Ok(commit) => all.push((Instant::now(), commit)),
                    Err(broadcast::error::RecvError::Closed) => return Ok(all),
                    Err(broadcast::error::RecvError::Lagged(lost)) => {
                        return Err(CommitLogError::Lagged(lost))
                    }
                }
            }
        })))
    }

    /// Waits for the node to stop; its commits in order, with the time of each.
    pub async fn finish(self) -> Result<Vec<TimedCommit>, CommitLogError> {
        self.0.await?
    }

    /// Waits for the node to stop; its commits in order.
    pub async fn commits(self) -> Result<Vec<Arc<Commit>>, CommitLogError> {
        Ok(self.finish().await?.into_iter().map(|(_, c)| c).collect())
    }
}
