//! Building, driving and stopping a simulated network of validators.

use std::{collections::BTreeSet, path::Path, path::PathBuf, sync::Arc};

use comms::Cid;
use ledger::{
    devnet::{self, Role},
    Commit, Exit, Genesis, Keypair, MemoryStore, NodeConfig, NodeError, NodeHandle, Status, Store,
    StoreError,
};
use sim::{LinkModel, Sim, SimConfig, SimError, SimPeer, Stats, TraceEvent};
use tokio::task::JoinHandle;

use crate::{
    byzantine::{send_invalid_blocks, Behaviour, Faulty},
    CommitLog, CommitLogError, TimedCommit,
};

/// What went wrong in driving a network.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A node refused to start, or stopped when asked something.
    #[error("validator {validator}: {source}")]
    Node {
        validator: usize,
        #[source]
        source: NodeError,
    },
    /// A store could not be opened.
    #[error("validator {validator}'s store: {source}")]
    Store {
        validator: usize,
        #[source]
        source: StoreError,
    },
    /// The simulator refused a fault.
    #[error(transparent)]
    Sim(#[from] SimError),
    /// A commit log is incomplete.
    #[error("validator {validator}'s commit log: {source}")]
    CommitLog {
        validator: usize,
        #[source]
        source: CommitLogError,
    },
    /// Only an honest validator with a store can crash and restart, and only once down.
    #[error("validator {validator} cannot {what}")]
    Cannot {
        validator: usize,
        what: &'static str,
    },
}

/// Settings of a [`Network`]; [`NetworkBuilder::start`] starts it.
pub struct NetworkBuilder {
    validators: usize,
    byzantine: Vec<Behaviour>,
    observers: usize,
    sim: SimConfig,
    chain_id: Option<String>,
    accounts: usize,
    balance: u64,
    node: NodeConfig,
    stores: BTreeSet<usize>,
    open_store: Option<OpenStore>,
}

/// Opens a validator's store in a directory: how a network gets a store that is not in memory.
pub type OpenStore = Arc<dyn Fn(&Path) -> Result<Arc<dyn Store>, StoreError> + Send + Sync>;

impl Default for NetworkBuilder {
    fn default() -> NetworkBuilder {
        NetworkBuilder {
            validators: 4,
            byzantine: Vec::new(),
            observers: 0,
            sim: SimConfig::default(),
            chain_id: None,
            accounts: 8,
            balance: 1_000_000,
            node: NodeConfig {
                epoch_ms: Some(0),
                ..NodeConfig::default()
            },
            stores: BTreeSet::new(),
            open_store: None,
        }
    }
}

impl NetworkBuilder {
    /// `n` validators (4 by default).
    pub fn validators(mut self, n: usize) -> NetworkBuilder {
        self.validators = n;
        self
    }

    /// The last validators misbehave, one behaviour each.
    pub fn byzantine(mut self, behaviours: Vec<Behaviour>) -> NetworkBuilder {
        self.byzantine = behaviours;
        self
    }

    /// Peers beyond the validators, with no node: for nodes a driver starts itself
    /// ([`Network::peer`]).
    pub fn observers(mut self, n: usize) -> NetworkBuilder {
        self.observers = n;
        self
    }

    /// The simulator's whole config (seed, link model, limits, queues).
    pub fn sim(mut self, config: SimConfig) -> NetworkBuilder {
        self.sim = config;
        self
    }

    /// The network of the ledger's tests: the seed `seed` unless the environment overrides it
    /// ([`sim::seed_from_env`]), two accounts of 1,000,000, and [`Network::test_config`].
    pub fn tests(self, seed: u64) -> NetworkBuilder {
        self.seed(sim::seed_from_env(seed))
            .accounts(2, 1_000_000)
            .node_config(Network::test_config())
    }

    /// The seed of every random choice and of every key.
    pub fn seed(mut self, seed: u64) -> NetworkBuilder {
        self.sim.seed = seed;
        self
    }

    /// The model of every link.
    pub fn link(mut self, link: LinkModel) -> NetworkBuilder {
        self.sim.link = link;
        self
    }

    /// The genesis's chain ID (`simulation-{seed}` by default).
    pub fn chain_id(mut self, chain_id: impl Into<String>) -> NetworkBuilder {
        self.chain_id = Some(chain_id.into());
        self
    }

    /// `count` funded accounts holding `balance` each (8 of 1,000,000 by default).
    pub fn accounts(mut self, count: usize, balance: u64) -> NetworkBuilder {
        self.accounts = count;
        self.balance = balance;
        self
    }

    /// Every node's config (fixed timestamps from epoch 0 by default).
    pub fn node_config(mut self, config: NodeConfig) -> NetworkBuilder {
        self.node = config;
        self
    }

    /// The honest validators that keep a store, so that they can crash and restart: a
    /// [`MemoryStore`] each (outside the node, so it outlives a crash), unless
    /// [`NetworkBuilder::open_store`] says otherwise.
    pub fn stores(mut self, validators: impl IntoIterator<Item = usize>) -> NetworkBuilder {
        self.stores = validators.into_iter().collect();
        self
    }

    /// Stores opened by `open` in a directory of their own (removed by [`Network::finish`]), in
    /// place of memory: for a real database under simulated faults.
    pub fn open_store(mut self, open: OpenStore) -> NetworkBuilder {
        self.open_store = Some(open);
        self
    }

    /// Starts the network: the honest validators in order, each with its commit log, then the
    /// Byzantine ones.
    pub async fn start(self) -> Result<Network, Error> {
        let (n, seed) = (self.validators, self.sim.seed);
        let chain_id = self
            .chain_id
            .unwrap_or_else(|| format!("simulation-{seed}"));
        let genesis = devnet::genesis(&chain_id, seed, n, self.accounts, self.balance);
        let (sim, peers) = Sim::builder()
            .config(self.sim)
            .peers(n + self.observers)
            .build();
        let dir = std::env::temp_dir().join(format!(
            "ledger-scenario-{}-{seed}-{}",
            std::process::id(),
            unique()
        ));
        let honest = n.saturating_sub(self.byzantine.len());
        let open_store = self.open_store;
        let mut network = Network {
            chain: genesis.encode().1,
            sim,
            peers,
            genesis,
            seed,
            node: self.node,
            validators: Vec::new(),
            faulty: Vec::new(),
            saboteurs: Vec::new(),
            dir,
        };
        for i in 0..honest {
            let store = self.stores.contains(&i).then(|| match &open_store {
                Some(open) => Kept::Dir(network.dir.join(i.to_string()), open.clone()),
                None => Kept::Memory(MemoryStore::default()),
            });
            let node = match network.spawn(i, store.as_ref()).await {
                Ok(node) => node,
                Err(error) => {
                    let _ = std::fs::remove_dir_all(&network.dir);
                    return Err(error);
                }
            };
            let lives = vec![log(i, &node).await?];
            network.validators.push(Honest {
                node: Some(node),
                lives,
                store,
            });
        }
        for (i, behaviour) in (honest..n).zip(self.byzantine) {
            network.start_byzantine(i, behaviour).await?;
        }
        Ok(network)
    }
}

/// A simulated network of validators: honest ones first, then the Byzantine ones.
pub struct Network {
    sim: Sim,
    peers: Vec<SimPeer>,
    genesis: Genesis,
    chain: Cid,
    seed: u64,
    node: NodeConfig,
    validators: Vec<Honest>,
    faulty: Vec<NodeHandle>,
    saboteurs: Vec<JoinHandle<()>>,
    /// Where the stores live; removed by [`Network::finish`].
    dir: PathBuf,
}

/// An honest validator: its node while up, its commit log of each life, its store if it has one.
struct Honest {
    node: Option<NodeHandle>,
    lives: Vec<CommitLog>,
    store: Option<Kept>,
}

/// Where a validator's store is kept between its lives.
#[derive(Clone)]
enum Kept {
    Memory(MemoryStore),
    Dir(PathBuf, OpenStore),
}

/// What a finished network recorded.
pub struct Finished {
    /// Per honest validator, every commit it made, its lives one after the other (a restarted
    /// validator replays its stored commits before it starts, so each life goes on where the one
    /// before stopped).
    pub histories: Vec<Vec<TimedCommit>>,
    /// The last status of each honest validator up at the end.
    pub statuses: Vec<Status>,
    /// The simulator's counters and latencies.
    pub stats: Stats,
    /// Every simulator event, if the config records them.
    pub trace: Vec<TraceEvent>,
}

impl Finished {
    /// Per honest validator, its commits without their times: what [`crate::agreement::check`]
    /// compares.
    pub fn commits(&self) -> Vec<Vec<Arc<Commit>>> {
        (self.histories.iter())
            .map(|history| history.iter().map(|(_, commit)| commit.clone()).collect())
            .collect()
    }
}

impl Network {
    /// The node config of the ledger's simulated tests: fixed timestamps from epoch 0, and a
    /// fetch given up after 2 s rather than 5, so that a lost block is asked again sooner.
    pub fn test_config() -> NodeConfig {
        NodeConfig {
            epoch_ms: Some(0),
            fetch_timeout: std::time::Duration::from_secs(2),
            ..NodeConfig::default()
        }
    }

    /// A network to build: 4 honest validators over the default link, seed 0.
    pub fn builder() -> NetworkBuilder {
        NetworkBuilder::default()
    }

    /// The simulator, for its clock, its faults and its statistics.
    pub fn sim(&self) -> &Sim {
        &self.sim
    }

    /// The first `count` funded accounts of the genesis, to sign transfers with.
    pub fn accounts(&self, count: usize) -> crate::Accounts {
        crate::Accounts::new(self.chain, self.seed, count)
    }

    /// The chain's genesis.
    pub fn genesis(&self) -> &Genesis {
        &self.genesis
    }

    /// The chain: the genesis's CID.
    pub fn chain(&self) -> Cid {
        self.chain
    }

    /// The seed of the simulation and of the keys.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// The nodes' config.
    pub fn node_config(&self) -> &NodeConfig {
        &self.node
    }

    /// How many validators are honest: validators `0..honest()`.
    pub fn honest(&self) -> usize {
        self.validators.len()
    }

    /// Honest validator `i`'s node, unless it is down.
    pub fn node(&self, i: usize) -> Option<&NodeHandle> {
        self.validators.get(i).and_then(|v| v.node.as_ref())
    }

    /// Simulated peer `i`: the validators', then the observers'.
    pub fn peer(&self, i: usize) -> SimPeer {
        self.peers[i].clone()
    }

    /// Validator `i`'s signing key.
    pub fn validator_key(&self, i: usize) -> Keypair {
        devnet::key(self.seed, Role::Validator, i)
    }

    /// Splits the network into `groups` of validators (the rest form one more group).
    pub async fn partition(&self, groups: Vec<Vec<usize>>) -> Result<(), Error> {
        Ok(self.sim.partition(groups).await?)
    }

    /// Ends the partition.
    pub async fn heal(&self) -> Result<(), Error> {
        Ok(self.sim.heal().await?)
    }

    /// How honest validator `i`'s node ended, if it is up and ended on its own (a failed store).
    pub fn exit(&self, i: usize) -> Option<Exit> {
        self.node(i).and_then(NodeHandle::exit)
    }

    /// The directory of honest validator `i`'s store, when [`NetworkBuilder::open_store`] gave
    /// it one: to read the store while the validator is down.
    pub fn store_dir(&self, i: usize) -> Option<&Path> {
        match self.validators.get(i)?.store.as_ref()? {
            Kept::Dir(dir, _) => Some(dir),
            Kept::Memory(_) => None,
        }
    }

    /// Stops honest validator `i` (it must have a store) and crashes its peer. A node that
    /// stopped on its own (see [`Network::exit`]) is only taken down with its peer.
    pub async fn crash(&mut self, i: usize) -> Result<(), Error> {
        let cannot = Error::Cannot {
            validator: i,
            what: "crash: not an honest validator with a store that is up",
        };
        let honest = self.validators.get_mut(i).filter(|v| v.store.is_some());
        let node = honest.and_then(|v| v.node.take()).ok_or(cannot)?;
        match node.shutdown().await {
            // It had ended on its own: its exit says how.
            Err(NodeError::Stopped) => drop(node.stopped().await),
            stopped => stopped.map_err(|source| Error::Node {
                validator: i,
                source,
            })?,
        }
        Ok(self.sim.crash(i).await?)
    }

    /// Restarts crashed validator `i` from its store, recording its commits anew.
    pub async fn restart(&mut self, i: usize) -> Result<(), Error> {
        let store = match self.validators.get(i) {
            Some(Honest {
                node: None,
                store: Some(store),
                ..
            }) => store.clone(),
            _ => {
                return Err(Error::Cannot {
                    validator: i,
                    what: "restart: not a crashed honest validator",
                })
            }
        };
        self.sim.restart(i).await?;
        let node = self.spawn(i, Some(&store)).await?;
        let life = log(i, &node).await?;
        let validator = &mut self.validators[i];
        validator.lives.push(life);
        validator.node = Some(node);
        Ok(())
    }

    /// Stops every node (the honest ones first, each after its last status), then returns what
    /// they committed and what the simulator counted.
    pub async fn finish(self) -> Result<Finished, Error> {
        let mut statuses = Vec::new();
        for (i, node) in self.validators.iter().enumerate() {
            let Some(node) = &node.node else { continue };
            let failed = |source| Error::Node {
                validator: i,
                source,
            };
            statuses.push(node.status().await.map_err(failed)?);
            node.shutdown().await.map_err(failed)?;
        }
        for (i, node) in self.faulty.iter().enumerate() {
            let failed = |source| Error::Node {
                validator: self.validators.len() + i,
                source,
            };
            node.shutdown().await.map_err(failed)?;
        }
        self.saboteurs.iter().for_each(JoinHandle::abort);
        let mut histories = Vec::new();
        for (i, validator) in self.validators.into_iter().enumerate() {
            let mut history = Vec::new();
            for life in validator.lives {
                let failed = |source| Error::CommitLog {
                    validator: i,
                    source,
                };
                history.extend(life.finish().await.map_err(failed)?);
            }
            histories.push(history);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
        Ok(Finished {
            histories,
            statuses,
            stats: self.sim.stats().await?,
            trace: self.sim.trace().await?,
        })
    }

    /// Starts honest validator `i`, from `store` if it has one.
    async fn spawn(&self, i: usize, store: Option<&Kept>) -> Result<NodeHandle, Error> {
        let storage = match store {
            None => None,
            Some(Kept::Memory(store)) => Some(Arc::new(store.clone()) as Arc<dyn Store>),
            Some(Kept::Dir(dir, open)) => {
                let failed = |source| Error::Store {
                    validator: i,
                    source,
                };
                Some(open(dir).map_err(failed)?)
            }
        };
        let key = Some(self.validator_key(i));
        let peer = self.peer(i);
        ledger::spawn(&self.genesis, key, self.node.clone(), peer, storage)
            .await
            .map_err(|source| Error::Node {
                validator: i,
                source,
            })
    }

    /// Validator `i` as a misbehaving one: an honest core over a faulty backend, or junk.
    async fn start_byzantine(&mut self, i: usize, behaviour: Behaviour) -> Result<(), Error> {
        let (key, peer) = (self.validator_key(i), self.peer(i));
        if behaviour == Behaviour::Invalid {
            let topic = ledger::node::blocks_topic(&self.chain);
            let junk = send_invalid_blocks(peer, self.chain, i as u32, key, topic);
            self.saboteurs.push(tokio::spawn(junk));
            return Ok(());
        }
        let comms = Faulty::new(peer, behaviour, key.clone());
        let node = ledger::spawn(&self.genesis, Some(key), self.node.clone(), comms, None)
            .await
            .map_err(|source| Error::Node {
                validator: i,
                source,
            })?;
        self.faulty.push(node);
        Ok(())
    }
}

/// Opens validator `i`'s commit log.
async fn log(i: usize, node: &NodeHandle) -> Result<CommitLog, Error> {
    CommitLog::open(node).await.map_err(|source| Error::Node {
        validator: i,
        source,
    })
}

/// A number no other network of this process has.
fn unique() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}
