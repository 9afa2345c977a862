//! The embedded peer's broadcast against a real kubo daemon: a message kubo publishes (`ipfs pubsub
//! pub`) reaches our subscriber, and ours reaches kubo's (`ipfs pubsub sub`), each way over one
//! libp2p connection with gossipsub on both ends.

mod support;

use std::{process::Stdio, time::Duration};

use bytes::Bytes;
use comms::{conformance::eventually, Communication, Topic};
use comms_ipfs::testnet;
use comms_p2p::P2pPeer;
use support::{ipfs, peer_of, BOUND};
use tokio::io::{AsyncBufReadExt, BufReader};

/// kubo's `ipfs pubsub sub --enc=json` on a topic, its messages read line by line.
struct KuboSub {
    _process: tokio::process::Child,
    lines: tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
}

impl KuboSub {
    fn start(daemon: &testnet::Daemon, topic: &Topic) -> KuboSub {
        let mut sub = tokio::process::Command::from(daemon.command());
        sub.args(["pubsub", "sub", "--enc=json", topic.as_str()])
            .stdout(Stdio::piped())
            .kill_on_drop(true);
        let mut process = sub.spawn().expect("`ipfs pubsub sub` starts");
        let stdout = process.stdout.take().expect("piped");
        KuboSub {
            _process: process,
            lines: BufReader::new(stdout).lines(),
        }
    }

    /// The next message, as kubo's JSON, within [`BOUND`].
    async fn next(&mut self) -> serde_json::Value {
        let line = tokio::time::timeout(BOUND, self.lines.next_line())
            .await
            .expect("kubo receives it in time")
            .expect("readable")
            .expect("a line");
        serde_json::from_str(&line).expect("JSON")
    }
}

/// The bytes of a multibase field of kubo's JSON message (`data`, `seqno`).
fn field(json: &serde_json::Value, name: &str) -> Vec<u8> {
    let text = json[name]
        .as_str()
        .unwrap_or_else(|| panic!("no {name}: {json}"));
    multibase::decode(text).expect("multibase").1
}

/// Waits until `peer` knows that `daemon` subscribed to `topic`.
async fn kubo_known(peer: &P2pPeer, daemon: &testnet::Daemon, topic: &Topic) {
    eventually(BOUND, "kubo's subscription is known", || async {
        let peers = peer.topic_peers(topic).await.expect("running");
        peers.iter().any(|p| p.as_str() == daemon.peer_id())
    })
    .await;
}

/// Publishes `data` from `from` on `topic` every half second until `to` receives it (a message may
/// be lost while the meshes form), within [`BOUND`].
async fn arrives(
    from: &P2pPeer,
    to: &mut comms::Subscription,
    topic: &Topic,
    data: &'static [u8],
) -> comms::Message {
    let deadline = tokio::time::Instant::now() + BOUND;
    loop {
        (from.broadcast(topic, Bytes::from_static(data)).await).expect("published");
        let got = tokio::time::timeout(Duration::from_millis(500), to.recv()).await;
        if let Ok(Some(message)) = got {
            assert_eq!(&message.data[..], data);
            return message;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not through within {BOUND:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_cross_between_kubo_and_the_embedded_peer_both_ways() {
    let daemon = testnet::Daemon::start();
    let peer = peer_of(&daemon).await;
    let ours = peer.local_peer();
    let topic = Topic::new("ledger/interop").expect("a topic");

    // kubo subscribes; ours publishes once kubo's subscription reached it.
    let mut sub = KuboSub::start(&daemon, &topic);
    kubo_known(&peer, &daemon, &topic).await;
    let sent = Bytes::from_static(b"from the embedded peer");
    peer.broadcast(&topic, sent.clone())
        .await
        .expect("published");
    let json = sub.next().await;
    assert_eq!(field(&json, "data"), sent);
    assert_eq!(json["from"].as_str(), Some(ours.as_str()), "{json}");

    // Ours subscribes; kubo publishes once it knows.
    let mut subscription = peer.subscribe(&topic).await.expect("subscribed");
    eventually(BOUND, "our subscription is known to kubo", || async {
        let peers = ipfs(&daemon, &["pubsub", "peers", topic.as_str()]).await;
        peers.lines().any(|line| line.trim() == ours.as_str())
    })
    .await;
    let file = daemon.repo().join("message");
    std::fs::write(&file, b"from kubo").expect("written");
    let path = file.to_string_lossy().into_owned();
    ipfs(&daemon, &["pubsub", "pub", topic.as_str(), &path]).await;
    let message = tokio::time::timeout(BOUND, subscription.recv())
        .await
        .expect("ours receives it in time")
        .expect("a message");
    assert_eq!(&message.data[..], b"from kubo");
    assert_eq!(message.from.as_str(), daemon.peer_id());
    assert_eq!(message.topic, topic);
}

/// A mesh with several hops: embedded peer A, kubo 1, kubo 2, embedded peer B in a line (each
/// connected to the next only). A's message reaches B through both daemons, and one kubo 2
/// publishes reaches A.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_cross_a_line_of_kubo_daemons_between_embedded_peers() {
    let daemons = testnet::start_daemons(2);
    ipfs(
        &daemons[1],
        &["swarm", "connect", &daemons[0].swarm_address()],
    )
    .await;
    let a = peer_of(&daemons[0]).await;
    let b = peer_of(&daemons[1]).await;
    let topic = Topic::new("ledger/hops").expect("a topic");
    let mut at_a = a.subscribe(&topic).await.expect("subscribed");
    let mut at_b = b.subscribe(&topic).await.expect("subscribed");
    // kubo forwards only on topics it takes part in: each daemon subscribes too.
    let mut subs = Vec::new();
    for daemon in &daemons {
        let mut sub = tokio::process::Command::from(daemon.command());
        sub.args(["pubsub", "sub", topic.as_str()])
            .stdout(Stdio::null())
            .kill_on_drop(true);
        subs.push(sub.spawn().expect("`ipfs pubsub sub` starts"));
    }
    // Until the meshes form, a message may be lost: `arrives` publishes until one arrives.
    let message = arrives(&a, &mut at_b, &topic, b"from A").await;
    assert_eq!(
        message.from,
        a.local_peer(),
        "signed by A, relayed by two daemons"
    );
    let message = arrives(&b, &mut at_a, &topic, b"from B").await;
    assert_eq!(message.from, b.local_peer());
    // And one that kubo 2 publishes reaches A, two hops away.
    let file = daemons[1].repo().join("message");
    std::fs::write(&file, b"from kubo 2").expect("written");
    let path = file.to_string_lossy().into_owned();
    let deadline = tokio::time::Instant::now() + BOUND;
    loop {
        ipfs(&daemons[1], &["pubsub", "pub", topic.as_str(), &path]).await;
        let got = tokio::time::timeout(Duration::from_millis(500), at_a.recv()).await;
        match got {
            Ok(Some(message)) if &message.data[..] == b"from kubo 2" => {
                assert_eq!(message.from.as_str(), daemons[1].peer_id());
                break;
            }
            _ => assert!(
                tokio::time::Instant::now() < deadline,
                "not through within {BOUND:?}"
            ),
        }
    }
    drop(subs);
}

/// Broadcasts `sent` from `from` all at once, and waits for each at `to`: every one arrives once,
/// whole, none as a frame. The messages received.
async fn burst(
    from: &impl Communication,
    to: &mut comms::Subscription,
    topic: &Topic,
    sent: &[Bytes],
) -> Vec<comms::Message> {
    let sends = sent.iter().map(|data| from.broadcast(topic, data.clone()));
    for result in futures::future::join_all(sends).await {
        result.expect("broadcast");
    }
    let mut got = Vec::new();
    while got.len() < sent.len() {
        let message = tokio::time::timeout(BOUND, to.recv())
            .await
            .expect("every broadcast arrives in time")
            .expect("a message");
        got.push(message);
    }
    let mut data: Vec<Bytes> = got.iter().map(|m| m.data.clone()).collect();
    data.sort();
    assert_eq!(data, sent, "each broadcast once, whole, none a frame");
    got
}

/// A kubo-backed node (`comms-ipfs`) and an embedded peer share a topic: the kubo backend's frames,
/// several broadcasts in one, reach the embedded subscriber as those broadcasts, one by one; the
/// embedded peer's, the same way back; and an embedded broadcast whose bytes look like a frame
/// reaches the kubo backend whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kubo_backends_frames_reach_the_embedded_peer_as_its_broadcasts() {
    let daemon = testnet::Daemon::start();
    let peer = peer_of(&daemon).await;
    let config = comms_ipfs::IpfsConfig {
        api: daemon.api(),
        ..comms_ipfs::IpfsConfig::default()
    };
    let kubo = comms_ipfs::IpfsComms::connect(config)
        .await
        .expect("the kubo backend connects");
    let topic = Topic::new("ledger/frames").expect("a topic");
    let mut at_peer = peer.subscribe(&topic).await.expect("subscribed");
    let mut at_kubo = kubo.subscribe(&topic).await.expect("subscribed");
    eventually(BOUND, "each knows the other's subscription", || async {
        let ours = kubo.topic_peers(&topic).await.expect("running");
        let theirs = peer.topic_peers(&topic).await.expect("running");
        ours.contains(&peer.local_peer()) && theirs.iter().any(|p| p.as_str() == daemon.peer_id())
    })
    .await;

    // Sent at once, the kubo backend frames them together.
    let sent: Vec<Bytes> = (0..20u8).map(|i| Bytes::from(vec![i; 100])).collect();
    let got = burst(&kubo, &mut at_peer, &topic, &sent).await;
    assert!(got.iter().all(|m| m.from == kubo.local_peer()));

    // And the other way: the embedded peer frames what is queued together; the kubo backend
    // splits it.
    burst(&peer, &mut at_kubo, &topic, &sent).await;

    let framelike = Bytes::from_static(b"\xffcomms/2 but a broadcast");
    peer.broadcast(&topic, framelike.clone())
        .await
        .expect("published");
    let message = tokio::time::timeout(BOUND, at_kubo.recv())
        .await
        .expect("arrives in time")
        .expect("a message");
    assert_eq!(message.data, framelike);
    let counters = peer.metrics().snapshot();
    assert_eq!(counters.messages_received, 20, "{counters:?}");
    assert_eq!(counters.malformed_dropped, 0, "{counters:?}");
}

/// kubo drops a peer's message whose sequence number is not above the last one it saw from that
/// peer: an embedded peer restarted with the same key still reaches kubo's subscriber, its numbers
/// rising across the restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_peer_with_the_same_key_still_reaches_kubo() {
    let daemon = testnet::Daemon::start();
    let topic = Topic::new("ledger/restart").expect("a topic");
    let key = libp2p::identity::Keypair::generate_ed25519();
    let mut sub = KuboSub::start(&daemon, &topic);
    let mut seqnos = Vec::new();
    for round in 0..2 {
        let config = comms_p2p::P2pConfig {
            peers: vec![daemon.swarm_address()],
            ..comms_p2p::P2pConfig::default()
        };
        let peer = P2pPeer::start(key.clone(), config).await.expect("starts");
        kubo_known(&peer, &daemon, &topic).await;
        let sent = format!("before and after a restart: {round}");
        peer.broadcast(&topic, Bytes::from(sent.clone()))
            .await
            .expect("published");
        let json = sub.next().await;
        assert_eq!(field(&json, "data"), sent.as_bytes());
        seqnos.push(field(&json, "seqno"));
        peer.shutdown().await.expect("stops");
    }
    assert!(seqnos[1] > seqnos[0], "{seqnos:?}");
}
