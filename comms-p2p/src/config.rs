//! The embedded peer's configuration: the `[p2p]` section of a node's config file.

use std::{path::PathBuf, time::Duration};

use comms::{
    config::{self, within, ConfigError},
    Limits,
};
use libp2p::{connection_limits, Multiaddr};
use serde::{Deserialize, Serialize};

use crate::P2pError;

/// How the embedded peer runs (the `[p2p]` section of a node's configuration).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct P2pConfig {
    /// Where it listens (multiaddrs); `/ip4/127.0.0.1/tcp/0` picks a free loopback port.
    pub listen: Vec<String>,
    /// Peers dialled at start, and again with backoff whenever not connected (multiaddrs ending
    /// in `/p2p/<peer id>`): embedded peers or kubo daemons' swarm addresses.
    pub peers: Vec<String>,
    /// Size limits: by default 1 MiB less 16 KiB messages (as the kubo backend's: with its
    /// envelope, such a message fits kubo's 1 MiB) and 1 MiB blocks.
    pub limits: Limits,
    /// File remembering the addresses of peers seen (as identify reports them), dialled at the
    /// next start. None: no memory.
    pub contact_store: Option<PathBuf>,
    /// Messages waiting for a slow subscriber, per subscription; more are dropped and counted, as
    /// a daemon's pubsub drops for a slow reader.
    pub subscriber_queue: usize,
    /// Wants remembered per peer for blocks not held yet (boxo's bound); more are answered
    /// DONT_HAVE.
    pub max_wants_per_peer: usize,
    /// Connections other peers opened here, at most, once their handshakes are done; more are
    /// refused and counted (`connections_refused`).
    pub max_incoming_connections: u32,
    /// Handshakes (noise, then yamux) in progress on connections opened here, at most; more are
    /// refused and counted, so that silent connections cannot pile up.
    pub max_pending_handshakes: u32,
    /// Connections with any one peer, either way, at most.
    pub max_connections_per_peer: u32,
    /// How long a connection's handshake may take, either way; then it is closed (and, when the
    /// other peer opened it, counted in `handshakes_failed`).
    #[serde(with = "humantime_serde")]
    pub handshake_timeout: Duration,
    /// The blockstore's directory (RocksDB), so that a restarted peer still serves what it held;
    /// none: blocks in memory. A node sets it to `<data_dir>/blocks`.
    #[serde(skip)]
    pub blocks_dir: Option<PathBuf>,
    /// A fault for tests: every block served to a peer is altered.
    #[cfg(feature = "test-utils")]
    #[serde(skip)]
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
            contact_store: None,
            subscriber_queue: 4096,
            max_wants_per_peer: 1024,
            max_incoming_connections: 256,
            max_pending_handshakes: 64,
            max_connections_per_peer: 4,
            handshake_timeout: Duration::from_secs(10),
            blocks_dir: None,
            #[cfg(feature = "test-utils")]
            corrupt_served_blocks: false,
        }
    }
}

impl P2pConfig {
    /// Checks every field, naming the first that breaks its bound as the config file spells it
    /// (`p2p.listen`, `p2p.max_wants_per_peer`): listen addresses that parse as multiaddrs, peers
    /// as `/…/p2p/<id>` multiaddrs, queues and wantlists from 1 to 2^20, connections from 1 to
    /// 2^16 (per peer to 64), a handshake from 100 ms to 10 minutes, the size limits of
    /// [`comms::config::limits`].
    pub fn check(&self) -> Result<(), ConfigError> {
        self.check_fields().map_err(|e| e.within_table("p2p"))
    }

    fn check_fields(&self) -> Result<(), ConfigError> {
        for address in &self.listen {
            parse(address).map_err(|error| ConfigError::new("listen", error.to_string()))?;
        }
        for address in &self.peers {
            config::peer_address("peers", address)?;
            parse(address).map_err(|error| ConfigError::new("peers", error.to_string()))?;
        }
        config::limits(&self.limits)?;
        within("subscriber_queue", self.subscriber_queue, 1, 1 << 20)?;
        within("max_wants_per_peer", self.max_wants_per_peer, 1, 1 << 20)?;
        within(
            "max_incoming_connections",
            self.max_incoming_connections,
            1,
            1 << 16,
        )?;
        within(
            "max_pending_handshakes",
            self.max_pending_handshakes,
            1,
            1 << 16,
        )?;
        within(
            "max_connections_per_peer",
            self.max_connections_per_peer,
            1,
            64,
        )?;
        let handshake = (Duration::from_millis(100), Duration::from_secs(600));
        within(
            "handshake_timeout",
            self.handshake_timeout,
            handshake.0,
            handshake.1,
        )
    }

    /// The connection bounds, for libp2p's `connection_limits`.
    pub(crate) fn connection_limits(&self) -> connection_limits::ConnectionLimits {
        connection_limits::ConnectionLimits::default()
            .with_max_established_incoming(Some(self.max_incoming_connections))
            .with_max_pending_incoming(Some(self.max_pending_handshakes))
            .with_max_established_per_peer(Some(self.max_connections_per_peer))
    }
}

/// `address` as a multiaddr.
pub(crate) fn parse(address: &str) -> Result<Multiaddr, P2pError> {
    address
        .parse()
        .map_err(|error: libp2p::multiaddr::Error| P2pError::Address {
            address: address.to_string(),
            reason: error.to_string(),
        })
}
