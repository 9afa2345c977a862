//! `scripts/devnet.sh` end to end: four IPFS daemons, four `ledger-node run` validators, transfers
//! through the CLI, a burst of 1,000 transfers from `ledger-node load` (32 in flight, spread over
//! the validators, so they arrive out of nonce order) that must apply in full, every node at the
//! same state root, and an account proven to a light client; the script stops what it started.

use std::{path::Path, process::Command};

#[test]
fn the_devnet_script_runs_four_validators_over_ipfs_to_agreement() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let dir = std::env::temp_dir().join(format!("ledger-devnet-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let output = Command::new("bash")
        .arg(root.join("scripts/devnet.sh"))
        .args([
            "--nodes",
            "4",
            "--transfers",
            "3",
            "--load",
            "1000",
            "--dir",
        ])
        .arg(&dir)
        .env("LEDGER_NODE_BIN", env!("CARGO_BIN_EXE_ledger-node"))
        .env("IPFS_TESTNET_BIN", env!("CARGO_BIN_EXE_ipfs-testnet"))
        .output()
        .expect("run scripts/devnet.sh");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let logs: String = (0..4)
        .map(|i| {
            let log = std::fs::read_to_string(dir.join(format!("node-{i}.log")));
            format!("--- node {i}\n{}\n", log.unwrap_or_default())
        })
        .collect();
    assert!(
        output.status.success(),
        "devnet.sh failed ({}):\n{stdout}\n{stderr}\n{logs}",
        output.status
    );
    assert!(
        stdout.contains("all 4 nodes agree at height"),
        "no agreement line:\n{stdout}"
    );
    // `query balance --verify` checked account 0 against the genesis: it holds, certified by
    // validators of a quorum of stake.
    let verified = stdout
        .split("proven against the genesis alone")
        .nth(1)
        .unwrap_or_else(|| panic!("no light client's check:\n{stdout}"));
    assert!(verified.contains("\"present\": true"), "{verified}");
    assert!(verified.contains("\"quorum\": 3"), "{verified}");
    assert!(
        !verified.contains("\"balance\": 1000000,"),
        "transfers left it: {verified}"
    );
    // Nothing accepted was lost or failed, and every transfer was seen committed at every node.
    let report = std::fs::read_to_string(dir.join("load.json")).expect("read load.json");
    let report: serde_json::Value = serde_json::from_str(&report).expect("parse load.json");
    assert_eq!(report["accepted"], 1000, "load report: {report:#}");
    assert_eq!(report["lost"], 0, "load report: {report:#}");
    assert_eq!(
        report["refused"],
        serde_json::json!({}),
        "load report: {report:#}"
    );
    assert_eq!(
        report["outcomes"],
        serde_json::json!({ "applied": 1000 }),
        "load report: {report:#}"
    );
    assert_eq!(
        report["latency_all"]["count"], 1000,
        "load report: {report:#}"
    );
    // Every node stopped cleanly: a node removes its API file only after flushing its store.
    for i in 0..4 {
        let api = dir.join(format!("node-{i}/api"));
        assert!(!api.exists(), "node {i} did not stop cleanly:\n{logs}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
