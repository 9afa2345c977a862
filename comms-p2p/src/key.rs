//! The embedded peer's identity on disk.

use std::path::Path;

use libp2p::identity;

use crate::P2pError;

/// Reads the peer's identity from `path` (libp2p's protobuf encoding), or makes a new ed25519 one
/// and writes it there (readable by its owner only) when the file does not exist. A file that
/// others may read is refused, as a validator's key file is: whoever reads it can be this peer.
pub fn load_or_create_key(path: &Path) -> Result<identity::Keypair, P2pError> {
    use std::os::unix::fs::PermissionsExt;
    let failed = |reason: String| P2pError::Key {
        path: path.to_owned(),
        reason,
    };
    match std::fs::read(path) {
        Ok(bytes) => {
            let mode = std::fs::metadata(path)
                .map_err(|e| failed(e.to_string()))?
                .permissions()
                .mode();
            if mode & 0o077 != 0 {
                let reason = format!(
                    "readable by others (mode {:o}): run chmod 600 on it",
                    mode & 0o777
                );
                return Err(failed(reason));
            }
            identity::Keypair::from_protobuf_encoding(&bytes).map_err(|e| failed(e.to_string()))
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            let key = identity::Keypair::generate_ed25519();
            let bytes = key
                .to_protobuf_encoding()
                .map_err(|e| failed(e.to_string()))?;
            write_private(path, &bytes).map_err(|e| failed(e.to_string()))?;
            Ok(key)
        }
        Err(error) => Err(failed(error.to_string())),
    }
}

/// Writes `bytes` to a new file at `path` that only its owner can read, synced.
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::{io::Write, os::unix::fs::OpenOptionsExt};
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}
