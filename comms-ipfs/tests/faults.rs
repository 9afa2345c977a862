//! Faults of the HTTP link, injected by a proxy between the backend and a real daemon: transient
//! ones are retried (and counted by cause) until the call succeeds, permanent ones are not retried,
//! and persistent ones end in the right typed error within the call's deadline.

mod support;

use std::time::{Duration, Instant};

use bytes::Bytes;
use comms::{Codec, Communication, Error, Operation, Topic};
use comms_ipfs::{IpfsComms, IpfsConfig, MetricsSnapshot};
use support::proxy::{Fault, FaultProxy};

const CALL_TIMEOUT: Duration = Duration::from_secs(6);

/// A backend whose daemon sits behind a fault proxy, and a direct one on another daemon.
struct Rig {
    proxy: FaultProxy,
    proxied: IpfsComms,
    direct: IpfsComms,
}

impl Rig {
    async fn new() -> Rig {
        support::init_logging();
        let daemons = support::shared_daemons();
        let direct = support::backend(daemons[0].api(), &[]).await;
        let proxy = FaultProxy::start(&daemons[1].api()).await;
        let config = IpfsConfig {
            api: proxy.api(),
            peers: vec![daemons[0].swarm_address()],
            call_timeout: CALL_TIMEOUT,
            ..IpfsConfig::default()
        };
        let proxied = IpfsComms::connect(config)
            .await
            .expect("connect through the proxy");
        Rig {
            proxy,
            proxied,
            direct,
        }
    }

    fn metrics(&self) -> MetricsSnapshot {
        self.proxied.metrics().snapshot()
    }
}

fn unique(label: &str) -> Bytes {
    Bytes::from(format!(
        "{label} {:?} {}",
        Instant::now(),
        std::process::id()
    ))
}

/// Each transient fault, injected twice, is retried past and the call succeeds; the retries are
/// counted under the fault's cause.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_faults_are_retried_until_the_call_succeeds() {
    let rig = Rig::new().await;
    type Cause = fn(&MetricsSnapshot) -> u64;
    let cases: [(Fault, Cause); 4] = [
        (Fault::Reset, |m| m.retries_io),
        (Fault::Status(503), |m| m.retries_server_error),
        (Fault::Truncate, |m| m.retries_io),
        (Fault::Garbage, |m| m.retries_malformed),
    ];
    for (fault, cause) in cases {
        let before = rig.metrics();
        rig.proxy.inject("/block/put", fault, 2);
        let data = unique("put");
        let cid = rig
            .proxied
            .put(Codec::Raw, data.clone())
            .await
            .unwrap_or_else(|error| {
                panic!("put after two {fault:?} faults: {error}");
            });
        let after = rig.metrics();
        assert!(
            cause(&after) >= cause(&before) + 2,
            "{fault:?}: {before:?} -> {after:?}"
        );

        // The block really is on the proxied daemon: the other one fetches it over bitswap.
        let fetched = rig.direct.fetch(&cid, CALL_TIMEOUT).await.expect("fetch");
        assert_eq!(fetched, data);
    }

    for fault in [Fault::Reset, Fault::Status(502), Fault::Truncate] {
        let data = unique("fetch");
        let cid = rig.direct.put(Codec::Raw, data.clone()).await.expect("put");
        rig.proxy.inject("/block/get", fault, 1);
        let fetched = rig.proxied.fetch(&cid, CALL_TIMEOUT).await;
        assert_eq!(fetched.expect("fetch after a fault"), data, "{fault:?}");
    }

    let topic = Topic::new("faults/broadcast").expect("topic");
    rig.proxy.inject("/pubsub/pub", Fault::Status(500), 2);
    rig.proxied
        .broadcast(&topic, Bytes::from_static(b"x"))
        .await
        .expect("broadcast after two 500s");
}

/// An attempt that hangs past its own budget is abandoned and retried; a short delay is waited out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_replies_are_waited_for_or_retried() {
    let rig = Rig::new().await;
    let topic = Topic::new("faults/slow").expect("topic");
    let before = rig.metrics();
    rig.proxy
        .inject("/pubsub/peers", Fault::Delay(Duration::from_millis(300)), 1);
    rig.proxied.topic_peers(&topic).await.expect("a slow reply");
    assert_eq!(rig.metrics().retries_timeout, before.retries_timeout);

    // Each attempt may take half the call's deadline.
    rig.proxy.inject(
        "/pubsub/peers",
        Fault::Delay(CALL_TIMEOUT / 2 + Duration::from_millis(500)),
        1,
    );
    rig.proxied
        .topic_peers(&topic)
        .await
        .expect("a retry after a hung attempt");
    assert_eq!(rig.metrics().retries_timeout, before.retries_timeout + 1);
}

/// Altered block bytes are a CID mismatch, and a 4xx is a refusal: neither is retried.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permanent_faults_are_not_retried() {
    let rig = Rig::new().await;
    let cid = rig
        .direct
        .put(Codec::Raw, unique("altered"))
        .await
        .expect("put");

    for fault in [Fault::Alter, Fault::Garbage] {
        let before = rig.metrics();
        rig.proxy.inject("/block/get", fault, 1);
        match rig.proxied.fetch(&cid, CALL_TIMEOUT).await {
            Err(Error::CidMismatch { expected, .. }) => assert_eq!(*expected, cid),
            other => panic!("{fault:?}: expected a CID mismatch, got {other:?}"),
        }
        let after = rig.metrics();
        assert_eq!(after.requests, before.requests + 1, "{fault:?} was retried");
        assert_eq!(after.cid_mismatches, before.cid_mismatches + 1);
    }

    let before = rig.metrics();
    rig.proxy.inject("/block/put", Fault::Status(400), 1);
    let refused = rig.proxied.put(Codec::Raw, unique("refused")).await;
    assert!(
        matches!(
            refused,
            Err(Error::Unavailable {
                operation: Operation::Put,
                ..
            })
        ),
        "{refused:?}"
    );
    assert_eq!(
        rig.metrics().requests,
        before.requests + 1,
        "a 400 was retried"
    );
}

/// A fault that never passes ends in `Unavailable` after bounded retries, within the deadline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn persistent_faults_end_in_a_typed_error_within_the_deadline() {
    let rig = Rig::new().await;
    let topic = Topic::new("faults/persistent").expect("topic");
    rig.proxy.always("/pubsub/pub", Fault::Status(503));
    let before = rig.metrics();
    let started = Instant::now();
    let outcome = rig
        .proxied
        .broadcast(&topic, Bytes::from_static(b"x"))
        .await;
    let took = started.elapsed();
    assert!(
        matches!(
            outcome,
            Err(Error::Unavailable {
                operation: Operation::Broadcast,
                ..
            })
        ),
        "{outcome:?}"
    );
    assert!(
        took <= CALL_TIMEOUT + Duration::from_millis(500),
        "took {took:?}"
    );
    let after = rig.metrics();
    assert!(
        after.retries_server_error >= before.retries_server_error + 3,
        "{after:?}"
    );
    rig.proxy.clear();
}
