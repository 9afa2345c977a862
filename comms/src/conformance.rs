//! The contract as generic async tests. Every backend provides a [`Harness`] and runs all of them with
//! [`conformance_tests!`](crate::conformance_tests):
//!
//! ```text
//! comms::conformance_tests!(my_backend::TestHarness::new(); #[tokio::test(start_paused = true)]);
//! ```
//!
//! (The macro expands to test functions, so it is shown, not run, here; `sim/tests` and
//! `comms-ipfs/tests/conformance.rs` use it.)
//!
//! Bounds come from [`Harness::patience`], measured on the tokio clock, so a simulated backend running
//! under paused (virtual) time finishes at once and a real one gets real seconds. Every wait is bounded.

use std::{
    collections::BTreeSet,
    future::Future,
    sync::atomic::{AtomicU64, Ordering},
    time::Duration,
};

use async_trait::async_trait;
use bytes::Bytes;
use futures::future::join_all;
use tokio::time::{timeout, Instant};

use crate::{cid_for, Codec, Communication, Error, Message, PeerId, SizeKind, Subscription, Topic};

/// What a backend provides to run the suite.
#[async_trait]
pub trait Harness: Send + Sync {
    /// The backend's peer handle.
    type Peer: Communication;

    /// `n` connected peers, fresh or reused; the suite keeps its topics and blocks unique per test.
    async fn peers(&self, n: usize) -> Vec<Self::Peer>;

    /// A provider and a fetcher such that blocks served by the provider reach the fetcher altered.
    async fn corrupting_pair(&self) -> (Self::Peer, Self::Peer);

    /// The longest anything may take to propagate in this backend; every wait is bounded by it.
    fn patience(&self) -> Duration;
}

/// A topic name unique to this test run, so that reused peers never see another test's traffic.
fn unique_topic(test: &str) -> Topic {
    Topic::new(format!("conformance/{test}/{}", unique())).expect("a short topic name")
}

fn unique() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!(
        "{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// Waits, polling, until `check` holds; panics with `what` after `bound`.
pub async fn eventually<F, Fut>(bound: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + bound;
    let step = (bound / 100).max(Duration::from_millis(1));
    while !check().await {
        assert!(Instant::now() < deadline, "not within {bound:?}: {what}");
        tokio::time::sleep(step).await;
    }
}

/// Waits until `publisher` knows every one of `subscribers` to be subscribed to `topic`.
pub async fn wait_for_subscribers<P: Communication + ?Sized>(
    publisher: &P,
    topic: &Topic,
    subscribers: &[PeerId],
    bound: Duration,
) {
    let wanted: BTreeSet<&PeerId> = subscribers.iter().collect();
    eventually(
        bound,
        &format!("{} to see subscribers of {topic}", publisher.local_peer()),
        || async {
            let known = publisher.topic_peers(topic).await.unwrap_or_default();
            wanted.iter().all(|peer| known.contains(peer))
        },
    )
    .await;
}

/// The next message of `sub`, or a panic naming `what` after `bound`.
pub async fn recv_within(sub: &mut Subscription, bound: Duration, what: &str) -> Message {
    match timeout(bound, sub.recv()).await {
        Ok(Some(message)) => message,
        Ok(None) => panic!(
            "subscription to {} closed while waiting for {what}",
            sub.topic()
        ),
        Err(_) => panic!("no message on {} within {bound:?}: {what}", sub.topic()),
    }
}

/// Subscribes each of `peers` to `topic` and waits until `publisher` knows them all.
async fn subscribe_all<P: Communication>(
    publisher: &P,
    peers: &[P],
    topic: &Topic,
    bound: Duration,
) -> Vec<Subscription> {
    let mut subs = Vec::new();
    for peer in peers {
        subs.push(peer.subscribe(topic).await.expect("subscribe"));
    }
    let ids: Vec<PeerId> = peers.iter().map(Communication::local_peer).collect();
    wait_for_subscribers(publisher, topic, &ids, bound).await;
    subs
}

/// A broadcast reaches every subscribed peer, with the right sender, topic and bytes; never the sender.
pub async fn broadcast_reaches_every_subscriber<H: Harness>(h: &H) {
    let peers = h.peers(4).await;
    let (publisher, others) = peers.split_first().expect("four peers");
    let topic = unique_topic("broadcast");
    let mut own = publisher.subscribe(&topic).await.expect("subscribe");
    let mut subs = subscribe_all(publisher, others, &topic, h.patience()).await;

    publisher
        .broadcast(&topic, Bytes::from_static(b"hello"))
        .await
        .expect("broadcast");
    for sub in &mut subs {
        let message = recv_within(sub, h.patience(), "the broadcast").await;
        assert_eq!(message.from, publisher.local_peer());
        assert_eq!(message.topic, topic);
        assert_eq!(message.data, Bytes::from_static(b"hello"));
    }
    // No echo: the first thing the publisher hears on the topic is another peer's fence, sent only
    // after everyone received the broadcast.
    wait_for_subscribers(&others[0], &topic, &[publisher.local_peer()], h.patience()).await;
    others[0]
        .broadcast(&topic, Bytes::from_static(b"fence"))
        .await
        .expect("broadcast");
    let first = recv_within(&mut own, h.patience(), "the fence").await;
    assert_eq!(
        (first.from, first.data),
        (others[0].local_peer(), Bytes::from_static(b"fence")),
        "the publisher heard its own message"
    );
}

/// Messages on one topic never show up on another.
pub async fn topics_are_isolated<H: Harness>(h: &H) {
    let peers = h.peers(2).await;
    let (a, b) = (unique_topic("isolated-a"), unique_topic("isolated-b"));
    let mut sub_a = subscribe_all(&peers[0], &peers[1..], &a, h.patience())
        .await
        .remove(0);
    let mut sub_b = subscribe_all(&peers[0], &peers[1..], &b, h.patience())
        .await
        .remove(0);

    for (topic, data) in [(&a, "to-a"), (&b, "to-b"), (&a, "fence-a"), (&b, "fence-b")] {
        peers[0]
            .broadcast(topic, Bytes::from(data))
            .await
            .expect("broadcast");
    }
    for (sub, own, foreign) in [
        (&mut sub_a, "fence-a", "to-b"),
        (&mut sub_b, "fence-b", "to-a"),
    ] {
        let mut seen = Vec::new();
        while !seen.contains(&Bytes::from(own)) {
            let message = recv_within(sub, h.patience(), own).await;
            assert_eq!(&message.topic, sub.topic());
            seen.push(message.data);
        }
        assert!(
            !seen.contains(&Bytes::from(foreign)),
            "{foreign} leaked into {}",
            sub.topic()
        );
    }
}

/// Dropping a subscription unsubscribes it without disturbing another on the same topic, the peer
/// leaves the publisher's view once all are dropped, and subscribing again works.
pub async fn nothing_arrives_after_unsubscribe<H: Harness>(h: &H) {
    let peers = h.peers(2).await;
    let (publisher, subscriber) = (&peers[0], &peers[1]);
    let topic = unique_topic("unsubscribe");
    let first = subscriber.subscribe(&topic).await.expect("subscribe");
    let mut second = subscribe_all(publisher, &peers[1..], &topic, h.patience())
        .await
        .remove(0);

    drop(first);
    publisher
        .broadcast(&topic, Bytes::from_static(b"still-here"))
        .await
        .expect("broadcast");
    assert_eq!(
        recv_within(
            &mut second,
            h.patience(),
            "a message after a sibling unsubscribed"
        )
        .await
        .data,
        Bytes::from_static(b"still-here")
    );

    drop(second);
    let gone = subscriber.local_peer();
    eventually(
        h.patience(),
        "the publisher to forget the unsubscribed peer",
        || async {
            !publisher
                .topic_peers(&topic)
                .await
                .unwrap_or_default()
                .contains(&gone)
        },
    )
    .await;

    let mut again = subscribe_all(publisher, &peers[1..], &topic, h.patience())
        .await
        .remove(0);
    publisher
        .broadcast(&topic, Bytes::from_static(b"again"))
        .await
        .expect("broadcast");
    assert_eq!(
        recv_within(&mut again, h.patience(), "a message after resubscribing")
            .await
            .data,
        Bytes::from_static(b"again")
    );
}

/// A message or block one byte over the limit is refused with the typed error; exactly at the limit
/// it goes through.
pub async fn oversized_is_refused<H: Harness>(h: &H) {
    let peers = h.peers(2).await;
    let limits = peers[0].limits();
    let topic = unique_topic("oversized");
    let mut sub = subscribe_all(&peers[0], &peers[1..], &topic, h.patience())
        .await
        .remove(0);

    let too_long = Bytes::from(vec![7u8; limits.max_message_bytes + 1]);
    let refused = peers[0].broadcast(&topic, too_long).await;
    assert!(
        matches!(
            refused,
            Err(Error::TooLarge {
                kind: SizeKind::Message,
                ..
            })
        ),
        "{refused:?}"
    );
    let too_big = Bytes::from(vec![7u8; limits.max_block_bytes + 1]);
    let refused = peers[0].put(Codec::Raw, too_big).await;
    assert!(
        matches!(
            refused,
            Err(Error::TooLarge {
                kind: SizeKind::Block,
                ..
            })
        ),
        "{refused:?}"
    );

    let largest = Bytes::from(vec![9u8; limits.max_message_bytes]);
    peers[0]
        .broadcast(&topic, largest.clone())
        .await
        .expect("a message exactly at the limit");
    assert_eq!(
        recv_within(&mut sub, h.patience(), "the largest message")
            .await
            .data,
        largest
    );

    let block = unique_block(limits.max_block_bytes);
    let cid = peers[0]
        .put(Codec::Raw, block.clone())
        .await
        .expect("a block exactly at the limit");
    assert_eq!(
        peers[1]
            .fetch(&cid, h.patience())
            .await
            .expect("fetch the largest block"),
        block
    );
}

/// Bytes of length `len` that no other test or run uses.
fn unique_block(len: usize) -> Bytes {
    let mut block = format!("block {} ", unique()).into_bytes();
    block.resize(len, b'.');
    Bytes::from(block)
}

/// A block put on one peer is fetched on another with identical bytes, under both codecs, and the
/// CID is the one anyone computes for those bytes.
pub async fn put_then_fetch_elsewhere<H: Harness>(h: &H) {
    let peers = h.peers(3).await;
    for codec in [Codec::Raw, Codec::DagCbor] {
        let data = match codec {
            Codec::Raw => unique_block(4096),
            // A DAG-CBOR text string, so that a daemon which parses dag-cbor accepts it: 24 to 255
            // bytes long, so that its one-byte length (0x78) is the minimal encoding.
            Codec::DagCbor => {
                let text = format!("a dag-cbor block of the conformance suite {}", unique());
                assert!((24..=255).contains(&text.len()));
                let mut bytes = vec![0x78, text.len() as u8];
                bytes.extend_from_slice(text.as_bytes());
                Bytes::from(bytes)
            }
        };
        let cid = peers[0].put(codec, data.clone()).await.expect("put");
        assert_eq!(cid, cid_for(codec, &data));
        assert_eq!(
            peers[0]
                .fetch(&cid, h.patience())
                .await
                .expect("local fetch"),
            data
        );
        for fetcher in &peers[1..] {
            assert_eq!(
                fetcher
                    .fetch(&cid, h.patience())
                    .await
                    .expect("remote fetch"),
                data
            );
        }
        assert_eq!(
            peers[2].put(codec, data.clone()).await.expect("put again"),
            cid
        );
    }
}

/// Blocks kept on one peer, several in one call, are fetched from it by another with identical
/// bytes, and keeping them again changes nothing.
pub async fn kept_blocks_are_fetched_elsewhere<H: Harness>(h: &H) {
    let peers = h.peers(2).await;
    let blocks: Vec<Bytes> = [64, 4096, 300].map(unique_block).into();
    peers[0]
        .keep(Codec::Raw, blocks.clone())
        .await
        .expect("keep");
    for block in &blocks {
        let cid = cid_for(Codec::Raw, block);
        assert_eq!(
            &peers[1]
                .fetch(&cid, h.patience())
                .await
                .expect("remote fetch of a kept block"),
            block
        );
    }
    peers[0].keep(Codec::Raw, blocks).await.expect("keep again");
    peers[0]
        .keep(Codec::Raw, Vec::new())
        .await
        .expect("keep nothing");
}

/// A CID nobody has ends in a timeout error within the fetch's own bound: never a hang.
pub async fn fetch_of_unknown_cid_times_out<H: Harness>(h: &H) {
    let peers = h.peers(2).await;
    let missing = cid_for(Codec::Raw, unique_block(64).as_ref());
    let wait = h.patience() / 4;
    let started = Instant::now();
    let outcome = timeout(wait + h.patience(), peers[1].fetch(&missing, wait)).await;
    let outcome = outcome.unwrap_or_else(|_| panic!("fetch hung past its timeout of {wait:?}"));
    assert!(matches!(outcome, Err(Error::Timeout { .. })), "{outcome:?}");
    assert!(started.elapsed() <= wait + h.patience());
}

/// Bytes that do not hash to the CID asked for are refused with `CidMismatch`.
pub async fn corrupted_block_is_refused<H: Harness>(h: &H) {
    let (provider, fetcher) = h.corrupting_pair().await;
    let data = unique_block(1000);
    let cid = provider.put(Codec::Raw, data).await.expect("put");
    match fetcher.fetch(&cid, h.patience()).await {
        Err(Error::CidMismatch { expected, actual }) => {
            assert_eq!(*expected, cid);
            assert_ne!(*actual, cid);
        }
        other => panic!("expected a CID mismatch, got {other:?}"),
    }
}

/// A CID that cannot be verified (not sha2-256) is refused before anything is asked of the network.
pub async fn unverifiable_cid_is_refused<H: Harness>(h: &H) {
    let peers = h.peers(2).await;
    let sha3 = multihash::Multihash::<64>::wrap(0x16, &[1; 32]).expect("32 bytes fit");
    let cid = crate::Cid::new_v1(Codec::Raw.code(), sha3);
    let outcome = peers[0].fetch(&cid, h.patience()).await;
    assert!(
        matches!(outcome, Err(Error::UnsupportedCid { .. })),
        "{outcome:?}"
    );
}

/// Many peers broadcasting many messages at once: every subscriber receives every other peer's messages.
pub async fn concurrent_broadcasts_all_arrive<H: Harness>(h: &H) {
    const PER_PEER: usize = 20;
    let peers = h.peers(5).await;
    let topic = unique_topic("concurrent");
    let mut subs = Vec::new();
    for peer in &peers {
        subs.push(peer.subscribe(&topic).await.expect("subscribe"));
    }
    for peer in &peers {
        let others: Vec<PeerId> = peers
            .iter()
            .map(Communication::local_peer)
            .filter(|id| *id != peer.local_peer())
            .collect();
        wait_for_subscribers(peer, &topic, &others, h.patience()).await;
    }
    join_all(peers.iter().enumerate().map(|(i, peer)| {
        let topic = &topic;
        async move {
            join_all((0..PER_PEER).map(|k| peer.broadcast(topic, Bytes::from(format!("{i}/{k}")))))
                .await
                .into_iter()
                .collect::<Result<Vec<_>, _>>()
        }
    }))
    .await
    .into_iter()
    .collect::<Result<Vec<_>, _>>()
    .expect("all broadcasts accepted");

    let expected = (peers.len() - 1) * PER_PEER;
    for (i, sub) in subs.iter_mut().enumerate() {
        let mut seen = BTreeSet::new();
        while seen.len() < expected {
            let message = recv_within(
                sub,
                h.patience(),
                &format!("message {} of {expected} at peer {i}", seen.len() + 1),
            )
            .await;
            assert!(
                !message.data.starts_with(format!("{i}/").as_bytes()),
                "peer {i} heard itself"
            );
            seen.insert(message.data);
        }
    }
}

/// Defines one async test per conformance test: `conformance_tests!(harness_expr; #[attributes])`.
/// Each builds its harness with `harness_expr` and runs the suite function of the same name.
#[macro_export]
macro_rules! conformance_tests {
    ($harness:expr; $(#[$attr:meta])*) => {
        $crate::conformance_tests!(@each [$(#[$attr])*] ($harness);
            broadcast_reaches_every_subscriber,
            topics_are_isolated,
            nothing_arrives_after_unsubscribe,
            oversized_is_refused,
            put_then_fetch_elsewhere,
            kept_blocks_are_fetched_elsewhere,
            fetch_of_unknown_cid_times_out,
            corrupted_block_is_refused,
            unverifiable_cid_is_refused,
            concurrent_broadcasts_all_arrive
        );
    };
    (@each $attrs:tt $harness:tt; $($name:ident),*) => {
        $( $crate::conformance_tests!(@one $attrs $harness $name); )*
    };
    (@one [$(#[$attr:meta])*] ($harness:expr) $name:ident) => {
        $(#[$attr])*
        async fn $name() {
            $crate::conformance::$name(&$harness).await;
        }
    };
}
