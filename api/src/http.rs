//! The HTTP server under the API, bounded against clients that are slow, many or hostile (after
//! the slowloris defences of Go's `net/http` and hyper): every bound is a field of `[http]`.
//!
//! - **Connections**: at most `max_connections` at once, and `max_connections_per_ip` from one
//!   address, so that one host cannot take every slot. A connection beyond either is answered
//!   `503 too_many_connections` at once and closed, without reading its request.
//! - **Headers**: the request line and headers must arrive within `header_timeout` (an idle
//!   keep-alive connection is closed after the same time) and fit in `max_header_bytes` (else hyper
//!   answers `431` and closes).
//! - **Bodies and handlers**: a request must be read and answered within `request_timeout` (else
//!   `408 request_timeout`), the commit stream excepted; a body over `max_body_bytes` is refused
//!   with `413`.
//! - **Responses**: a client that reads nothing of its response (or of its commit stream) for
//!   `send_timeout` is disconnected.
//!
//! At shutdown the listener closes, in-flight requests finish, the commit streams end with a
//! `close` event, and connections still open after [`SHUTDOWN_GRACE`] are dropped.

use std::{
    collections::HashMap,
    future::Future,
    io,
    net::{IpAddr, SocketAddr},
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll},
    time::Duration,
};

use comms::config::{within, ConfigError};
use hyper_util::{
    rt::{TokioIo, TokioTimer},
    server::graceful::GracefulShutdown,
    service::TowerToHyperService,
};
use prometheus_client::metrics::gauge::Gauge;
use serde::{Deserialize, Serialize};
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf},
    net::{TcpListener, TcpSocket, TcpStream},
    time::{Instant, Sleep},
};
use tracing::{debug, info, warn};

/// How long connections may take to finish at shutdown before they are dropped.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// How long a refused connection is given to take its `503`.
const REFUSAL_WITHIN: Duration = Duration::from_secs(1);
/// After an accept error (out of file descriptors), how long before accepting again.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// The HTTP server's bounds (`[http]` in the config file).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// Connections open at once, at most; more are answered `503` and closed.
    pub max_connections: usize,
    /// Connections open at once from one IP address, at most.
    pub max_connections_per_ip: usize,
    /// The request line and headers, at most, in bytes; more is answered `431`.
    pub max_header_bytes: usize,
    /// A request body, at most, in bytes; more is answered `413`.
    pub max_body_bytes: usize,
    /// How long a client has to send a request's line and headers, and how long a keep-alive
    /// connection may sit idle.
    #[serde(with = "humantime_serde")]
    pub header_timeout: Duration,
    /// How long a request may take to be read and answered (`408` after it); the commit stream is
    /// exempt.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// How long a response may wait on a client that reads none of it before the connection is
    /// closed (the commit stream included).
    #[serde(with = "humantime_serde")]
    pub send_timeout: Duration,
    /// Each connection's socket send buffer, in bytes (the kernel doubles it). Fixed, rather than
    /// grown by the kernel up to megabytes, so that a client that reads nothing holds little
    /// memory and meets `send_timeout` soon.
    pub send_buffer_bytes: u32,
}

impl Default for HttpConfig {
    fn default() -> HttpConfig {
        HttpConfig {
            max_connections: 1024,
            max_connections_per_ip: 128,
            max_header_bytes: 16 << 10,
            max_body_bytes: 64 << 10,
            header_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            send_timeout: Duration::from_secs(30),
            send_buffer_bytes: 64 << 10,
        }
    }
}

impl HttpConfig {
    /// Each bound within reason, named as `http.<field>`.
    pub fn check(&self) -> Result<(), ConfigError> {
        let timeouts = (Duration::from_millis(100), Duration::from_secs(3600));
        within("max_connections", self.max_connections, 1, 1 << 20)
            .and_then(|()| {
                within(
                    "max_connections_per_ip",
                    self.max_connections_per_ip,
                    1,
                    self.max_connections,
                )
            })
            .and_then(|()| {
                within(
                    "max_header_bytes",
                    self.max_header_bytes,
                    1 << 10,
                    256 << 10,
                )
            })
            .and_then(|()| within("max_body_bytes", self.max_body_bytes, 1 << 10, 64 << 20))
            .and_then(|()| {
                within(
                    "header_timeout",
                    self.header_timeout,
                    timeouts.0,
                    timeouts.1,
                )
            })
            .and_then(|()| {
                within(
                    "request_timeout",
                    self.request_timeout,
                    timeouts.0,
                    timeouts.1,
                )
            })
            .and_then(|()| within("send_timeout", self.send_timeout, timeouts.0, timeouts.1))
            .and_then(|()| {
                within(
                    "send_buffer_bytes",
                    self.send_buffer_bytes,
                    4 << 10,
                    16 << 20,
                )
            })
            .map_err(|error| error.within_table("http"))
    }
}

comms::counters! {
    /// What the server refused or cut off, since start (`http_` in `/metrics`).
    HttpMetrics,
    /// [`HttpMetrics`] at one moment.
    HttpSnapshot {
        /// Connections answered `503` for being over `max_connections` or `max_connections_per_ip`.
        connections_refused,
        /// Connections closed for not sending a request's headers within `header_timeout`.
        header_timeouts,
        /// Requests answered `431`: headers over `max_header_bytes`.
        oversized_headers,
        /// Requests answered `408`: not read and answered within `request_timeout`.
        request_timeouts,
        /// Connections closed because the client read nothing of its response for `send_timeout`.
        send_timeouts,
        /// Connections that ended on another error (a malformed request, a reset).
        connection_errors,
        /// Errors accepting a connection (out of file descriptors).
        accept_errors,
    }
}

/// The server's counters and its gauge of open connections.
#[derive(Debug, Default)]
pub struct HttpStats {
    pub counters: HttpMetrics,
    pub open: Gauge,
}

/// A listener on `address` whose connections have `config`'s send buffer (on Linux an accepted
/// socket takes its buffer sizes from its listener).
pub fn listen(address: SocketAddr, config: &HttpConfig) -> io::Result<TcpListener> {
    let socket = match address {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket.set_send_buffer_size(config.send_buffer_bytes)?;
    socket.bind(address)?;
    socket.listen(1024)
}

/// Serves `router` on `listener` within `config`'s bounds until `stop` resolves, then shuts down
/// as the module says; `closing` runs once the listener is closed (it ends the commit streams).
pub async fn serve(
    listener: TcpListener,
    router: axum::Router,
    config: &HttpConfig,
    stats: Arc<HttpStats>,
    stop: impl Future<Output = ()>,
    closing: impl FnOnce(),
) {
    let admission = Arc::new(Admission::new(config, stats.clone()));
    let mut http = hyper1::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(config.header_timeout)
        .max_header_size(config.max_header_bytes);
    let graceful = GracefulShutdown::new();
    tokio::pin!(stop);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    comms::bump(&stats.counters.accept_errors);
                    warn!(%error, "accepting a connection failed");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
            () = &mut stop => break,
        };
        let Some(ticket) = admission.admit(peer.ip()) else {
            comms::bump(&stats.counters.connections_refused);
            info!(%peer, "connection refused: too many connections");
            tokio::spawn(refuse(stream));
            continue;
        };
        let _ = stream.set_nodelay(true);
        let io = TokioIo::new(SendDeadline::new(stream, config.send_timeout));
        let connection =
            graceful.watch(http.serve_connection(io, TowerToHyperService::new(router.clone())));
        let stats = stats.clone();
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                classify(&stats.counters, peer, &error);
            }
            drop(ticket);
        });
    }
    drop(listener);
    closing();
    tokio::select! {
        () = graceful.shutdown() => debug!("every connection closed"),
        () = tokio::time::sleep(SHUTDOWN_GRACE) => {
            warn!(grace = ?SHUTDOWN_GRACE, open = stats.open.get(), "connections still open at shutdown are dropped");
        }
    }
}

/// Counts and logs why a connection ended in error.
fn classify(counters: &HttpMetrics, peer: SocketAddr, error: &hyper1::Error) {
    let timed_out = std::error::Error::source(error)
        .and_then(|source| source.downcast_ref::<io::Error>())
        .is_some_and(|io| io.kind() == io::ErrorKind::TimedOut);
    let (counter, what) = if timed_out {
        (
            &counters.send_timeouts,
            "the client read nothing of its response",
        )
    } else if error.is_timeout() {
        (
            &counters.header_timeouts,
            "the client did not send its headers in time",
        )
    } else if error.is_parse_too_large() {
        (
            &counters.oversized_headers,
            "the request's headers were too large",
        )
    } else {
        (&counters.connection_errors, "the connection failed")
    };
    comms::bump(counter);
    info!(%peer, %error, "connection closed: {what}");
}

/// Answers a connection over the limits with a `503` and closes it, giving it
/// [`REFUSAL_WITHIN`] and then dropping it, whatever it does.
async fn refuse(mut stream: TcpStream) {
    const BODY: &str = "{\"error\":\"too_many_connections\",\"message\":\"this node serves as many connections as it may: retry later\"}";
    let reply = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: {}\r\nretry-after: 1\r\nconnection: close\r\n\r\n{BODY}",
        BODY.len()
    );
    let answer = async {
        stream.write_all(reply.as_bytes()).await?;
        stream.shutdown().await?;
        // Reading what it sent before closing spares it a reset that could hide the reply.
        let mut sink = [0u8; 4096];
        while stream.read(&mut sink).await? > 0 {}
        io::Result::Ok(())
    };
    let _ = tokio::time::timeout(REFUSAL_WITHIN, answer).await;
}

/// Counts connections, in all and per address, against the limits.
struct Admission {
    max: usize,
    max_per_ip: usize,
    per_ip: Mutex<HashMap<IpAddr, usize>>,
    stats: Arc<HttpStats>,
}

/// One admitted connection; its slot is freed when it is dropped.
struct Ticket {
    admission: Arc<Admission>,
    ip: IpAddr,
}

impl Admission {
    fn new(config: &HttpConfig, stats: Arc<HttpStats>) -> Admission {
        Admission {
            max: config.max_connections,
            max_per_ip: config.max_connections_per_ip,
            per_ip: Mutex::new(HashMap::new()),
            stats,
        }
    }

    /// A slot for a connection from `ip`, if both limits allow one.
    fn admit(self: &Arc<Self>, ip: IpAddr) -> Option<Ticket> {
        let mut per_ip = crate::api::lock(&self.per_ip);
        let total: usize = per_ip.values().sum();
        let from_ip = per_ip.entry(ip).or_default();
        if total >= self.max || *from_ip >= self.max_per_ip {
            return None;
        }
        *from_ip += 1;
        self.stats.open.inc();
        Some(Ticket {
            admission: self.clone(),
            ip,
        })
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut per_ip = crate::api::lock(&self.admission.per_ip);
        if let Some(count) = per_ip.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                per_ip.remove(&self.ip);
            }
        }
        self.admission.stats.open.dec();
    }
}

/// A connection whose writes fail with `TimedOut` once they have made no progress for its
/// `timeout`: a client that stops reading cannot hold a connection, and the task serving it,
/// for ever.
struct SendDeadline {
    stream: TcpStream,
    timeout: Duration,
    /// Set while a write waits on the client; fires `timeout` after the last progress.
    stalled: Option<Pin<Box<Sleep>>>,
}

impl SendDeadline {
    fn new(stream: TcpStream, timeout: Duration) -> SendDeadline {
        SendDeadline {
            stream,
            timeout,
            stalled: None,
        }
    }

    /// What a write that returned `Pending` turns into: still pending (the timer will wake the
    /// task), or `TimedOut` once the timer has fired.
    fn pending<T>(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<T>> {
        let timeout = self.timeout;
        let stalled = self
            .stalled
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(Instant::now() + timeout)));
        match stalled.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("the client read nothing for {timeout:?}"),
            ))),
            Poll::Pending => Poll::Pending,
        }
    }

    /// A write's result: progress clears the timer, waiting starts or checks it.
    fn progress<T>(
        &mut self,
        cx: &mut Context<'_>,
        polled: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        match polled {
            Poll::Pending => self.pending(cx),
            ready => {
                self.stalled = None;
                ready
            }
        }
    }
}

impl AsyncRead for SendDeadline {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for SendDeadline {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.stream).poll_write(cx, buf);
        self.progress(cx, polled)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.stream).poll_write_vectored(cx, bufs);
        self.progress(cx, polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let polled = Pin::new(&mut self.stream).poll_flush(cx);
        self.progress(cx, polled)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_pass_and_a_bad_bound_is_named() {
        HttpConfig::default()
            .check()
            .expect("the defaults are valid");
        let config = HttpConfig {
            max_connections_per_ip: 2048,
            ..HttpConfig::default()
        };
        let error = config.check().expect_err("more per address than in all");
        assert_eq!(error.field, "http.max_connections_per_ip");
        let config = HttpConfig {
            send_timeout: Duration::ZERO,
            ..HttpConfig::default()
        };
        assert_eq!(config.check().expect_err("zero").field, "http.send_timeout");
    }

    #[test]
    fn admission_counts_in_all_and_per_address_and_frees_on_drop() {
        let config = HttpConfig {
            max_connections: 3,
            max_connections_per_ip: 2,
            ..HttpConfig::default()
        };
        let stats = Arc::new(HttpStats::default());
        let admission = Arc::new(Admission::new(&config, stats.clone()));
        let (a, b) = (IpAddr::from([127, 0, 0, 2]), IpAddr::from([127, 0, 0, 3]));
        let first = admission.admit(a).expect("first");
        let _second = admission.admit(a).expect("second");
        assert!(admission.admit(a).is_none(), "a third from one address");
        let _other = admission.admit(b).expect("another address");
        assert!(admission.admit(b).is_none(), "over the total");
        assert_eq!(stats.open.get(), 3);
        drop(first);
        assert_eq!(stats.open.get(), 2);
        let _again = admission.admit(a).expect("a slot was freed");
    }
}
