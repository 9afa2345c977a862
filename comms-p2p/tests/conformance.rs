//! The whole `comms` conformance suite over embedded peers on loopback, each test on fresh peers
//! dialled into a full mesh.

use std::time::Duration;

use async_trait::async_trait;
use comms::conformance::{eventually, Harness};
use comms_p2p::{P2pConfig, P2pPeer};
use libp2p::identity::Keypair;

struct P2pHarness;

const PATIENCE: Duration = Duration::from_secs(10);

/// A peer that dials every one of `others`.
async fn start(others: &[P2pPeer], config: P2pConfig) -> P2pPeer {
    let mut peers = Vec::new();
    for other in others {
        peers.extend(other.listening().await.expect("running"));
    }
    let config = P2pConfig { peers, ..config };
    P2pPeer::start(Keypair::generate_ed25519(), config)
        .await
        .expect("starts")
}

/// Waits until each of `peers` is connected to all the others.
async fn meshed(peers: &[P2pPeer]) {
    eventually(PATIENCE, "every peer connected to every other", || async {
        for peer in peers {
            if peer.peers().await.expect("running").len() + 1 < peers.len() {
                return false;
            }
        }
        true
    })
    .await;
}

/// Waits until `peer` listens.
async fn listening(peer: &P2pPeer) {
    eventually(PATIENCE, "the peer listens", || async {
        !peer.listening().await.expect("running").is_empty()
    })
    .await;
}

#[async_trait]
impl Harness for P2pHarness {
    type Peer = P2pPeer;

    async fn peers(&self, n: usize) -> Vec<P2pPeer> {
        let mut peers: Vec<P2pPeer> = Vec::new();
        for _ in 0..n {
            let peer = start(&peers, P2pConfig::default()).await;
            listening(&peer).await;
            peers.push(peer);
        }
        meshed(&peers).await;
        peers
    }

    async fn corrupting_pair(&self) -> (P2pPeer, P2pPeer) {
        let config = P2pConfig {
            corrupt_served_blocks: true,
            ..P2pConfig::default()
        };
        let provider = start(&[], config).await;
        listening(&provider).await;
        let fetcher = start(std::slice::from_ref(&provider), P2pConfig::default()).await;
        meshed(&[provider.clone(), fetcher.clone()]).await;
        (provider, fetcher)
    }

    fn patience(&self) -> Duration {
        PATIENCE
    }
}

comms::conformance_tests!(P2pHarness; #[tokio::test(flavor = "multi_thread", worker_threads = 2)]);
