//! The node: the protocol core driven over a [`Communication`] backend, with storage.
//!
//! One task owns the [`Core`] and runs one loop over four event sources (commands from handles,
//! broadcast messages, finished fetches, a periodic tick); a cheap [`NodeHandle`] talks to it over a
//! bounded channel. Fetches run in their own tasks with bounded concurrency, each retried with
//! exponential backoff and given up only after `fetch_attempts`. Everything the core accepts is
//! written to disk before anything that depends on it is broadcast.

use std::{sync::Arc, time::Duration};

use bytes::Bytes;
use comms::{Cid, Codec, Communication, Topic};
use serde::{Deserialize, Serialize};
use tokio::{
    sync::{broadcast, mpsc, oneshot, Semaphore},
    time::Instant,
};
use tracing::{debug, info, warn, Instrument};

use crate::{
    codec::decode,
    core::{
        within, Commit, ConfigError, Core, CoreConfig, CoreStats, Output, Standing, SubmitError,
    },
    dag::AcceptedBlock,
    hex,
    log_limit::LogLimit,
    store::{Committed, Store, StoreError},
    types::{Genesis, Payload, SignedBlock, SignedTransaction},
    Account, Error, Keypair, PublicKey,
};

/// Stored blocks replayed between two yields to the runtime at start.
pub const REPLAY_SLICE: usize = 256;

/// How a node runs; every field has a sensible default.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NodeConfig {
    /// The protocol's tuning.
    pub core: CoreConfig,
    /// Deadline of one fetch attempt.
    #[serde(with = "humantime_serde")]
    pub fetch_timeout: Duration,
    /// Attempts per CID before giving up on it (until something references it again).
    pub fetch_attempts: u32,
    /// Fetches in flight at once.
    pub max_concurrent_fetches: usize,
    /// The longest the core goes without being told the time. It is woken sooner when it has
    /// something due (a block to propose, a leader timeout, a re-broadcast).
    #[serde(with = "humantime_serde")]
    pub tick: Duration,
    /// Block timestamps count milliseconds from this Unix time at start; unset: the wall clock.
    /// Simulations set it so that runs are reproducible.
    pub epoch_ms: Option<u64>,
}

impl NodeConfig {
    /// Checks every field against its bound, naming the first that breaks one as the config file
    /// spells it (`node.tick`, `node.core.max_block_bytes`): a tick from 1 ms to a minute, a fetch
    /// timeout from 1 ms to an hour, at least one fetch attempt and one fetch at a time.
    pub fn check(&self) -> Result<(), ConfigError> {
        let (ms, hour) = (Duration::from_millis(1), Duration::from_secs(3600));
        let in_node = |error: ConfigError| ConfigError {
            field: format!("node.{}", error.field),
            ..error
        };
        self.core.check().map_err(in_node)?;
        within("node.tick", self.tick, ms, Duration::from_secs(60))?;
        within("node.fetch_timeout", self.fetch_timeout, ms, hour)?;
        within("node.fetch_attempts", self.fetch_attempts, 1, 1000)?;
        let concurrent = self.max_concurrent_fetches;
        within("node.max_concurrent_fetches", concurrent, 1, 1 << 16)
    }
}

impl Default for NodeConfig {
    fn default() -> NodeConfig {
        NodeConfig {
            core: CoreConfig::default(),
            fetch_timeout: Duration::from_secs(5),
            fetch_attempts: 8,
            max_concurrent_fetches: 64,
            tick: Duration::from_millis(50),
            epoch_ms: None,
        }
    }
}

/// A snapshot of a node's progress.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Status {
    /// Commits so far.
    pub height: u64,
    /// The state root after the last commit, hex.
    pub state_root: String,
    /// Accepted blocks in memory: those from the floor up.
    pub dag_blocks: usize,
    /// The lowest round in memory ([`crate::consensus::GC_DEPTH`] rounds below the last committed
    /// leader); older blocks are on disk.
    pub dag_floor: u64,
    /// Blocks below the floor whose author and round stay in memory (none when the node has a
    /// store, which answers for them).
    pub pruned_in_memory: usize,
    /// The highest round in the DAG.
    pub highest_round: u64,
    /// Blocks waiting for ancestors.
    pub pending_blocks: usize,
    /// CIDs being fetched.
    pub pending_fetches: usize,
    /// Transactions submitted here, not yet committed.
    pub mempool: usize,
    /// For the three highest rounds, the validators whose blocks this node holds.
    pub recent_authors: Vec<(u64, Vec<u32>)>,
    /// Counters of the core.
    pub stats: CoreStats,
}

/// Where a transaction stands, as one node sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum TxStatus {
    /// Waiting for an earlier nonce of its signer: held here, or ordered and waiting to execute.
    Queued,
    /// Submitted here; waiting for a block, or in one and waiting for its commit.
    Pending,
    /// Held here for an earlier nonce that did not come in time, and dropped.
    Expired,
    /// Committed (from this node's store: a node without storage knows only pending ones).
    Committed(Committed),
    /// Neither: never submitted here, or lost before it committed (the mempool is not durable).
    Unknown,
}

enum Command {
    Submit(SignedTransaction, oneshot::Sender<Result<Cid, SubmitError>>),
    Transaction(Cid, oneshot::Sender<TxStatus>),
    Block(Cid, oneshot::Sender<Option<Arc<AcceptedBlock>>>),
    Status(oneshot::Sender<Status>),
    Account(PublicKey, oneshot::Sender<Account>),
    Commits(oneshot::Sender<broadcast::Receiver<Arc<Commit>>>),
    Shutdown(oneshot::Sender<()>),
}

/// Why a node could not start or answer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NodeError {
    /// The genesis is invalid.
    #[error(transparent)]
    Ledger(#[from] Error),
    /// The network backend failed at start.
    #[error("network: {0}")]
    Comms(#[from] comms::Error),
    /// A config value outside its bounds.
    #[error("config: {0}")]
    Config(#[from] ConfigError),
    /// The store failed, or replays differently from what it recorded.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The node's task has stopped.
    #[error("the node has stopped")]
    Stopped,
}

/// A handle to a running node. Clone it freely; the node stops when the last one is dropped or
/// on [`NodeHandle::shutdown`].
#[derive(Clone)]
pub struct NodeHandle {
    commands: mpsc::Sender<Command>,
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

    /// Commits from now on; the stream ends when the node stops. A receiver that falls more than
    /// 1,024 behind loses the oldest.
    pub async fn commits(&self) -> Result<broadcast::Receiver<Arc<Commit>>, NodeError> {
        self.ask(Command::Commits).await
    }

    /// Stops the node after flushing its storage.
    pub async fn shutdown(&self) -> Result<(), NodeError> {
        self.ask(Command::Shutdown).await
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

/// The topic a chain's blocks are broadcast on.
pub fn blocks_topic(chain: &Cid) -> Topic {
    Topic::new(format!("ledger/{chain}/blocks")).expect("a CID-sized topic name is valid")
}

/// Starts a node on the current tokio runtime: replays `storage` (if any; the runtime's other
/// tasks run between slices of the replay) and joins the network. Without a store, the node keeps
/// everything in memory and starts empty each time.
pub async fn spawn<C: Communication + Clone>(
    genesis: &Genesis,
    key: Option<Keypair>,
    config: NodeConfig,
    comms: C,
    storage: Option<Arc<dyn Store>>,
) -> Result<NodeHandle, NodeError> {
    genesis.check()?;
    config.check()?;
    let span = tracing::info_span!("node", node = %comms.local_peer());
    let core = match &storage {
        Some(store) => Core::with_store(genesis, key, config.core.clone(), store.as_ref()),
        None => Core::new(genesis, key, config.core.clone()),
    };
    let topic = blocks_topic(core.chain());
    let subscription = comms.subscribe(&topic).await?;
    let start = Instant::now();
    let epoch = config.epoch_ms.unwrap_or_else(wall_clock_ms);
    let (commands, receiver) = mpsc::channel(256);
    let (commits, _) = broadcast::channel(1024);
    let (fetched_tx, fetched) = mpsc::channel(256);
    let permits = Arc::new(Semaphore::new(config.max_concurrent_fetches.max(1)));
    let keeper = spawn_keeper(comms.clone(), span.clone());
    let mut node = Node {
        core,
        comms,
        storage,
        topic,
        config,
        start,
        epoch,
        commits,
        fetch_permits: permits,
        fetched_tx,
        keeper,
        quiet: Quiet::default(),
    };
    // Every block links to the genesis (`chain`), so it is made available like a block: a walk of
    // the DAG from any block (a recursive pin, `dag export`, the daemon's garbage collector) then
    // finds every link on the daemon.
    node.keep(genesis.encode().0.into(), true);
    node.replay().instrument(span.clone()).await?;
    tokio::spawn(node.run(receiver, subscription, fetched).instrument(span));
    Ok(NodeHandle { commands })
}

/// Bytes of blocks the keeper stores in one round of calls, at most.
const KEEP_ROUND_BYTES: usize = 4 << 20;

/// Entries waiting for the keeper above which it warns that the daemon falls behind.
const KEEPER_BEHIND: usize = 4096;

/// A block or batch for the keeper: ours (`put`, pinned) or another's (`keep`, a copy).
struct ToKeep {
    bytes: Bytes,
    own: bool,
}

/// Starts the keeper, which makes the blocks and batches the node accepted available from its
/// backend, in the order they were accepted: ours with `put` (pinned: we are their first source),
/// and a copy of every other with `keep` (so that they stay available from here if their author's
/// daemon goes). What queued during one round of calls goes in the next: the copies in one `keep`
/// call, then our blocks. Since a block is accepted only after everything it links, every link of
/// a pinned block is on the daemon before it is pinned, which kubo's garbage collector needs (it
/// aborts on a pinned block with a missing link). So nothing is dropped: the queue is unbounded,
/// holding blocks that the node accepted and stored, and it warns when the daemon falls behind.
fn spawn_keeper<C: Communication>(comms: C, span: tracing::Span) -> mpsc::UnboundedSender<ToKeep> {
    let (sender, mut queue) = mpsc::unbounded_channel::<ToKeep>();
    tokio::spawn(
        async move {
            let (mut limit, started) = (LogLimit::new(QUIET_MS), Instant::now());
            while let Some(first) = queue.recv().await {
                if queue.len() > KEEPER_BEHIND {
                    let now_ms = started.elapsed().as_millis() as u64;
                    if let Some(left_out) = limit.admit((), now_ms) {
                        warn!(
                            queued = queue.len(),
                            left_out, "the IPFS daemon falls behind storing accepted blocks"
                        );
                    }
                }
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
                for bytes in own {
                    if let Err(error) = comms.put(Codec::DagCbor, bytes).await {
                        warn!(%error, "making one of our blocks available failed");
                    }
                }
            }
        }
        .instrument(span),
    );
    sender
}

fn wall_clock_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

type Fetched = (Cid, Result<Bytes, comms::Error>);

struct Node<C> {
    core: Core,
    comms: C,
    storage: Option<Arc<dyn Store>>,
    topic: Topic,
    config: NodeConfig,
    start: Instant,
    epoch: u64,
    commits: broadcast::Sender<Arc<Commit>>,
    fetch_permits: Arc<Semaphore>,
    fetched_tx: mpsc::Sender<Fetched>,
    /// What the keeper ([`spawn_keeper`]) makes available from the backend.
    keeper: mpsc::UnboundedSender<ToKeep>,
    quiet: Quiet,
}

/// How often one author's equivocations, or one kind of refusal, may take a log line: `left_out`
/// in each line counts those since the previous one; the core's counters count them all.
const QUIET_MS: u64 = 10_000;

/// The log limits of the refusals and equivocations the core reports.
struct Quiet {
    rejected: LogLimit<&'static str>,
    equivocations: LogLimit<u32>,
}

impl Default for Quiet {
    fn default() -> Quiet {
        Quiet {
            rejected: LogLimit::new(QUIET_MS),
            equivocations: LogLimit::new(QUIET_MS),
        }
    }
}

impl<C: Communication + Clone> Node<C> {
    async fn run(
        mut self,
        mut commands: mpsc::Receiver<Command>,
        mut subscription: comms::Subscription,
        mut fetched: mpsc::Receiver<Fetched>,
    ) {
        let wake = tokio::time::sleep(self.config.tick);
        tokio::pin!(wake);
        loop {
            let mut out = Vec::new();
            tokio::select! {
                biased;
                command = commands.recv() => match command {
                    Some(Command::Shutdown(reply)) => {
                        self.shutdown();
                        let _ = reply.send(());
                        return;
                    }
                    Some(command) => self.handle_command(command, &mut out),
                    None => break,
                },
                Some((cid, result)) = fetched.recv() => self.handle_fetched(cid, result, &mut out),
                message = subscription.recv() => match message {
                    Some(message) => self.core.receive(self.now_ms(), message.data, &mut out),
                    None => subscription = self.resubscribe().await,
                },
                _ = &mut wake => self.core.tick(self.now_ms(), &mut out),
                // Yields first, so that the writes and sends of the previous slice run before the
                // next is taken: a history accepted at once must not pile up in spawned tasks.
                _ = tokio::task::yield_now(), if self.core.has_backlog() => {
                    self.core.resume(self.now_ms(), &mut out)
                }
            }
            self.dispatch(out);
            wake.as_mut().reset(self.next_wake());
        }
        self.shutdown();
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

    /// Replays the store through the core, carrying out what it decides on the way, so that memory
    /// holds only what is above the floor by the end. Each re-derived commit must equal the stored
    /// one: a store that replays differently is corrupt, and the node does not start on it. Goes
    /// [`REPLAY_SLICE`] blocks at a time, yielding between slices so that a long store does not hold
    /// up the runtime's other tasks.
    async fn replay(&mut self) -> Result<(), StoreError> {
        let Some(storage) = self.storage.clone() else {
            return Ok(());
        };
        let mut out = Vec::new();
        let (mut from, mut count) = (Vec::new(), 0);
        loop {
            let (read, next) = storage.replay_slice(&from, REPLAY_SLICE, &mut |bytes| {
                self.core.restore(bytes, &mut out);
                match out.len() >= 64 {
                    true => self.replayed(storage.as_ref(), &mut out),
                    false => Ok(()),
                }
            })?;
            count += read;
            let Some(next) = next else { break };
            from = next;
            tokio::task::yield_now().await;
        }
        self.replayed(storage.as_ref(), &mut out)?;
        info!(
            blocks = count,
            height = self.core.height(),
            "replayed stored blocks"
        );
        Ok(())
    }

    /// What the replay output: each commit is checked against the stored record (a mismatch
    /// stops the start), the rest is dispatched.
    fn replayed(&mut self, storage: &dyn Store, out: &mut Vec<Output>) -> Result<(), StoreError> {
        let (commits, rest): (Vec<_>, Vec<_>) = std::mem::take(out)
            .into_iter()
            .partition(|o| matches!(o, Output::Committed(_)));
        for commit in commits {
            if let Output::Committed(commit) = commit {
                storage.commit(&commit)?;
            }
        }
        self.dispatch(rest);
        Ok(())
    }

    /// An accepted block that left memory, from the store (with its batch's transactions).
    fn stored_block(&self, cid: Cid) -> Option<Arc<AcceptedBlock>> {
        let storage = self.storage.as_ref()?;
        let read = || -> Result<Option<AcceptedBlock>, StoreError> {
            let Some(bytes) = storage.block(&cid)? else {
                return Ok(None);
            };
            let block = SignedBlock::decode(&bytes)?;
            let transactions = match &block.block.payload {
                Payload::Inline(txs) => txs.clone(),
                Payload::Batch { cid: batch, .. } => match storage.batch(batch)? {
                    Some(bytes) => decode(&bytes)?,
                    None => return Ok(None),
                },
            };
            Ok(Some(AcceptedBlock {
                cid,
                block,
                bytes: bytes.into(),
                transactions: Arc::new(transactions),
            }))
        };
        match read() {
            Ok(block) => block.map(Arc::new),
            Err(error) => {
                warn!(%cid, %error, "reading a stored block failed");
                None
            }
        }
    }

    fn now_ms(&self) -> u64 {
        self.epoch + self.start.elapsed().as_millis() as u64
    }

    fn handle_command(&mut self, command: Command, out: &mut Vec<Output>) {
        match command {
            Command::Submit(tx, reply) => {
                let result = self.core.submit(tx);
                if result.is_ok() {
                    // An idle validator proposes it now rather than at its idle pace.
                    self.core.tick(self.now_ms(), out);
                }
                let _ = reply.send(result);
            }
            Command::Status(reply) => {
                let _ = reply.send(self.status());
            }
            Command::Transaction(id, reply) => {
                let _ = reply.send(self.transaction(&id));
            }
            Command::Block(cid, reply) => {
                let in_memory = self.core.dag().get(&cid).cloned();
                let _ = reply.send(in_memory.or_else(|| self.stored_block(cid)));
            }
            Command::Account(key, reply) => {
                let _ = reply.send(self.core.state().account(&key));
            }
            Command::Commits(reply) => {
                let _ = reply.send(self.commits.subscribe());
            }
            Command::Shutdown(_) => {}
        }
    }

    fn status(&self) -> Status {
        let core = &self.core;
        Status {
            height: core.height(),
            state_root: hex(&core.state().root()),
            dag_blocks: core.dag().len(),
            dag_floor: core.floor(),
            pruned_in_memory: core.pruned_in_memory(),
            highest_round: core.dag().highest_round(),
            pending_blocks: core.pending_blocks(),
            pending_fetches: core.wanted(),
            mempool: core.mempool_len(),
            recent_authors: (core.dag().highest_round().saturating_sub(2)
                ..=core.dag().highest_round())
                .map(|round| (round, core.dag().round(round).map(|b| b.author()).collect()))
                .collect(),
            stats: core.stats(),
        }
    }

    fn transaction(&self, id: &Cid) -> TxStatus {
        match self.core.standing(id) {
            Some(Standing::Queued) => return TxStatus::Queued,
            Some(Standing::Pending) => return TxStatus::Pending,
            Some(Standing::Expired) => return TxStatus::Expired,
            None => {}
        }
        let Some(storage) = &self.storage else {
            return TxStatus::Unknown;
        };
        match storage.transaction(id) {
            Ok(Some(committed)) => TxStatus::Committed(committed),
            Ok(None) => TxStatus::Unknown,
            Err(error) => {
                warn!(%id, %error, "reading the transaction index failed");
                TxStatus::Unknown
            }
        }
    }

    fn handle_fetched(
        &mut self,
        cid: Cid,
        result: Result<Bytes, comms::Error>,
        out: &mut Vec<Output>,
    ) {
        match result {
            Ok(bytes) => self.core.fetched(self.now_ms(), cid, bytes, out),
            Err(error) => {
                warn!(%cid, %error, "giving up fetching");
                self.core.fetch_failed(cid, out);
            }
        }
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

    /// Carries out the core's outputs: disk first, then the network.
    fn dispatch(&mut self, out: Vec<Output>) {
        let (stores, rest): (Vec<_>, Vec<_>) = out
            .into_iter()
            .partition(|o| matches!(o, Output::Store { .. } | Output::Committed(_)));
        for output in stores.into_iter().chain(rest) {
            self.carry_out(output);
        }
    }

    /// Hands an accepted block (DAG-CBOR), or ours, to the keeper.
    fn keep(&self, bytes: Bytes, own: bool) {
        // The keeper ends only with the node.
        let _ = self.keeper.send(ToKeep { bytes, own });
    }

    fn carry_out(&mut self, output: Output) {
        match output {
            Output::Store {
                cid,
                bytes,
                batch,
                own,
            } => {
                // The core's parking already wrote batches to the store.
                if let Some(storage) = self.storage.as_ref().filter(|_| !batch) {
                    if let Err(error) = storage.put_block(&cid, &bytes, false) {
                        warn!(%cid, %error, "storing a block failed");
                    }
                }
                self.keep(bytes, own);
            }
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
            Output::Committed(commit) => {
                if let Some(storage) = &self.storage {
                    if let Err(error) = storage.commit(&commit) {
                        warn!(height = commit.height, %error, "storing a commit failed");
                    }
                }
                let _ = self.commits.send(commit);
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

    fn shutdown(&mut self) {
        // The core's archive and parking share the store: drop them too, so that it closes now.
        self.core.release_store();
        if let Some(storage) = self.storage.take() {
            if let Err(error) = storage.flush() {
                warn!(%error, "flushing storage failed");
            }
        }
        info!(height = self.core.height(), "stopped");
    }
}

/// Fetches `cid`, retrying with exponential backoff (200 ms doubling to 10 s) up to `attempts` times.
async fn fetch_with_retry<C: Communication>(
    comms: &C,
    cid: &Cid,
    timeout: Duration,
    attempts: u32,
) -> Result<Bytes, comms::Error> {
    let mut delay = Duration::from_millis(200);
    let mut attempt = 1;
    loop {
        match comms.fetch(cid, timeout).await {
            Ok(bytes) => return Ok(bytes),
            Err(error)
                if attempt >= attempts
                    || matches!(
                        error,
                        comms::Error::UnsupportedCid { .. } | comms::Error::Closed
                    ) =>
            {
                return Err(error)
            }
            Err(error) => debug!(%cid, attempt, %error, "fetch failed, retrying"),
        }
        back_off(&mut delay).await;
        attempt += 1;
    }
}

/// Sleeps `delay`, then doubles it up to 10 s. On tokio's clock, so it runs in a simulation's virtual
/// time too (the `backoff` crate measures elapsed time on the real clock).
async fn back_off(delay: &mut Duration) {
    tokio::time::sleep(*delay).await;
    *delay = (*delay * 2).min(Duration::from_secs(10));
}
