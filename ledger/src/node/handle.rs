//! The handle: a cheap, clonable way to talk to the node's task, and to learn how it ended.

use std::sync::Arc;

use comms::Cid;
use tokio::sync::{broadcast, mpsc, oneshot, watch};

use super::{NodeError, ProvenAccount, Status, TxStatus};
use crate::{core::SubmitError, dag::AcceptedBlock, Account, Commit, PublicKey, SignedTransaction};

pub(super) enum Command {
    Submit(SignedTransaction, oneshot::Sender<Result<Cid, SubmitError>>),
    Transaction(Cid, oneshot::Sender<TxStatus>),
    Block(Cid, oneshot::Sender<Option<Arc<AcceptedBlock>>>),
    Status(oneshot::Sender<Status>),
    Account(PublicKey, oneshot::Sender<Account>),
    Proven(PublicKey, oneshot::Sender<Option<ProvenAccount>>),
    Commits(oneshot::Sender<broadcast::Receiver<Arc<Commit>>>),
    Shutdown(oneshot::Sender<()>),
}

/// How a node's task ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Exit {
    /// Shut down on request, or when its last handle went.
    Stopped,
    /// One of its tasks failed (a storage error, a panic): the node stopped, and must not be
    /// trusted to run on. `task` names the task, `reason` says what failed.
    Failed { task: &'static str, reason: String },
}

impl std::fmt::Display for Exit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Exit::Stopped => write!(f, "stopped"),
            Exit::Failed { task, reason } => write!(f, "the {task} task failed: {reason}"),
        }
    }
}

/// A handle to a running node. Clone it freely; the node stops when the last one is dropped or
/// on [`NodeHandle::shutdown`].
#[derive(Clone)]
pub struct NodeHandle {
    pub(super) commands: mpsc::Sender<Command>,
    pub(super) exit: watch::Receiver<Option<Exit>>,
}

impl NodeHandle {
    /// Submits a transaction to this node (a validator) for its next block; returns its ID.
    pub async fn submit(
        &self,
        tx: SignedTransaction,
    ) -> Result<Result<Cid, SubmitError>, NodeError> {
        self.ask(|reply| Command::Submit(tx, reply)).await
    }

    /// Where transaction `id` stands.
    pub async fn transaction(&self, id: Cid) -> Result<TxStatus, NodeError> {
        self.ask(|reply| Command::Transaction(id, reply)).await
    }

    /// An accepted block (not a batch) by CID.
    pub async fn block(&self, cid: Cid) -> Result<Option<Arc<AcceptedBlock>>, NodeError> {
        self.ask(|reply| Command::Block(cid, reply)).await
    }

    /// The node's progress.
    pub async fn status(&self) -> Result<Status, NodeError> {
        self.ask(Command::Status).await
    }

    /// An account in the committed state.
    pub async fn account(&self, key: PublicKey) -> Result<Account, NodeError> {
        self.ask(|reply| Command::Account(key, reply)).await
    }

    /// An account as of the latest certified checkpoint, with its proof; `None` while no
    /// checkpoint is certified that this node executed and holds the state of.
    pub async fn proven_account(&self, key: PublicKey) -> Result<Option<ProvenAccount>, NodeError> {
        self.ask(|reply| Command::Proven(key, reply)).await
    }

    /// Commits from now on; the stream ends when the node stops. A receiver that falls more than
    /// 1,024 behind loses the oldest.
    pub async fn commits(&self) -> Result<broadcast::Receiver<Arc<Commit>>, NodeError> {
        self.ask(Command::Commits).await
    }

    /// Stops the node after flushing its storage.
    pub async fn shutdown(&self) -> Result<(), NodeError> {
        self.ask(Command::Shutdown).await
    }

    /// How the node ended, if it has: `None` while its tasks run.
    pub fn exit(&self) -> Option<Exit> {
        self.exit.borrow().clone()
    }

    /// Waits until the node ends, and says how.
    pub async fn stopped(&self) -> Exit {
        let mut exit = self.exit.clone();
        let ended = match exit.wait_for(Option::is_some).await {
            Ok(exit) => exit.clone(),
            // The supervisor went without a word: only when the runtime shuts down.
            Err(_) => None,
        };
        ended.unwrap_or(Exit::Stopped)
    }

    async fn ask<T>(
        &self,
        command: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, NodeError> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(command(reply))
            .await
            .map_err(|_| NodeError::Stopped)?;
        answer.await.map_err(|_| NodeError::Stopped)
    }
}
