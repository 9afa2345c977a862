//! The whole `comms` contract, against real kubo daemons connected over a real libp2p swarm.

mod support;

comms::conformance_tests!(support::IpfsHarness; #[tokio::test(flavor = "multi_thread", worker_threads = 2)]);
