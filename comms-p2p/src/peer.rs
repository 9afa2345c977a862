//! The peer's task and its handle.

use std::{collections::HashMap, net::IpAddr, path::Path, sync::Arc, time::Duration};

use bytes::Bytes;
use comms::{
    bump, contacts::ContactStore, frame, Cid, Codec, Error, Limits, Message, Operation, PeerId,
    Subscription, Topic,
};
use futures::StreamExt;
use libp2p::{
    connection_limits,
    gossipsub::{self, IdentTopic, PublishError},
    identify, identity, noise, ping,
    swarm::{ListenError, NetworkBehaviour, SwarmEvent},
    tcp, yamux, Multiaddr, Swarm, SwarmBuilder,
};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, info, warn};

use crate::{
    bitswap,
    config::{parse, P2pConfig},
    gossip::{self, Refused},
    metrics::P2pMetrics,
    store::{BlockStore, MemoryBlocks, RocksBlocks},
    P2pError,
};

/// The protocols the peer runs.
#[derive(NetworkBehaviour)]
struct Behaviour {
    /// The connection bounds of [`P2pConfig`]; first, so that a connection refused costs nothing
    /// of the others.
    connections: connection_limits::Behaviour,
    gossipsub: gossipsub::Behaviour,
    identify: identify::Behaviour,
    ping: ping::Behaviour,
    /// Bitswap's streams (see `bitswap`).
    stream: libp2p_stream::Behaviour,
}

/// How a publish is answered.
type Reply = oneshot::Sender<Result<(), Error>>;

/// The most queued publishes taken together.
const PUBLISH_BATCH: usize = 256;

/// What a handle asks the peer's task.
enum Command {
    Publish(Topic, Bytes, Reply),
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
    metrics: Arc<P2pMetrics>,
}

/// How long the listeners may take to report their addresses.
const LISTEN_BOUND: Duration = Duration::from_secs(10);

/// Drives `swarm` until each of `listeners` has reported an address (a port-0 listener its port);
/// fails if one closes or `LISTEN_BOUND` passes first. Nothing is dialled yet, so no other event
/// is lost.
async fn addresses_of(
    swarm: &mut Swarm<Behaviour>,
    mut listeners: Vec<libp2p::core::transport::ListenerId>,
) -> Result<Vec<Multiaddr>, P2pError> {
    let mut addresses = Vec::new();
    let reported = async {
        while !listeners.is_empty() {
            match swarm.select_next_some().await {
                SwarmEvent::NewListenAddr {
                    listener_id,
                    address,
                } => {
                    listeners.retain(|l| *l != listener_id);
                    addresses.push(address);
                }
                SwarmEvent::ListenerClosed { reason, .. } => {
                    let reason = reason.err().map(|e| e.to_string()).unwrap_or_default();
                    return Err(P2pError::Transport(format!("a listener closed: {reason}")));
                }
                SwarmEvent::ListenerError { error, .. } => {
                    return Err(P2pError::Transport(error.to_string()))
                }
                _ => {}
            }
        }
        Ok(())
    };
    match tokio::time::timeout(LISTEN_BOUND, reported).await {
        Ok(result) => result.map(|()| addresses),
        Err(_) => Err(P2pError::Transport(format!(
            "no listen address within {LISTEN_BOUND:?}"
        ))),
    }
}

/// The contact store at `path`, if one is configured.
fn open_contacts(path: Option<&Path>) -> Result<Option<ContactStore>, P2pError> {
    let Some(path) = path else { return Ok(None) };
    let store = ContactStore::open(path).map_err(|error| P2pError::ContactStore {
        path: path.to_owned(),
        reason: error.to_string(),
    })?;
    info!(path = %path.display(), contacts = store.addresses().len(), "opened the contact store");
    Ok(Some(store))
}

/// Dials the configured peers and the remembered ones; returns the configured ones, to redial.
fn dial_known(
    swarm: &mut Swarm<Behaviour>,
    peers: &[String],
    contacts: Option<&ContactStore>,
) -> Result<HashMap<libp2p::PeerId, Redial>, P2pError> {
    let mut configured = HashMap::new();
    for address in peers {
        let address = parse(address)?;
        if let Some(libp2p::multiaddr::Protocol::P2p(peer)) = address.iter().last() {
            configured.insert(peer, Redial::new(address.clone()));
        }
        if let Err(error) = swarm.dial(address.clone()) {
            warn!(%address, %error, "dialling a configured peer failed");
        }
    }
    let remembered = contacts.map(ContactStore::addresses).unwrap_or_default();
    for address in remembered
        .iter()
        .filter_map(|a| a.parse::<Multiaddr>().ok())
    {
        let peer = match address.iter().last() {
            Some(libp2p::multiaddr::Protocol::P2p(peer)) => peer,
            _ => continue,
        };
        if configured.contains_key(&peer) || peer == *swarm.local_peer_id() {
            continue;
        }
        if let Err(error) = swarm.dial(address.clone()) {
            debug!(%address, %error, "dialling a remembered peer failed");
        }
    }
    Ok(configured)
}

/// The bitswap engine's blockstore, counters and bounds.
fn engine_setup(config: &P2pConfig, metrics: Arc<P2pMetrics>) -> Result<bitswap::Setup, P2pError> {
    let blocks: Box<dyn BlockStore> = match &config.blocks_dir {
        Some(dir) => Box::new(RocksBlocks::open(dir).map_err(|e| P2pError::Store(e.to_string()))?),
        None => Box::<MemoryBlocks>::default(),
    };
    Ok(bitswap::Setup {
        blocks,
        metrics,
        max_wants: config.max_wants_per_peer.max(1),
        #[cfg(feature = "test-utils")]
        corrupt: config.corrupt_served_blocks,
        #[cfg(not(feature = "test-utils"))]
        corrupt: false,
    })
}

impl P2pPeer {
    /// Starts a peer with identity `key` on the current tokio runtime: it listens, dials
    /// `config.peers` and the contact store's, and runs until its last handle is dropped.
    pub async fn start(key: identity::Keypair, config: P2pConfig) -> Result<P2pPeer, P2pError> {
        let limits = config.limits;
        let (gossipsub, refused) = gossip::behaviour(&key, &limits)?;
        let behaviour = Behaviour {
            connections: connection_limits::Behaviour::new(config.connection_limits()),
            gossipsub,
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
            .with_connection_timeout(config.handshake_timeout)
            .build();
        let mut listeners = Vec::new();
        for address in &config.listen {
            listeners.push(
                swarm
                    .listen_on(parse(address)?)
                    .map_err(|e| transport(&e))?,
            );
        }
        let listening = addresses_of(&mut swarm, listeners).await?;
        let contacts = open_contacts(config.contact_store.as_deref())?;
        let configured = dial_known(&mut swarm, &config.peers, contacts.as_ref())?;
        let metrics = Arc::new(P2pMetrics::default());
        let control = swarm.behaviour().stream.new_control();
        let bitswap = bitswap::start(control, engine_setup(&config, metrics.clone())?);
        let id = PeerId::new(swarm.local_peer_id().to_string());
        let (commands, receiver) = mpsc::channel(256);
        let task = Task {
            swarm,
            subscribers: HashMap::new(),
            next_id: 0,
            listening,
            bitswap: bitswap.clone(),
            configured,
            contacts,
            inbound: HashMap::new(),
            metrics: metrics.clone(),
            limits,
            framing: Framing::new(),
            refused,
        };
        tokio::spawn(task.run(receiver));
        Ok(P2pPeer {
            commands,
            id,
            limits,
            queue: config.subscriber_queue.max(1),
            bitswap,
            metrics,
        })
    }

    /// The peer's counters.
    pub fn metrics(&self) -> &Arc<P2pMetrics> {
        &self.metrics
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
        let (reply, stored) = oneshot::channel();
        let event = bitswap::Event::Put(cid, data, reply);
        self.bitswap.send(event).await.map_err(|_| Error::Closed)?;
        match stored.await {
            Ok(Ok(())) => Ok(cid),
            Ok(Err(error)) => Err(Error::unavailable(Operation::Put, error.to_string())),
            Err(_) => Err(Error::Closed),
        }
    }

    /// Deletes blocks this peer put from its blockstore (they are no longer served from here).
    pub async fn release(&self, cids: Vec<Cid>) -> Result<(), Error> {
        let event = bitswap::Event::Release(cids);
        self.bitswap.send(event).await.map_err(|_| Error::Closed)
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

    /// The addresses it listens on (known from start; more as interfaces come).
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

/// The IP address in `address`, if it has one.
fn ip_of(address: &Multiaddr) -> Option<IpAddr> {
    address.iter().find_map(|p| match p {
        libp2p::multiaddr::Protocol::Ip4(ip) => Some(IpAddr::V4(ip)),
        libp2p::multiaddr::Protocol::Ip6(ip) => Some(IpAddr::V6(ip)),
        _ => None,
    })
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
    /// Where the addresses of peers seen are remembered.
    contacts: Option<ContactStore>,
    /// The IP address each peer that dialled here came from: its identify-reported listen
    /// address on that IP is the one remembered.
    inbound: HashMap<libp2p::PeerId, IpAddr>,
    metrics: Arc<P2pMetrics>,
    limits: Limits,
    framing: Framing,
    /// What gossipsub dropped as invalid, read every [`gossip::CHECK_EVERY`].
    refused: Refused,
}

/// How broadcasts go out: a broadcast alone as it is (so `ipfs pubsub sub` reads it), unless it
/// would read as a comms-ipfs frame, then in a frame of its own; broadcasts queued together in
/// frames of several. Frames carry this origin and are unlinked.
struct Framing {
    origin: u64,
    seq: u64,
}

impl Framing {
    fn new() -> Framing {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
        let origin = now.map_or(1, |since| since.as_nanos() as u64);
        Framing { origin, seq: 0 }
    }

    fn wrap(&mut self, data: Bytes) -> Bytes {
        match data.starts_with(frame::MAGIC) {
            true => self.frame(&[data]),
            false => data,
        }
    }

    /// A frame of `messages`, unlinked (gossipsub repairs its own losses).
    fn frame(&mut self, messages: &[Bytes]) -> Bytes {
        let link = frame::Link {
            origin: self.origin,
            seq: self.seq,
            prev: None,
        };
        self.seq += 1;
        frame::encode(&link, messages)
    }
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
        let mut check = tokio::time::interval(gossip::CHECK_EVERY);
        check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
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
                _ = check.tick() => self.refused.check(&self.metrics),
                command = commands.recv() => {
                    let mut next = command;
                    while let Some(command) = next.take() {
                        if let Command::Stop(reply) = command {
                            drop(self);
                            let _ = reply.send(());
                            return;
                        }
                        next = self.handle_command(command, &mut commands);
                    }
                    if commands.is_closed() && commands.is_empty() {
                        break;
                    }
                }
                event = self.swarm.select_next_some() => self.handle_event(event),
            }
        }
        debug!("the embedded peer stopped");
    }

    /// Handles `command`; a publish takes the publishes queued behind it too, and the first other
    /// command it meets is returned, to be handled next.
    fn handle_command(
        &mut self,
        command: Command,
        queued: &mut mpsc::Receiver<Command>,
    ) -> Option<Command> {
        match command {
            Command::Publish(topic, data, reply) => {
                return self.publish_queued((topic, data, reply), queued);
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
                let list = self.subscribers.get_mut(&topic)?;
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
        None
    }

    /// Publishes `first` and every publish already queued behind it (up to [`PUBLISH_BATCH`]):
    /// those of one topic go out together, several to a comms-ipfs frame, as the kubo backend
    /// sends them, so that a burst costs a few signed messages rather than one each. Returns the
    /// first other command taken from the queue.
    fn publish_queued(
        &mut self,
        first: (Topic, Bytes, Reply),
        queued: &mut mpsc::Receiver<Command>,
    ) -> Option<Command> {
        let mut topics: Vec<(Topic, Vec<(Bytes, Reply)>)> = Vec::new();
        let mut add = |(topic, data, reply): (Topic, Bytes, Reply)| match topics
            .iter_mut()
            .find(|(t, _)| *t == topic)
        {
            Some((_, list)) => list.push((data, reply)),
            None => topics.push((topic, vec![(data, reply)])),
        };
        add(first);
        let mut other = None;
        for _ in 1..PUBLISH_BATCH {
            match queued.try_recv() {
                Ok(Command::Publish(topic, data, reply)) => add((topic, data, reply)),
                Ok(command) => {
                    other = Some(command);
                    break;
                }
                Err(_) => break,
            }
        }
        for (topic, list) in topics {
            self.publish(&topic, list);
        }
        other
    }

    /// Publishes `list` on `topic`: alone as it is, or grouped in frames within the message limit.
    fn publish(&mut self, topic: &Topic, list: Vec<(Bytes, Reply)>) {
        let (data, mut replies): (Vec<Bytes>, Vec<Reply>) = list.into_iter().unzip();
        let mut start = 0;
        for count in frame::groups(&data, self.limits.max_message_bytes) {
            let group = &data[start..start + count];
            start += count;
            let message = match group {
                [one] => self.framing.wrap(one.clone()),
                several => self.framing.frame(several),
            };
            let gossipsub = &mut self.swarm.behaviour_mut().gossipsub;
            let published = gossipsub.publish(IdentTopic::new(topic.as_str()), message.to_vec());
            let result = match published {
                Ok(_) | Err(PublishError::NoPeersSubscribedToTopic) => Ok(()),
                Err(PublishError::Duplicate) => Ok(()),
                Err(error) => Err(error.to_string()),
            };
            for reply in replies.drain(..count) {
                let result = result.clone();
                let _ = reply.send(result.map_err(|e| Error::unavailable(Operation::Broadcast, e)));
            }
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
            SwarmEvent::ConnectionEstablished {
                peer_id, endpoint, ..
            } => {
                debug!(peer = %peer_id, "connected");
                self.configured_peer(peer_id, true);
                self.met(peer_id, &endpoint);
                self.tell_bitswap(bitswap::Event::Connected(peer_id));
            }
            SwarmEvent::Behaviour(BehaviourEvent::Identify(identify::Event::Received {
                peer_id,
                info,
                ..
            })) => self.identified(peer_id, &info.listen_addrs),
            SwarmEvent::ConnectionClosed {
                peer_id,
                num_established: 0,
                ..
            } => {
                self.configured_peer(peer_id, false);
                self.tell_bitswap(bitswap::Event::Disconnected(peer_id));
            }
            SwarmEvent::IncomingConnectionError {
                send_back_addr,
                error,
                ..
            } => self.incoming_failed(&send_back_addr, &error),
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

    /// A connection opened here did not come up: refused by a bound, or its handshake failed (too
    /// slow, or not noise and yamux). Counted and logged either way.
    fn incoming_failed(&self, from: &Multiaddr, error: &ListenError) {
        match error {
            ListenError::Denied { cause } => {
                bump(&self.metrics.connections_refused);
                info!(%from, %cause, "refused a connection");
            }
            _ => {
                bump(&self.metrics.handshakes_failed);
                info!(%from, %error, "a connection's handshake failed");
            }
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

    /// A connection is up: a peer dialled at an address is remembered at it; one that dialled
    /// here, once identify says where it listens.
    fn met(&mut self, peer: libp2p::PeerId, endpoint: &libp2p::core::ConnectedPoint) {
        match endpoint {
            libp2p::core::ConnectedPoint::Dialer { address, .. } => self.remember(peer, address),
            libp2p::core::ConnectedPoint::Listener { send_back_addr, .. } => {
                if let Some(ip) = ip_of(send_back_addr) {
                    self.inbound.insert(peer, ip);
                }
            }
        }
    }

    /// identify told where `peer` listens: for a peer that dialled here, its TCP address on the IP
    /// it came from is remembered.
    fn identified(&mut self, peer: libp2p::PeerId, listen: &[Multiaddr]) {
        let Some(ip) = self.inbound.remove(&peer) else {
            return;
        };
        let tcp = |a: &&Multiaddr| {
            a.iter()
                .any(|p| matches!(p, libp2p::multiaddr::Protocol::Tcp(_)))
        };
        if let Some(address) = listen.iter().filter(tcp).find(|a| ip_of(a) == Some(ip)) {
            self.remember(peer, &address.clone());
        }
    }

    fn remember(&self, peer: libp2p::PeerId, address: &Multiaddr) {
        let Some(contacts) = &self.contacts else {
            return;
        };
        let mut address = address.clone();
        if !matches!(
            address.iter().last(),
            Some(libp2p::multiaddr::Protocol::P2p(_))
        ) {
            address.push(libp2p::multiaddr::Protocol::P2p(peer));
        }
        if let Err(error) = contacts.remember(vec![(peer.to_string(), address.to_string())]) {
            warn!(path = %contacts.path().display(), %error, "could not write the contact store");
        }
    }

    /// Hands the broadcasts in a received message (one, or a comms-ipfs frame of several) to every
    /// subscription of its topic.
    fn deliver(&mut self, via: libp2p::PeerId, message: gossipsub::Message) {
        let Ok(topic) = Topic::new(message.topic.as_str()) else {
            return;
        };
        if !self.subscribers.contains_key(&topic) {
            return;
        }
        let from = PeerId::new(message.source.unwrap_or(via).to_string());
        let messages = match frame::decode(Bytes::from(message.data)) {
            Ok(frame) => frame.messages,
            Err(reason) => {
                bump(&self.metrics.malformed_dropped);
                debug!(topic = %topic, %from, reason, "dropped a malformed frame");
                return;
            }
        };
        for data in messages {
            if data.len() > self.limits.max_message_bytes {
                bump(&self.metrics.oversized_dropped);
                debug!(topic = %topic, %from, size = data.len(), "dropped an oversized broadcast");
                continue;
            }
            self.hand_on(Message {
                from: from.clone(),
                topic: topic.clone(),
                data,
            });
        }
    }

    fn hand_on(&self, message: Message) {
        let Some(list) = self.subscribers.get(&message.topic) else {
            return;
        };
        bump(&self.metrics.messages_received);
        for (_, sender) in list {
            if sender.try_send(message.clone()).is_err() {
                bump(&self.metrics.queue_full_dropped);
                debug!(topic = %message.topic, "a subscriber is behind: a message dropped");
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

    async fn release(&self, cids: Vec<Cid>) -> Result<(), Error> {
        P2pPeer::release(self, cids).await
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
