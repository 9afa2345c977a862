//! The same seed and scenario give the same trace; another seed gives another.

use std::time::Duration;

use bytes::Bytes;
use comms::{Codec, Communication, Topic};
use futures::StreamExt;
use sim::{Fault, Latency, LinkModel, Sim, Stats, TraceEvent, TraceKind};

/// Broadcasts, puts and fetches on a lossy heavy-tailed network while it is partitioned, healed,
/// flooded, and one peer crashes and restarts. Returns the final figures and the whole trace.
async fn scenario(seed: u64) -> (Stats, Vec<TraceEvent>) {
    let link = LinkModel {
        latency: Latency::LogNormal {
            median: Duration::from_millis(40),
            sigma: 0.8,
        },
        jitter: Duration::from_millis(10),
        loss: 0.05,
        bandwidth: Some(1_000_000),
    };
    let (sim, peers) = Sim::builder()
        .seed(seed)
        .link(link)
        .record_trace(true)
        .peers(8)
        .build();
    let topic = Topic::new("blocks").expect("valid topic");
    for peer in &peers {
        let sub = peer.subscribe(&topic).await.expect("subscribe");
        tokio::spawn(sub.for_each(|_| async {}));
    }
    let flood = Fault::Flood {
        topic: topic.clone(),
        every: Duration::from_millis(30),
        size: 200,
    };
    sim.set_fault(7, Some(flood)).await.expect("peer 7");
    let mut last = None;
    for round in 0..60usize {
        match round {
            10 => sim
                .partition(vec![vec![0, 1, 2], vec![3, 4]])
                .await
                .expect("valid groups"),
            20 => sim.heal().await.expect("heal"),
            25 => sim.crash(5).await.expect("peer 5"),
            35 => sim.restart(5).await.expect("peer 5"),
            _ => {}
        }
        for (i, peer) in peers.iter().enumerate() {
            // A crashed peer's broadcast fails; that is part of the scenario.
            let _ = peer
                .broadcast(&topic, Bytes::from(format!("{round}/{i}")))
                .await;
        }
        let cid = peers[round % 8]
            .put(Codec::Raw, Bytes::from(vec![round as u8; 5000]))
            .await;
        if let Some(previous) = last.replace(cid) {
            let _ = peers[(round + 3) % 8]
                .fetch(
                    &previous.unwrap_or_else(|_| unreachable_cid()),
                    Duration::from_secs(2),
                )
                .await;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    (
        sim.stats().await.expect("running"),
        sim.trace().await.expect("running"),
    )
}

fn unreachable_cid() -> comms::Cid {
    comms::cid_for(Codec::Raw, b"never stored")
}

#[tokio::test(start_paused = true)]
async fn same_seed_same_trace() {
    let seed = sim::seed_from_env(2024);
    let (first, trace) = scenario(seed).await;
    let (second, again) = scenario(seed).await;
    assert_eq!(first.trace_digest, second.trace_digest, "seed {seed}");
    assert_eq!(trace, again, "seed {seed}");
    assert_eq!(first, second, "seed {seed}");

    // The scenario exercised what it claims to, so equal traces mean something.
    let c = &first.counters;
    assert!(
        c.delivered > 1000
            && c.dropped_loss > 0
            && c.dropped_partition > 0
            && c.dropped_crashed > 0,
        "{c:?}"
    );
    assert!(
        c.fetches_ok > 0 && c.crashes == 1 && c.restarts == 1,
        "{c:?}"
    );
    for kind in [
        TraceKind::Publish,
        TraceKind::Deliver,
        TraceKind::Drop,
        TraceKind::Serve,
        TraceKind::FetchOk,
        TraceKind::Partition,
    ] {
        assert!(
            trace.iter().any(|e| e.kind == kind),
            "no {kind:?} in the trace"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn another_seed_another_trace() {
    let seed = sim::seed_from_env(2024);
    let (first, _) = scenario(seed).await;
    let (other, _) = scenario(seed + 1).await;
    assert_ne!(
        first.trace_digest,
        other.trace_digest,
        "seeds {seed} and {}",
        seed + 1
    );
}
