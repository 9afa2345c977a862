//! Hostile peers.
//! - Pubsub messages that fail gossipsub's strict checks: a peer that sends unsigned messages (an
//!   anonymous gossipsub, as a misconfigured or hostile peer might) reaches none of our
//!   subscribers, and each of its messages is counted (`messages_invalid`); a signed message after
//!   them still arrives.
//! - Connections beyond the bounds: silent ones beyond the handshakes allowed are refused at once,
//!   those within are closed when the handshake timeout passes, and peers beyond the incoming
//!   bound are refused; each is counted, and those within the bounds stay connected.

use std::time::Duration;

use bytes::Bytes;
use comms::Topic;
use comms_p2p::{P2pConfig, P2pPeer};
use futures::StreamExt;
use libp2p::{
    gossipsub::{self, IdentTopic, MessageAuthenticity, ValidationMode},
    identity, noise,
    swarm::SwarmEvent,
    tcp, yamux, Multiaddr, Swarm, SwarmBuilder,
};
use tokio::{
    io::AsyncReadExt,
    net::TcpStream,
    time::{timeout, Instant},
};

const BOUND: Duration = Duration::from_secs(20);
const SENT: u64 = 5;

/// A gossipsub peer that signs nothing.
fn anonymous() -> Swarm<gossipsub::Behaviour> {
    let config = gossipsub::ConfigBuilder::default()
        .validation_mode(ValidationMode::Anonymous)
        // With no sender and no sequence number, the data tells messages apart.
        .message_id_fn(|message| gossipsub::MessageId::from(message.data.clone()))
        .heartbeat_interval(Duration::from_millis(200))
        .build()
        .expect("a config");
    SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_tcp(
            tcp::Config::default(),
            noise::Config::new,
            yamux::Config::default,
        )
        .expect("tcp")
        .with_behaviour(|_| {
            gossipsub::Behaviour::new(MessageAuthenticity::Anonymous, config).expect("anonymous")
        })
        .expect("a behaviour")
        .build()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsigned_messages_are_dropped_and_counted() {
    let ours = P2pPeer::start(identity::Keypair::generate_ed25519(), P2pConfig::default())
        .await
        .expect("starts");
    let topic = Topic::new("invalid-test").expect("a topic");
    let mut subscription = ours.subscribe(&topic).await.expect("subscribed");
    let address: Multiaddr = ours.listening().await.expect("running")[0]
        .parse()
        .expect("a multiaddr");

    let mut hostile = anonymous();
    let raw_topic = IdentTopic::new(topic.as_str());
    hostile
        .behaviour_mut()
        .subscribe(&raw_topic)
        .expect("subscribed");
    hostile.dial(address).expect("dialled");
    // Once it knows we are subscribed, it publishes its unsigned messages.
    let deadline = Instant::now() + BOUND;
    let mut sent = 0;
    while sent < SENT {
        let event = timeout(deadline - Instant::now(), hostile.select_next_some()).await;
        if let SwarmEvent::Behaviour(gossipsub::Event::Subscribed { .. }) =
            event.expect("it sees our subscription in time")
        {
            for n in 0..SENT {
                let data = format!("unsigned {n}");
                hostile
                    .behaviour_mut()
                    .publish(raw_topic.clone(), data.into_bytes())
                    .expect("published");
                sent += 1;
            }
        }
    }
    // The hostile swarm keeps running (it has to send them) while we wait for the count.
    let counted = async {
        loop {
            let invalid = ours.metrics().snapshot().messages_invalid;
            if invalid >= SENT {
                return invalid;
            }
            let _ = timeout(Duration::from_millis(50), hostile.select_next_some()).await;
        }
    };
    let invalid = timeout(BOUND, counted).await.expect("counted in time");
    assert_eq!(invalid, SENT, "each unsigned message once");
    assert!(
        timeout(Duration::from_millis(1), subscription.recv())
            .await
            .is_err(),
        "an unsigned message reached the subscriber"
    );
    assert_eq!(ours.metrics().snapshot().messages_received, 0);

    // A signed message still arrives (from ourselves, through the same subscription path).
    let other = P2pPeer::start(
        identity::Keypair::generate_ed25519(),
        P2pConfig {
            peers: ours.listening().await.expect("running"),
            ..P2pConfig::default()
        },
    )
    .await
    .expect("starts");
    comms::conformance::wait_for_subscribers(&other, &topic, &[ours.local_peer()], BOUND).await;
    other
        .broadcast(&topic, Bytes::from_static(b"signed"))
        .await
        .expect("broadcast");
    let message = timeout(BOUND, subscription.recv()).await.expect("in time");
    assert_eq!(message.expect("open").data, Bytes::from_static(b"signed"));
}

/// The TCP address of a peer's first listen address.
fn tcp_address(address: &str) -> std::net::SocketAddr {
    let address: Multiaddr = address.parse().expect("a multiaddr");
    let mut ip = None;
    let mut port = None;
    for part in address.iter() {
        match part {
            libp2p::multiaddr::Protocol::Ip4(v4) => ip = Some(std::net::IpAddr::V4(v4)),
            libp2p::multiaddr::Protocol::Tcp(p) => port = Some(p),
            _ => {}
        }
    }
    (ip.expect("an IPv4 address"), port.expect("a TCP port")).into()
}

/// Waits until `socket` is closed by the other side; how long that took.
async fn closed(mut socket: TcpStream) -> Duration {
    let started = Instant::now();
    let mut buffer = [0u8; 256];
    loop {
        match timeout(BOUND, socket.read(&mut buffer)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return started.elapsed(),
            Ok(Ok(_)) => continue,
            Err(_) => panic!("a connection beyond the bounds was left open"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_the_bounds_are_refused_and_counted() {
    const HANDSHAKES: u32 = 2;
    const SILENT: u32 = 5;
    const INCOMING: u32 = 2;
    let handshake_timeout = Duration::from_secs(1);
    let ours = P2pPeer::start(
        identity::Keypair::generate_ed25519(),
        P2pConfig {
            max_pending_handshakes: HANDSHAKES,
            max_incoming_connections: INCOMING,
            handshake_timeout,
            ..P2pConfig::default()
        },
    )
    .await
    .expect("starts");
    let listening = ours.listening().await.expect("running");
    let socket_address = tcp_address(&listening[0]);

    // Silent connections, one after another: the first two are handshakes in progress, cut when
    // the timeout passes; the rest are refused at once.
    let mut silent = Vec::new();
    for _ in 0..SILENT {
        silent.push(TcpStream::connect(socket_address).await.expect("connects"));
    }
    let mut times: Vec<Duration> = futures::future::join_all(silent.into_iter().map(closed)).await;
    times.sort();
    // The peer counts each as it sees the connection end, perhaps just after the socket closed.
    let counts = |p: &P2pPeer| {
        let snapshot = p.metrics().snapshot();
        (snapshot.connections_refused, snapshot.handshakes_failed)
    };
    let expected = (u64::from(SILENT - HANDSHAKES), u64::from(HANDSHAKES));
    let deadline = Instant::now() + BOUND;
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    while counts(&ours) != expected && Instant::now() < deadline {
        tick.tick().await;
    }
    assert_eq!(counts(&ours), expected, "(refused, handshakes failed)");
    assert!(
        times[..(SILENT - HANDSHAKES) as usize]
            .iter()
            .all(|t| *t < handshake_timeout),
        "refused at once: {times:?}"
    );
    assert!(
        times[(SILENT - HANDSHAKES) as usize..]
            .iter()
            .all(|t| *t >= handshake_timeout / 2),
        "cut at the handshake timeout: {times:?}"
    );

    // Real peers: the first two connect; the third is refused (and keeps redialling, refused).
    let refused_before = ours.metrics().snapshot().connections_refused;
    let mut others = Vec::new();
    for _ in 0..=INCOMING {
        let config = P2pConfig {
            peers: listening.clone(),
            ..P2pConfig::default()
        };
        let key = identity::Keypair::generate_ed25519();
        others.push(P2pPeer::start(key, config).await.expect("starts"));
    }
    let deadline = Instant::now() + BOUND;
    loop {
        tick.tick().await;
        let refused = ours.metrics().snapshot().connections_refused - refused_before;
        let peers = ours.peers().await.expect("running");
        if refused >= 1 && peers.len() == INCOMING as usize {
            break;
        }
        assert!(
            peers.len() <= INCOMING as usize,
            "more peers than the bound: {peers:?}"
        );
        assert!(
            Instant::now() < deadline,
            "refused {refused}, connected {peers:?}"
        );
    }
}
