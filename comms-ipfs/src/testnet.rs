//! Real IPFS daemons for tests (feature `test-utils`): js-ipfs 0.66.1 as `testnet/install.sh`
//! provisions it, each with its own repository, loopback-only, no discovery, no preload. A daemon
//! dies with the test process (parent-death signal) as well as on drop.

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        atomic::{AtomicU64, Ordering},
        mpsc, Mutex, OnceLock,
    },
    time::{Duration, Instant},
};

use serde_json::{json, Value};

/// How long a daemon may take to start (about 4 s when the machine is idle).
const START_BOUND: Duration = Duration::from_secs(90);

/// The daemon program: `$IPFS_TEST_DAEMON`, or the one `testnet/install.sh` installs.
pub fn daemon_program() -> PathBuf {
    if let Some(path) = std::env::var_os("IPFS_TEST_DAEMON") {
        return path.into();
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("testnet/node_modules/.bin/jsipfs")
}

/// One js-ipfs daemon with its own repository, killed on drop.
pub struct Daemon {
    repo: PathBuf,
    child: Option<Child>,
    api_port: u16,
    swarm_port: u16,
    peer_id: String,
}

impl Daemon {
    /// Initializes a fresh repository and starts the daemon on free loopback ports.
    pub fn start() -> Daemon {
        Daemon::start_with(|_| {})
    }

    /// Like [`Daemon::start`], with `edit` applied to the test configuration first (to turn pubsub
    /// off, say).
    pub fn start_with(edit: impl FnOnce(&mut Value)) -> Daemon {
        let repo = fresh_dir();
        let mut init = Command::new(daemon_program());
        init.args(["init", "--profile", "test", "--emptyRepo"]);
        let output = run(init.env("IPFS_PATH", &repo).env("NO_UPDATE_NOTIFIER", "1"));
        assert!(
            output.status.success(),
            "`jsipfs init` failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let peer_id = edit_config(&repo, |config| {
            test_config(config);
            edit(config);
        });
        let mut daemon = Daemon {
            repo,
            child: None,
            api_port: 0,
            swarm_port: 0,
            peer_id,
        };
        daemon.launch();
        daemon
    }

    /// The RPC API URL.
    pub fn api(&self) -> String {
        format!("http://127.0.0.1:{}", self.api_port)
    }

    /// The swarm multiaddr other daemons connect to.
    pub fn swarm_address(&self) -> String {
        format!(
            "/ip4/127.0.0.1/tcp/{}/p2p/{}",
            self.swarm_port, self.peer_id
        )
    }

    /// The daemon's peer ID.
    pub fn peer_id(&self) -> &str {
        &self.peer_id
    }

    /// The repository directory.
    pub fn repo(&self) -> &Path {
        &self.repo
    }

    /// Kills the daemon with SIGKILL, as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        // js-ipfs leaves its lock (a directory) behind when killed.
        let _ = fs::remove_dir_all(self.repo.join("repo.lock"));
        let _ = fs::remove_file(self.repo.join("api"));
    }

    /// Starts the daemon again on the same repository and ports (so its clients and peers find it).
    pub fn restart(&mut self) {
        self.kill();
        let (api, swarm) = (self.api_port, self.swarm_port);
        edit_config(&self.repo, |config| set_addresses(config, api, swarm));
        self.launch();
    }

    /// Whether the process is running.
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    fn launch(&mut self) {
        let log = fs::File::create(self.repo.with_extension("log")).expect("create the daemon log");
        let mut command = Command::new(daemon_program());
        command
            .args(["daemon", "--enable-preload=false"])
            .env("IPFS_PATH", &self.repo)
            .env("NO_UPDATE_NOTIFIER", "1")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone the log handle"))
            .stderr(log);
        self.child = Some(spawn(command));
        let api = wait_for_file(&self.repo.join("api"), START_BOUND)
            .unwrap_or_else(|| panic!("the daemon did not start: see {}", self.log().display()));
        self.api_port = port_of(&api).expect("a port in the api file");
        let deadline = Instant::now() + START_BOUND;
        self.swarm_port = loop {
            if let Some(port) = listening_swarm_port(&self.log()) {
                break port;
            }
            assert!(
                Instant::now() < deadline,
                "no swarm address in {}",
                self.log().display()
            );
            std::thread::sleep(Duration::from_millis(50));
        };
    }

    /// The daemon's log file.
    pub fn log(&self) -> PathBuf {
        self.repo.with_extension("log")
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill();
        let _ = fs::remove_dir_all(&self.repo);
        let _ = fs::remove_file(self.log());
    }
}

/// Applies `edit` to the repository's configuration. Returns the peer ID.
fn edit_config(repo: &Path, edit: impl FnOnce(&mut Value)) -> String {
    let path = repo.join("config");
    let mut config: Value =
        serde_json::from_slice(&fs::read(&path).expect("read the config")).expect("JSON config");
    edit(&mut config);
    fs::write(
        &path,
        serde_json::to_vec_pretty(&config).expect("serialize"),
    )
    .expect("write config");
    config["Identity"]["PeerID"]
        .as_str()
        .expect("a peer ID in the config")
        .to_owned()
}

/// Loopback only, no gateway, no gRPC server (it takes a fixed port), no bootstrap, discovery,
/// DHT or NAT mapping; pubsub on, with gossipsub.
fn test_config(config: &mut Value) {
    set_addresses(config, 0, 0);
    config["Bootstrap"] = json!([]);
    config["Discovery"] = json!({"MDNS": {"Enabled": false}, "webRTCStar": {"Enabled": false}});
    config["Routing"] = json!({"Type": "none"});
    config["Swarm"]["DisableNatPortMap"] = json!(true);
    config["Pubsub"] = json!({"Router": "gossipsub", "Enabled": true});
}

/// Loopback API and swarm addresses; port 0 picks a free one.
fn set_addresses(config: &mut Value, api_port: u16, swarm_port: u16) {
    config["Addresses"] = json!({
        "Swarm": [format!("/ip4/127.0.0.1/tcp/{swarm_port}")],
        "Announce": [],
        "NoAnnounce": [],
        "API": format!("/ip4/127.0.0.1/tcp/{api_port}"),
        "Gateway": "",
        "RPC": "",
        "Delegates": [],
    });
}

/// The swarm port from the daemon's log line `Swarm listening on /ip4/127.0.0.1/tcp/<port>/p2p/…`.
fn listening_swarm_port(log: &Path) -> Option<u16> {
    let text = fs::read_to_string(log).ok()?;
    text.lines()
        .filter_map(|line| line.strip_prefix("Swarm listening on "))
        .find_map(port_of)
}

/// The TCP port in a multiaddr.
fn port_of(multiaddr: &str) -> Option<u16> {
    let mut parts = multiaddr.trim().split('/');
    parts.find(|part| *part == "tcp")?;
    parts.next()?.parse().ok()
}

fn wait_for_file(path: &Path, bound: Duration) -> Option<String> {
    let deadline = Instant::now() + bound;
    while Instant::now() < deadline {
        if let Ok(text) = fs::read_to_string(path) {
            if !text.trim().is_empty() {
                return Some(text);
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

fn fresh_dir() -> PathBuf {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let dir = std::env::temp_dir().join(format!(
        "comms-ipfs-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).expect("create a daemon directory");
    dir
}

fn run(command: &mut Command) -> std::process::Output {
    let program = daemon_program();
    assert!(
        program.exists(),
        "no IPFS test daemon at {}: run comms-ipfs/testnet/install.sh (scripts/test.sh does)",
        program.display()
    );
    command
        .output()
        .unwrap_or_else(|error| panic!("cannot run {}: {error}", program.display()))
}

/// Spawns `command` from one thread that lives as long as the process, with a parent-death signal:
/// the daemon is killed when the test process ends, however it ends (statics are never dropped).
fn spawn(command: Command) -> Child {
    type Request = (Command, mpsc::Sender<std::io::Result<Child>>);
    static SPAWNER: OnceLock<Mutex<mpsc::Sender<Request>>> = OnceLock::new();
    let spawner = SPAWNER.get_or_init(|| {
        let (sender, requests) = mpsc::channel::<Request>();
        std::thread::spawn(move || {
            for (mut command, reply) in requests {
                let _ = reply.send(spawn_here(&mut command));
            }
        });
        Mutex::new(sender)
    });
    let (reply, child) = mpsc::channel();
    spawner
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .send((command, reply))
        .expect("the spawner thread runs");
    child
        .recv()
        .expect("the spawner replies")
        .unwrap_or_else(|error| panic!("cannot start {}: {error}", daemon_program().display()))
}

fn spawn_here(command: &mut Command) -> std::io::Result<Child> {
    use std::os::unix::process::CommandExt;
    // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        command.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    command.spawn()
}

/// `n` daemons started in parallel.
pub fn start_daemons(n: usize) -> Vec<Daemon> {
    let handles: Vec<_> = (0..n).map(|_| std::thread::spawn(Daemon::start)).collect();
    handles
        .into_iter()
        .map(|handle| handle.join().expect("a daemon started"))
        .collect()
}
