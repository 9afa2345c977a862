//! A small fault-injecting HTTP proxy between the backend and a real daemon: it forwards each request
//! (forcing `Connection: close`, so that a response ends where the connection does) and, per the
//! rules set, delays, resets, answers 503, truncates, garbles or alters the daemon's response.
//! `pubsub/sub` streams are piped through untouched, unless a rule asks to reset them.

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};

/// What to do to one response.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Wait this long, then forward.
    Delay(Duration),
    /// Close the client's connection without a reply.
    Reset,
    /// Answer with this status (a 5xx or 4xx) without asking the daemon.
    Status(u16),
    /// Forward the head and half the body, then close.
    Truncate,
    /// Answer 200 with a body that is not what the call expects.
    Garbage,
    /// Forward with one byte of the body changed.
    Alter,
}

/// A fault for requests whose path contains `path`, for the next `times` of them (None: always).
#[derive(Clone, Debug)]
struct Rule {
    path: &'static str,
    fault: Fault,
    times: Option<usize>,
}

/// The proxy; it runs until the test's runtime ends.
#[derive(Clone)]
pub struct FaultProxy {
    address: SocketAddr,
    rules: Arc<Mutex<Vec<Rule>>>,
}

impl FaultProxy {
    /// Starts a proxy in front of the daemon whose API is at `upstream` (`http://host:port`).
    pub async fn start(upstream: &str) -> FaultProxy {
        let upstream: SocketAddr = upstream
            .trim_start_matches("http://")
            .parse()
            .expect("host:port");
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let proxy = FaultProxy {
            address: listener.local_addr().expect("address"),
            rules: Arc::default(),
        };
        let rules = proxy.rules.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                tokio::spawn(serve(client, upstream, rules.clone()));
            }
        });
        proxy
    }

    /// The URL to give the backend.
    pub fn api(&self) -> String {
        format!("http://{}", self.address)
    }

    /// Applies `fault` to the next `times` requests whose path contains `path`.
    pub fn inject(&self, path: &'static str, fault: Fault, times: usize) {
        self.push(Rule {
            path,
            fault,
            times: Some(times),
        });
    }

    /// Applies `fault` to every request whose path contains `path`, until [`FaultProxy::clear`].
    pub fn always(&self, path: &'static str, fault: Fault) {
        self.push(Rule {
            path,
            fault,
            times: None,
        });
    }

    /// Removes every rule.
    pub fn clear(&self) {
        self.rules.lock().expect("rules").clear();
    }

    fn push(&self, rule: Rule) {
        self.rules.lock().expect("rules").push(rule);
    }
}

/// Takes the fault for a request to `path`, if a rule matches.
fn take_fault(rules: &Mutex<Vec<Rule>>, path: &str) -> Option<Fault> {
    let mut rules = rules.lock().expect("rules");
    let index = rules.iter().position(|rule| path.contains(rule.path))?;
    let fault = rules[index].fault;
    if let Some(times) = &mut rules[index].times {
        *times -= 1;
        if *times == 0 {
            rules.remove(index);
        }
    }
    Some(fault)
}

async fn serve(mut client: TcpStream, upstream: SocketAddr, rules: Arc<Mutex<Vec<Rule>>>) {
    let Some((head, rest)) = read_head(&mut client).await else {
        return;
    };
    let path = head
        .split_whitespace()
        .nth(1)
        .unwrap_or_default()
        .to_owned();
    let fault = take_fault(&rules, &path);
    let Ok(mut daemon) = TcpStream::connect(upstream).await else {
        return;
    };
    if path.contains("/pubsub/sub") {
        if fault == Some(Fault::Reset) {
            return reset(client);
        }
        let _ = daemon.write_all(head.as_bytes()).await;
        let _ = daemon.write_all(&rest).await;
        let _ = tokio::io::copy_bidirectional(&mut client, &mut daemon).await;
        return;
    }
    match fault {
        Some(Fault::Reset) => return reset(client),
        Some(Fault::Status(code)) => {
            let body = format!("injected status {code}");
            let reply = format!(
                "HTTP/1.1 {code} Injected\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = client.write_all(reply.as_bytes()).await;
            return;
        }
        Some(Fault::Delay(wait)) => tokio::time::sleep(wait).await,
        _ => {}
    }
    let (mut client_read, mut client_write) = client.split();
    let forward = async {
        send_request(&mut daemon, &head, &rest).await?;
        // The request body (if any) follows; the response ends when the daemon closes.
        let (mut daemon_read, mut daemon_write) = daemon.split();
        let upload = tokio::io::copy(&mut client_read, &mut daemon_write);
        let mut response = Vec::new();
        let download = daemon_read.read_to_end(&mut response);
        tokio::pin!(upload);
        tokio::select! {
            result = download => result?,
            _ = &mut upload => daemon_read.read_to_end(&mut response).await?,
        };
        let response = apply(fault, response);
        client_write.write_all(&response).await
    };
    let _ = forward.await;
}

async fn send_request(daemon: &mut TcpStream, head: &str, rest: &[u8]) -> std::io::Result<()> {
    let head: String = head
        .split("\r\n")
        .filter(|line| !line.to_ascii_lowercase().starts_with("connection:"))
        .filter(|line| !line.is_empty())
        .map(|line| format!("{line}\r\n"))
        .collect();
    daemon
        .write_all(format!("{head}Connection: close\r\n\r\n").as_bytes())
        .await?;
    daemon.write_all(rest).await
}

/// Changes a complete response as `fault` says.
fn apply(fault: Option<Fault>, mut response: Vec<u8>) -> Vec<u8> {
    let body_start = find(&response, b"\r\n\r\n").map_or(response.len(), |at| at + 4);
    match fault {
        Some(Fault::Truncate) => {
            response.truncate(body_start + (response.len() - body_start) / 2);
            response
        }
        Some(Fault::Garbage) => {
            let body = "{\"Key\": 12, \"garbage";
            format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            )
            .into_bytes()
        }
        Some(Fault::Alter) => {
            // The first body byte after a chunk-size line, or the first body byte.
            let chunked = String::from_utf8_lossy(&response[..body_start])
                .to_ascii_lowercase()
                .contains("transfer-encoding: chunked");
            let at = if chunked {
                find(&response[body_start..], b"\r\n").map(|line| body_start + line + 2)
            } else {
                Some(body_start)
            };
            if let Some(byte) = at.and_then(|at| response.get_mut(at)) {
                *byte ^= 0x01;
            }
            response
        }
        _ => response,
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

/// Reads up to the end of the request head; returns it and whatever body bytes came along.
async fn read_head(client: &mut TcpStream) -> Option<(String, Vec<u8>)> {
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let read = client.read(&mut chunk).await.ok()?;
        if read == 0 {
            return None;
        }
        buffer.extend_from_slice(&chunk[..read]);
        if let Some(end) = find(&buffer, b"\r\n\r\n") {
            let rest = buffer.split_off(end + 4);
            return Some((String::from_utf8_lossy(&buffer).into_owned(), rest));
        }
    }
}

/// Closes with a TCP reset rather than an orderly close.
fn reset(client: TcpStream) {
    let _ = client.set_zero_linger();
    drop(client);
}
