//! `ledger-node` as users run it: keys and genesis from the CLI, `run` over a real IPFS daemon, the
//! HTTP API refusing bad input and serving good input, the `tx` and `query` commands, and a
//! SIGTERM that loses nothing committed: the store holds every commit, and the node resumes.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use comms::conformance::eventually;
use comms_ipfs::testnet;
use ledger::Store;
use ledger::{codec, SignedTransaction, Transaction};
use serde_json::{json, Value};

mod support;
use support::{api_url, call, cli, read_key, stopped_line, workdir, Service, BIN, COMMIT_BOUND};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_serves_its_api_refuses_bad_input_and_stops_cleanly_on_sigterm() {
    let dir = workdir("service");
    let path = |name: &str| dir.join(name).to_str().expect("utf-8 path").to_string();
    let validator = cli(&["keygen", "--out", &path("validator.key")]);
    let alice = cli(&["keygen", "--out", &path("alice.key")]);
    let (validator, alice) = (validator.trim(), alice.trim());
    let refused = Command::new(BIN)
        .args(["keygen", "--out", &path("alice.key")])
        .output()
        .expect("run keygen");
    assert!(!refused.status.success(), "keygen must not replace a key");
    let chain = cli(&[
        "genesis",
        "--chain-id",
        "service-test",
        "--validator",
        &path("validator.key"),
        "--balance",
        &format!("{alice}=1000"),
        "--out",
        &path("genesis.json"),
    ]);

    let daemon = testnet::Daemon::start();
    let config = dir.join("node.toml");
    std::fs::write(
        &config,
        format!(
            "genesis = \"genesis.json\"\nkey = \"validator.key\"\ndata_dir = \"data\"\n\
             api = \"127.0.0.1:0\"\n[ipfs]\napi = \"{}\"\n",
            daemon.api()
        ),
    )
    .expect("write the config");
    let data_dir = dir.join("data");
    let mut service = Service::start(&config, dir.join("node.log"));
    let url = api_url(&data_dir, &service).await;
    let http = reqwest::Client::new();

    let (status, body) = call(http.get(format!("{url}/v1/status"))).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["chain"], chain.trim());
    assert_eq!(body["validator"], 0);
    assert_eq!(body["backend"], "ipfs");

    // Bad input: each refusal is a 4xx with a JSON error kind, and the node keeps serving.
    let key = |name: &str| read_key(&dir.join(name));
    let chain_cid = chain.trim().parse().expect("the chain's CID");
    let transfer = |nonce| Transaction::Transfer {
        from: alice.parse().expect("alice's key"),
        to: validator.parse().expect("the validator's key"),
        amount: 5,
        nonce,
    };
    // Signed by the wrong key: well formed, but the signature does not verify.
    let forged = SignedTransaction::sign(&chain_cid, transfer(0), &key("validator.key"));
    let hex = |tx: &SignedTransaction| ledger::hex(&codec::encode(tx));
    let submit = |body: Value| http.post(format!("{url}/v1/transactions")).json(&body);
    let refusals = [
        (submit(json!({ "transaction": "zz" })), 400, "bad_hex"),
        (
            submit(json!({ "transaction": "a16178" })),
            400,
            "bad_transaction",
        ),
        (submit(json!({ "tx": "00" })), 422, "bad_body"),
        (
            submit(json!({ "transaction": hex(&forged) })),
            422,
            "invalid_transaction",
        ),
        (
            submit(json!({ "transaction": "0".repeat(100_000) })),
            413,
            "bad_body",
        ),
        (
            http.post(format!("{url}/v1/transactions")).body("{}"),
            415,
            "bad_body",
        ),
        (http.get(format!("{url}/v1/accounts/zz")), 400, "bad_key"),
        (http.get(format!("{url}/v1/blocks/nope")), 400, "bad_cid"),
        (
            http.get(format!("{url}/v1/transactions/{chain_cid}")),
            404,
            "unknown_transaction",
        ),
        (
            http.get(format!("{url}/v1/blocks/{chain_cid}")),
            404,
            "unknown_block",
        ),
        (
            http.get(format!("{url}/v1/commits?limit=-1")),
            400,
            "bad_query",
        ),
        (http.get(format!("{url}/v2/anything")), 404, "not_found"),
        (
            http.delete(format!("{url}/v1/status")),
            405,
            "method_not_allowed",
        ),
    ];
    for (request, want_status, want_kind) in refusals {
        let (status, body) = call(request).await;
        assert_eq!(status, want_status, "{body}");
        assert_eq!(body["error"], want_kind, "{body}");
        assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()));
    }

    // The CLI signs and submits, and waits for the commit.
    let committed = cli(&[
        "tx",
        "--node",
        &url,
        "--key",
        &path("alice.key"),
        "--wait",
        "60s",
        "transfer",
        "--to",
        validator,
        "--amount",
        "5",
    ]);
    let committed: Value = serde_json::from_str(&committed).expect("JSON output");
    assert_eq!(committed["status"], "committed", "{committed}");
    assert_eq!(committed["outcome"], "applied", "{committed}");
    let first_id: comms::Cid = committed["id"].as_str().expect("id").parse().expect("CID");
    let first_height = committed["height"].as_u64().expect("height");
    let replay = SignedTransaction::sign(&chain_cid, transfer(0), &key("alice.key"));
    let (status, body) = call(submit(json!({ "transaction": hex(&replay) }))).await;
    assert_eq!(
        (status.as_u16(), &body["error"]),
        (409, &json!("stale_nonce")),
        "{body}"
    );
    let balance = cli(&["query", "--node", &url, "balance", alice]);
    let balance: Value = serde_json::from_str(&balance).expect("JSON output");
    assert_eq!(
        (balance["balance"].as_u64(), balance["nonce"].as_u64()),
        (Some(995), Some(1))
    );

    // The commit is in the recent commits, its block can be looked up, and metrics count it.
    let (_, commits) = call(http.get(format!("{url}/v1/commits?limit=256"))).await;
    let holder = commits["commits"]
        .as_array()
        .expect("commits")
        .iter()
        .find(|c| c["height"] == first_height)
        .expect("the commit of the transfer is listed")
        .clone();
    let leader = holder["leader"].as_str().expect("leader");
    let (status, block) = call(http.get(format!("{url}/v1/blocks/{leader}"))).await;
    assert_eq!(status, 200, "{block}");
    assert_eq!(block["author"], 0);
    let scrape = || async {
        let response = http.get(format!("{url}/metrics")).send().await;
        response.expect("metrics").text().await.expect("text")
    };
    let metrics = scrape().await;
    for family in [
        "ledger_height ",
        "ledger_broadcast_delivery_ratio 1.0",
        "ledger_commit_latency_seconds_count 1",
        "ledger_commit_stream_clients 0",
        "ledger_invalid_inputs",
        "comms_broadcasts_total ",
        "comms_fetch_seconds_bucket",
        "ipfs_requests_total ",
    ] {
        assert!(metrics.contains(family), "no {family} in\n{metrics}");
    }
    let families = |text: &str| -> Vec<String> {
        let help = text.lines().filter(|line| line.starts_with("# HELP"));
        help.map(String::from).collect()
    };
    assert_eq!(
        families(&metrics),
        families(&scrape().await),
        "a second scrape shows the same metrics, none added"
    );

    // More transfers straight to the API, then SIGTERM while they may be in flight.
    let alice_key = key("alice.key");
    let mut more = Vec::new();
    for nonce in 1..6 {
        let signed = SignedTransaction::sign(&chain_cid, transfer(nonce), &alice_key);
        let (status, body) = call(submit(json!({ "transaction": hex(&signed) }))).await;
        assert_eq!(status, 202, "{body}");
        more.push(signed.id());
    }
    let (_, before) = call(http.get(format!("{url}/v1/status"))).await;
    let height_before = before["height"].as_u64().expect("height");
    service.terminate().await;
    assert!(
        !data_dir.join("api").exists(),
        "a clean stop removes the API file"
    );

    // The store holds every commit the node had reported, and the first transfer where it was.
    {
        let storage = ledger_rocksdb::Storage::open(&data_dir).expect("the store reopens");
        let stored_height = storage.height().expect("height");
        assert!(
            stored_height >= height_before,
            "{stored_height} < {height_before}"
        );
        let record = storage
            .transaction(&first_id)
            .expect("read")
            .expect("the committed transfer is on disk");
        assert_eq!(record.height, first_height);
    }

    // Restarted, the node resumes from its store and commits the rest (submitted again, as a
    // client does for what was pending: the mempool is not durable).
    let mut service = Service::start(&config, dir.join("node-2.log"));
    let url = api_url(&data_dir, &service).await;
    let submit = |body: Value| http.post(format!("{url}/v1/transactions")).json(&body);
    let (_, status) = call(http.get(format!("{url}/v1/status"))).await;
    assert!(status["height"].as_u64() >= Some(height_before), "{status}");
    for nonce in 1..6 {
        let signed = SignedTransaction::sign(&chain_cid, transfer(nonce), &alice_key);
        let (status, body) = call(submit(json!({ "transaction": hex(&signed) }))).await;
        // Committed before the stop (409: its nonce is used), or to be committed now.
        assert!(
            status == 202 || body["error"] == "stale_nonce",
            "{status} {body}"
        );
    }
    eventually(COMMIT_BOUND, "the resubmitted transfers commit", || async {
        let (_, account) = call(http.get(format!("{url}/v1/accounts/{alice}"))).await;
        account["nonce"] == 6
    })
    .await;
    for id in more {
        let (_, tx) = call(http.get(format!("{url}/v1/transactions/{id}"))).await;
        assert_eq!(tx["status"], "committed", "{tx}");
    }
    let (_, account) = call(http.get(format!("{url}/v1/accounts/{alice}"))).await;
    assert_eq!(account["balance"], 970, "6 transfers of 5, each once");
    service.terminate().await;
    drop(daemon);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A validator with its genesis in `dir`, over `daemon`, its data in `data`: the config's path.
fn validator_config(dir: &Path, daemon: &testnet::Daemon, data: &str) -> PathBuf {
    let path = |name: &str| dir.join(name).to_str().expect("utf-8 path").to_string();
    if !dir.join("validator.key").exists() {
        cli(&["keygen", "--out", &path("validator.key")]);
        cli(&[
            "genesis",
            "--chain-id",
            "faults",
            "--validator",
            &path("validator.key"),
            "--out",
            &path("genesis.json"),
        ]);
    }
    let config = dir.join(format!("{data}.toml"));
    std::fs::write(
        &config,
        format!(
            "genesis = \"genesis.json\"\nkey = \"validator.key\"\ndata_dir = \"{data}\"\n\
             api = \"127.0.0.1:0\"\n[ipfs]\napi = \"{}\"\n",
            daemon.api()
        ),
    )
    .expect("write the config");
    config
}

/// A supervised process: a panic or a storage error in one of the node's tasks, injected at a fail
/// point, ends `ledger-node run` with a non-zero status and one ERROR line naming the task and
/// what failed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_task_ends_the_process_with_a_non_zero_status_naming_it() {
    let dir = workdir("faults");
    let daemon = testnet::Daemon::start();
    let faults = [
        ("node::step=20*off->panic", "node", "panicked"),
        ("keeper::put=panic", "keeper", "panicked"),
        (
            "node::write=3*off->return",
            "node",
            "writing failed: storage: injected at fail point node::write",
        ),
    ];
    for (i, (failpoint, task, says)) in faults.into_iter().enumerate() {
        let config = validator_config(&dir, &daemon, &format!("data-{i}"));
        let log = dir.join(format!("node-{i}.log"));
        let mut service = Service::start_with(&config, log, &[("FAILPOINTS", failpoint)]);
        let status = service.exited().await;
        let log = service.log();
        assert!(!status.success(), "{failpoint}: exit {status}; log:\n{log}");
        let line = stopped_line(&log, failpoint);
        assert!(
            line.contains(&format!("task=\"{task}\"")) && line.contains(says),
            "{failpoint}: {line}"
        );
    }
    // A panic in a request's task (the API server's): the process stops too, after a line
    // naming the panic and where it was.
    let config = validator_config(&dir, &daemon, "data-api");
    let log = dir.join("node-api.log");
    let mut service = Service::start_with(&config, log, &[("FAILPOINTS", "api::status=panic")]);
    let url = api_url(&dir.join("data-api"), &service).await;
    let answer = reqwest::get(format!("{url}/v1/status")).await;
    assert!(answer.is_err(), "the request's task panicked: {answer:?}");
    let status = service.exited().await;
    let log = service.log();
    assert!(!status.success(), "exit {status}; log:\n{log}");
    assert!(
        (log.lines()).any(|line| line.contains("ERROR")
            && line.contains("a task panicked")
            && line.contains("api::status")),
        "no ERROR line naming the panic; log:\n{log}"
    );
    drop(daemon);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The health probes: live and ready while the node runs over a daemon that answers; still live
/// but not ready, saying why, while the daemon is down; ready again once it is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_probes_say_live_and_ready_and_why_not() {
    let dir = workdir("probes");
    let mut daemon = testnet::Daemon::start();
    let config = validator_config(&dir, &daemon, "data");
    let mut service = Service::start(&config, dir.join("node.log"));
    let url = api_url(&dir.join("data"), &service).await;
    let http = reqwest::Client::new();
    let probe = |path: &str| call(http.get(format!("{url}{path}")));
    let (status, live) = probe("/livez").await;
    assert_eq!(
        (status.as_u16(), &live["live"]),
        (200, &json!(true)),
        "{live}"
    );
    eventually(COMMIT_BOUND, "the node is ready", || async {
        probe("/readyz").await.0 == 200
    })
    .await;
    let (_, status) = probe("/v1/status").await;
    assert_eq!(status["health"]["ready"], true, "{status}");
    assert_eq!(status["health"]["lag_rounds"], 0, "{status}");

    daemon.kill();
    eventually(COMMIT_BOUND, "not ready without its daemon", || async {
        probe("/readyz").await.0 == 503
    })
    .await;
    let (_, ready) = probe("/readyz").await;
    assert_eq!(ready["ready"], false, "{ready}");
    let reason = ready["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("network backend"), "{ready}");
    let (status, live) = probe("/livez").await;
    assert_eq!(status, 200, "still live: {live}");

    daemon.restart();
    eventually(COMMIT_BOUND, "ready again with its daemon back", || async {
        probe("/readyz").await.0 == 200
    })
    .await;
    service.terminate().await;
    drop(daemon);
    let _ = std::fs::remove_dir_all(&dir);
}
