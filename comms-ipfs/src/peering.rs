//! Which peers the daemon connects to: the configured ones, and those remembered from earlier runs in
//! a contact store on disk (after IPFS-Toolkit's contact store), so that a restarted node finds its
//! network again without waiting for discovery.

use comms::contacts::ContactStore;
use ipfs_api_prelude::request::{SwarmConnect, SwarmPeers};
use serde::Deserialize;
use tracing::{debug, warn};

use crate::rpc::{Deadline, Rpc};

/// Connects the daemon to known peers and remembers the peers it is connected to.
pub(crate) struct Peering {
    rpc: Rpc,
    deadline: Deadline,
    configured: Vec<String>,
    store: Option<ContactStore>,
}

impl Peering {
    pub fn new(
        rpc: Rpc,
        deadline: Deadline,
        configured: Vec<String>,
        store: Option<ContactStore>,
    ) -> Peering {
        Peering {
            rpc,
            deadline,
            configured,
            store,
        }
    }

    /// Asks the daemon to connect to every configured and remembered peer; returns how many succeeded.
    /// Failures are logged, not fatal: a remembered peer may be gone for good.
    pub async fn connect_all(&self) -> usize {
        let mut addresses = self.configured.clone();
        if let Some(store) = &self.store {
            addresses.extend(store.addresses());
        }
        addresses.sort_unstable();
        addresses.dedup();
        let mut connected = 0;
        for address in &addresses {
            match self.connect(address).await {
                Ok(()) => connected += 1,
                Err(error) => debug!(%address, %error, "could not connect to peer"),
            }
        }
        connected
    }

    /// Asks the daemon to connect to `address` (a multiaddr ending in `/p2p/<peer id>`).
    pub async fn connect(&self, address: &str) -> Result<(), comms::Error> {
        self.rpc
            .call(comms::Operation::Peers, self.deadline, |_| {
                self.rpc.empty(SwarmConnect { peer: address }, None)
            })
            .await
    }

    /// Records the addresses of the peers connected now in the contact store, asking the daemon
    /// within `deadline` (the call's own deadline when `None`).
    pub async fn remember_connected(&self, deadline: Option<Deadline>) {
        let Some(store) = &self.store else { return };
        match self
            .connected_within(deadline.unwrap_or(self.deadline))
            .await
        {
            Ok(addresses) => {
                if let Err(error) = store.remember(addresses) {
                    warn!(path = %store.path().display(), %error, "could not write the contact store");
                }
            }
            Err(error) => debug!(%error, "could not list peers for the contact store"),
        }
    }

    /// `/…/p2p/<peer>` addresses of the connected peers.
    pub async fn connected(&self) -> Result<Vec<(String, String)>, comms::Error> {
        self.connected_within(self.deadline).await
    }

    async fn connected_within(
        &self,
        deadline: Deadline,
    ) -> Result<Vec<(String, String)>, comms::Error> {
        let reply: PeersReply = self
            .rpc
            .call(comms::Operation::Peers, deadline, |_| {
                self.rpc.json(SwarmPeers, None)
            })
            .await?;
        Ok(reply
            .peers
            .unwrap_or_default()
            .into_iter()
            .map(|peer| {
                let address = if peer.addr.contains("/p2p/") {
                    peer.addr
                } else {
                    format!("{}/p2p/{}", peer.addr, peer.peer)
                };
                (peer.peer, address)
            })
            .collect())
    }
}

/// `swarm/peers`, as far as it is read (kubo adds latency, streams, direction).
#[derive(Deserialize)]
struct PeersReply {
    #[serde(rename = "Peers")]
    peers: Option<Vec<PeerEntry>>,
}

#[derive(Deserialize)]
struct PeerEntry {
    #[serde(rename = "Addr")]
    addr: String,
    #[serde(rename = "Peer")]
    peer: String,
}
