//! `scripts/devnet.sh` end to end: four `ledger-node run` validators, transfers through the CLI, a
//! burst of 1,000 transfers from `ledger-node load` (32 in flight, spread over the validators, so
//! they arrive out of nonce order) that must apply in full, every node at the same state root at
//! every height they all list, and an account proven to a light client; the script stops what it
//! started. Three networks: every validator on its own kubo daemon; every one an embedded IPFS peer
//! with no daemon at all; and half of each in one network.

use std::{path::Path, process::Command};

/// Runs the devnet with `backend` (`ipfs-rpc`, `embedded`, `mixed`) and checks what every run must
/// show; returns the script's output and its directory (removed by the caller).
fn devnet(backend: &str) -> (String, std::path::PathBuf) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let dir = std::env::temp_dir().join(format!(
        "ledger-devnet-test-{backend}-{}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    let output = Command::new("bash")
        .arg(root.join("scripts/devnet.sh"))
        .args([
            "--nodes",
            "4",
            "--backend",
            backend,
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
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    let logs = logs(&dir);
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
    // It has sent transfers by then (its balance may be back where it began: it receives too).
    assert!(
        !verified.contains("\"nonce\": 0,"),
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
        // An embedded peer's addresses go with it.
        let p2p = dir.join(format!("node-{i}/p2p"));
        assert!(!p2p.exists(), "node {i} left {}", p2p.display());
    }
    (stdout, dir)
}

fn logs(dir: &Path) -> String {
    (0..4)
        .map(|i| {
            let log = std::fs::read_to_string(dir.join(format!("node-{i}.log")));
            format!("--- node {i}\n{}\n", log.unwrap_or_default())
        })
        .collect()
}

/// Which validators ran embedded, from their logs.
fn embedded(dir: &Path) -> Vec<bool> {
    (0..4)
        .map(|i| {
            let log = std::fs::read_to_string(dir.join(format!("node-{i}.log")));
            log.expect("a node's log")
                .contains("embedded IPFS peer ready")
        })
        .collect()
}

#[test]
fn the_devnet_script_runs_four_validators_over_ipfs_to_agreement() {
    let (_, dir) = devnet("ipfs-rpc");
    assert_eq!(embedded(&dir), [false; 4]);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn four_embedded_validators_reach_agreement_with_no_daemon() {
    let (stdout, dir) = devnet("embedded");
    assert_eq!(embedded(&dir), [true; 4]);
    assert!(!stdout.contains("IPFS daemons"), "{stdout}");
    assert!(!dir.join("daemons.txt").exists(), "no daemon was started");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn validators_on_kubo_and_embedded_ones_agree_on_every_state_root() {
    let (stdout, dir) = devnet("mixed");
    assert_eq!(embedded(&dir), [false, false, true, true]);
    // `query agreement` compared every height from the first: "agree at height H, and on each of
    // the H state roots from height 1".
    let line = (stdout.lines())
        .find(|l| l.starts_with("all 4 nodes agree at height"))
        .expect("the agreement line");
    let numbers: Vec<u64> = (line.split(|c: char| !c.is_ascii_digit()))
        .filter_map(|n| n.parse().ok())
        .collect();
    assert!(
        matches!(numbers[..], [4, height, compared, 1] if compared == height && height > 10),
        "{line}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
