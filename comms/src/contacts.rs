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
    /// writes the file if anything changed. The lock is held through the write, so two callers
    /// never race on the temporary file and, once this returns `Ok`, the file holds every address
    /// remembered so far; after a failed write nothing is taken as remembered, and the next call
    /// writes again.
    pub fn remember(&self, seen: Vec<(String, String)>) -> io::Result<()> {
        let mut contacts = self.lock();
        let mut updated = contacts.clone();
        for (peer, address) in seen {
            // One address per peer: the one it is connected on now.
            updated.retain(|known| !known.ends_with(&format!("/p2p/{peer}")));
            updated.push_front(address);
        }
        updated.truncate(MAX_CONTACTS);
        if updated == *contacts {
            return Ok(());
        }
        let file = ContactFile {
            peers: updated.iter().cloned().collect(),
        };
        let temporary = self.path.with_extension("tmp");
        std::fs::write(&temporary, serde_json::to_vec_pretty(&file)?)?;
        std::fs::rename(&temporary, &self.path)?;
        *contacts = updated;
        Ok(())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<String>> {
        self.contacts
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("contacts-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("scratch directory");
        dir
    }

    fn seen(peer: usize) -> Vec<(String, String)> {
        let id = format!("peer{peer}");
        let address = format!("/ip4/127.0.0.1/tcp/{}/p2p/{id}", 4000 + peer);
        vec![(id, address)]
    }

    /// Callers on several threads (a backend's periodic task and a shutdown) each find their
    /// address in the file as soon as their call returns.
    #[test]
    fn a_returned_remember_is_on_disk_whoever_else_writes() {
        let dir = scratch("concurrent");
        let store = ContactStore::open(&dir.join("contacts.json")).expect("open");
        std::thread::scope(|scope| {
            for thread in 0..4 {
                let store = &store;
                scope.spawn(move || {
                    for round in 0..50 {
                        let peer = thread * 100 + round % 5;
                        store.remember(seen(peer)).expect("remember");
                        let on_disk = ContactStore::open(store.path()).expect("reopen");
                        let wanted = &seen(peer)[0].1;
                        assert!(on_disk.addresses().contains(wanted), "{wanted} not written");
                    }
                });
            }
        });
        assert_eq!(
            ContactStore::open(store.path())
                .expect("reopen")
                .addresses(),
            store.addresses()
        );
        std::fs::remove_dir_all(&dir).expect("clean up");
    }

    /// A write that fails is not taken as done: the next call writes the file.
    #[test]
    fn a_failed_write_is_retried_by_the_next_call() {
        let dir = scratch("retry");
        let store = ContactStore::open(&dir.join("sub").join("contacts.json")).expect("open");
        assert!(store.remember(seen(1)).is_err(), "its directory is missing");
        assert!(store.addresses().is_empty());
        std::fs::create_dir(dir.join("sub")).expect("directory");
        store.remember(seen(1)).expect("remember");
        let on_disk = ContactStore::open(store.path()).expect("reopen");
        assert_eq!(on_disk.addresses(), vec![seen(1)[0].1.clone()]);
        std::fs::remove_dir_all(&dir).expect("clean up");
    }
}
