//! Real IPFS daemons for tests (feature `test-utils`), each with its own repository, loopback-only,
//! with no discovery, routing or gateway. A daemon dies with the test process (parent-death signal)
//! as well as on drop.
//!
//! The daemons are kubo (Go IPFS), built by `kubo/install.sh` into a cache; `$IPFS_TEST_DAEMON`
//! names another kubo binary.

use std::{
    fs,
    io::{Read, Write},
    net::TcpStream,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        atomic::{AtomicU64, Ordering},
        mpsc, Mutex, OnceLock,
    },
    time::{Duration, Instant},
};

use serde_json::{json, Value};

/// How long a daemon may take to start (kubo: well under a second when the machine is idle).
const START_BOUND: Duration = Duration::from_secs(90);

/// The kubo binary the tests start: `$IPFS_TEST_DAEMON`, or the one `kubo/install.sh` builds.
pub fn program() -> PathBuf {
    std::env::var_os("IPFS_TEST_DAEMON")
        .map(PathBuf::from)
        .unwrap_or_else(kubo_program)
}

/// kubo's command line on the repository `repo`.
fn command_on(repo: &Path) -> Command {
    let mut command = Command::new(program());
    command
        .env("IPFS_PATH", repo)
        .env("IPFS_TELEMETRY", "off")
        .env("NO_UPDATE_NOTIFIER", "1");
    command
}

/// Loopback only, no gateway, no bootstrap, discovery, routing, announcements or NAT mapping;
/// pubsub on, with gossipsub.
fn test_config(config: &mut Value) {
    set_addresses(config, 0, 0);
    config["Bootstrap"] = json!([]);
    config["Discovery"]["MDNS"] = json!({"Enabled": false});
    config["Routing"]["Type"] = json!("none");
    config["Swarm"]["DisableNatPortMap"] = json!(true);
    config["Pubsub"]["Router"] = json!("gossipsub");
    config["Pubsub"]["Enabled"] = json!(true);
    // Nothing to announce to: with no routing, peers find blocks over bitswap alone.
    config["Provide"]["Enabled"] = json!(false);
    config["AutoConf"]["Enabled"] = json!(false);
    config["AutoTLS"]["Enabled"] = json!(false);
    // To measure kubo's one-round fetches of larger blocks (see benches/RESULTS.md).
    if let Ok(size) = std::env::var("IPFS_TEST_WANT_HAVE_REPLACE_SIZE") {
        let size: u64 = size
            .parse()
            .expect("IPFS_TEST_WANT_HAVE_REPLACE_SIZE is a number of bytes");
        config["Internal"]["Bitswap"]["WantHaveReplaceSize"] = json!(size);
    }
}

/// Loopback API and swarm addresses (port 0 picks a free one), no gateway.
fn set_addresses(config: &mut Value, api_port: u16, swarm_port: u16) {
    let addresses = &mut config["Addresses"];
    addresses["Swarm"] = json!([format!("/ip4/127.0.0.1/tcp/{swarm_port}")]);
    addresses["API"] = json!(format!("/ip4/127.0.0.1/tcp/{api_port}"));
    addresses["Announce"] = json!([]);
    addresses["NoAnnounce"] = json!([]);
    addresses["Gateway"] = json!([]);
}

/// The kubo version `kubo/go.mod` pins.
pub fn kubo_version() -> &'static str {
    include_str!("../kubo/go.mod")
        .lines()
        .find_map(|line| line.strip_prefix("require github.com/ipfs/kubo "))
        .map(str::trim)
        .expect("kubo/go.mod requires github.com/ipfs/kubo")
}

/// Where `kubo/install.sh` puts kubo: `${XDG_CACHE_HOME:-~/.cache}/ledger-node/kubo-<version>/ipfs`.
fn kubo_program() -> PathBuf {
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| Path::new(&home).join(".cache")))
        .unwrap_or_else(std::env::temp_dir);
    cache
        .join("ledger-node")
        .join(format!("kubo-{}", kubo_version()))
        .join("ipfs")
}

/// One daemon with its own repository, killed on drop.
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
        let mut init = command_on(&repo);
        init.args(["init", "--profile", "test", "--empty-repo"]);
        let output = run(&mut init);
        assert!(
            output.status.success(),
            "`{} init` failed: {}",
            program().display(),
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

    /// kubo's command line, on this daemon's repository: `daemon.command().args(["dag",
    /// "get", cid])` asks the running daemon, as `ipfs dag get` would in a shell.
    pub fn command(&self) -> Command {
        command_on(&self.repo)
    }

    /// Kills the daemon with SIGKILL, as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        // A killed daemon leaves its lock file and its `api` file.
        let _ = fs::remove_file(self.repo.join("repo.lock"));
        let _ = fs::remove_file(self.repo.join("api"));
    }

    /// Starts the daemon again on the same repository and ports (so its clients and peers find it).
    pub fn restart(&mut self) {
        self.kill();
        let (api, swarm) = (self.api_port, self.swarm_port);
        edit_config(&self.repo, |config| set_addresses(config, api, swarm));
        self.launch();
    }

    /// The daemon's process ID, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether the process is running.
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    fn launch(&mut self) {
        let log = fs::File::create(self.log()).expect("create the daemon log");
        let mut command = self.command();
        command
            .arg("daemon")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone the log handle"))
            .stderr(log);
        self.child = Some(spawn(command));
        let deadline = Instant::now() + START_BOUND;
        let api = wait_for(deadline, || {
            fs::read_to_string(self.repo.join("api"))
                .ok()
                .filter(|text| !text.trim().is_empty())
        })
        .unwrap_or_else(|| panic!("the daemon did not start: see {}", self.log().display()));
        self.api_port = port_of(&api).expect("a port in the api file");
        // kubo's log says `host:port`, not a multiaddr: the RPC API says where it listens.
        self.swarm_port = wait_for(deadline, || listening_swarm_port(self.api_port))
            .unwrap_or_else(|| panic!("no swarm address: see {}", self.log().display()));
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

/// The TCP port in a multiaddr.
fn port_of(multiaddr: &str) -> Option<u16> {
    let mut parts = multiaddr.trim().split('/');
    parts.find(|part| *part == "tcp")?;
    parts.next()?.parse().ok()
}

/// A new daemon's directory under the temp directory, named by this process's ID. The first one
/// a process makes first removes those (and their logs) of processes that have ended: daemons held
/// for a whole test binary (in a static) are never dropped, so their repositories outlive it.
fn fresh_dir() -> PathBuf {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    static SWEPT: std::sync::Once = std::sync::Once::new();
    SWEPT.call_once(remove_ended_processes_dirs);
    let dir = std::env::temp_dir().join(format!(
        "comms-ipfs-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).expect("create a daemon directory");
    dir
}

/// Removes `comms-ipfs-<pid>-<n>` directories and logs whose process is gone (Linux: no
/// `/proc/<pid>`).
fn remove_ended_processes_dirs() {
    let Ok(entries) = fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix("comms-ipfs-")) else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if pid == std::process::id() || Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        let path = entry.path();
        let _ = match path.is_dir() {
            true => fs::remove_dir_all(&path),
            false => fs::remove_file(&path),
        };
    }
}

fn run(command: &mut Command) -> std::process::Output {
    let program = program();
    assert!(
        program.exists(),
        "no IPFS test daemon at {}: run comms-ipfs/kubo/install.sh (scripts/test.sh does)",
        program.display(),
    );
    command
        .output()
        .unwrap_or_else(|error| panic!("cannot run {}: {error}", program.display()))
}

/// Polls `probe` until it gives a value or `deadline` passes.
fn wait_for<T>(deadline: Instant, mut probe: impl FnMut() -> Option<T>) -> Option<T> {
    loop {
        if let Some(value) = probe() {
            return Some(value);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// kubo's TCP swarm port, from `swarm/addrs/listen`.
fn listening_swarm_port(api_port: u16) -> Option<u16> {
    let body = rpc_post(api_port, "swarm/addrs/listen").ok()?;
    let reply: Value = serde_json::from_str(&body).ok()?;
    reply["Strings"]
        .as_array()?
        .iter()
        .filter_map(Value::as_str)
        .find_map(port_of)
}

/// One RPC call with no arguments over plain HTTP/1.0 (the connection closes after the reply).
fn rpc_post(api_port: u16, command: &str) -> std::io::Result<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", api_port))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        stream,
        "POST /api/v0/{command} HTTP/1.0\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\n\r\n"
    )?;
    let mut reply = String::new();
    stream.read_to_string(&mut reply)?;
    let (head, body) = reply.split_once("\r\n\r\n").unwrap_or((&reply, ""));
    if head.starts_with("HTTP/1.0 200") || head.starts_with("HTTP/1.1 200") {
        Ok(body.to_owned())
    } else {
        Err(std::io::Error::other(
            head.lines().next().unwrap_or("").to_owned(),
        ))
    }
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
        .unwrap_or_else(|error| panic!("cannot start {}: {error}", program().display()))
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
