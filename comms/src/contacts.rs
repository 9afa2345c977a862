//! A contact store: the multiaddrs of peers seen, in a JSON file written atomically, so that a
//! restarted node finds its network again without waiting for discovery (after IPFS-Toolkit's
//! contact store). Every networked backend keeps one.

use std::{
    collections::VecDeque,
    io,
    path::{Path, PathBuf},
    sync::Mutex,
};

use serde::{Deserialize, Serialize};

/// At most this many addresses are remembered, the most recently seen first.
const MAX_CONTACTS: usize = 256;

/// Multiaddrs of peers seen, in a JSON file written atomically.
pub struct ContactStore {
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
        Ok(ContactStore {
            path: path.to_owned(),
            contacts: Mutex::new(contacts),
        })
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The remembered addresses, the most recently seen first.
    pub fn addresses(&self) -> Vec<String> {
        self.lock().iter().cloned().collect()
    }

    /// Puts `seen` (peer ID, its `/…/p2p/<peer>` address) first, keeps the rest behind it, and
    /// writes the file if anything changed.
    pub fn remember(&self, seen: Vec<(String, String)>) -> io::Result<()> {
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
