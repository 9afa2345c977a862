//! The whole `comms` conformance suite against the simulator, under two link models.

use std::time::Duration;

use async_trait::async_trait;
use comms::conformance::Harness;
use sim::{Fault, Latency, LinkModel, Sim, SimPeer};

/// Fresh networks with one link model, in virtual time.
struct SimHarness {
    link: LinkModel,
}

impl SimHarness {
    fn default_links() -> SimHarness {
        SimHarness {
            link: LinkModel::default(),
        }
    }

    /// Heavy-tailed latency and a slow link, so that ordering and size effects show.
    fn heavy_tail() -> SimHarness {
        let latency = Latency::Pareto {
            min: Duration::from_millis(5),
            shape: 1.2,
        };
        SimHarness {
            link: LinkModel {
                latency,
                jitter: Duration::from_millis(20),
                loss: 0.0,
                bandwidth: Some(1_000_000),
            },
        }
    }

    fn build(&self, peers: usize) -> (Sim, Vec<SimPeer>) {
        Sim::builder()
            .seed(sim::seed_from_env(11))
            .link(self.link)
            .peers(peers)
            .build()
    }
}

#[async_trait]
impl Harness for SimHarness {
    type Peer = SimPeer;

    async fn peers(&self, n: usize) -> Vec<SimPeer> {
        self.build(n).1
    }

    async fn corrupting_pair(&self) -> (SimPeer, SimPeer) {
        let (sim, mut peers) = self.build(2);
        sim.set_fault(0, Some(Fault::CorruptBlocks))
            .await
            .expect("peer 0 exists");
        let fetcher = peers.pop().expect("two peers");
        (peers.pop().expect("two peers"), fetcher)
    }

    fn patience(&self) -> Duration {
        // Virtual time: generous costs nothing. Pareto tails reach seconds; a 1 MiB block at 1 MB/s
        // takes a second to transfer.
        Duration::from_secs(60)
    }
}

mod default_links {
    use super::*;
    comms::conformance_tests!(SimHarness::default_links(); #[tokio::test(start_paused = true)]);
}

mod heavy_tail {
    use super::*;
    comms::conformance_tests!(SimHarness::heavy_tail(); #[tokio::test(start_paused = true)]);
}
