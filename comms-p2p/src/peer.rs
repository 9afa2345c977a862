//! The peer's task and its handle.

use std::{collections::HashMap, time::Duration};

use bytes::Bytes;
use comms::{Cid, Codec, Error, Limits, Message, Operation, PeerId, Subscription, Topic};
use futures::StreamExt;
use libp2p::{
    gossipsub::{self, IdentTopic, MessageAuthenticity, PublishError, ValidationMode},
    identify, identity, noise, ping,
    swarm::{NetworkBehaviour, SwarmEvent},
    tcp, yamux, Multiaddr, Swarm, SwarmBuilder,
};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, warn};

use crate::{
    bitswap,
    store::{BlockStore, MemoryBlocks, RocksBlocks},
    P2pError,
};

/// How the embedded peer runs.
#[derive(Clone, Debug)]
pub struct P2pConfig {
    /// Where it listens (multiaddrs); `/ip4/127.0.0.1/tcp/0` picks a free loopback port.
    pub listen: Vec<String>,
    /// Peers dialled at start (multiaddrs ending in `/p2p/<peer id>`).
    pub peers: Vec<String>,
    /// Size limits: by default 1 MiB less 16 KiB messages (as the kubo backend's: with its
    /// envelope, such a message fits kubo's 1 MiB) and 1 MiB blocks.
    pub limits: Limits,
    /// The blockstore's directory (RocksDB), so that a restarted peer still serves what it held;
    /// none: blocks in memory.
    pub blocks_dir: Option<std::path::PathBuf>,
    /// Messages waiting for a slow subscriber, per subscription; more are dropped (and counted in
    /// the log), as a daemon's pubsub drops for a slow reader.
    pub subscriber_queue: usize,
    /// A fault for tests: every block served to a peer is altered.
    #[cfg(feature = "test-utils")]
    pub corrupt_served_blocks: bool,
}

impl Default for P2pConfig {
    fn default() -> P2pConfig {
        P2pConfig {
            listen: vec!["/ip4/127.0.0.1/tcp/0".into()],
            peers: Vec::new(),
            limits: Limits {
                max_message_bytes: Limits::MIB - 16 * 1024,
                max_block_bytes: Limits::MIB,
            },
            blocks_dir: None,
            subscriber_queue: 4096,
            #[cfg(feature = "test-utils")]
            corrupt_served_blocks: false,
        }
    }
}

/// The protocols the peer runs.
#[derive(NetworkBehaviour)]
struct Behaviour {
    gossipsub: gossipsub::Behaviour,
    identify: identify::Behaviour,
    ping: ping::Behaviour,
    /// Bitswap's streams (see `bitswap`).
    stream: libp2p_stream::Behaviour,
}

/// What a handle asks the peer's task.
enum Command {
    Publish(Topic, Bytes, oneshot::Sender<Result<(), Error>>),
    Subscribe(
        Topic,
        mpsc::Sender<Message>,
        oneshot::Sender<Result<u64, Error>>,
    ),
    Unsubscribe(Topic, u64),
    Peers(oneshot::Sender<Vec<PeerId>>),
    TopicPeers(Topic, oneshot::Sender<Vec<PeerId>>),
    Listening(oneshot::Sender<Vec<Multiaddr>>),
    Dial(Multiaddr, oneshot::Sender<Result<(), Error>>),
    Stop(oneshot::Sender<()>),
}

/// A handle to an embedded IPFS peer; cheap to clone. The peer stops when the last handle (and the
/// last subscription) is dropped.
#[derive(Clone)]
pub struct P2pPeer {
    commands: mpsc::Sender<Command>,
    id: PeerId,
    limits: Limits,
    queue: usize,
    bitswap: mpsc::Sender<bitswap::Event>,
}

/// Go's default message ID: the `from` peer's bytes, then the sequence number's (big-endian).
fn go_message_id(message: &gossipsub::Message) -> gossipsub::MessageId {
    let mut id = message.source.map(|p| p.to_bytes()).unwrap_or_default();
    if let Some(seqno) = message.sequence_number {
        id.extend_from_slice(&seqno.to_be_bytes());
    }
    gossipsub::MessageId::from(id)
}

fn parse(address: &str) -> Result<Multiaddr, P2pError> {
    address
        .parse()
        .map_err(|error: libp2p::multiaddr::Error| P2pError::Address {
            address: address.to_string(),
            reason: error.to_string(),
        })
}

fn gossipsub(key: &identity::Keypair, limits: &Limits) -> Result<gossipsub::Behaviour, P2pError> {
    let config = gossipsub::ConfigBuilder::default()
        .validation_mode(ValidationMode::Strict)
        .message_id_fn(go_message_id)
        // kubo's limit; a payload of the message limit fits with its signature, key, sequence
        // number and topic around it.
        .max_transmit_size(Limits::MIB.max(limits.max_message_bytes + 16 * 1024))
        .heartbeat_interval(Duration::from_secs(1))
        .build()
        .map_err(|error| P2pError::Transport(error.to_string()))?;
    gossipsub::Behaviour::new(MessageAuthenticity::Signed(key.clone()), config)
        .map_err(|error| P2pError::Transport(error.to_string()))
}

impl P2pPeer {
    /// Starts a peer with identity `key` on the current tokio runtime: it listens, dials
    /// `config.peers`, and runs until its last handle is dropped.
    pub async fn start(key: identity::Keypair, config: P2pConfig) -> Result<P2pPeer, P2pError> {
        let limits = config.limits;
        let behaviour = Behaviour {
            gossipsub: gossipsub(&key, &limits)?,
            identify: identify::Behaviour::new(identify::Config::new(
                "ipfs/0.1.0".into(),
                key.public(),
            )),
            ping: ping::Behaviour::default(),
            stream: libp2p_stream::Behaviour::new(),
        };
        let transport = |error: &dyn std::fmt::Display| P2pError::Transport(error.to_string());
        let mut swarm = SwarmBuilder::with_existing_identity(key)
            .with_tokio()
            .with_tcp(
                tcp::Config::default().nodelay(true),
                noise::Config::new,
                yamux::Config::default,
            )
            .map_err(|e| transport(&e))?
            .with_behaviour(|_| behaviour)
            .map_err(|e| transport(&e))?
            .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
            .build();
        for address in &config.listen {
            swarm
                .listen_on(parse(address)?)
                .map_err(|e| transport(&e))?;
        }
        let mut configured = HashMap::new();
        for address in &config.peers {
            let address = parse(address)?;
            if let Some(libp2p::multiaddr::Protocol::P2p(peer)) = address.iter().last() {
                configured.insert(peer, Redial::new(address.clone()));
            }
            if let Err(error) = swarm.dial(address.clone()) {
                warn!(%address, %error, "dialling a configured peer failed");
            }
        }
        #[cfg(feature = "test-utils")]
        let corrupt = config.corrupt_served_blocks;
        #[cfg(not(feature = "test-utils"))]
        let corrupt = false;
        let blocks: Box<dyn BlockStore> = match &config.blocks_dir {
            Some(dir) => {
                Box::new(RocksBlocks::open(dir).map_err(|e| P2pError::Store(e.to_string()))?)
            }
            None => Box::<MemoryBlocks>::default(),
        };
        let control = swarm.behaviour().stream.new_control();
        let bitswap = bitswap::start(control, blocks, corrupt);
        let id = PeerId::new(swarm.local_peer_id().to_string());
        let (commands, receiver) = mpsc::channel(256);
        let task = Task {
            swarm,
            subscribers: HashMap::new(),
            next_id: 0,
            listening: Vec::new(),
            bitswap: bitswap.clone(),
            configured,
        };
        tokio::spawn(task.run(receiver));
        Ok(P2pPeer {
            commands,
            id,
            limits,
            queue: config.subscriber_queue.max(1),
            bitswap,
        })
    }

    /// The peer's ID.
    pub fn local_peer(&self) -> PeerId {
        self.id.clone()
    }

    async fn ask<T>(
        &self,
        command: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, Error> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(command(reply))
            .await
            .map_err(|_| Error::Closed)?;
        answer.await.map_err(|_| Error::Closed)
    }

    /// Publishes `data` on `topic` to the peers subscribed to it (best effort; never to itself).
    pub async fn broadcast(&self, topic: &Topic, data: Bytes) -> Result<(), Error> {
        self.limits.check_message(data.len())?;
        self.ask(|reply| Command::Publish(topic.clone(), data, reply))
            .await?
    }

    /// Starts receiving what other peers publish on `topic`.
    pub async fn subscribe(&self, topic: &Topic) -> Result<Subscription, Error> {
        let (sender, messages) = mpsc::channel(self.queue);
        let id = (self
            .ask(|reply| Command::Subscribe(topic.clone(), sender, reply))
            .await)??;
        let unsubscribe = Unsubscribe {
            commands: self.commands.downgrade(),
            topic: topic.clone(),
            id,
        };
        let stream = futures::stream::unfold(
            (messages, unsubscribe),
            |(mut messages, unsubscribe)| async move {
                let message = messages.recv().await?;
                Some((message, (messages, unsubscribe)))
            },
        );
        Ok(Subscription::new(topic.clone(), stream))
    }

    /// Stores a block here and makes it available to peers (bitswap), including those that wanted
    /// it before it came; returns its CID.
    pub async fn put(&self, codec: Codec, data: Bytes) -> Result<Cid, Error> {
        self.limits.check_block(data.len())?;
        let cid = comms::cid_for(codec, &data);
        let event = bitswap::Event::Put(cid, data);
        self.bitswap.send(event).await.map_err(|_| Error::Closed)?;
        Ok(cid)
    }

    /// The verified bytes of `cid`, from here or a peer (bitswap), within `timeout`; the want is
    /// cancelled at every peer asked when it comes or the time runs out.
    pub async fn fetch(&self, cid: &Cid, timeout: Duration) -> Result<Bytes, Error> {
        comms::check_supported(cid)?;
        let (reply, answer) = oneshot::channel();
        let event = bitswap::Event::Fetch(*cid, reply);
        self.bitswap.send(event).await.map_err(|_| Error::Closed)?;
        let mismatch = |actual: Cid| Error::CidMismatch {
            expected: Box::new(*cid),
            actual: Box::new(actual),
        };
        match tokio::time::timeout(timeout, answer).await {
            Ok(Ok(Ok(data))) => Ok(data),
            Ok(Ok(Err(actual))) => Err(mismatch(actual)),
            Ok(Err(_)) => Err(Error::Closed),
            Err(_) => {
                let (reply, wrong) = oneshot::channel();
                let _ = self.bitswap.send(bitswap::Event::GiveUp(*cid, reply)).await;
                match wrong.await {
                    Ok(Some(actual)) => Err(mismatch(actual)),
                    _ => Err(Error::Timeout {
                        operation: Operation::Fetch,
                        after: timeout,
                    }),
                }
            }
        }
    }

    /// Stops the peer: its connections close, and its blockstore is closed when this returns.
    pub async fn shutdown(&self) -> Result<(), Error> {
        self.ask(Command::Stop).await?;
        let (reply, stopped) = oneshot::channel();
        (self.bitswap.send(bitswap::Event::Stop(reply)).await).map_err(|_| Error::Closed)?;
        stopped.await.map_err(|_| Error::Closed)
    }

    /// The peers connected now.
    pub async fn peers(&self) -> Result<Vec<PeerId>, Error> {
        self.ask(Command::Peers).await
    }

    /// The connected peers known to be subscribed to `topic`.
    pub async fn topic_peers(&self, topic: &Topic) -> Result<Vec<PeerId>, Error> {
        self.ask(|reply| Command::TopicPeers(topic.clone(), reply))
            .await
    }

    /// The addresses it listens on, once it does.
    pub async fn listening(&self) -> Result<Vec<String>, Error> {
        let addresses = self.ask(Command::Listening).await?;
        let id = &self.id;
        Ok(addresses.iter().map(|a| format!("{a}/p2p/{id}")).collect())
    }

    /// Dials `address` (a multiaddr).
    pub async fn dial(&self, address: &str) -> Result<(), Error> {
        let address =
            parse(address).map_err(|e| Error::unavailable(Operation::Peers, e.to_string()))?;
        self.ask(|reply| Command::Dial(address, reply)).await?
    }
}

/// Unsubscribes when a subscription's stream is dropped.
struct Unsubscribe {
    commands: mpsc::WeakSender<Command>,
    topic: Topic,
    id: u64,
}

impl Drop for Unsubscribe {
    fn drop(&mut self) {
        if let Some(commands) = self.commands.upgrade() {
            let _ = commands.try_send(Command::Unsubscribe(self.topic.clone(), self.id));
        }
    }
}

/// The task that owns the swarm.
struct Task {
    swarm: Swarm<Behaviour>,
    /// Per topic, its subscriptions.
    subscribers: HashMap<Topic, Vec<(u64, mpsc::Sender<Message>)>>,
    next_id: u64,
    listening: Vec<Multiaddr>,
    bitswap: mpsc::Sender<bitswap::Event>,
    /// The configured peers, by peer ID: redialled with backoff while not connected.
    configured: HashMap<libp2p::PeerId, Redial>,
}

/// When a configured peer is dialled again.
struct Redial {
    address: Multiaddr,
    /// Not connected: the next attempt's time, and the wait after it.
    due: Option<(tokio::time::Instant, Duration)>,
}

/// The first wait before redialling a configured peer, doubling up to [`REDIAL_MAX`].
const REDIAL_FIRST: Duration = Duration::from_millis(100);
const REDIAL_MAX: Duration = Duration::from_secs(10);

impl Redial {
    fn new(address: Multiaddr) -> Redial {
        Redial { address, due: None }
    }
}

impl Task {
    async fn run(mut self, mut commands: mpsc::Receiver<Command>) {
        loop {
            let next = (self.configured.values())
                .filter_map(|r| r.due.map(|(at, _)| at))
                .min();
            let redial = async {
                match next {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = redial => self.redial(),
                command = commands.recv() => match command {
                    Some(Command::Stop(reply)) => {
                        drop(self);
                        let _ = reply.send(());
                        return;
                    }
                    Some(command) => self.handle_command(command),
                    None => break,
                },
                event = self.swarm.select_next_some() => self.handle_event(event),
            }
        }
        debug!("the embedded peer stopped");
    }

    fn handle_command(&mut self, command: Command) {
        match command {
            Command::Publish(topic, data, reply) => {
                let gossipsub = &mut self.swarm.behaviour_mut().gossipsub;
                let published = gossipsub.publish(IdentTopic::new(topic.as_str()), data.to_vec());
                let result = match published {
                    Ok(_) | Err(PublishError::NoPeersSubscribedToTopic) => Ok(()),
                    Err(PublishError::Duplicate) => Ok(()),
                    Err(error) => Err(Error::unavailable(Operation::Broadcast, error.to_string())),
                };
                let _ = reply.send(result);
            }
            Command::Subscribe(topic, sender, reply) => {
                let gossipsub = &mut self.swarm.behaviour_mut().gossipsub;
                let result = match gossipsub.subscribe(&IdentTopic::new(topic.as_str())) {
                    Ok(_) => {
                        self.next_id += 1;
                        let id = self.next_id;
                        self.subscribers
                            .entry(topic)
                            .or_default()
                            .push((id, sender));
                        Ok(id)
                    }
                    Err(error) => Err(Error::unavailable(Operation::Subscribe, error.to_string())),
                };
                let _ = reply.send(result);
            }
            Command::Unsubscribe(topic, id) => {
                let Some(list) = self.subscribers.get_mut(&topic) else {
                    return;
                };
                list.retain(|(i, _)| *i != id);
                if list.is_empty() {
                    self.subscribers.remove(&topic);
                    let gossipsub = &mut self.swarm.behaviour_mut().gossipsub;
                    gossipsub.unsubscribe(&IdentTopic::new(topic.as_str()));
                }
            }
            Command::Peers(reply) => {
                let peers = (self.swarm.connected_peers())
                    .map(|p| PeerId::new(p.to_string()))
                    .collect();
                let _ = reply.send(peers);
            }
            Command::TopicPeers(topic, reply) => {
                let hash = IdentTopic::new(topic.as_str()).hash();
                let gossipsub = &self.swarm.behaviour().gossipsub;
                let peers = (gossipsub.all_peers())
                    .filter(|(_, topics)| topics.contains(&&hash))
                    .map(|(peer, _)| PeerId::new(peer.to_string()))
                    .collect();
                let _ = reply.send(peers);
            }
            Command::Listening(reply) => {
                let _ = reply.send(self.listening.clone());
            }
            Command::Dial(address, reply) => {
                let result = (self.swarm.dial(address))
                    .map_err(|error| Error::unavailable(Operation::Peers, error.to_string()));
                let _ = reply.send(result);
            }
            Command::Stop(_) => {}
        }
    }

    fn handle_event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        match event {
            SwarmEvent::NewListenAddr { address, .. } => self.listening.push(address),
            SwarmEvent::Behaviour(BehaviourEvent::Gossipsub(gossipsub::Event::Message {
                propagation_source,
                message,
                ..
            })) => self.deliver(propagation_source, message),
            SwarmEvent::ConnectionEstablished { peer_id, .. } => {
                debug!(peer = %peer_id, "connected");
                self.configured_peer(peer_id, true);
                self.tell_bitswap(bitswap::Event::Connected(peer_id));
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                num_established: 0,
                ..
            } => {
                self.configured_peer(peer_id, false);
                self.tell_bitswap(bitswap::Event::Disconnected(peer_id));
            }
            SwarmEvent::OutgoingConnectionError {
                peer_id: Some(peer),
                ..
            } if !self.swarm.is_connected(&peer) => {
                let redial = self.configured.get_mut(&peer);
                if let Some(redial) = redial.filter(|r| r.due.is_none()) {
                    redial.due = Some((tokio::time::Instant::now() + REDIAL_FIRST, REDIAL_FIRST));
                }
            }
            _ => {}
        }
    }

    /// Dials the configured peers whose wait ran out, and doubles their next wait.
    fn redial(&mut self) {
        let now = tokio::time::Instant::now();
        for redial in self.configured.values_mut() {
            let Some((at, wait)) = redial.due else {
                continue;
            };
            if at > now {
                continue;
            }
            let next = (wait * 2).min(REDIAL_MAX);
            redial.due = Some((now + next, next));
            if let Err(error) = self.swarm.dial(redial.address.clone()) {
                debug!(address = %redial.address, %error, "redialling failed");
            }
        }
    }

    /// A configured peer connected (stop redialling it) or left (redial it soon).
    fn configured_peer(&mut self, peer: libp2p::PeerId, connected: bool) {
        if let Some(redial) = self.configured.get_mut(&peer) {
            redial.due = match connected {
                true => None,
                false => Some((tokio::time::Instant::now() + REDIAL_FIRST, REDIAL_FIRST)),
            };
        }
    }

    fn tell_bitswap(&self, event: bitswap::Event) {
        if self.bitswap.try_send(event).is_err() {
            warn!("the bitswap engine is behind: a connection event dropped");
        }
    }

    /// Hands a received message to every subscription of its topic.
    fn deliver(&mut self, via: libp2p::PeerId, message: gossipsub::Message) {
        let topic = message.topic.as_str();
        let Ok(topic) = Topic::new(topic) else {
            return;
        };
        let Some(list) = self.subscribers.get_mut(&topic) else {
            return;
        };
        let from = PeerId::new(message.source.unwrap_or(via).to_string());
        let data = Bytes::from(message.data);
        for (_, sender) in list.iter() {
            let message = Message {
                from: from.clone(),
                topic: topic.clone(),
                data: data.clone(),
            };
            if sender.try_send(message).is_err() {
                debug!(topic = %topic, "a subscriber is behind: a message dropped");
            }
        }
    }
}

#[async_trait::async_trait]
impl comms::Communication for P2pPeer {
    fn local_peer(&self) -> PeerId {
        self.id.clone()
    }

    fn limits(&self) -> Limits {
        self.limits
    }

    async fn broadcast(&self, topic: &Topic, data: Bytes) -> Result<(), Error> {
        P2pPeer::broadcast(self, topic, data).await
    }

    async fn subscribe(&self, topic: &Topic) -> Result<Subscription, Error> {
        P2pPeer::subscribe(self, topic).await
    }

    async fn put(&self, codec: Codec, data: Bytes) -> Result<Cid, Error> {
        P2pPeer::put(self, codec, data).await
    }

    async fn fetch(&self, cid: &Cid, timeout: Duration) -> Result<Bytes, Error> {
        P2pPeer::fetch(self, cid, timeout).await
    }

    async fn peers(&self) -> Result<Vec<PeerId>, Error> {
        P2pPeer::peers(self).await
    }

    async fn topic_peers(&self, topic: &Topic) -> Result<Vec<PeerId>, Error> {
        P2pPeer::topic_peers(self, topic).await
    }
}
