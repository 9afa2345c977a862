//! The configuration file of `ledger-node run` (TOML). Relative paths are relative to the file.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
};

use anyhow::Context;
use comms_ipfs::IpfsConfig;
use comms_p2p::P2pConfig;
use ledger::NodeConfig;
use serde::{Deserialize, Serialize};

use crate::http::HttpConfig;

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
    /// What carries broadcast and fetch: `ipfs-rpc` (a kubo daemon, `[ipfs]`) or `embedded` (an
    /// IPFS peer inside this process, `[p2p]`; no daemon).
    #[serde(default)]
    pub backend: Backend,
    /// The IPFS daemon and how to talk to it (backend `ipfs-rpc`).
    #[serde(default)]
    pub ipfs: IpfsConfig,
    /// The embedded IPFS peer (backend `embedded`): where it listens, which peers it dials. Its
    /// key is `<data_dir>/p2p.key` (made at first start) and its blocks `<data_dir>/blocks`.
    #[serde(default)]
    pub p2p: P2pConfig,
    /// The HTTP API's bounds: connections, header and body sizes, timeouts.
    #[serde(default)]
    pub http: HttpConfig,
    /// Protocol and sync tuning.
    #[serde(default)]
    pub node: NodeConfig,
}

/// The backends `run` can use.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Backend {
    /// A kubo daemon over its RPC API: pubsub and bitswap.
    #[default]
    IpfsRpc,
    /// An IPFS peer in this process: libp2p gossipsub and bitswap, no daemon.
    Embedded,
}

fn default_api() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8650))
}

/// Options of `config`.
#[derive(clap::Args)]
pub struct ConfigArgs {
    /// The genesis file.
    #[arg(long)]
    genesis: PathBuf,
    /// The validator's key file; without it the node is an observer.
    #[arg(long)]
    key: Option<PathBuf>,
    /// The RocksDB directory.
    #[arg(long)]
    data_dir: PathBuf,
    /// Where the HTTP API listens (port 0: any free port, written to `<data-dir>/api`).
    #[arg(long, default_value_t = default_api())]
    api: SocketAddr,
    /// What carries broadcast and fetch: a kubo daemon, or an IPFS peer in this process.
    #[arg(long, value_enum, default_value_t = Backend::IpfsRpc)]
    backend: Backend,
    /// The IPFS daemon's RPC API, as a URL or a multiaddr (backend `ipfs-rpc`).
    #[arg(long, default_value = "http://127.0.0.1:5001")]
    ipfs_api: String,
    /// Where the embedded peer listens (a multiaddr; backend `embedded`). Repeat. Default: a free
    /// loopback port.
    #[arg(long = "listen", value_name = "MULTIADDR")]
    listen: Vec<String>,
    /// A peer's multiaddr (ending in `/p2p/<peer id>`) to connect to at start: the daemon's peer
    /// (`ipfs-rpc`), or the embedded peer's (`embedded`; an embedded peer or a kubo daemon's swarm
    /// address). Repeat.
    #[arg(long = "peer", value_name = "MULTIADDR")]
    peers: Vec<String>,
    /// Where to write the configuration.
    #[arg(long, short)]
    out: PathBuf,
    /// Replace an existing file.
    #[arg(long)]
    force: bool,
}

/// `config`: writes a complete configuration file, every default spelled out, with absolute paths.
pub fn write(args: ConfigArgs) -> anyhow::Result<()> {
    let absolute = |path: &Path| {
        std::path::absolute(path).with_context(|| format!("resolving {}", path.display()))
    };
    let data_dir = absolute(&args.data_dir)?;
    let (ipfs_peers, p2p_peers) = match args.backend {
        Backend::IpfsRpc => (args.peers, Vec::new()),
        Backend::Embedded => (Vec::new(), args.peers),
    };
    let mut p2p = P2pConfig {
        peers: p2p_peers,
        contact_store: Some(data_dir.join("p2p-contacts.json")),
        ..P2pConfig::default()
    };
    if !args.listen.is_empty() {
        p2p.listen = args.listen;
    }
    let config = Config {
        genesis: absolute(&args.genesis)?,
        key: args.key.as_deref().map(absolute).transpose()?,
        api: args.api,
        backend: args.backend,
        ipfs: IpfsConfig {
            api: args.ipfs_api,
            peers: ipfs_peers,
            contact_store: Some(data_dir.join("contacts.json")),
            ..IpfsConfig::default()
        },
        p2p,
        data_dir,
        http: HttpConfig::default(),
        node: NodeConfig::default(),
    };
    let text = toml::to_string_pretty(&config).context("writing the configuration as TOML")?;
    if args.out.exists() && !args.force {
        anyhow::bail!("{} exists: pass --force to replace it", args.out.display());
    }
    std::fs::write(&args.out, text).with_context(|| format!("writing {}", args.out.display()))?;
    Ok(())
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
        if let Some(store) = &mut config.p2p.contact_store {
            resolve(store);
        }
        let checked = (config.node.check())
            .and_then(|()| config.ipfs.check())
            .and_then(|()| config.p2p.check())
            .and_then(|()| config.http.check());
        checked.with_context(|| format!("in {}", path.display()))?;
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

    #[test]
    fn a_written_configuration_reads_back_the_same() {
        let dir = std::env::temp_dir().join(format!("node-config-write-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let out = dir.join("node.toml");
        let args = ConfigArgs {
            genesis: dir.join("genesis.json"),
            key: Some(dir.join("validator.key")),
            data_dir: dir.join("data"),
            api: "127.0.0.1:0".parse().expect("address"),
            backend: Backend::IpfsRpc,
            ipfs_api: "/ip4/127.0.0.1/tcp/5001".into(),
            listen: Vec::new(),
            peers: vec!["/ip4/127.0.0.1/tcp/4001/p2p/12D3KooWexample".into()],
            out: out.clone(),
            force: false,
        };
        write(args).expect("writes");
        let config = Config::load(&out).expect("reads back");
        assert_eq!(config.key, Some(dir.join("validator.key")));
        assert_eq!(config.ipfs.peers.len(), 1);
        assert_eq!(
            config.ipfs.contact_store,
            Some(dir.join("data/contacts.json"))
        );
        assert_eq!(config.node, NodeConfig::default());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn an_embedded_configuration_names_its_peers_and_listen_addresses_in_p2p() {
        let dir = std::env::temp_dir().join(format!("node-config-p2p-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let out = dir.join("node.toml");
        let id = comms_p2p::Keypair::generate_ed25519().public().to_peer_id();
        let peer = format!("/ip4/127.0.0.1/tcp/4001/p2p/{id}");
        let args = ConfigArgs {
            genesis: dir.join("genesis.json"),
            key: None,
            data_dir: dir.join("data"),
            api: "127.0.0.1:0".parse().expect("address"),
            backend: Backend::Embedded,
            ipfs_api: "http://127.0.0.1:5001".into(),
            listen: vec!["/ip4/0.0.0.0/tcp/4101".into()],
            peers: vec![peer.clone()],
            out: out.clone(),
            force: false,
        };
        write(args).expect("writes");
        let text = std::fs::read_to_string(&out).expect("written");
        assert!(text.contains("backend = \"embedded\""), "{text}");
        let config = Config::load(&out).expect("reads back");
        assert_eq!(config.backend, Backend::Embedded);
        assert_eq!(config.p2p.peers, [peer]);
        assert_eq!(config.p2p.listen, ["/ip4/0.0.0.0/tcp/4101"]);
        assert!(config.ipfs.peers.is_empty(), "the daemon gets no peers");
        assert_eq!(
            config.p2p.contact_store,
            Some(dir.join("data/p2p-contacts.json"))
        );

        std::fs::write(
            &out,
            "genesis = \"g\"\ndata_dir = \"d\"\nbackend = \"libp2p\"\n",
        )
        .expect("write");
        let error = format!("{:#}", Config::load(&out).expect_err("refused"));
        assert!(
            error.contains("libp2p") && error.contains("embedded"),
            "{error}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_bad_backend_value_is_refused_naming_its_field() {
        let dir = std::env::temp_dir().join(format!("ledger-config-ipfs-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let base = "genesis = \"genesis.json\"\ndata_dir = \"data\"\n";
        for (table, field) in [
            ("[ipfs]\napi = \"localhost:5001\"\n", "ipfs.api"),
            ("[ipfs]\ncall_timeout = \"0s\"\n", "ipfs.call_timeout"),
            (
                "[ipfs]\npeers = [\"/ip4/1.2.3.4/tcp/4001\"]\n",
                "ipfs.peers",
            ),
            ("[ipfs]\nsubscriber_queue = 0\n", "ipfs.subscriber_queue"),
            ("[ipfs.retry]\njitter = 2.0\n", "ipfs.retry.jitter"),
            (
                "[ipfs.resubscribe]\ninitial = \"10s\"\n",
                "ipfs.resubscribe.initial",
            ),
            (
                "[ipfs.limits]\nmax_message_bytes = 2000000\nmax_block_bytes = 1048576\n",
                "ipfs.limits.max_message_bytes",
            ),
            ("[p2p]\nlisten = [\"tcp:4101\"]\n", "p2p.listen"),
            (
                "[p2p]\npeers = [\"/ip4/1.2.3.4/tcp/1/p2p/x\"]\n",
                "p2p.peers",
            ),
            ("[p2p]\nmax_wants_per_peer = 0\n", "p2p.max_wants_per_peer"),
            (
                "[p2p]\nmax_connections_per_peer = 100\n",
                "p2p.max_connections_per_peer",
            ),
            (
                "[p2p]\nhandshake_timeout = \"1ms\"\n",
                "p2p.handshake_timeout",
            ),
        ] {
            let path = dir.join("config.toml");
            std::fs::write(&path, format!("{base}{table}")).expect("written");
            let error = format!("{:#}", Config::load(&path).expect_err(field));
            assert!(error.contains(&format!("{field}: ")), "{field}: {error}");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_value_out_of_bounds_is_refused_naming_its_field() {
        let dir = std::env::temp_dir().join(format!("ledger-config-bounds-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let base = "genesis = \"genesis.json\"\ndata_dir = \"data\"\n";
        for (table, field) in [
            ("[node]\ntick = \"0s\"\n", "node.tick"),
            (
                "[node.core]\nmax_block_bytes = 1000\n",
                "node.core.max_block_bytes",
            ),
            (
                "[node.core]\nmin_block_interval = \"2s\"\nidle_block_interval = \"1s\"\n",
                "node.core.min_block_interval",
            ),
            ("[http]\nmax_connections = 0\n", "http.max_connections"),
            ("[http]\nheader_timeout = \"2h\"\n", "http.header_timeout"),
            ("[http]\nsend_buffer_bytes = 10\n", "http.send_buffer_bytes"),
        ] {
            let path = dir.join("config.toml");
            std::fs::write(&path, format!("{base}{table}")).expect("written");
            let error = format!("{:#}", Config::load(&path).expect_err("refused"));
            assert!(
                error.contains(field) && error.contains("outside"),
                "{error}"
            );
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
