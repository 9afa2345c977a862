//! The configuration file of `ledger-node run` (TOML). Relative paths are relative to the file.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
};

use anyhow::Context;
use comms_ipfs::IpfsConfig;
use ledger::NodeConfig;
use serde::{Deserialize, Serialize};

/// Everything `run` needs; unknown keys are refused, so that a typo does not pass silently.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The genesis file (JSON, from `ledger-node genesis`).
    pub genesis: PathBuf,
    /// The validator's key file (from `ledger-node keygen`). Without one the node is an observer:
    /// it follows the chain and serves the API, but proposes nothing and accepts no transactions.
    #[serde(default)]
    pub key: Option<PathBuf>,
    /// The RocksDB directory (created if missing).
    pub data_dir: PathBuf,
    /// Where the HTTP API listens.
    #[serde(default = "default_api")]
    pub api: SocketAddr,
    /// The IPFS daemon and how to talk to it.
    #[serde(default)]
    pub ipfs: IpfsConfig,
    /// Protocol and sync tuning.
    #[serde(default)]
    pub node: NodeConfig,
}

fn default_api() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8650))
}

impl Config {
    /// Reads `path`, resolving relative paths against its directory.
    pub fn load(path: &Path) -> anyhow::Result<Config> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let mut config: Config =
            toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        let base = path.parent().unwrap_or(Path::new("."));
        let resolve = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        resolve(&mut config.genesis);
        resolve(&mut config.data_dir);
        if let Some(key) = &mut config.key {
            resolve(key);
        }
        if let Some(store) = &mut config.ipfs.contact_store {
            resolve(store);
        }
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_minimal_file_gets_defaults_and_resolved_paths() {
        let dir = std::env::temp_dir().join(format!("node-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("node.toml");
        std::fs::write(
            &path,
            "genesis = \"genesis.json\"\ndata_dir = \"/var/lib/ledger\"\n[ipfs]\napi = \"http://127.0.0.1:5002\"\n[node]\nfetch_timeout = \"3s\"\n",
        )
        .expect("write");
        let config = Config::load(&path).expect("loads");
        assert_eq!(config.genesis, dir.join("genesis.json"));
        assert_eq!(config.data_dir, PathBuf::from("/var/lib/ledger"));
        assert_eq!(config.api, default_api());
        assert_eq!(config.ipfs.api, "http://127.0.0.1:5002");
        assert_eq!(config.node.fetch_timeout, std::time::Duration::from_secs(3));
        assert!(config.key.is_none());

        std::fs::write(
            &path,
            "genesis = \"g\"\ndata_dir = \"d\"\nfetch_timout = \"3s\"\n",
        )
        .expect("write");
        let error = format!("{:#}", Config::load(&path).expect_err("a typo is refused"));
        assert!(error.contains("fetch_timout"), "{error}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
