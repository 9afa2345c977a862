//! The `[node.core]` table of a config file (TOML): refused by its checks, or a core that starts.
#![no_main]

use std::sync::OnceLock;

use ledger_core::{devnet, Core, CoreConfig, Genesis};
use libfuzzer_sys::fuzz_target;

/// Four validators and two accounts, made once.
fn genesis() -> &'static Genesis {
    static GENESIS: OnceLock<Genesis> = OnceLock::new();
    GENESIS.get_or_init(|| devnet::genesis("fuzz", 1, 4, 2, 1_000))
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(config) = toml::from_str::<CoreConfig>(text) else {
        return;
    };
    if config.check().is_err() {
        return;
    }
    let _core = Core::new(genesis(), None, config);
});
