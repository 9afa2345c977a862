//! The node's task: it owns the [`Core`] and runs one loop over its event sources (commands from
//! handles, broadcast messages, finished fetches, the clock), carrying out what the core decides:
//! disk first, then the network. A storage error ends the loop with the error: the node stops
//! rather than run on with a store it cannot trust.

use std::{sync::Arc, time::Duration};

use bytes::Bytes;
use comms::{Cid, Communication, Topic};
use tokio::{
    sync::{broadcast, mpsc, oneshot, Semaphore},
    task::JoinHandle,
    time::Instant,
};
use tracing::{debug, info, warn, Instrument};

use super::{
    fetch::{back_off, fetch_with_retry},
    handle::Command,
    keeper::ToKeep,
    NodeConfig, NodeError, ProvenAccount, Status, TxStatus, PRUNE_EVERY,
};
use crate::{
    codec::decode,
    core::{Core, Output, Standing},
    dag::AcceptedBlock,
    log_limit::LogLimit,
    state::{prove_stored_account, verify_account},
    store::{Commit, Store, StoreError},
    types::{Payload, SignedBlock},
    PublicKey,
};

pub(super) type Fetched = (Cid, Result<Bytes, comms::Error>);

pub(super) struct Node<C> {
    pub(super) core: Core,
    pub(super) comms: C,
    pub(super) storage: Option<Arc<dyn Store>>,
    pub(super) topic: Topic,
    pub(super) config: NodeConfig,
    pub(super) start: Instant,
    pub(super) epoch: u64,
    pub(super) commits: broadcast::Sender<Arc<Commit>>,
    pub(super) fetch_permits: Arc<Semaphore>,
    pub(super) fetched_tx: mpsc::Sender<Fetched>,
    /// What the keeper (`keeper::spawn`) makes available from the backend.
    pub(super) keeper: mpsc::Sender<ToKeep>,
    pub(super) quiet: Quiet,
    /// The round below which the store pruned.
    pub(super) pruned_below: u64,
}

/// How often one author's equivocations, or one kind of refusal, may take a log line: `left_out`
/// in each line counts those since the previous one; the core's counters count them all.
const QUIET_MS: u64 = 10_000;

/// The log limits of the refusals and equivocations the core reports, and of the keeper's
/// falling behind.
pub(super) struct Quiet {
    rejected: LogLimit<&'static str>,
    equivocations: LogLimit<u32>,
    keeper_full: LogLimit<()>,
}

impl Default for Quiet {
    fn default() -> Quiet {
        Quiet {
            rejected: LogLimit::new(QUIET_MS),
            equivocations: LogLimit::new(QUIET_MS),
            keeper_full: LogLimit::new(QUIET_MS),
        }
    }
}

/// A storage operation that failed, as the node's error.
fn failed(operation: &'static str) -> impl FnOnce(StoreError) -> NodeError {
    move |source| NodeError::Storage { operation, source }
}

/// What the node's loop waits on: commands from handles, broadcast messages, finished fetches,
/// and the keeper's task, whose end is the node's.
pub(super) struct Inputs {
    pub(super) commands: mpsc::Receiver<Command>,
    pub(super) subscription: comms::Subscription,
    pub(super) fetched: mpsc::Receiver<Fetched>,
    pub(super) keeper: JoinHandle<()>,
}

impl<C: Communication + Clone> Node<C> {
    /// The loop, until a shutdown, the last handle's drop, or a fatal error (storage, or the
    /// keeper's task ending).
    pub(super) async fn run(mut self, mut inputs: Inputs) -> Result<(), NodeError> {
        let reply = self.serve(&mut inputs).await?;
        let flushed = self.shutdown();
        if let Some(reply) = reply {
            let _ = reply.send(());
        }
        flushed
    }

    /// The loop, until a stop (with the shutdown's reply, if one asked) or an error.
    async fn serve(
        &mut self,
        inputs: &mut Inputs,
    ) -> Result<Option<oneshot::Sender<()>>, NodeError> {
        let wake = tokio::time::sleep(self.config.tick);
        tokio::pin!(wake);
        let Inputs {
            commands,
            subscription,
            fetched,
            keeper,
        } = inputs;
        loop {
            fail::fail_point!("node::step");
            let mut out = Vec::new();
            tokio::select! {
                biased;
                ended = &mut *keeper => {
                    let reason = match ended {
                        Err(error) if error.is_panic() => panicked(&*error.into_panic()),
                        _ => "ended".to_string(),
                    };
                    return Err(NodeError::Task { task: "keeper", reason });
                }
                command = commands.recv() => match command {
                    Some(Command::Shutdown(reply)) => return Ok(Some(reply)),
                    Some(command) => self.handle_command(command, &mut out)?,
                    None => return Ok(None),
                },
                Some((cid, result)) = fetched.recv() => self.handle_fetched(cid, result, &mut out)?,
                message = subscription.recv() => match message {
                    Some(message) => {
                        let received = self.core.receive(self.now_ms(), message.data, &mut out);
                        received.map_err(failed("accepting a block"))?
                    }
                    None => *subscription = self.resubscribe().await,
                },
                _ = &mut wake => {
                    self.core.tick(self.now_ms(), &mut out).map_err(failed("proposing"))?
                }
                // Yields first, so that the writes and sends of the previous slice run before the
                // next is taken: a history accepted at once must not pile up in spawned tasks.
                _ = tokio::task::yield_now(), if self.core.has_backlog() => {
                    let resumed = self.core.resume(self.now_ms(), &mut out);
                    resumed.map_err(failed("accepting blocks"))?
                }
            }
            self.dispatch(out).await?;
            wake.as_mut().reset(self.next_wake());
        }
    }

    /// When to tell the core the time next: when it has something due, at least a millisecond
    /// from now (its clock counts milliseconds), and at most `tick` from now.
    fn next_wake(&self) -> Instant {
        let now = Instant::now();
        let latest = now + self.config.tick;
        let Some(due) = self.core.next_wake() else {
            return latest;
        };
        let since_start = Duration::from_millis(due.saturating_sub(self.epoch));
        (self.start + since_start)
            .max(now + Duration::from_millis(1))
            .min(latest)
    }

    /// An accepted block that left memory, from the store (with its batch's transactions).
    fn stored_block(&self, cid: Cid) -> Result<Option<AcceptedBlock>, StoreError> {
        let Some(storage) = self.storage.as_ref() else {
            return Ok(None);
        };
        let Some(bytes) = storage.block(&cid)? else {
            return Ok(None);
        };
        let block = SignedBlock::decode(&bytes)?;
        let transactions = match &block.block.payload {
            Payload::Inline(txs) => txs.clone(),
            Payload::Batch { cid: batch, .. } => match storage.batch(batch)? {
                Some(bytes) => decode(&bytes)?,
                None => {
                    return Err(StoreError::Corrupt {
                        reason: format!("the batch {batch} of stored block {cid} is missing"),
                    })
                }
            },
        };
        Ok(Some(AcceptedBlock {
            cid,
            block,
            bytes: bytes.into(),
            transactions: Arc::new(transactions),
        }))
    }

    pub(super) fn now_ms(&self) -> u64 {
        self.epoch + self.start.elapsed().as_millis() as u64
    }

    fn handle_command(&mut self, command: Command, out: &mut Vec<Output>) -> Result<(), NodeError> {
        match command {
            Command::Submit(tx, reply) => {
                let result = self.core.submit(tx);
                if result.is_ok() {
                    // An idle validator proposes it now rather than at its idle pace.
                    let now_ms = self.now_ms();
                    self.core.tick(now_ms, out).map_err(failed("proposing"))?;
                }
                let _ = reply.send(result);
            }
            Command::Status(reply) => {
                let _ = reply.send(self.status());
            }
            Command::Transaction(id, reply) => {
                let status = self
                    .transaction(&id)
                    .map_err(failed("reading a transaction"))?;
                let _ = reply.send(status);
            }
            Command::Block(cid, reply) => {
                let block = match self.core.dag().get(&cid) {
                    Some(block) => Some(block.clone()),
                    None => (self.stored_block(cid))
                        .map_err(failed("reading a block"))?
                        .map(Arc::new),
                };
                let _ = reply.send(block);
            }
            Command::Account(key, reply) => {
                let _ = reply.send(self.core.state().account(&key));
            }
            Command::Proven(key, reply) => {
                let proven = self.proven(&key).map_err(failed("reading a proof"))?;
                let _ = reply.send(proven);
            }
            Command::Commits(reply) => {
                let _ = reply.send(self.commits.subscribe());
            }
            Command::Shutdown(_) => {}
        }
        Ok(())
    }

    /// Account `key` as of the latest certified checkpoint, if this node executed that
    /// checkpoint to the same root and holds its state: the one in memory, or a stored one.
    fn proven(&self, key: &PublicKey) -> Result<Option<ProvenAccount>, StoreError> {
        let Some(certificate) = self.core.certified() else {
            return Ok(None);
        };
        let checkpoint = certificate.checkpoint;
        let root = checkpoint.state_root;
        let state = self.core.state();
        // From memory when the certified state is the current one, else from the store.
        let in_memory = (state.root() == root).then(|| state.prove(key)).flatten();
        let proof = match (in_memory, &self.storage) {
            (Some(proof), _) => proof,
            (None, Some(storage)) => {
                let ours = storage.commit_at(checkpoint.height)?.map(|c| c.state_root);
                if ours != Some(root) {
                    // Not executed here yet, or executed to another root (counted and logged).
                    return Ok(None);
                }
                prove_stored_account(&root, key, &mut |cid: &Cid| storage.state_block(cid))?
            }
            (None, None) => return Ok(None),
        };
        let account = verify_account(&root, key, &proof)?;
        Ok(Some(ProvenAccount {
            account,
            checkpoint,
            proof,
            certificate: certificate.blocks.clone(),
        }))
    }

    fn status(&self) -> Status {
        let core = &self.core;
        let certified = core.certified().map(|c| c.checkpoint);
        Status {
            height: core.height(),
            state_root: core.state().root().to_string(),
            certified_height: certified.map(|c| c.height),
            certified_state_root: certified.map(|c| c.state_root.to_string()),
            dag_blocks: core.dag().len(),
            dag_floor: core.floor(),
            pruned_in_memory: core.pruned_in_memory(),
            highest_round: core.dag().highest_round(),
            highest_round_seen: core.highest_round_seen(),
            pending_blocks: core.pending_blocks(),
            pending_fetches: core.wanted(),
            mempool: core.mempool_len(),
            recent_authors: (core.dag().highest_round().saturating_sub(2)
                ..=core.dag().highest_round())
                .map(|round| (round, core.dag().round(round).map(|b| b.author()).collect()))
                .collect(),
            joining: core.joining(),
            pruned_below: self.pruned_below,
            stats: core.stats(),
        }
    }

    fn transaction(&self, id: &Cid) -> Result<TxStatus, StoreError> {
        match self.core.standing(id) {
            Some(Standing::Queued) => return Ok(TxStatus::Queued),
            Some(Standing::Pending) => return Ok(TxStatus::Pending),
            Some(Standing::Expired) => return Ok(TxStatus::Expired),
            None => {}
        }
        let Some(storage) = &self.storage else {
            return Ok(TxStatus::Unknown);
        };
        Ok(match storage.transaction(id)? {
            Some(committed) => TxStatus::Committed(committed),
            None => TxStatus::Unknown,
        })
    }

    fn handle_fetched(
        &mut self,
        cid: Cid,
        result: Result<Bytes, comms::Error>,
        out: &mut Vec<Output>,
    ) -> Result<(), NodeError> {
        let handled = match result {
            Ok(bytes) => self.core.fetched(self.now_ms(), cid, bytes, out),
            Err(error) => {
                warn!(%cid, %error, "giving up fetching");
                self.core.fetch_failed(cid, out)
            }
        };
        handled.map_err(failed("accepting a fetched block"))
    }

    /// Subscribes again after the stream ended, with backoff, until it works.
    async fn resubscribe(&self) -> comms::Subscription {
        let mut delay = Duration::from_millis(100);
        loop {
            match self.comms.subscribe(&self.topic).await {
                Ok(subscription) => return subscription,
                Err(error) => warn!(%error, ?delay, "resubscribing failed"),
            }
            back_off(&mut delay).await;
        }
    }

    /// Carries out the core's outputs: disk first (our own blocks synced), then the network. A
    /// failed write stops here, before anything of `out` leaves the process.
    pub(super) async fn dispatch(&mut self, out: Vec<Output>) -> Result<(), NodeError> {
        let (stores, rest): (Vec<_>, Vec<_>) = out.into_iter().partition(|o| {
            matches!(
                o,
                Output::Store { .. } | Output::Committed { .. } | Output::Joined { .. }
            )
        });
        for output in &stores {
            self.write(output)?;
        }
        let last = stores.iter().rev().find_map(|output| match output {
            Output::Committed { commit, .. } => Some(commit.round),
            _ => None,
        });
        if let Some(round) = last {
            self.prune(round)?;
        }
        for output in stores.into_iter().chain(rest) {
            self.carry_out(output).await;
        }
        Ok(())
    }

    /// Writes what an output asks to be written: a block (ours durably, with the record that we
    /// signed its round), or a commit.
    fn write(&self, output: &Output) -> Result<(), NodeError> {
        let Some(storage) = self.storage.as_ref() else {
            return Ok(());
        };
        fail::fail_point!("node::write", |_| Err(failed("writing")(injected(
            "node::write"
        ))));
        match output {
            // The core's parking already wrote batches to the store.
            Output::Store { batch: true, .. } => Ok(()),
            Output::Store {
                cid,
                bytes,
                own: true,
                ..
            } => {
                fail::fail_point!("node::before-own-block", |_| crash());
                let written = storage.put_own_block(cid, bytes);
                fail::fail_point!("node::after-own-block", |_| crash());
                written.map_err(failed("storing our block"))
            }
            Output::Store { cid, bytes, .. } => {
                (storage.put_block(cid, bytes, false)).map_err(failed("storing a block"))
            }
            Output::Committed {
                commit,
                tree,
                dropped,
            } => {
                fail::fail_point!("node::before-commit", |_| crash());
                (storage.commit(commit, tree, dropped)).map_err(failed("storing a commit"))
            }
            Output::Joined { base, tree } => {
                (storage.put_base(base, tree)).map_err(failed("storing the snapshot's state"))
            }
            _ => Ok(()),
        }
    }

    /// With a retention, deletes the stored history more than `retention_rounds` below the
    /// leader round `round` just committed, once that is [`PRUNE_EVERY`] rounds above the last
    /// prune.
    fn prune(&mut self, round: u64) -> Result<(), NodeError> {
        let (Some(storage), retention) = (&self.storage, self.config.retention_rounds) else {
            return Ok(());
        };
        let below = round.saturating_sub(retention);
        if retention == 0 || below < self.pruned_below + PRUNE_EVERY {
            return Ok(());
        }
        let me = self.core.validator_index();
        let pruned = storage
            .prune(below, me)
            .map_err(failed("pruning the store"))?;
        self.pruned_below = below;
        debug!(
            below,
            blocks = pruned.blocks,
            commits = pruned.commits,
            state_blocks = pruned.state_blocks,
            "pruned the stored history"
        );
        if !pruned.own.is_empty() {
            // Our pruned blocks, which the backend pinned as their first source.
            let (comms, own) = (self.comms.clone(), pruned.own);
            tokio::spawn(
                async move {
                    let count = own.len();
                    if let Err(error) = comms.release(own).await {
                        warn!(count, %error, "releasing our pruned blocks failed");
                    }
                }
                .in_current_span(),
            );
        }
        Ok(())
    }

    /// Hands an accepted block (DAG-CBOR), or ours, to the keeper; waits while its queue is full.
    pub(super) async fn keep(&mut self, bytes: Bytes, own: bool) {
        let entry = ToKeep { bytes, own };
        let entry = match self.keeper.try_send(entry) {
            Ok(()) => return,
            Err(mpsc::error::TrySendError::Full(entry)) => entry,
            // The keeper ended: the loop stops on its task's end.
            Err(mpsc::error::TrySendError::Closed(_)) => return,
        };
        if let Some(left_out) = self.quiet.keeper_full.admit((), self.now_ms()) {
            warn!(
                queued = super::keeper::KEEPER_QUEUE,
                left_out, "the IPFS daemon falls behind storing accepted blocks: waiting for it"
            );
        }
        let _ = self.keeper.send(entry).await;
    }

    async fn carry_out(&mut self, output: Output) {
        match output {
            Output::Store { bytes, own, .. } => self.keep(bytes, own).await,
            Output::Broadcast(bytes) => {
                let (comms, topic) = (self.comms.clone(), self.topic.clone());
                tokio::spawn(
                    async move {
                        if let Err(error) = comms.broadcast(&topic, bytes).await {
                            debug!(%error, "broadcast failed");
                        }
                    }
                    .in_current_span(),
                );
            }
            Output::Fetch(cid) => self.spawn_fetch(cid),
            Output::Committed { commit, tree, .. } => {
                let _ = self.commits.send(commit);
                // The state's new blocks, so that its tree can be walked, and fetched, by CID.
                for (_, bytes) in tree {
                    self.keep(bytes, false).await;
                }
            }
            // The snapshot's state, so that this node serves it to the next one that joins.
            Output::Joined { tree, .. } => {
                for (_, bytes) in tree {
                    self.keep(bytes, false).await;
                }
            }
            Output::Rejected { cid, error } => {
                if let Some(left_out) = self.quiet.rejected.admit(error.kind(), self.now_ms()) {
                    warn!(cid = ?cid.map(|c| c.to_string()), kind = error.kind(), %error, left_out, "rejected");
                }
            }
            Output::Equivocation {
                author,
                round,
                blocks,
            } => {
                if let Some(left_out) = self.quiet.equivocations.admit(author, self.now_ms()) {
                    warn!(author, round, ?blocks, left_out, "equivocation");
                }
            }
        }
    }

    fn spawn_fetch(&self, cid: Cid) {
        let (comms, permits, results) = (
            self.comms.clone(),
            self.fetch_permits.clone(),
            self.fetched_tx.clone(),
        );
        let (timeout, attempts) = (self.config.fetch_timeout, self.config.fetch_attempts.max(1));
        tokio::spawn(
            async move {
                let Ok(_permit) = permits.acquire_owned().await else {
                    return;
                };
                let result = fetch_with_retry(&comms, &cid, timeout, attempts).await;
                let _ = results.send((cid, result)).await;
            }
            .in_current_span(),
        );
    }

    /// Flushes the store and lets it go. A flush that fails is the node's error.
    fn shutdown(&mut self) -> Result<(), NodeError> {
        // The core's archive and parking share the store: drop them too, so that it closes now.
        self.core.release_store();
        if let Some(storage) = self.storage.take() {
            storage.flush().map_err(failed("flushing the store"))?;
        }
        info!(height = self.core.height(), "stopped");
        Ok(())
    }
}

/// A storage error injected at fail point `name`.
#[cfg(feature = "failpoints")]
fn injected(name: &str) -> StoreError {
    let error = std::io::Error::other(format!("injected at fail point {name}"));
    StoreError::Disk(Box::new(error))
}

/// Ends the process at once, as a crash or `kill -9` would: no destructor, no flush.
#[cfg(feature = "failpoints")]
fn crash() -> Result<(), NodeError> {
    tracing::error!("crashing at a fail point");
    std::process::abort()
}

/// What a panic said, if it said it in a string (as `panic!` does); empty otherwise.
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> &str {
    match payload.downcast_ref::<String>() {
        Some(message) => message,
        None => payload.downcast_ref::<&str>().copied().unwrap_or_default(),
    }
}

/// A task's end by a panic, as an exit reason.
pub(super) fn panicked(payload: &(dyn std::any::Any + Send)) -> String {
    match panic_message(payload) {
        "" => "panicked".to_string(),
        message => format!("panicked: {message}"),
    }
}
