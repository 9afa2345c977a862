//! A genesis file (JSON, as `ledger-node genesis` writes it and `run` reads it): refused, or a
//! genesis that encodes to DAG-CBOR and back to itself and starts a core.
#![no_main]

use ledger_core::{Core, CoreConfig, Genesis};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(genesis) = serde_json::from_slice::<Genesis>(data) else {
        return;
    };
    if genesis.check().is_err() {
        return;
    }
    let (bytes, _) = genesis.encode();
    assert_eq!(Genesis::decode(&bytes).ok().as_ref(), Some(&genesis));
    let _core = Core::new(&genesis, None, CoreConfig::default());
});
