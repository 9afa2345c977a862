//! The HTTP API under abuse, over real sockets, against a running `ledger-node run` (the embedded
//! backend, so no daemon): headers and bodies sent a byte at a time, more connections than the
//! limit, oversized headers and bodies, malformed requests, unknown paths and methods, a client
//! that never reads its responses and one that never reads its commit stream. Meanwhile a
//! well-behaved client (from 127.0.0.1; the abusers come from 127.0.0.2 and 127.0.0.3) submits
//! transfers that all commit, the API answers it within its request timeout, and the node's
//! resident memory stays bounded. Each refusal is counted in `/metrics`.

use std::{
    net::SocketAddr,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use comms::conformance::eventually;
use ledger::{codec, SignedTransaction, Transaction};
use serde_json::json;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpSocket, TcpStream},
    time::{timeout, Instant},
};

mod support;
use support::{api_url, call, cli, read_key, workdir, Service, COMMIT_BOUND};

/// Where each abuser connects from (the well-behaved client uses 127.0.0.1): an address of its
/// own, so that the per-address limit refuses only the one that opens too many connections.
const SLOW_HEADERS: [u8; 4] = [127, 0, 0, 2];
const CROWD: [u8; 4] = [127, 0, 0, 3];
const OVERSIZED: [u8; 4] = [127, 0, 0, 4];
const SLOW_BODY: [u8; 4] = [127, 0, 0, 5];
const MALFORMED: [u8; 4] = [127, 0, 0, 6];
const NEVER_READS: [u8; 4] = [127, 0, 0, 7];
/// The node's bounds in this test (`[http]`), small so that the test is quick.
const PER_IP: usize = 12;
const HEADER_TIMEOUT: Duration = Duration::from_secs(1);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// How long past a bound the node may take to act on it, on two loaded cores.
const SLACK: Duration = Duration::from_secs(8);
/// How much the node's resident memory may grow under the abuse.
const RSS_GROWTH: u64 = 96 << 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_holds_under_abuse_and_a_good_client_is_served() {
    let dir = workdir("abuse");
    let (config, validator) = embedded_validator(&dir);
    let data_dir = dir.join("data");
    let mut service = Service::start(&config, dir.join("node.log"));
    let url = api_url(&data_dir, &service).await;
    let api: SocketAddr = url.trim_start_matches("http://").parse().expect("address");
    let pid = service.pid().expect("running");
    let chain: comms::Cid = {
        let http = reqwest::Client::new();
        let (_, status) = call(http.get(format!("{url}/v1/status"))).await;
        status["chain"]
            .as_str()
            .expect("chain")
            .parse()
            .expect("CID")
    };

    let good = GoodClient {
        url: url.clone(),
        chain,
        alice: read_key(&dir.join("alice.key")),
        to: validator.parse().expect("the validator's key"),
    };
    // Warm up (a first commit), then measure the memory the abuse starts from.
    good.transfer(0).await;
    let baseline = rss_bytes(pid);
    let done = Arc::new(AtomicBool::new(false));
    let peak = Arc::new(AtomicU64::new(baseline));
    let served = tokio::spawn(good.clone().run(1, done.clone(), pid, peak.clone()));

    let abuse = [
        tokio::spawn(slow_headers(api)),
        tokio::spawn(over_the_limit(api)),
        tokio::spawn(oversized(api)),
        tokio::spawn(slow_body(api)),
        tokio::spawn(malformed(api)),
        tokio::spawn(never_reads(api)),
    ];
    let metrics = Metrics(url.clone());
    let unread = never_reads_its_stream(api, &metrics).await;
    for task in abuse {
        task.await.expect("an abuser's checks");
    }
    for (counter, least) in [
        ("http_connections_refused_total", 4),
        ("http_header_timeouts_total", 8),
        ("http_oversized_headers_total", 1),
        ("http_request_timeouts_total", 1),
        ("http_send_timeouts_total", 1),
    ] {
        eventually(SLACK, counter, || metrics.at_least(counter, least)).await;
    }
    // Its slot is freed once its socket's buffers are full and the send timeout passes, or once
    // it is a queue of commits behind: both take commits, which the good client goes on making.
    let unread_since = Instant::now();
    eventually(COMMIT_BOUND, "the unread stream's slot is freed", || {
        metrics.at_most("ledger_commit_stream_clients", 0)
    })
    .await;
    let height = metrics.value("ledger_height").await;
    eprintln!(
        "the unread stream was dropped after {:?}, at height {height}",
        unread_since.elapsed()
    );
    done.store(true, Ordering::Relaxed);
    let submitted = served.await.expect("the good client's checks");

    // Every transfer the good client submitted commits.
    let http = reqwest::Client::new();
    let account = format!("{url}/v1/accounts/{}", good.alice.public().to_hex());
    eventually(
        COMMIT_BOUND,
        "the good client's transfers commit",
        || async {
            let (_, account) = call(http.get(&account)).await;
            account["nonce"] == submitted
        },
    )
    .await;
    let peak = peak.load(Ordering::Relaxed);
    eprintln!(
        "{submitted} transfers committed under abuse; RSS {} MiB before, {} MiB at most",
        baseline >> 20,
        peak >> 20
    );
    assert!(
        peak <= baseline + RSS_GROWTH,
        "RSS grew from {baseline} to {peak} bytes"
    );
    let log = service.log();
    for line in [
        "connection refused: too many connections",
        "the client did not send its headers in time",
        "the client read nothing of its response",
    ] {
        assert!(log.contains(line), "no log line {line:?}");
    }
    drop(unread);
    service.terminate().await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// A validator alone on the embedded backend, with small `[http]` bounds, and alice funded at
/// genesis; the config's path and the validator's public key.
fn embedded_validator(dir: &std::path::Path) -> (std::path::PathBuf, String) {
    let path = |name: &str| dir.join(name).to_str().expect("utf-8 path").to_string();
    let validator = cli(&["keygen", "--out", &path("validator.key")]);
    let alice = cli(&["keygen", "--out", &path("alice.key")]);
    cli(&[
        "genesis",
        "--chain-id",
        "abuse",
        "--validator",
        &path("validator.key"),
        "--balance",
        &format!("{}=1000000", alice.trim()),
        "--out",
        &path("genesis.json"),
    ]);
    let config = dir.join("node.toml");
    let text = format!(
        "genesis = \"genesis.json\"\nkey = \"validator.key\"\ndata_dir = \"data\"\n\
         api = \"127.0.0.1:0\"\nbackend = \"embedded\"\n\
         [p2p]\nlisten = [\"/ip4/127.0.0.1/tcp/0\"]\n\
         [http]\nmax_connections = 64\nmax_connections_per_ip = {PER_IP}\n\
         max_header_bytes = 8192\nmax_body_bytes = 65536\nheader_timeout = \"{}s\"\n\
         request_timeout = \"{}s\"\nsend_timeout = \"2s\"\nsend_buffer_bytes = 16384\n",
        HEADER_TIMEOUT.as_secs(),
        REQUEST_TIMEOUT.as_secs()
    );
    std::fs::write(&config, text).expect("write the config");
    (config, validator.trim().into())
}

/// The well-behaved client: transfers from alice, one at a time, each followed by a status read.
#[derive(Clone)]
struct GoodClient {
    url: String,
    chain: comms::Cid,
    alice: ledger::Keypair,
    to: ledger::PublicKey,
}

impl GoodClient {
    fn http() -> reqwest::Client {
        // Idle connections are dropped before the node's header timeout would close them.
        (reqwest::Client::builder())
            .pool_idle_timeout(HEADER_TIMEOUT / 2)
            .build()
            .expect("client")
    }

    /// Submits a transfer of alice's with `nonce`, which must be accepted; its ID.
    async fn submit(&self, http: &reqwest::Client, nonce: u64) -> comms::Cid {
        let tx = Transaction::Transfer {
            from: self.alice.public(),
            to: self.to,
            amount: 1,
            nonce,
        };
        let signed = SignedTransaction::sign(&self.chain, tx, &self.alice);
        let body = json!({ "transaction": ledger::hex(&codec::encode(&signed)) });
        let request = http
            .post(format!("{}/v1/transactions", self.url))
            .json(&body);
        let (status, reply) = call(request).await;
        assert_eq!(status, 202, "transfer {nonce}: {reply}");
        signed.id()
    }

    /// Submits a transfer and waits for its commit.
    async fn transfer(&self, nonce: u64) {
        let http = Self::http();
        let id = self.submit(&http, nonce).await;
        let url = format!("{}/v1/transactions/{id}", self.url);
        eventually(COMMIT_BOUND, "the transfer commits", || async {
            let (_, tx) = call(http.get(&url)).await;
            tx["status"] == "committed"
        })
        .await;
    }

    /// Submits transfers from `nonce` on until `done`, each answered within the request timeout,
    /// reading the node's RSS into `peak`; how many nonces were used in all.
    async fn run(self, nonce: u64, done: Arc<AtomicBool>, pid: u32, peak: Arc<AtomicU64>) -> u64 {
        let http = Self::http();
        let mut nonce = nonce;
        while !done.load(Ordering::Relaxed) {
            let started = Instant::now();
            self.submit(&http, nonce).await;
            let (status, reply) = call(http.get(format!("{}/v1/status", self.url))).await;
            assert_eq!(status, 200, "{reply}");
            let took = started.elapsed();
            assert!(took < REQUEST_TIMEOUT, "the good client waited {took:?}");
            peak.fetch_max(rss_bytes(pid), Ordering::Relaxed);
            nonce += 1;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        nonce
    }
}

/// The node's resident memory, from `/proc/<pid>/status`.
fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    let line = (status.lines())
        .find(|line| line.starts_with("VmRSS:"))
        .expect("VmRSS");
    let kib: u64 = (line.split_whitespace().nth(1))
        .and_then(|n| n.parse().ok())
        .expect("a number");
    kib << 10
}

/// `/metrics`, read for one counter or gauge at a time.
struct Metrics(String);

impl Metrics {
    async fn value(&self, name: &str) -> u64 {
        let text = reqwest::get(format!("{}/metrics", self.0))
            .await
            .expect("metrics")
            .text()
            .await
            .expect("text");
        (text.lines())
            .find_map(|line| line.strip_prefix(&format!("{name} ")))
            .and_then(|value| value.trim().parse::<f64>().ok())
            .unwrap_or_else(|| panic!("no {name} in\n{text}")) as u64
    }

    async fn at_least(&self, name: &str, least: u64) -> bool {
        self.value(name).await >= least
    }

    async fn at_most(&self, name: &str, most: u64) -> bool {
        self.value(name).await <= most
    }
}

/// A connection to `api` from the loopback address `from`, with a small receive buffer when
/// `small_window` (a client that will not read).
async fn connect(from: [u8; 4], api: SocketAddr, small_window: bool) -> TcpStream {
    let socket = TcpSocket::new_v4().expect("socket");
    socket
        .bind(SocketAddr::from((from, 0)))
        .expect("bind a loopback address");
    if small_window {
        socket.set_recv_buffer_size(4096).expect("SO_RCVBUF");
    }
    socket.connect(api).await.expect("connect")
}

/// The status code of the response that `stream` reads within `bound`, or `None` if the
/// connection closes first.
async fn status_of(stream: &mut TcpStream, bound: Duration) -> Option<u16> {
    let mut head = Vec::new();
    let read = timeout(bound, async {
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n") {
            match stream.read(&mut byte).await {
                Ok(1) => head.push(byte[0]),
                _ => return,
            }
        }
    });
    read.await.expect("an answer or a close within the bound");
    let line = String::from_utf8_lossy(&head);
    line.split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
}

/// Whether the node closes `stream` within `bound` (whatever it sends first is read and dropped).
async fn closed_within(stream: &mut TcpStream, bound: Duration) -> bool {
    let mut sink = [0u8; 4096];
    let drained = async { while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {} };
    timeout(bound, drained).await.is_ok()
}

/// Eight clients send their headers a byte every 100 ms: each is closed after the header
/// timeout.
async fn slow_headers(api: SocketAddr) {
    let mut slow = Vec::new();
    for _ in 0..8 {
        slow.push(tokio::spawn(async move {
            let mut stream = connect(SLOW_HEADERS, api, false).await;
            let started = Instant::now();
            let head = b"GET /v1/status HTTP/1.1\r\nhost: node\r\nx-slow: ";
            let _ = stream.write_all(head).await;
            loop {
                if stream.write_all(b"a").await.is_err() {
                    break;
                }
                if closed_within(&mut stream, Duration::from_millis(100)).await {
                    break;
                }
                assert!(
                    started.elapsed() < HEADER_TIMEOUT + SLACK,
                    "a slow header is still read"
                );
            }
        }));
    }
    for task in slow {
        task.await.expect("a slow client is closed");
    }
}

/// From one address, as many connections as the limit allows, then four more: those are answered
/// `503` at once. Once the first ones time out, the address is served again.
async fn over_the_limit(api: SocketAddr) {
    let mut held = Vec::new();
    for _ in 0..PER_IP {
        held.push(connect(CROWD, api, false).await);
    }
    for _ in 0..4 {
        let mut extra = connect(CROWD, api, false).await;
        assert_eq!(status_of(&mut extra, SLACK).await, Some(503));
    }
    for stream in &mut held {
        assert!(
            closed_within(stream, HEADER_TIMEOUT + SLACK).await,
            "an idle connection outlives the header timeout"
        );
    }
    let mut again = connect(CROWD, api, false).await;
    let request = b"GET /livez HTTP/1.1\r\nhost: node\r\nconnection: close\r\n\r\n";
    again.write_all(request).await.expect("send");
    assert_eq!(status_of(&mut again, SLACK).await, Some(200));
}

/// Headers over `max_header_bytes` get `431`, a body over `max_body_bytes` `413`.
async fn oversized(api: SocketAddr) {
    let mut stream = connect(OVERSIZED, api, false).await;
    let big = format!(
        "GET /v1/status HTTP/1.1\r\nhost: node\r\nx-big: {}\r\n\r\n",
        "a".repeat(20_000)
    );
    let _ = stream.write_all(big.as_bytes()).await;
    assert_eq!(status_of(&mut stream, SLACK).await, Some(431));

    let mut stream = connect(OVERSIZED, api, false).await;
    let head = "POST /v1/transactions HTTP/1.1\r\nhost: node\r\ncontent-type: application/json\r\n\
                content-length: 200000\r\n\r\n";
    let body = format!("{{\"transaction\": \"{}", "0".repeat(70_000));
    let _ = stream.write_all(head.as_bytes()).await;
    let _ = stream.write_all(body.as_bytes()).await;
    assert_eq!(status_of(&mut stream, SLACK).await, Some(413));
}

/// A body sent a byte every 100 ms is answered `408` after the request timeout.
async fn slow_body(api: SocketAddr) {
    let mut stream = connect(SLOW_BODY, api, false).await;
    let head = "POST /v1/transactions HTTP/1.1\r\nhost: node\r\ncontent-type: application/json\r\n\
                content-length: 1000\r\n\r\n";
    stream.write_all(head.as_bytes()).await.expect("send");
    let started = Instant::now();
    let code = loop {
        let _ = stream.write_all(b" ").await;
        if let Ok(code) = timeout(Duration::from_millis(100), status_of(&mut stream, SLACK)).await {
            break code;
        }
        assert!(
            started.elapsed() < REQUEST_TIMEOUT + SLACK,
            "a slow body is still read"
        );
    };
    assert_eq!(code, Some(408));
}

/// Malformed JSON, an unknown path, an unknown method and bytes that are no HTTP at all: each a
/// 4xx.
async fn malformed(api: SocketAddr) {
    let json = "POST /v1/transactions HTTP/1.1\r\nhost: node\r\ncontent-type: application/json\r\n\
                content-length: 5\r\nconnection: close\r\n\r\n{nope";
    let cases: [(&[u8], u16); 4] = [
        (json.as_bytes(), 400),
        (
            b"GET /v1/nowhere HTTP/1.1\r\nhost: node\r\nconnection: close\r\n\r\n",
            404,
        ),
        (
            b"BREW /v1/status HTTP/1.1\r\nhost: node\r\nconnection: close\r\n\r\n",
            405,
        ),
        (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n", 400),
    ];
    for (request, want) in cases {
        let mut stream = connect(MALFORMED, api, false).await;
        stream.write_all(request).await.expect("send");
        let got = status_of(&mut stream, SLACK).await;
        assert_eq!(got, Some(want), "{}", String::from_utf8_lossy(request));
    }
}

/// A client that pipelines requests for `/metrics` and reads none of the answers: the node closes
/// it after the send timeout (counted in `http_send_timeouts_total`).
async fn never_reads(api: SocketAddr) {
    let mut stream = connect(NEVER_READS, api, true).await;
    let request = b"GET /metrics HTTP/1.1\r\nhost: node\r\n\r\n".repeat(64);
    let sent = async {
        loop {
            if stream.write_all(&request).await.is_err() {
                return;
            }
        }
    };
    // The node stops reading once its answers back up; then it closes the connection.
    let _ = timeout(REQUEST_TIMEOUT + SLACK, sent).await;
    assert!(
        closed_within(&mut stream, SLACK).await,
        "a non-reading client is kept"
    );
}

/// A client of the commit stream that never reads, once the node counts it; the node must free
/// its slot while it is held (the caller checks `ledger_commit_stream_clients`).
async fn never_reads_its_stream(api: SocketAddr, metrics: &Metrics) -> TcpStream {
    let mut stream = connect(NEVER_READS, api, true).await;
    let request = b"GET /v1/commits/stream HTTP/1.1\r\nhost: node\r\n\r\n";
    stream.write_all(request).await.expect("send");
    eventually(SLACK, "the stream's client is counted", || {
        metrics.at_least("ledger_commit_stream_clients", 1)
    })
    .await;
    stream
}
