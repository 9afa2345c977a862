//! A simulator scenario file (TOML, `ledger-simulate --scenario`): refused by its checks, or a
//! simulated network that starts and carries a broadcast in virtual time.
#![no_main]

use std::time::Duration;

use bytes::Bytes;
use comms::{Communication, Topic};
use libfuzzer_sys::fuzz_target;
use sim::{Sim, SimConfig};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(config) = toml::from_str::<SimConfig>(text) else {
        return;
    };
    if config.check().is_err() {
        return;
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("a runtime");
    runtime.block_on(async {
        let (_sim, peers) = Sim::builder().config(config).peers(2).build();
        let topic = Topic::new("fuzz").expect("a topic");
        let Ok(mut subscription) = peers[1].subscribe(&topic).await else {
            return;
        };
        let _ = peers[0].broadcast(&topic, Bytes::from_static(b"a message")).await;
        let _ = tokio::time::timeout(Duration::from_secs(7200), subscription.recv()).await;
    });
});
