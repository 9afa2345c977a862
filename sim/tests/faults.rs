//! Fault injection and the link model: partitions, crashes, loss, bandwidth, sender queues, serve
//! delay, corrupting and flooding peers. Everything runs in virtual time, so the delays asserted are simulated, exact.

use std::time::Duration;

use bytes::Bytes;
use comms::{conformance::recv_within, Cid, Codec, Communication, Error, Limits, Topic};
use sim::{Fault, Latency, LinkModel, SenderModel, Sim, SimConfig, SimError, SimPeer};
use tokio::time::Instant;

const PATIENCE: Duration = Duration::from_secs(30);

fn topic() -> Topic {
    Topic::new("t").expect("valid topic")
}

fn network(peers: usize) -> (Sim, Vec<SimPeer>) {
    Sim::builder()
        .seed(sim::seed_from_env(5))
        .peers(peers)
        .build()
}

/// A fixed 10 ms link with the given loss and bandwidth.
fn fixed_link(loss: f64, bandwidth: Option<u64>) -> LinkModel {
    LinkModel {
        latency: Latency::constant(Duration::from_millis(10)),
        jitter: Duration::ZERO,
        loss,
        bandwidth,
    }
}

#[tokio::test(start_paused = true)]
async fn a_partition_splits_and_heals() {
    let (sim, peers) = network(4);
    let mut subs = Vec::new();
    for peer in &peers {
        subs.push(peer.subscribe(&topic()).await.expect("subscribe"));
    }
    let block = Bytes::from_static(b"held by peer 0");
    let cid = peers[0].put(Codec::Raw, block.clone()).await.expect("put");
    sim.partition(vec![vec![0, 1], vec![2, 3]])
        .await
        .expect("valid groups");

    assert_eq!(
        peers[0].peers().await.expect("up"),
        vec![peers[1].local_peer()]
    );
    peers[0]
        .broadcast(&topic(), Bytes::from_static(b"west"))
        .await
        .expect("broadcast");
    peers[2]
        .broadcast(&topic(), Bytes::from_static(b"east"))
        .await
        .expect("broadcast");
    assert_eq!(
        recv_within(&mut subs[1], PATIENCE, "west").await.data,
        "west"
    );
    assert_eq!(
        recv_within(&mut subs[3], PATIENCE, "east").await.data,
        "east",
        "peer 3 heard across the partition first"
    );
    let cut = peers[2].fetch(&cid, Duration::from_secs(2)).await;
    assert!(matches!(cut, Err(Error::Timeout { .. })), "{cut:?}");

    sim.heal().await.expect("heal");
    assert_eq!(
        peers[2]
            .fetch(&cid, PATIENCE)
            .await
            .expect("fetch after healing"),
        block
    );
    peers[0]
        .broadcast(&topic(), Bytes::from_static(b"healed"))
        .await
        .expect("broadcast");
    assert_eq!(
        recv_within(&mut subs[3], PATIENCE, "healed").await.data,
        "healed"
    );
    assert!(
        sim.stats()
            .await
            .expect("running")
            .counters
            .dropped_partition
            >= 2
    );
}

#[tokio::test(start_paused = true)]
async fn a_crashed_peer_fails_typed_and_restarts_with_its_blocks() {
    let (sim, peers) = network(2);
    let mut sub = peers[1].subscribe(&topic()).await.expect("subscribe");
    let block = Bytes::from_static(b"survives the crash");
    let cid = peers[1].put(Codec::Raw, block.clone()).await.expect("put");
    let missing = comms::cid_for(Codec::Raw, b"nobody has this");
    let pending = tokio::spawn({
        let peer = peers[1].clone();
        async move { peer.fetch(&missing, PATIENCE).await }
    });
    tokio::task::yield_now().await;

    sim.crash(1).await.expect("peer 1");
    assert!(
        sub.recv().await.is_none(),
        "the crashed peer's subscription ends"
    );
    assert!(matches!(
        pending.await.expect("joined"),
        Err(Error::Unavailable { .. })
    ));
    assert!(matches!(
        peers[1].broadcast(&topic(), Bytes::new()).await,
        Err(Error::Unavailable { .. })
    ));
    assert!(peers[0].topic_peers(&topic()).await.expect("up").is_empty());
    assert!(matches!(
        peers[0].fetch(&cid, Duration::from_secs(1)).await,
        Err(Error::Timeout { .. })
    ));

    sim.restart(1).await.expect("peer 1");
    assert_eq!(
        peers[0]
            .fetch(&cid, PATIENCE)
            .await
            .expect("the block survived"),
        block
    );
    let mut again = peers[1].subscribe(&topic()).await.expect("resubscribe");
    peers[0]
        .broadcast(&topic(), Bytes::from_static(b"back"))
        .await
        .expect("broadcast");
    assert_eq!(recv_within(&mut again, PATIENCE, "back").await.data, "back");
}

#[tokio::test(start_paused = true)]
async fn loss_drops_the_configured_share_and_counts_it() {
    let (sim, peers) = Sim::builder()
        .seed(sim::seed_from_env(5))
        .link(fixed_link(0.3, None))
        .peers(2)
        .build();
    let sub = peers[1].subscribe(&topic()).await.expect("subscribe");
    for i in 0..2000u32 {
        peers[0]
            .broadcast(&topic(), Bytes::from(i.to_be_bytes().to_vec()))
            .await
            .expect("broadcast");
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let c = sim.stats().await.expect("running").counters;
    assert_eq!(c.delivered + c.dropped_loss, 2000, "{c:?}");
    assert!(
        (500..700).contains(&c.dropped_loss),
        "30% of 2000 lost, give or take: {}",
        c.dropped_loss
    );
    drop(sub);
}

#[tokio::test(start_paused = true)]
async fn bandwidth_delays_large_payloads() {
    let config = SimConfig {
        link: fixed_link(0.0, Some(1_000_000)),
        ..SimConfig::default()
    };
    let (_sim, peers) = Sim::builder().config(config).peers(2).build();
    let mut sub = peers[1].subscribe(&topic()).await.expect("subscribe");
    for (size, expected) in [
        (0, Duration::from_millis(10)),
        (1_000_000, Duration::from_millis(1010)),
    ] {
        let sent = Instant::now();
        peers[0]
            .broadcast(&topic(), Bytes::from(vec![1; size]))
            .await
            .expect("broadcast");
        recv_within(&mut sub, PATIENCE, "the payload").await;
        let took = sent.elapsed();
        // Tokio's timer has millisecond granularity: the delivery lands within the next millisecond.
        assert!(
            took >= expected && took <= expected + Duration::from_millis(1),
            "{size} bytes took {took:?}"
        );
    }
}

/// Whether `took` is `expected`, up to the millisecond granularity of tokio's timer.
fn about(took: Duration, expected: Duration) -> bool {
    took >= expected && took <= expected + Duration::from_millis(1)
}

#[tokio::test(start_paused = true)]
async fn a_busy_sender_queues_its_broadcasts() {
    // 1 ms per message and 1 MB/s: 100 kB occupy the publisher for 101 ms a broadcast.
    let config = SimConfig {
        link: fixed_link(0.0, None),
        publisher: SenderModel {
            per_message: Duration::from_millis(1),
            bandwidth: Some(1_000_000),
            sigma: 0.0,
        },
        ..SimConfig::default()
    };
    let (_sim, peers) = Sim::builder().config(config).peers(3).build();
    let mut subs = Vec::new();
    for peer in &peers[1..] {
        subs.push(peer.subscribe(&topic()).await.expect("subscribe"));
    }
    let sent = Instant::now();
    for _ in 0..2 {
        peers[0]
            .broadcast(&topic(), Bytes::from(vec![1; 100_000]))
            .await
            .expect("broadcast");
    }
    // Both copies of a broadcast leave together, 10 ms on the wire; the second broadcast waits
    // for the first.
    for queued in 1..=2u64 {
        let expected = Duration::from_millis(10 + 101 * queued);
        for sub in &mut subs {
            recv_within(sub, PATIENCE, "a copy").await;
            let took = sent.elapsed();
            assert!(about(took, expected), "broadcast {queued}: {took:?}");
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_varying_sender_cost_has_its_median_and_a_spread() {
    // A median of 20 ms per message, log-normal with shape 0.5: its p99 is 3.2 times its median.
    let config = SimConfig {
        link: fixed_link(0.0, None),
        publisher: SenderModel {
            per_message: Duration::from_millis(20),
            bandwidth: None,
            sigma: 0.5,
        },
        ..SimConfig::default()
    };
    let (_sim, peers) = Sim::builder().config(config).peers(2).build();
    let mut sub = peers[1].subscribe(&topic()).await.expect("subscribe");
    let mut costs = Vec::new();
    for _ in 0..400 {
        // One at a time, so that none waits for another: each latency is its own cost and the link.
        let sent = Instant::now();
        peers[0]
            .broadcast(&topic(), Bytes::from_static(b"x"))
            .await
            .expect("broadcast");
        recv_within(&mut sub, PATIENCE, "the message").await;
        costs.push(sent.elapsed() - Duration::from_millis(10));
    }
    costs.sort();
    let (p50, p99) = (costs[200].as_secs_f64(), costs[396].as_secs_f64());
    assert!((0.018..=0.022).contains(&p50), "median cost {p50}");
    assert!(
        p99 / p50 > 2.5 && p99 / p50 < 4.0,
        "p99 {p99} against p50 {p50}"
    );
}

/// Two peers under `config`, peer 0 holding `blocks`; with their CIDs.
async fn holding(config: SimConfig, blocks: &[&'static [u8]]) -> (Sim, Vec<SimPeer>, Vec<Cid>) {
    let (sim, peers) = Sim::builder().config(config).peers(2).build();
    let mut cids = Vec::new();
    for block in blocks {
        let data = Bytes::from_static(block);
        cids.push(peers[0].put(Codec::Raw, data).await.expect("put"));
    }
    (sim, peers, cids)
}

#[tokio::test(start_paused = true)]
async fn a_holder_answers_after_its_serve_delay() {
    let config = SimConfig {
        link: fixed_link(0.0, None),
        serve_delay: Latency::constant(Duration::from_millis(250)),
        ..SimConfig::default()
    };
    let (_sim, peers, cids) = holding(config, &[b"block"]).await;
    let asked = Instant::now();
    peers[1].fetch(&cids[0], PATIENCE).await.expect("fetched");
    let took = asked.elapsed();
    assert!(
        about(took, Duration::from_millis(270)),
        "want 10 ms, serve 250 ms, response 10 ms: took {took:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_busy_holder_serves_one_fetch_after_another() {
    let config = SimConfig {
        link: fixed_link(0.0, None),
        server: SenderModel {
            per_message: Duration::from_millis(100),
            bandwidth: None,
            sigma: 0.0,
        },
        ..SimConfig::default()
    };
    let (_sim, peers, cids) = holding(config, &[b"one", b"two"]).await;
    let asked = Instant::now();
    let fetches = cids.iter().map(|cid| async {
        peers[1].fetch(cid, PATIENCE).await.expect("fetched");
        asked.elapsed()
    });
    let took = futures::future::join_all(fetches).await;
    // Both wants arrive after 10 ms; the responses leave 100 ms apart and cross in 10 ms.
    for (i, took) in took.into_iter().enumerate() {
        let expected = Duration::from_millis(120 + 100 * i as u64);
        assert!(about(took, expected), "fetch {i} took {took:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_holder_answers_a_repeated_want_once() {
    // Served after 1.2 s, while the want is repeated every 500 ms.
    let config = SimConfig {
        link: fixed_link(0.0, None),
        serve_delay: Latency::constant(Duration::from_millis(1200)),
        want_retry: Duration::from_millis(500),
        ..SimConfig::default()
    };
    let (sim, peers, cids) = holding(config, &[b"block"]).await;
    peers[1].fetch(&cids[0], PATIENCE).await.expect("fetched");
    let counters = sim.stats().await.expect("running").counters;
    assert_eq!(counters.blocks_served, 1, "{counters:?}");
}

#[tokio::test(start_paused = true)]
async fn an_honest_holder_outvotes_a_corrupting_one() {
    let (sim, peers) = network(3);
    sim.set_fault(0, Some(Fault::CorruptBlocks))
        .await
        .expect("peer 0");
    for i in 0..20u8 {
        let block = Bytes::from(vec![i; 100]);
        let cid = peers[0].put(Codec::Raw, block.clone()).await.expect("put");
        peers[1].put(Codec::Raw, block.clone()).await.expect("put");
        assert_eq!(
            peers[2]
                .fetch(&cid, PATIENCE)
                .await
                .expect("verified bytes"),
            block
        );
    }
    let c = sim.stats().await.expect("running").counters;
    assert!(
        c.blocks_corrupt > 0,
        "the corrupting peer never answered first: {c:?}"
    );
    assert_eq!((c.fetches_ok, c.fetches_mismatched), (20, 0));
}

#[tokio::test(start_paused = true)]
async fn a_block_put_after_the_fetch_began_is_found_by_a_retry() {
    let (_sim, peers) = network(2);
    let block = Bytes::from_static(b"late");
    let cid = comms::cid_for(Codec::Raw, &block);
    let fetch = tokio::spawn({
        let peer = peers[1].clone();
        async move { peer.fetch(&cid, PATIENCE).await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    peers[0].put(Codec::Raw, block.clone()).await.expect("put");
    assert_eq!(fetch.await.expect("joined").expect("found on retry"), block);
}

#[tokio::test(start_paused = true)]
async fn a_flood_of_oversized_junk_is_dropped_by_receivers() {
    let limits = Limits {
        max_message_bytes: 1000,
        max_block_bytes: 1000,
    };
    let (sim, peers) = Sim::builder()
        .seed(sim::seed_from_env(5))
        .limits(limits)
        .peers(3)
        .build();
    let mut sub = peers[1].subscribe(&topic()).await.expect("subscribe");
    let flood = Fault::Flood {
        topic: topic(),
        every: Duration::from_millis(1),
        size: 5000,
    };
    sim.set_fault(2, Some(flood)).await.expect("peer 2");
    tokio::time::sleep(Duration::from_millis(500)).await;
    peers[0]
        .broadcast(&topic(), Bytes::from_static(b"honest"))
        .await
        .expect("broadcast");
    let message = recv_within(&mut sub, PATIENCE, "the honest message").await;
    assert_eq!(
        (message.from, message.data),
        (peers[0].local_peer(), Bytes::from_static(b"honest"))
    );
    let c = sim.stats().await.expect("running").counters;
    assert!(c.dropped_too_large >= 490, "{c:?}");
}

#[tokio::test(start_paused = true)]
async fn a_slow_subscriber_under_flood_keeps_a_bounded_queue() {
    let config = SimConfig {
        subscriber_queue: 16,
        ..SimConfig::default()
    };
    let (sim, peers) = Sim::builder().config(config).peers(3).build();
    let mut slow = peers[1].subscribe(&topic()).await.expect("subscribe");
    let flood = Fault::Flood {
        topic: topic(),
        every: Duration::from_millis(1),
        size: 10,
    };
    sim.set_fault(2, Some(flood)).await.expect("peer 2");
    tokio::time::sleep(Duration::from_secs(1)).await;
    sim.set_fault(2, None).await.expect("peer 2");
    // Let the copies still in flight land (and be dropped) before draining.
    tokio::time::sleep(Duration::from_secs(1)).await;

    let c = sim.stats().await.expect("running").counters;
    assert!(c.dropped_queue_full >= 1000 - 16 - 30, "{c:?}");
    let mut queued = 0;
    while tokio::time::timeout(Duration::from_millis(100), slow.recv())
        .await
        .is_ok()
    {
        queued += 1;
    }
    assert_eq!(queued, 16, "the queue held exactly its capacity");
    peers[0]
        .broadcast(&topic(), Bytes::from_static(b"after"))
        .await
        .expect("broadcast");
    assert_eq!(
        recv_within(&mut slow, PATIENCE, "a message after the flood")
            .await
            .data,
        "after"
    );
}

#[tokio::test(start_paused = true)]
async fn an_unknown_peer_is_a_typed_error() {
    let (sim, _peers) = network(2);
    assert!(matches!(
        sim.crash(2).await,
        Err(SimError::UnknownPeer { index: 2, peers: 2 })
    ));
    assert!(matches!(
        sim.partition(vec![vec![0, 7]]).await,
        Err(SimError::UnknownPeer { index: 7, .. })
    ));
    let added = sim.add_peer().await.expect("running");
    assert_eq!(added.index(), 2);
    sim.crash(2).await.expect("now it exists");
}

#[tokio::test(start_paused = true)]
async fn ten_simulated_minutes_run_in_virtual_time() {
    let (sim, peers) = Sim::builder()
        .seed(sim::seed_from_env(5))
        .link(fixed_link(0.0, None))
        .peers(20)
        .build();
    let mut subs = Vec::new();
    for peer in &peers {
        subs.push(peer.subscribe(&topic()).await.expect("subscribe"));
    }
    let wall = std::time::Instant::now();
    for second in 0..600u32 {
        for peer in &peers {
            peer.broadcast(&topic(), Bytes::from(second.to_be_bytes().to_vec()))
                .await
                .expect("broadcast");
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        for sub in &mut subs {
            for _ in 0..19 {
                recv_within(sub, PATIENCE, "a broadcast").await;
            }
        }
    }
    let stats = sim.stats().await.expect("running");
    assert!(sim.elapsed() >= Duration::from_secs(600));
    assert_eq!(stats.counters.delivered, 20 * 19 * 600);
    // A fixed 10 ms link, within the histogram's 3 significant digits.
    let latency = stats.delivery_latency;
    assert!(
        [latency.p50_us, latency.max_us]
            .iter()
            .all(|us| (10_000..=10_010).contains(us)),
        "{latency:?}"
    );
    eprintln!(
        "10 simulated minutes, {} deliveries, in {:?} of wall time",
        stats.counters.delivered,
        wall.elapsed()
    );
}
