//! Checking a configuration: each value against its bounds, an error naming the field as the
//! config file spells it (`node.core.max_block_bytes`, `ipfs.call_timeout`).

/// A config value outside its bounds: which field, and what it must be.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct ConfigError {
    /// The field, as it is spelled in the config file (`core.max_block_bytes`).
    pub field: String,
    /// The bound it breaks.
    pub reason: String,
}

impl ConfigError {
    /// `field` breaks `reason`.
    pub fn new(field: &str, reason: impl Into<String>) -> ConfigError {
        ConfigError {
            field: field.to_string(),
            reason: reason.into(),
        }
    }

    /// The same error for a field one table down: `prefix.field`.
    pub fn within_table(self, prefix: &str) -> ConfigError {
        ConfigError {
            field: format!("{prefix}.{}", self.field),
            ..self
        }
    }
}

/// Checks that `value` is within `low..=high`, naming `field` if not.
pub fn within<T: PartialOrd + std::fmt::Debug>(
    field: &str,
    value: T,
    low: T,
    high: T,
) -> Result<(), ConfigError> {
    match value >= low && value <= high {
        true => Ok(()),
        false => Err(ConfigError::new(
            field,
            format!("{value:?} is outside {low:?} to {high:?}"),
        )),
    }
}

/// Checks that `address` looks like a peer's multiaddr: `/…/p2p/<peer id>`, naming `field` if
/// not.
pub fn peer_address(field: &str, address: &str) -> Result<(), ConfigError> {
    let peer = address.rsplit_once("/p2p/").map(|(_, peer)| peer);
    match address.starts_with('/') && peer.is_some_and(|p| !p.is_empty() && !p.contains('/')) {
        true => Ok(()),
        false => Err(ConfigError::new(
            field,
            format!("{address:?} is not a multiaddr ending in /p2p/<peer id>"),
        )),
    }
}

/// Checks the size limits (`limits.max_message_bytes`, `limits.max_block_bytes`): from 1 KiB to
/// 1 MiB for a message (gossipsub's ceiling) and to 4 MiB for a block (bitswap's message).
pub fn limits(limits: &crate::Limits) -> Result<(), ConfigError> {
    let (kib, mib) = (1024, crate::Limits::MIB);
    within(
        "limits.max_message_bytes",
        limits.max_message_bytes,
        kib,
        mib,
    )?;
    within(
        "limits.max_block_bytes",
        limits.max_block_bytes,
        kib,
        4 * mib,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_peer_address_needs_a_peer_id_at_its_end() {
        assert!(peer_address("peers", "/ip4/127.0.0.1/tcp/4001/p2p/12D3KooWx").is_ok());
        for bad in [
            "",
            "127.0.0.1:4001",
            "/ip4/127.0.0.1/tcp/4001",
            "/ip4/1.2.3.4/p2p/",
            "/p2p/a/b",
        ] {
            let error = peer_address("ipfs.peers", bad).expect_err(bad);
            assert_eq!(error.field, "ipfs.peers");
        }
    }
}
