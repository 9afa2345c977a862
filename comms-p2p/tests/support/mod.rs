//! What the tests against real kubo daemons share: kubo's command line, and an embedded peer
//! configured with a daemon and connected to it.

#![allow(dead_code)] // Each test file uses its part.

use std::time::Duration;

use bytes::Bytes;
use comms::{conformance::eventually, Cid};
use comms_ipfs::testnet;
use comms_p2p::{P2pConfig, P2pPeer};
use libp2p::identity::Keypair;

/// The longest any step may take.
pub const BOUND: Duration = Duration::from_secs(30);

/// Runs kubo's command line on `daemon` with `args`; its standard output.
pub async fn ipfs(daemon: &testnet::Daemon, args: &[&str]) -> String {
    let mut command = tokio::process::Command::from(daemon.command());
    command.args(args).kill_on_drop(true);
    let output = tokio::time::timeout(BOUND, command.output())
        .await
        .expect("kubo answers in time")
        .expect("kubo's command line runs");
    assert!(output.status.success(), "`ipfs {args:?}`: {output:?}");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Whether `peer` is connected to the peer of ID `id`.
pub async fn connected(peer: &P2pPeer, id: &str) -> bool {
    let peers = peer.peers().await.expect("running");
    peers.iter().any(|p| p.as_str() == id)
}

/// An embedded peer with `daemon` among its configured peers, once connected to it.
pub async fn peer_of(daemon: &testnet::Daemon) -> P2pPeer {
    let config = P2pConfig {
        peers: vec![daemon.swarm_address()],
        ..P2pConfig::default()
    };
    let peer = P2pPeer::start(Keypair::generate_ed25519(), config)
        .await
        .expect("the embedded peer starts");
    eventually(BOUND, "connected to kubo", || {
        connected(&peer, daemon.peer_id())
    })
    .await;
    peer
}

/// The bytes `daemon` gets for `cid` (`ipfs block get`), asserted to be `data`.
pub async fn kubo_gets(daemon: &testnet::Daemon, cid: &Cid, data: &Bytes) {
    let args = ["block", "get", "--timeout=20s", &cid.to_string()];
    assert_eq!(ipfs(daemon, &args).await.as_bytes(), &data[..]);
}
