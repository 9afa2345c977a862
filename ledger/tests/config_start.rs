//! A configuration that passes validation never panics a node: arbitrary `[node]` and
//! `[node.core]` values, from far below to far above their bounds. A refused one names a field of
//! the file; an accepted one starts a network of four validators over the simulator that takes a
//! transfer and runs for a few simulated seconds with every node still up (a panic in a node's
//! task would stop it: `Network::exit`).

use std::time::Duration;

use ledger::NodeConfig;
use proptest::prelude::*;
use scenario::Network;

/// Durations, mostly within the bounds (a tick up to a minute, the others to an hour), now and
/// then outside them.
fn duration() -> impl Strategy<Value = Duration> {
    prop_oneof![
        19 => prop::sample::select(vec![1, 5, 50, 500, 1000, 30_000]).prop_map(Duration::from_millis),
        1 => prop::sample::select(vec![0, 7_200_000]).prop_map(Duration::from_millis),
    ]
}

/// Counts, mostly within the bounds (at least 1, at most 2^16 for fetches), now and then 0 or
/// beyond.
fn count() -> impl Strategy<Value = u64> {
    prop_oneof![
        19 => prop::sample::select(vec![1u64, 2, 16, 100, 4096, 65_536]),
        1 => prop::sample::select(vec![0u64, (1 << 24) + 1]),
    ]
}

prop_compose! {
    fn core_config()(
        times in prop::collection::vec(duration(), 4),
        min_block_interval in prop::sample::select(vec![0u64, 1, 5, 50]),
        counts in prop::collection::vec(count(), 8),
        block_bytes in prop::sample::select(vec![4096u64, 65_536, 1 << 20]),
        inline_bytes in prop::sample::select(vec![0u64, 1024, 60_000]),
    ) -> ledger::CoreConfig {
        let idle = times[1];
        ledger::CoreConfig {
            leader_timeout: times[0],
            idle_block_interval: idle,
            min_block_interval: Duration::from_millis(min_block_interval).min(idle),
            rebroadcast_interval: times[2],
            queued_timeout: times[3],
            max_block_transactions: counts[0],
            max_block_bytes: block_bytes,
            inline_bytes: inline_bytes.min(block_bytes - 2048),
            resubmit_after_rounds: counts[1],
            max_mempool: counts[2] as usize,
            max_mempool_per_signer: counts[3].min(counts[2]) as usize,
            fetches_per_author: counts[4] as usize,
            queued_fetches_per_author: counts[5] as usize,
            parked_broadcasts_per_author: counts[6] as usize,
        }
    }
}

prop_compose! {
    fn node_config()(
        core in core_config(),
        fetch_timeout in duration(),
        tick in prop::sample::select(vec![1u64, 20, 50, 1000, 60_000]),
        counts in prop::collection::vec(count(), 3),
        retention_rounds in prop::sample::select(vec![0u64, 0, 100, 1000, 0, 100, 1000, 50]),
        snapshot_sync in any::<bool>(),
    ) -> NodeConfig {
        NodeConfig {
            core,
            fetch_timeout,
            tick: Duration::from_millis(tick),
            fetch_attempts: counts[0] as u32,
            max_concurrent_fetches: counts[1] as usize,
            ready_lag_rounds: counts[2],
            retention_rounds,
            snapshot_sync,
            ..Network::test_config()
        }
    }
}

/// Starts four validators with `config`, sends a transfer, runs 3 simulated seconds; whether every
/// node still runs.
async fn runs(config: NodeConfig) -> Result<(), String> {
    let network = Network::builder()
        .tests(11)
        .node_config(config)
        .start()
        .await;
    let network = network.map_err(|error| format!("did not start: {error}"))?;
    let mut accounts = network.accounts(2);
    let tx = accounts.transfer(0, 1, 5);
    let via = network.node(0).ok_or("no node 0")?.clone();
    let _ = accounts.submit(&via, 0, tx).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    for i in 0..4 {
        if let Some(exit) = network.exit(i) {
            return Err(format!("validator {i} stopped: {exit}"));
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn a_configuration_that_passes_validation_never_panics_a_node(config in node_config()) {
        if let Err(error) = config.check() {
            prop_assert!(error.field.starts_with("node."), "{error}");
            return Ok(());
        }
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .expect("a runtime");
        let ran = runtime.block_on(runs(config.clone()));
        prop_assert!(ran.is_ok(), "{:?} with {config:#?}", ran);
    }
}
