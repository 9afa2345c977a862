//! `ledger-simulate`, the main job, as a user runs it: Byzantine validators, a lossy log-normal
//! network, a partition and two overlapping crashes with restarts from their stores; the JSON report and the
//! SVG chart.

use std::process::Command;

use serde_json::Value;

#[test]
fn simulate_reports_agreement_under_faults_and_writes_json_and_a_chart() {
    let dir = std::env::temp_dir().join(format!("ledger-simulate-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let (json, svg) = (dir.join("report.json"), dir.join("latency.svg"));
    let output = Command::new(env!("CARGO_BIN_EXE_ledger-simulate"))
        .args(["--validators", "7", "--duration", "30s", "--seed", "3"])
        .args(["--latency", "30ms", "--sigma", "0.4", "--loss", "0.02"])
        .args([
            "--partition",
            "5s..9s",
            "--crash",
            "40%..60%",
            "--crash",
            "50%..70%",
        ])
        .args(["--byzantine", "2", "--behaviour", "equivocate", "--json"])
        .arg(&json)
        .arg("--plot")
        .arg(&svg)
        .output()
        .expect("run ledger-simulate");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("2 byzantine (equivocate)"), "{stdout}");

    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(&json).expect("report")).expect("JSON");
    assert_eq!(report["agreement"], true);
    assert_eq!(report["byzantine"], 2);
    let faults: Vec<&str> = report["faults"]
        .as_array()
        .expect("faults")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(
        faults,
        [
            "5.0s partition into two halves",
            "9.0s heal",
            "12.0s crash validator 4",
            "15.0s crash validator 3",
            "18.0s restart validator 4 from its store",
            "21.0s restart validator 3 from its store",
        ]
    );
    let (submitted, committed) = (report["submitted"].as_u64(), report["committed"].as_u64());
    assert!(committed > Some(0) && committed <= submitted, "{report}");
    assert!(
        report["commit_latency"]["p50_us"].as_u64() > Some(0),
        "{report}"
    );
    assert!(
        report["network"]["counters"]["dropped_loss"].as_u64() > Some(0),
        "the loss applied"
    );
    let ratio = report["delivery_ratio"].as_f64().expect("ratio");
    assert!(ratio > 0.5 && ratio < 1.0, "loss and a partition: {ratio}");

    let chart = std::fs::read_to_string(&svg).expect("chart");
    assert!(chart.starts_with("<svg"), "an SVG");
    let points = chart.matches("<circle").count() as u64;
    assert!(
        Some(points) >= committed,
        "one point per committed transaction: {points}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
