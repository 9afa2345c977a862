//! Pubsub messages that fail gossipsub's strict checks: a peer that sends unsigned messages (an
//! anonymous gossipsub, as a misconfigured or hostile peer might) reaches none of our subscribers,
//! and each of its messages is counted (`messages_invalid`); a signed message after them still
//! arrives.

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
use tokio::time::{timeout, Instant};

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
