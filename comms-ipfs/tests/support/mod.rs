//! What the comms-ipfs tests share: one set of real daemons per test process, backends connected to
//! them, and the fault proxy.

#![allow(dead_code)] // each test file uses a different part

pub mod proxy;

use std::{sync::OnceLock, time::Duration};

use async_trait::async_trait;
use comms::conformance::Harness;
use comms_ipfs::{testnet::Daemon, IpfsComms, IpfsConfig};
use ipfs_api_backend_hyper::{IpfsClient, TryFromUri};
use ipfs_api_prelude::{
    request::{ApiRequest, BlockPut},
    Backend,
};
use proxy::{Fault, FaultProxy};

/// How many daemons the shared testnet has (the conformance suite asks for up to five peers).
pub const SHARED: usize = 5;

/// The process's shared daemons, started on first use and killed when the process ends.
pub fn shared_daemons() -> &'static [Daemon] {
    static DAEMONS: OnceLock<Vec<Daemon>> = OnceLock::new();
    DAEMONS.get_or_init(|| comms_ipfs::testnet::start_daemons(SHARED))
}

/// A backend on `api`, told to connect to `peers`, with test-sized deadlines.
pub async fn backend(api: String, peers: &[&Daemon]) -> IpfsComms {
    let config = IpfsConfig {
        api,
        peers: peers.iter().map(|daemon| daemon.swarm_address()).collect(),
        call_timeout: Duration::from_secs(20),
        subscription_check: Duration::from_millis(500),
        ..IpfsConfig::default()
    };
    IpfsComms::connect(config)
        .await
        .expect("connect to the test daemon")
}

/// Backends on the first `n` shared daemons, each connected to all the others.
pub async fn shared_backends(n: usize) -> Vec<IpfsComms> {
    let daemons = &shared_daemons()[..n];
    let mut backends = Vec::new();
    for (i, daemon) in daemons.iter().enumerate() {
        let others: Vec<&Daemon> = daemons[..i].iter().collect();
        backends.push(backend(daemon.api(), &others).await);
    }
    backends
}

/// The conformance harness over the shared daemons.
pub struct IpfsHarness;

#[async_trait]
impl Harness for IpfsHarness {
    type Peer = IpfsComms;

    async fn peers(&self, n: usize) -> Vec<IpfsComms> {
        init_logging();
        shared_backends(n).await
    }

    async fn corrupting_pair(&self) -> (IpfsComms, IpfsComms) {
        let daemons = shared_daemons();
        let provider = backend(daemons[0].api(), &[]).await;
        let proxy = FaultProxy::start(&daemons[1].api()).await;
        proxy.always("/block/get", Fault::Alter);
        let fetcher = backend(proxy.api(), &[&daemons[0]]).await;
        (provider, fetcher)
    }

    fn patience(&self) -> Duration {
        Duration::from_secs(30)
    }
}

/// Logs to the test's output when `RUST_LOG` asks for it.
pub fn init_logging() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

/// Runs the daemon's garbage collection (`repo/gc`) and waits for it to finish.
pub async fn collect_garbage(api: &str) {
    #[derive(serde::Serialize)]
    struct RepoGc {}
    impl ApiRequest for RepoGc {
        const PATH: &'static str = "/repo/gc";
    }
    let (status, body) = raw_client(api)
        .request_raw(RepoGc {}, None)
        .await
        .expect("repo/gc");
    assert_eq!(status.as_u16(), 200, "{}", String::from_utf8_lossy(&body));
}

/// Stores `data` as a raw block without pinning it, bypassing the backend.
pub async fn put_unpinned(api: &str, data: &[u8]) {
    let mut form = ipfs_api_backend_hyper::Form::default();
    form.add_reader("data", std::io::Cursor::new(data.to_vec()));
    let request = BlockPut {
        format: Some("raw"),
        mhtype: Some("sha2-256"),
        mhlen: None,
        pin: Some(false),
    };
    let (status, body) = raw_client(api)
        .request_raw(request, Some(form))
        .await
        .expect("block/put");
    assert_eq!(status.as_u16(), 200, "{}", String::from_utf8_lossy(&body));
}

fn raw_client(api: &str) -> IpfsClient {
    <IpfsClient as TryFromUri>::from_str(api).expect("an http URL")
}
