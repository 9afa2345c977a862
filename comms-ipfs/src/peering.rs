//! Which peers the daemon connects to: the configured ones, and those remembered from earlier runs in
//! a contact store on disk (after IPFS-Toolkit's contact store), so that a restarted node finds its
//! network again without waiting for discovery.

use std::{
    collections::VecDeque,
    io,
    path::{Path, PathBuf},
    sync::Mutex,
};

use ipfs_api_prelude::request::{SwarmConnect, SwarmPeers};
use serde::{Deserialize, Serialize};
use tracing::{debug, info, warn};

use crate::rpc::{Deadline, Rpc};

/// At most this many addresses are remembered, the most recently seen first.
const MAX_CONTACTS: usize = 256;

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
                    warn!(path = %store.path.display(), %error, "could not write the contact store");
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

/// Multiaddrs of peers seen, in a JSON file written atomically.
pub(crate) struct ContactStore {
    path: PathBuf,
    contacts: Mutex<VecDeque<String>>,
}

#[derive(Serialize, Deserialize)]
struct ContactFile {
    peers: Vec<String>,
}

impl ContactStore {
    /// Opens the store at `path`; a missing file is an empty store, an unreadable one an error.
    pub fn open(path: &Path) -> io::Result<ContactStore> {
        let contacts = match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice::<ContactFile>(&bytes)
                .map_err(|error| io::Error::new(io::ErrorKind::InvalidData, error))?
                .peers
                .into_iter()
                .filter(|address| address.starts_with('/') && address.contains("/p2p/"))
                .take(MAX_CONTACTS)
                .collect(),
            Err(error) if error.kind() == io::ErrorKind::NotFound => VecDeque::new(),
            Err(error) => return Err(error),
        };
        info!(path = %path.display(), contacts = contacts.len(), "opened the contact store");
        Ok(ContactStore {
            path: path.to_owned(),
            contacts: Mutex::new(contacts),
        })
    }

    fn addresses(&self) -> Vec<String> {
        self.lock().iter().cloned().collect()
    }

    /// Puts `seen` first (newest), keeps the rest behind it, and writes the file if anything changed.
    fn remember(&self, seen: Vec<(String, String)>) -> io::Result<()> {
        let file = {
            let mut contacts = self.lock();
            let before = contacts.clone();
            for (peer, address) in seen {
                // One address per peer: the one it is connected on now.
                contacts.retain(|known| !known.ends_with(&format!("/p2p/{peer}")));
                contacts.push_front(address);
            }
            contacts.truncate(MAX_CONTACTS);
            if *contacts == before {
                return Ok(());
            }
            ContactFile {
                peers: contacts.iter().cloned().collect(),
            }
        };
        let temporary = self.path.with_extension("tmp");
        std::fs::write(&temporary, serde_json::to_vec_pretty(&file)?)?;
        std::fs::rename(&temporary, &self.path)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<String>> {
        self.contacts
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}
