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

/// A peer with a blockstore on disk, restarted with the same key and directory, still serves
/// the blocks it held.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_peer_still_serves_what_it_held() {
    let dir = std::env::temp_dir().join(format!("comms-p2p-blocks-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let key = Keypair::generate_ed25519();
    let config = P2pConfig {
        blocks_dir: Some(dir.clone()),
        ..P2pConfig::default()
    };
    let holder = P2pPeer::start(key.clone(), config.clone())
        .await
        .expect("starts");
    let data = bytes::Bytes::from_static(b"held across a restart");
    let cid = (holder.put(comms::Codec::Raw, data.clone()).await).expect("stored");
    holder.shutdown().await.expect("stops");
    let holder = P2pPeer::start(key, config).await.expect("restarts");
    listening(&holder).await;
    let fetcher = start(std::slice::from_ref(&holder), P2pConfig::default()).await;
    meshed(&[holder.clone(), fetcher.clone()]).await;
    assert_eq!(fetcher.fetch(&cid, PATIENCE).await.expect("served"), data);
    holder.shutdown().await.expect("stops");
    let _ = std::fs::remove_dir_all(&dir);
}
