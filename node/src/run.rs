//! `ledger-node run`: one validator or observer over an IPFS daemon or an embedded IPFS peer,
//! with its RocksDB directory, the HTTP API and metrics, until SIGINT or SIGTERM.

use std::{path::PathBuf, sync::Arc, time::Duration};

use anyhow::Context;
use comms_ipfs::IpfsComms;
use comms_p2p::{P2pConfig, P2pPeer};
use prometheus_client::{
    collector::Collector, encoding::DescriptorEncoder, metrics::counter::ConstCounter,
};
use tokio::signal::unix::{signal, SignalKind};
use tracing::{info, warn, Instrument};

use crate::{
    api::{self, Api, ApiParts},
    config::{Backend, Config},
    http::{self, HttpStats},
    keys,
    metered::{CommsMetrics, Metered},
};

/// The file in the data directory that holds the API's URL while the node runs.
pub const API_FILE: &str = "api";

/// The file in the data directory where the embedded peer's addresses are written.
pub const P2P_FILE: &str = "p2p";

/// The embedded peer's identity, in the data directory (made at first start).
pub const P2P_KEY_FILE: &str = "p2p.key";

/// Options of `run`.
#[derive(clap::Args)]
pub struct RunArgs {
    /// The node's configuration file (TOML; see the README's configuration reference).
    #[arg(long, short)]
    config: PathBuf,
}

pub fn main(args: RunArgs) -> anyhow::Result<()> {
    // Fail points named in FAILPOINTS, where the build has them (the `testnet` feature): for the
    // fault tests.
    let _fail_points = fail::FailScenario::setup();
    let config = Config::load(&args.config)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(run(config))
}

/// What a node needs besides its backend.
struct Parts {
    config: Config,
    genesis: ledger::Genesis,
    key: Option<ledger::Keypair>,
    validator: Option<u32>,
    storage: ledger_rocksdb::Storage,
}

/// A backend's counters, as JSON fields, read at each scrape.
type Snapshot = Box<dyn Fn() -> serde_json::Value + Send + Sync>;

async fn run(config: Config) -> anyhow::Result<()> {
    let parts = prepare(config)?;
    match parts.config.backend {
        Backend::IpfsRpc => {
            // One clear line if the daemon is missing or misconfigured (the error says what to
            // change).
            let ipfs = IpfsComms::connect(parts.config.ipfs.clone()).await?;
            info!(daemon = ipfs.daemon_version(), peer = %comms::Communication::local_peer(&ipfs), "IPFS daemon ready");
            let metrics = ipfs.metrics().clone();
            let snapshot: Snapshot = Box::new(move || json(metrics.snapshot()));
            serve(parts, ipfs.clone(), ("ipfs", "ipfs", snapshot)).await?;
            ipfs.remember_peers().await;
        }
        Backend::Embedded => {
            let peer = start_embedded(&parts.config).await?;
            let metrics = peer.metrics().clone();
            let snapshot: Snapshot = Box::new(move || json(metrics.snapshot()));
            let p2p_file = parts.config.data_dir.join(P2P_FILE);
            let served = serve(parts, peer.clone(), ("embedded", "p2p", snapshot)).await;
            // Its blockstore closes, and its addresses are no longer where it listens, whether the
            // node stopped cleanly or not.
            let _ = peer.shutdown().await;
            let _ = std::fs::remove_file(&p2p_file);
            served?;
        }
    }
    info!("stopped cleanly");
    Ok(())
}

fn json(snapshot: impl serde::Serialize) -> serde_json::Value {
    serde_json::to_value(snapshot).unwrap_or_default()
}

/// The genesis, the key, and the store, each checked.
fn prepare(config: Config) -> anyhow::Result<Parts> {
    let genesis = keys::read_genesis(&config.genesis)?;
    let key = config.key.as_deref().map(keys::read_key).transpose()?;
    let validator = key.as_ref().and_then(|key| {
        genesis
            .validators
            .iter()
            .position(|v| v.key == key.public())
            .map(|i| i as u32)
    });
    if let (Some(key), None) = (&key, validator) {
        anyhow::bail!(
            "the key {} is not one of the genesis validators: remove `key` to run an observer",
            key.public().to_hex()
        );
    }
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("creating {}", config.data_dir.display()))?;
    let storage = ledger_rocksdb::Storage::open(&config.data_dir)
        .with_context(|| format!("opening the store in {}", config.data_dir.display()))?;
    Ok(Parts {
        config,
        genesis,
        key,
        validator,
        storage,
    })
}

/// Starts the embedded peer with its key and blockstore in the data directory, and writes where
/// it listens to `<data_dir>/p2p` (one multiaddr a line, `/p2p/<id>` included), for scripts.
async fn start_embedded(config: &Config) -> anyhow::Result<P2pPeer> {
    let key_file = config.data_dir.join(P2P_KEY_FILE);
    let key = comms_p2p::load_or_create_key(&key_file)?;
    let p2p = P2pConfig {
        blocks_dir: Some(config.data_dir.join("blocks")),
        ..config.p2p.clone()
    };
    let peer = P2pPeer::start(key, p2p)
        .await
        .context("starting the embedded IPFS peer")?;
    let listening = peer.listening().await?;
    let file = config.data_dir.join(P2P_FILE);
    std::fs::write(&file, listening.join("\n") + "\n")
        .with_context(|| format!("writing {}", file.display()))?;
    info!(peer = %peer.local_peer(), listening = ?listening, "embedded IPFS peer ready");
    Ok(peer)
}

/// Runs the ledger over `comms` with the API until a signal or a failure. `backend`: its name in
/// the status, its metrics' prefix, and its counters.
async fn serve<C: comms::Communication + Clone + 'static>(
    parts: Parts,
    comms: C,
    backend: (&'static str, &'static str, Snapshot),
) -> anyhow::Result<()> {
    let Parts {
        config,
        genesis,
        key,
        validator,
        storage,
    } = parts;
    let (name, prefix, snapshot) = backend;
    let comms_metrics = Arc::new(CommsMetrics::default());
    let http_stats = Arc::new(HttpStats::default());
    let served_stats = http_stats.clone();
    let comms = Metered::new(comms, comms_metrics.clone());
    let node = ledger::spawn(
        &genesis,
        key,
        config.node.clone(),
        comms.clone(),
        Some(storage.into_store()),
    )
    .await
    .context("starting the ledger")?;
    let api = Api::start(ApiParts {
        node: node.clone(),
        comms: Arc::new(comms),
        genesis: genesis.clone(),
        validator,
        backend: name,
        ready_lag_rounds: config.node.ready_lag_rounds,
        comms_metrics,
        extra: Box::new(move |registry| {
            let what = format!("the {name} backend");
            let backend = registry.sub_registry_with_prefix(prefix);
            backend.register_collector(Box::new(Counters { what, snapshot }));
            let http = registry.sub_registry_with_prefix("http");
            let counters = served_stats.clone();
            http.register_collector(Box::new(Counters {
                what: "the API's HTTP server".into(),
                snapshot: Box::new(move || json(counters.counters.snapshot())),
            }));
            let open = served_stats.open.clone();
            http.register("connections_open", "HTTP connections open now", open);
        }),
    })
    .await?;
    let listener = http::listen(config.api, &config.http)
        .with_context(|| format!("listening on {} (is another node using it?)", config.api))?;
    // Like a daemon's `$IPFS_PATH/api`: scripts and tests find a port-0 node's API here.
    let api_url = format!("http://{}", listener.local_addr()?);
    let api_file = config.data_dir.join(API_FILE);
    std::fs::write(&api_file, &api_url)
        .with_context(|| format!("writing {}", api_file.display()))?;
    info!(
        api = %api_url,
        chain = %genesis.encode().1,
        validator = ?validator,
        backend = name,
        data_dir = %config.data_dir.display(),
        "node running"
    );

    // The API serves until a signal, or until the node's tasks end on their own (a storage error,
    // a panic): then the process stops too, with a non-zero status, rather than answer for a node
    // that no longer runs.
    let (signal, watched, panicked) = (shutdown_signal()?, node.clone(), panics());
    let (failed_tx, failed) = tokio::sync::oneshot::channel();
    let stop = async move {
        let failure = tokio::select! {
            () = signal => None,
            exit = watched.stopped() => Some(exit.to_string()),
            panic = panicked => {
                // The node's own task may be the one that panicked: its supervisor says so.
                let _ = tokio::time::timeout(Duration::from_secs(1), watched.stopped()).await;
                Some(panic)
            }
        };
        let _ = failed_tx.send(failure);
    };
    let router = api::router(api.clone(), &config.http, http_stats.clone());
    let stop = stop.instrument(tracing::Span::current());
    http::serve(
        listener,
        router,
        &config.http,
        http_stats,
        stop,
        move || api.close_streams(),
    )
    .await;
    if let Ok(Some(failure)) = failed.await {
        // The node may still run (a panic elsewhere): it stops and flushes what it can.
        let _ = node.shutdown().await;
        let _ = std::fs::remove_file(&api_file);
        anyhow::bail!("stopped: {failure}");
    }
    // The API stopped accepting; now the node: it flushes RocksDB and stops.
    node.shutdown().await.context("stopping the ledger")?;
    if let Err(error) = std::fs::remove_file(&api_file) {
        warn!(file = %api_file.display(), %error, "could not remove the API address file");
    }
    Ok(())
}

/// Resolves on the first panic in any thread or task of the process (the API's request tasks,
/// the backend's subscription, the node's own tasks), after an ERROR line naming the thread and
/// what it said. The process then stops: a panic means a bug, and the node must not run on with
/// part of it gone.
fn panics() -> impl std::future::Future<Output = String> {
    let (sender, mut receiver) = tokio::sync::mpsc::unbounded_channel();
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        default(info);
        let thread = std::thread::current()
            .name()
            .unwrap_or("unnamed")
            .to_string();
        let message = ledger::node::panic_message(info.payload());
        let location = info.location().map(ToString::to_string).unwrap_or_default();
        tracing::error!(thread, %location, message, "a task panicked");
        let _ = sender.send(format!("a task panicked at {location}: {message}"));
    }));
    async move { receiver.recv().await.unwrap_or_default() }
}

/// Resolves on the first SIGINT or SIGTERM.
fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    let mut interrupt = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let mut terminate =
        signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    Ok(async move {
        let name = tokio::select! {
            _ = interrupt.recv() => "SIGINT",
            _ = terminate.recv() => "SIGTERM",
        };
        info!(
            signal = name,
            "shutting down: no new requests, flushing the store"
        );
    })
}

/// Counters read at each scrape from a JSON snapshot, under a prefix (`ipfs_`, `p2p_`, `http_`).
struct Counters {
    /// Whose they are, for the help text.
    what: String,
    snapshot: Snapshot,
}

impl std::fmt::Debug for Counters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Counters")
            .field("what", &self.what)
            .finish()
    }
}

impl Collector for Counters {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let serde_json::Value::Object(fields) = (self.snapshot)() else {
            return Ok(());
        };
        for (field, value) in fields {
            let help = format!("{}: {}", self.what, field.replace('_', " "));
            let counter = ConstCounter::new(value.as_u64().unwrap_or(0));
            ledger_api::scrape::put(&mut encoder, &field, &help, &counter)?;
        }
        Ok(())
    }
}
