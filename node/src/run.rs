//! `ledger-node run`: one validator or observer over an IPFS daemon, with its RocksDB directory,
//! the HTTP API and metrics, until SIGINT or SIGTERM.

use std::{path::PathBuf, sync::Arc, time::Duration};

use anyhow::Context;
use comms_ipfs::IpfsComms;
use prometheus_client::{
    collector::Collector, encoding::DescriptorEncoder, metrics::counter::ConstCounter,
};
use tokio::signal::unix::{signal, SignalKind};
use tracing::{info, warn, Instrument};

use crate::{
    api::{self, Api, ApiParts},
    config::Config,
    keys,
    metered::{CommsMetrics, Metered},
};

/// The file in the data directory that holds the API's URL while the node runs.
pub const API_FILE: &str = "api";

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

async fn run(config: Config) -> anyhow::Result<()> {
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

    // One clear line if the daemon is missing or misconfigured (the error says what to change).
    let ipfs = IpfsComms::connect(config.ipfs.clone()).await?;
    info!(daemon = ipfs.daemon_version(), peer = %comms::Communication::local_peer(&ipfs), "IPFS daemon ready");
    let comms_metrics = Arc::new(CommsMetrics::default());
    let comms = Metered::new(ipfs.clone(), comms_metrics.clone());
    let node = ledger::spawn(
        &genesis,
        key,
        config.node.clone(),
        comms.clone(),
        Some(storage.into_store()),
    )
    .await
    .context("starting the ledger")?;
    let ipfs_metrics = ipfs.metrics().clone();
    let api = Api::start(ApiParts {
        node: node.clone(),
        comms: Arc::new(comms),
        genesis: genesis.clone(),
        validator,
        backend: "ipfs",
        ready_lag_rounds: config.node.ready_lag_rounds,
        comms_metrics,
        extra: Box::new(move |registry| {
            let ipfs = registry.sub_registry_with_prefix("ipfs");
            ipfs.register_collector(Box::new(IpfsCounters(ipfs_metrics)));
        }),
    })
    .await?;
    let listener = tokio::net::TcpListener::bind(config.api)
        .await
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
    axum::serve(listener, api::router(api))
        .with_graceful_shutdown(stop.instrument(tracing::Span::current()))
        .await
        .context("serving the API")?;
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
    ipfs.remember_peers().await;
    info!("stopped cleanly");
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

/// The IPFS backend's counters (under `ipfs_`), read at each scrape.
#[derive(Debug)]
struct IpfsCounters(Arc<comms_ipfs::IpfsMetrics>);

impl Collector for IpfsCounters {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Ok(serde_json::Value::Object(fields)) = serde_json::to_value(self.0.snapshot()) else {
            return Ok(());
        };
        for (name, value) in fields {
            let help = format!("IPFS backend: {}", name.replace('_', " "));
            let counter = ConstCounter::new(value.as_u64().unwrap_or(0));
            crate::scrape::put(&mut encoder, &name, &help, &counter)?;
        }
        Ok(())
    }
}
