//! What the tests of `ledger-node` as a process share: the CLI, a running `ledger-node run`, its
//! API address and its answers.
#![allow(dead_code)]

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    time::Duration,
};

use comms::conformance::eventually;
use ledger::Keypair;
use serde_json::Value;

pub const BIN: &str = env!("CARGO_BIN_EXE_ledger-node");
pub const START_BOUND: Duration = Duration::from_secs(90);
pub const COMMIT_BOUND: Duration = Duration::from_secs(60);

/// A fresh directory under the system's temp directory.
pub fn workdir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ledger-node-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create the work directory");
    dir
}

/// Runs the CLI to completion; its stdout, or a panic with its stderr.
pub fn cli(args: &[&str]) -> String {
    let output: Output = Command::new(BIN)
        .args(args)
        .output()
        .expect("run ledger-node");
    assert!(
        output.status.success(),
        "ledger-node {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("utf-8 output")
}

/// A running `ledger-node run`, killed if the test panics before it stops.
pub struct Service {
    child: Option<Child>,
    log: PathBuf,
}

impl Service {
    pub fn start(config: &Path, log: PathBuf) -> Service {
        Service::start_with(config, log, &[])
    }

    /// Starts `run` with more environment variables (`FAILPOINTS`, say).
    pub fn start_with(config: &Path, log: PathBuf, env: &[(&str, &str)]) -> Service {
        let stderr = std::fs::File::create(&log).expect("create the log file");
        let child = Command::new(BIN)
            .args(["run", "--config"])
            .arg(config)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("start ledger-node run");
        Service {
            child: Some(child),
            log,
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends SIGTERM and waits for the exit, bounded; the exit must be a success.
    pub async fn terminate(&mut self) {
        let mut child = self.child.take().expect("running");
        let pid = child.id().to_string();
        let sent = Command::new("kill").args(["-TERM", &pid]).status();
        assert!(sent.expect("run kill").success(), "SIGTERM to {pid}");
        let waited = tokio::task::spawn_blocking(move || child.wait());
        let status = tokio::time::timeout(Duration::from_secs(60), waited)
            .await
            .expect("the node stops within 60 s of SIGTERM")
            .expect("join")
            .expect("wait");
        assert!(status.success(), "exit {status}; log:\n{}", self.log());
    }
}

impl Service {
    /// The process's ID, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Kills the process with SIGKILL and waits for it: a crash, no clean-up.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Waits for the process to end on its own, bounded; its exit status.
    pub async fn exited(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("running");
        let waited = tokio::task::spawn_blocking(move || child.wait());
        tokio::time::timeout(START_BOUND, waited)
            .await
            .expect("the node ends on its own")
            .expect("join")
            .expect("wait")
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
            eprintln!("node log:\n{}", self.log());
        }
    }
}

/// Waits for the node to write its API address, then for the API to answer.
pub async fn api_url(data_dir: &Path, service: &Service) -> String {
    let file = data_dir.join("api");
    let read = || std::fs::read_to_string(&file).ok();
    eventually(START_BOUND, "the node writes its API address", || async {
        read().is_some()
    })
    .await;
    let url = read().expect("the API file");
    assert!(
        url.starts_with("http://127.0.0.1:"),
        "{url}; {}",
        service.log()
    );
    url
}

pub async fn call(request: reqwest::RequestBuilder) -> (reqwest::StatusCode, Value) {
    let response = request.send().await.expect("the API answers");
    let status = response.status();
    let body = response.json().await.expect("a JSON body");
    (status, body)
}

/// The key in a key file written by `ledger-node keygen`.
pub fn read_key(path: &Path) -> Keypair {
    let text = std::fs::read_to_string(path).expect("key file");
    let file: Value = serde_json::from_str(&text).expect("key JSON");
    let secret =
        ledger::from_hex::<32>(file["secret_key"].as_str().expect("secret")).expect("hex secret");
    Keypair::from_secret(secret)
}

/// The ERROR line in which a node's supervisor says that it stopped and why; a panic naming
/// `what` and the whole log if there is none.
pub fn stopped_line<'a>(log: &'a str, what: &str) -> &'a str {
    (log.lines())
        .find(|line| line.contains("ERROR") && line.contains("the node stopped"))
        .unwrap_or_else(|| panic!("{what}: no ERROR line saying the node stopped; log:\n{log}"))
}
