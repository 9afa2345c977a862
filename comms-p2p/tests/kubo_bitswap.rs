//! The embedded peer's bitswap against a real kubo daemon: a block added to kubo is fetched by ours,
//! and one put on ours is fetched by kubo (`ipfs block get`), also when kubo asked for it before it
//! was put.

mod support;

use std::process::Stdio;

use bytes::Bytes;
use comms::{conformance::eventually, Cid, Codec};
use comms_ipfs::testnet;
use support::{connected, ipfs, kubo_gets, peer_of, BOUND};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocks_cross_between_kubo_and_the_embedded_peer_both_ways() {
    let daemon = testnet::Daemon::start();
    let peer = peer_of(&daemon).await;

    // kubo's block, fetched by ours: a small one and one of 200 KiB (HAVE, then the block).
    for (name, data) in [
        ("small", b"a block added to kubo".to_vec()),
        ("large", vec![7u8; 200 << 10]),
    ] {
        let file = daemon.repo().join(name);
        std::fs::write(&file, &data).expect("written");
        let path = file.to_string_lossy().into_owned();
        let printed = ipfs(&daemon, &["block", "put", "--cid-codec=raw", &path]).await;
        let cid: Cid = printed.trim().parse().expect("a CID");
        assert_eq!(cid, comms::cid_for(Codec::Raw, &data));
        let fetched = peer.fetch(&cid, BOUND).await.expect("fetched over bitswap");
        assert_eq!(fetched, data, "{name}");
    }

    // Ours, fetched by kubo.
    let data = Bytes::from_static(b"a block put on the embedded peer");
    let cid = peer.put(Codec::Raw, data.clone()).await.expect("stored");
    kubo_gets(&daemon, &cid, &data).await;

    // kubo asks first; the block is put here after its want arrived.
    let later = Bytes::from_static(b"a block put after kubo asked for it");
    let cid = comms::cid_for(Codec::Raw, &later);
    let mut get = tokio::process::Command::from(daemon.command());
    get.args(["block", "get", "--timeout=30s", &cid.to_string()])
        .stdout(Stdio::piped())
        .kill_on_drop(true);
    let get = get.spawn().expect("`ipfs block get` starts");
    eventually(BOUND, "kubo wants the block", || async {
        ipfs(&daemon, &["bitswap", "wantlist"])
            .await
            .contains(&cid.to_string())
    })
    .await;
    peer.put(Codec::Raw, later.clone()).await.expect("stored");
    let output = tokio::time::timeout(BOUND, get.wait_with_output())
        .await
        .expect("kubo gets it in time")
        .expect("ran");
    assert!(output.status.success(), "{output:?}");
    assert_eq!(&output.stdout[..], &later[..]);
}

/// A configured peer that goes away is dialled again, with backoff, until it is back: a block put
/// here is then fetched by the restarted daemon.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configured_daemon_that_restarts_is_reconnected() {
    let mut daemon = testnet::Daemon::start();
    let peer = peer_of(&daemon).await;
    let id = daemon.peer_id().to_string();
    daemon.kill();
    eventually(BOUND, "the connection is gone", || async {
        !connected(&peer, &id).await
    })
    .await;
    daemon.restart();
    eventually(BOUND, "connected again", || connected(&peer, &id)).await;
    let data = Bytes::from_static(b"after the daemon came back");
    let cid = peer.put(Codec::Raw, data.clone()).await.expect("stored");
    kubo_gets(&daemon, &cid, &data).await;
}
