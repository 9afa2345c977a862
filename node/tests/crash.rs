//! Crashes and a full disk, for real: four `ledger-node run` validators on four kubo daemons, under
//! a steady load of transfers, and validator 0 crashed again and again, each time at another
//! point: aborted at a fail point before its block's write, between the write and the broadcast,
//! before a commit's write, while the keeper puts our blocks on the daemon, and killed with
//! SIGKILL. Restarted each time, it catches up and commits again; at the end all four have the same
//! height and state root, and no node counted an equivocation. And a validator whose data
//! directory is on a small tmpfs that another process fills stops with an error naming the disk,
//! exits non-zero, and after space is freed and it restarts, catches up the same way.

use std::{
    path::PathBuf,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::Duration,
};

use comms::conformance::eventually;
use comms_ipfs::testnet;
use ledger::{codec, Keypair, SignedTransaction, Transaction};
use serde_json::{json, Value};

mod support;
use support::{
    api_url, call, cli, read_key, stopped_line, workdir, Service, COMMIT_BOUND, START_BOUND,
};

/// Validators, and accounts sending transfers.
const VALIDATORS: usize = 4;
const ACCOUNTS: usize = 6;

/// Four validators on four connected daemons, each with its config, and the accounts.
struct Devnet {
    dir: PathBuf,
    daemons: Vec<testnet::Daemon>,
    configs: Vec<PathBuf>,
    data: Vec<PathBuf>,
    services: Vec<Option<Service>>,
    urls: Vec<String>,
    chain: comms::Cid,
    accounts: Vec<Keypair>,
    lives: usize,
}

impl Devnet {
    /// Keys, genesis and configs; validator 0's data in `data_0` if given.
    fn new(name: &str, data_0: Option<PathBuf>) -> Devnet {
        let dir = workdir(name);
        let path = |name: String| dir.join(name).to_str().expect("utf-8").to_string();
        let mut args: Vec<String> = ["genesis", "--chain-id", name].map(String::from).to_vec();
        for i in 0..VALIDATORS {
            cli(&["keygen", "--out", &path(format!("validator-{i}.key"))]);
            args.extend(["--validator".into(), path(format!("validator-{i}.key"))]);
        }
        for i in 0..ACCOUNTS {
            let key = cli(&["keygen", "--out", &path(format!("account-{i}.key"))]);
            args.extend(["--balance".into(), format!("{}=1000000000", key.trim())]);
        }
        args.extend(["--out".into(), path("genesis.json".into())]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let chain = cli(&args).trim().parse().expect("the chain's CID");
        let daemons = testnet::start_daemons(VALIDATORS);
        let mut data: Vec<PathBuf> = (0..VALIDATORS)
            .map(|i| dir.join(format!("data-{i}")))
            .collect();
        if let Some(data_0) = data_0 {
            data[0] = data_0;
        }
        let configs = (0..VALIDATORS)
            .map(|i| {
                let peers: Vec<String> = (0..VALIDATORS)
                    .filter(|&j| j != i)
                    .map(|j| format!("\"{}\"", daemons[j].swarm_address()))
                    .collect();
                let config = dir.join(format!("node-{i}.toml"));
                let text = format!(
                    "genesis = \"genesis.json\"\nkey = \"validator-{i}.key\"\n\
                     data_dir = \"{}\"\napi = \"127.0.0.1:0\"\n[ipfs]\napi = \"{}\"\n\
                     peers = [{}]\n",
                    data[i].display(),
                    daemons[i].api(),
                    peers.join(", ")
                );
                std::fs::write(&config, text).expect("write a config");
                config
            })
            .collect();
        let accounts = (0..ACCOUNTS)
            .map(|i| read_key(&dir.join(format!("account-{i}.key"))))
            .collect();
        Devnet {
            services: (0..VALIDATORS).map(|_| None).collect(),
            urls: vec![String::new(); VALIDATORS],
            dir,
            daemons,
            configs,
            data,
            chain,
            accounts,
            lives: 0,
        }
    }

    /// Starts validator `i` with `env` and waits for its API.
    async fn start(&mut self, i: usize, env: &[(&str, &str)]) {
        // A crashed node's API file is stale: wait for the new one.
        let _ = std::fs::remove_file(self.data[i].join("api"));
        self.lives += 1;
        let log = self.dir.join(format!("node-{i}-life-{}.log", self.lives));
        let service = Service::start_with(&self.configs[i], log, env);
        self.urls[i] = api_url(&self.data[i], &service).await;
        self.services[i] = Some(service);
    }

    async fn status(&self, i: usize) -> Value {
        let http = reqwest::Client::new();
        call(http.get(format!("{}/v1/status", self.urls[i])))
            .await
            .1
    }

    async fn height(&self, i: usize) -> u64 {
        self.status(i).await["height"].as_u64().unwrap_or(0)
    }

    /// Waits for validator `i` to end on its own; its log. It must not have exited cleanly.
    async fn crashed(&mut self, i: usize, what: &str) -> String {
        let mut service = self.services[i].take().expect("running");
        let status = service.exited().await;
        let log = service.log();
        assert!(!status.success(), "{what}: exit {status}; log:\n{log}");
        log
    }

    /// Waits for validator `i` to pass the height validator 1 has now, by `more` commits.
    async fn catches_up(&self, i: usize, more: u64, what: &str) {
        let target = self.height(1).await + more;
        eventually(COMMIT_BOUND, what, || async {
            self.height(i).await >= target
        })
        .await;
    }

    /// Waits until every validator has the same height and state root, then checks that none
    /// counted an equivocation. Returns the height.
    async fn agree(&self) -> u64 {
        eventually(
            COMMIT_BOUND,
            "all validators at one height and root",
            || async {
                let mut seen = Vec::new();
                for i in 0..VALIDATORS {
                    let status = self.status(i).await;
                    seen.push((status["height"].clone(), status["state_root"].clone()));
                }
                seen.windows(2).all(|pair| pair[0] == pair[1])
            },
        )
        .await;
        for i in 0..VALIDATORS {
            let status = self.status(i).await;
            assert_eq!(
                status["stats"]["equivocations"], 0,
                "validator {i} counted an equivocation: {status}"
            );
        }
        self.height(0).await
    }

    /// Transfers from every account, each account through one of validators 1 to 3 (validator 0
    /// goes down), about 40 a second, until `stop`.
    fn load(&self) -> Load {
        let (urls, chain, accounts) = (self.urls.clone(), self.chain, self.accounts.clone());
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let task = tokio::spawn(async move {
            let http = reqwest::Client::new();
            let mut nonces = vec![0u64; accounts.len()];
            let mut sent = 0;
            while !stopped.load(Ordering::Relaxed) {
                for (a, key) in accounts.iter().enumerate() {
                    let to = accounts[(a + 1) % accounts.len()].public();
                    let tx = Transaction::Transfer {
                        from: key.public(),
                        to,
                        amount: 1,
                        nonce: nonces[a],
                    };
                    let signed = SignedTransaction::sign(&chain, tx, key);
                    let body = json!({ "transaction": ledger::hex(&codec::encode(&signed)) });
                    let url = format!("{}/v1/transactions", urls[1 + a % 3]);
                    let (status, reply) = call(http.post(url).json(&body)).await;
                    assert_eq!(status, 202, "a transfer refused: {reply}");
                    nonces[a] += 1;
                    sent += 1;
                }
                tokio::time::sleep(Duration::from_millis(150)).await;
            }
            sent
        });
        Load { stop, task }
    }

    /// Every account's nonce at validator `i`: how many of its transfers took effect.
    async fn nonces(&self, i: usize) -> Vec<u64> {
        let http = reqwest::Client::new();
        let mut nonces = Vec::new();
        for key in &self.accounts {
            let url = format!("{}/v1/accounts/{}", self.urls[i], key.public().to_hex());
            nonces.push(call(http.get(url)).await.1["nonce"].as_u64().unwrap_or(0));
        }
        nonces
    }

    /// Stops `load`, then checks that all its transfers took effect (see
    /// [`Devnet::all_committed`]), and stops the network.
    async fn finish(self, load: Load) {
        let sent = load.stop().await;
        assert!(sent > 0, "no transfer was sent");
        self.all_committed(sent).await;
        self.stop().await;
    }

    /// Waits for all `sent` transfers to take effect, each once, then for every validator to
    /// agree (same height and root, no equivocation counted) and to have the same nonces.
    async fn all_committed(&self, sent: u64) {
        let deadline = tokio::time::Instant::now() + COMMIT_BOUND;
        while self.nonces(1).await.iter().sum::<u64>() != sent {
            if tokio::time::Instant::now() > deadline {
                let mut nonces = Vec::new();
                for i in 0..VALIDATORS {
                    nonces.push((self.nonces(i).await, self.status(i).await));
                }
                panic!("of {sent} transfers, not all committed: {nonces:#?}");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        self.agree().await;
        let expected = self.nonces(1).await;
        assert_eq!(
            self.nonces(0).await,
            expected,
            "the restarted validator's state"
        );
    }

    async fn stop(mut self) {
        for service in self.services.iter_mut().flatten() {
            service.terminate().await;
        }
        drop(std::mem::take(&mut self.daemons));
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A load of transfers running until stopped.
struct Load {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<u64>,
}

impl Load {
    /// Stops sending and waits for the transfers in flight; how many were accepted.
    async fn stop(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        tokio::time::timeout(START_BOUND, self.task)
            .await
            .expect("the load stops")
            .expect("the load ran")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_validator_crashed_at_each_point_under_load_restarts_and_agrees() {
    let mut net = Devnet::new("crash", None);
    for i in 0..VALIDATORS {
        net.start(i, &[]).await;
    }
    let load = net.load();
    net.catches_up(0, 3, "validator 0 commits under load").await;
    net.services[0].as_mut().expect("running").terminate().await;
    // Each life of validator 0 ends at another point: the fail points abort the process there.
    let crashes = [
        "node::before-own-block=30*off->return",
        "node::after-own-block=30*off->return",
        "node::before-commit=30*off->return",
        "keeper::put=10*off->return",
    ];
    for failpoint in crashes {
        net.start(0, &[("FAILPOINTS", failpoint)]).await;
        let log = net.crashed(0, failpoint).await;
        assert!(
            log.contains("crashing at a fail point"),
            "{failpoint}: {log}"
        );
    }
    // And SIGKILL, once it has caught up and committed again.
    net.start(0, &[]).await;
    net.catches_up(0, 3, "validator 0 commits before the kill")
        .await;
    net.services[0].as_mut().expect("running").kill();
    net.start(0, &[]).await;
    net.catches_up(0, 5, "validator 0 catches up after the last crash")
        .await;
    net.finish(load).await;
}

/// An 8 MiB tmpfs, unmounted and removed when dropped (a failed test too).
struct Tmpfs(PathBuf);

impl Tmpfs {
    /// Mounts one at `dir`, or says why not.
    fn mount(dir: PathBuf) -> Result<Tmpfs, String> {
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let output = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=8m", "tmpfs"])
            .arg(&dir)
            .output()
            .map_err(|e| e.to_string())?;
        match output.status.success() {
            true => Ok(Tmpfs(dir)),
            false => {
                let _ = std::fs::remove_dir(&dir);
                Err(String::from_utf8_lossy(&output.stderr).trim().to_string())
            }
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_validator_whose_disk_fills_stops_naming_it_and_recovers_once_space_is_freed() {
    let dir = std::env::temp_dir().join(format!("ledger-disk-full-{}", std::process::id()));
    let tmpfs = match Tmpfs::mount(dir.clone()) {
        Ok(tmpfs) => tmpfs,
        Err(why) => {
            eprintln!(
                "SKIPPED: the disk-full test needs a tmpfs mounted at {} (as root): {why}",
                dir.display()
            );
            return;
        }
    };
    let data_0 = tmpfs.0.join("data");
    let mut net = Devnet::new("disk-full", Some(data_0.clone()));
    for i in 0..VALIDATORS {
        net.start(i, &[]).await;
    }
    let load = net.load();
    net.catches_up(0, 3, "validator 0 commits on its tmpfs")
        .await;
    // Another process fills the disk.
    let filler = tmpfs.0.join("filler");
    let filled = std::process::Command::new("dd")
        .args(["if=/dev/zero", "bs=64k"])
        .arg(format!("of={}", filler.display()))
        .output()
        .expect("run dd");
    assert!(!filled.status.success(), "dd stops at a full disk");
    let log = net.crashed(0, "a full disk").await;
    let line = stopped_line(&log, "a full disk");
    eprintln!("validator 0 on a full disk: {line}");
    assert!(
        line.contains("No space left on device") && line.contains(&data_0.display().to_string()),
        "the error names the disk: {line}"
    );
    std::fs::remove_file(&filler).expect("free the space");
    net.start(0, &[]).await;
    net.catches_up(0, 5, "validator 0 catches up after the disk was freed")
        .await;
    net.finish(load).await;
    drop(tmpfs);
}
