//! Calls to the daemon's RPC API, each with a deadline, retried with backoff on transient failures
//! only. `ipfs-api-backend-hyper` builds the requests (URL and query); they travel over our own
//! hyper client, which keeps connections alive (the crate's opens a new one for every request:
//! `pool_max_idle_per_host(0)`), and status codes and bodies are judged here, because the crate's
//! helpers drop the status and trust the body.

use std::{future::Future, sync::Arc, time::Duration};

use bytes::Bytes;
use comms::{BoxError, Error, Operation};
use futures::{FutureExt, StreamExt};
use hyper::{body::HttpBody, client::HttpConnector, header::HeaderValue, Body, Response};
use ipfs_api_backend_hyper::IpfsClient;
use ipfs_api_prelude::{request::ApiRequest, Backend};
use serde::{de::DeserializeOwned, Serialize};
use tokio::time::Instant;
use tracing::debug;

use crate::{
    config::RetryPolicy,
    metrics::{bump, IpfsMetrics, RetryCause},
};

/// How one attempt failed.
#[derive(Debug)]
pub(crate) enum Failure {
    /// Worth another attempt: the daemon may be restarting, the link flaky, the reply cut short.
    Transient(RetryCause, BoxError),
    /// The daemon refused the request, and would refuse it again.
    Refused(BoxError),
    /// A contract error that needs no retry (too large, CID mismatch).
    Permanent(Error),
}

impl Failure {
    fn transient(cause: RetryCause, source: impl Into<BoxError>) -> Failure {
        Failure::Transient(cause, source.into())
    }
}

/// The daemon's RPC API with deadlines and retries.
#[derive(Clone)]
pub(crate) struct Rpc {
    /// Builds requests.
    client: IpfsClient,
    /// Carries them: connections kept alive, no Nagle delay.
    http: hyper::Client<HttpConnector>,
    retry: RetryPolicy,
    metrics: Arc<IpfsMetrics>,
}

/// How long a call may take: `total` for all attempts, `attempt` for each.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Deadline {
    pub total: Duration,
    pub attempt: Duration,
}

impl Rpc {
    pub fn new(client: IpfsClient, retry: RetryPolicy, metrics: Arc<IpfsMetrics>) -> Rpc {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        Rpc {
            client,
            http: hyper::Client::builder().build(connector),
            retry,
            metrics,
        }
    }

    /// Runs `attempt` (given its own time budget) until it succeeds, fails permanently, or the retry
    /// schedule or `deadline` runs out. Never takes longer than `deadline.total`.
    pub async fn call<T, F, Fut>(
        &self,
        operation: Operation,
        deadline: Deadline,
        mut attempt: F,
    ) -> Result<T, Error>
    where
        F: FnMut(Duration) -> Fut,
        Fut: Future<Output = Result<T, Failure>>,
    {
        let started = Instant::now();
        let schedule = self.retry.schedule(Some(deadline.total));
        let attempts = backoff::future::retry_notify(
            schedule,
            || {
                bump(&self.metrics.requests);
                let budget = deadline
                    .total
                    .saturating_sub(started.elapsed())
                    .min(deadline.attempt);
                let attempt = attempt(budget);
                async move {
                    match tokio::time::timeout(budget, attempt).await {
                        Ok(Ok(value)) => Ok(value),
                        Ok(Err(failure @ Failure::Transient(..))) => {
                            Err(backoff::Error::transient(failure))
                        }
                        Ok(Err(failure)) => Err(backoff::Error::permanent(failure)),
                        Err(_) => Err(backoff::Error::transient(Failure::transient(
                            RetryCause::Timeout,
                            format!("no reply within {budget:?}"),
                        ))),
                    }
                }
            },
            |failure: Failure, wait| {
                if let Failure::Transient(cause, source) = &failure {
                    self.metrics.retried(*cause);
                    debug!(?operation, ?cause, %source, ?wait, "retrying");
                }
            },
        );
        let outcome = match tokio::time::timeout(deadline.total, attempts).await {
            Ok(outcome) => outcome.map_err(|failure| self.give_up(operation, deadline, failure)),
            Err(_) => Err(self.give_up(
                operation,
                deadline,
                Failure::transient(RetryCause::Timeout, "deadline"),
            )),
        };
        if let Err(error) = &outcome {
            bump(&self.metrics.failed_calls);
            debug!(?operation, %error, "call failed");
        }
        outcome
    }

    fn give_up(&self, operation: Operation, deadline: Deadline, failure: Failure) -> Error {
        match failure {
            Failure::Permanent(error) => error,
            Failure::Refused(source) => Error::Unavailable { operation, source },
            Failure::Transient(RetryCause::Timeout, _) => Error::Timeout {
                operation,
                after: deadline.total,
            },
            Failure::Transient(_, source) => Error::Unavailable { operation, source },
        }
    }

    /// One request with a JSON reply; `data`, if any, goes as the multipart file part kubo expects.
    pub async fn json<Req, Res>(&self, request: Req, data: Option<&Bytes>) -> Result<Res, Failure>
    where
        Req: ApiRequest,
        Res: DeserializeOwned,
    {
        let body = self.raw(request, parts(data)).await?;
        parse(&body)
    }

    /// One request with `files` as multipart file parts, whose reply is one JSON value per file
    /// (kubo's `block/put` of several blocks).
    pub async fn json_each<Req, Res>(
        &self,
        request: Req,
        files: &[Bytes],
    ) -> Result<Vec<Res>, Failure>
    where
        Req: ApiRequest,
        Res: DeserializeOwned,
    {
        let body = self.raw(request, files).await?;
        serde_json::Deserializer::from_slice(&body)
            .into_iter()
            .map(|value| value.map_err(|error| malformed(error, &body)))
            .collect()
    }

    /// One request whose reply body is ignored.
    pub async fn empty<Req: ApiRequest>(
        &self,
        request: Req,
        data: Option<&Bytes>,
    ) -> Result<(), Failure> {
        self.raw(request, parts(data)).await.map(drop)
    }

    async fn raw<Req: ApiRequest>(&self, request: Req, files: &[Bytes]) -> Result<Bytes, Failure> {
        let response = self.send(request, files).await?;
        let status = response.status().as_u16();
        let body = hyper::body::to_bytes(response.into_body())
            .await
            .map_err(hyper_failure)?;
        match status {
            200 => Ok(body),
            _ => Err(refusal(status, &body)),
        }
    }

    /// Sends `request`, with `files` as the multipart file parts kubo expects: one body of known
    /// length (the crate's form streams its parts as a chunked body).
    async fn send<Req: ApiRequest>(
        &self,
        request: Req,
        files: &[Bytes],
    ) -> Result<Response<Body>, Failure> {
        let mut request = self
            .client
            .build_base_request(request, None)
            .map_err(transport_failure)?;
        if !files.is_empty() {
            let (content_type, body) = multipart(files);
            request
                .headers_mut()
                .insert(hyper::header::CONTENT_TYPE, content_type);
            *request.body_mut() = Body::from(body);
        }
        self.http.request(request).await.map_err(hyper_failure)
    }

    /// The body of a streamed reply, refused once it exceeds `limit` bytes.
    pub async fn bytes<Req: ApiRequest>(
        &self,
        request: Req,
        limit: usize,
    ) -> Result<Bytes, Failure> {
        let response = self.send(request, &[]).await?;
        let status = response.status().as_u16();
        let mut reply = response.into_body();
        let mut body = Vec::new();
        while let Some(chunk) = reply.data().await {
            let chunk = chunk.map_err(hyper_failure)?;
            if body.len() + chunk.len() > limit {
                if status != 200 {
                    break; // An error message that long: its start says enough.
                }
                return Err(Failure::Permanent(Error::TooLarge {
                    kind: comms::SizeKind::Block,
                    size: body.len() + chunk.len(),
                    limit,
                }));
            }
            body.extend_from_slice(&chunk);
        }
        match status {
            200 => Ok(body.into()),
            _ => Err(refusal(status, &body)),
        }
    }

    /// A streamed reply, for `pubsub/sub`: the reply's body once the daemon has sent its headers,
    /// or the failure if it refuses.
    pub fn streamed<Req: ApiRequest>(
        &self,
        request: Req,
    ) -> Result<futures::future::BoxFuture<'static, Result<Body, Failure>>, Failure> {
        let request = self
            .client
            .build_base_request(request, None)
            .map_err(transport_failure)?;
        let reply = self.http.request(request);
        Ok(async move {
            let response = reply.await.map_err(hyper_failure)?;
            let status = response.status().as_u16();
            if status != 200 {
                let body = hyper::body::to_bytes(response.into_body())
                    .await
                    .map_err(hyper_failure)?;
                return Err(refusal(status, &body));
            }
            Ok(response.into_body())
        }
        .boxed())
    }
}

/// The chunks of a streamed reply's body.
pub(crate) fn chunks(body: Body) -> futures::stream::BoxStream<'static, Result<Bytes, Failure>> {
    futures::stream::unfold(body, |mut body| async move {
        let chunk = body.data().await?;
        Some((chunk.map_err(hyper_failure), body))
    })
    .boxed()
}

/// No file parts, or `data` as the one.
fn parts(data: Option<&Bytes>) -> &[Bytes] {
    data.map(std::slice::from_ref).unwrap_or_default()
}

fn parse<Res: DeserializeOwned>(body: &Bytes) -> Result<Res, Failure> {
    serde_json::from_slice(body).map_err(|error| malformed(error, body))
}

fn malformed(error: serde_json::Error, body: &[u8]) -> Failure {
    Failure::transient(
        RetryCause::Malformed,
        format!("{error} in {}", preview(body)),
    )
}

/// A multipart/form-data body holding each of `files` as one file part named `data`, with its
/// content type, and the body's content type. The boundary is one that no file contains.
fn multipart(files: &[Bytes]) -> (HeaderValue, Bytes) {
    let mut boundary = String::from("comms-ipfs-part-boundary");
    while files.iter().any(|data| {
        data.windows(boundary.len())
            .any(|w| w == boundary.as_bytes())
    }) {
        boundary.push('x');
    }
    let head = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"data\"; filename=\"data\"\r\n\
         Content-Type: application/octet-stream\r\n\r\n"
    );
    let mut body = Vec::with_capacity(files.iter().map(|f| f.len() + head.len() + 4).sum());
    for data in files {
        body.extend_from_slice(head.as_bytes());
        body.extend_from_slice(data);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    let content_type = HeaderValue::from_str(&format!("multipart/form-data; boundary={boundary}"))
        .expect("an ASCII boundary is a valid header value");
    (content_type, body.into())
}

/// A reply other than 200: the daemon's failure (retried) or its refusal (not retried).
fn refusal(status: u16, body: &[u8]) -> Failure {
    match status {
        code @ 500..=599 => daemon_failure(code, body),
        code @ 400..=499 => Failure::Refused(
            format!("daemon refused the request ({code}): {}", preview(body)).into(),
        ),
        code => Failure::transient(
            RetryCause::Malformed,
            format!("unexpected status {code}: {}", preview(body)),
        ),
    }
}

fn hyper_failure(error: hyper::Error) -> Failure {
    transport_failure(error.into())
}

/// A 5xx reply. kubo answers 500 to most failed commands, including ones that would pass if tried
/// again (a daemon still starting, a fetch that timed out on its side), so those are retried within
/// the deadline; the ones whose `Message` says the same request can never pass are not.
fn daemon_failure(code: u16, body: &[u8]) -> Failure {
    let message = daemon_message(body);
    if PERMANENT.iter().any(|known| message.contains(known)) {
        return Failure::Refused(format!("daemon refused the request ({code}): {message}").into());
    }
    let cause = if message.contains("timed out") || message.contains("deadline exceeded") {
        RetryCause::Timeout
    } else {
        RetryCause::ServerError
    };
    Failure::transient(cause, format!("daemon error ({code}): {message}"))
}

/// kubo's 500 messages that no retry changes: pubsub off, a block over its size limit (checked after
/// storing, so our own lower limit is checked before sending), and arguments it cannot use.
const PERMANENT: &[&str] = &[
    "pubsub feature not enabled",
    "produced block is over",
    "unrecognized multihash function",
    "unrecognized multicodec",
    "unknown multicodec",
    "invalid cid",
    "invalid path",
    "selected encoding not supported",
];

/// The `Message` of kubo's JSON error body (`{"Message", "Code", "Type"}`), or the body's start.
fn daemon_message(body: &[u8]) -> String {
    #[derive(serde::Deserialize)]
    struct ErrorReply {
        #[serde(rename = "Message")]
        message: String,
    }
    match serde_json::from_slice::<ErrorReply>(body) {
        Ok(reply) => reply.message,
        Err(_) => preview(body),
    }
}

/// Classifies what the HTTP client reports.
fn transport_failure(error: ipfs_api_backend_hyper::Error) -> Failure {
    use ipfs_api_backend_hyper::Error as E;
    use ipfs_api_prelude::Error as P;
    match error {
        E::Client(error) if error.is_connect() => Failure::transient(RetryCause::Connect, error),
        E::Client(error) => Failure::transient(RetryCause::Io, error),
        // How the crate's own helpers report a daemon's error (we judge statuses ourselves).
        E::Api(api) if api.code == 1 || api.code == 3 => {
            Failure::Refused(format!("daemon refused the request: {}", api.message).into())
        }
        E::Api(api) => daemon_failure(500, api.message.as_bytes()),
        E::IpfsClientError(P::Io(error)) => Failure::transient(RetryCause::Io, error),
        E::IpfsClientError(P::UnrecognizedApiError(body)) => daemon_failure(500, body.as_bytes()),
        E::IpfsClientError(error @ (P::Url(_) | P::EncodeUrl(_))) => Failure::Refused(error.into()),
        E::IpfsClientError(error) => Failure::transient(RetryCause::Malformed, error),
        E::Http(error) => Failure::Refused(error.into()),
    }
}

/// The start of a reply body, for error messages.
pub(crate) fn preview(body: &[u8]) -> String {
    const MAX: usize = 200;
    let text = String::from_utf8_lossy(&body[..body.len().min(MAX)]);
    text.trim().to_string()
}

/// `request` with the daemon's own `timeout=` parameter, so that the daemon gives up (and forgets
/// its bitswap want) when the client does.
#[derive(Serialize)]
pub(crate) struct Timed<Req> {
    #[serde(flatten)]
    pub request: Req,
    pub timeout: String,
}

impl<Req: ApiRequest> Timed<Req> {
    pub fn new(request: Req, budget: Duration) -> Timed<Req> {
        Timed {
            request,
            timeout: format!("{}ms", budget.as_millis().max(1)),
        }
    }
}

impl<Req: ApiRequest> ApiRequest for Timed<Req> {
    const PATH: &'static str = Req::PATH;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubos_permanent_errors_are_not_retried_and_its_others_are() {
        let refused = daemon_failure(
            500,
            br#"{"Message":"experimental pubsub feature not enabled, run daemon with --enable-pubsub-experiment to use","Code":0,"Type":"error"}"#,
        );
        assert!(matches!(refused, Failure::Refused(_)), "{refused:?}");
        let over = daemon_failure(500, br#"{"Message":"produced block is over 2MiB: big blocks can't be exchanged with other peers","Code":0,"Type":"error"}"#);
        assert!(matches!(over, Failure::Refused(_)), "{over:?}");
        let timeout = daemon_failure(
            500,
            br#"{"Message":"context deadline exceeded","Code":0,"Type":"error"}"#,
        );
        assert!(
            matches!(timeout, Failure::Transient(RetryCause::Timeout, _)),
            "{timeout:?}"
        );
        let other = daemon_failure(502, b"<html>bad gateway</html>");
        assert!(
            matches!(other, Failure::Transient(RetryCause::ServerError, _)),
            "{other:?}"
        );
    }

    #[test]
    fn a_multipart_body_frames_the_data_with_a_boundary_it_does_not_contain() {
        let data = Bytes::from_static(b"\x00\x01--comms-ipfs-part-boundary--\r\n\xff");
        let (content_type, body) = multipart(std::slice::from_ref(&data));
        let content_type = content_type.to_str().expect("ASCII");
        let boundary = content_type
            .strip_prefix("multipart/form-data; boundary=")
            .expect("a multipart content type");
        assert_eq!(boundary, "comms-ipfs-part-boundaryx");
        let head = format!("--{boundary}\r\n");
        let tail = format!("\r\n--{boundary}--\r\n");
        assert!(body.starts_with(head.as_bytes()) && body.ends_with(tail.as_bytes()));
        let start = body
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .expect("part headers")
            + 4;
        assert_eq!(&body[start..body.len() - tail.len()], &data[..]);
        let headers = String::from_utf8_lossy(&body[..start]);
        assert!(headers.contains("name=\"data\"") && headers.contains("application/octet-stream"));
    }

    #[test]
    fn a_multipart_body_of_several_files_holds_each_in_its_own_part_in_order() {
        let files = [&b"first"[..], b"", b"third\r\n"].map(Bytes::from_static);
        let (content_type, body) = multipart(&files);
        let boundary = content_type
            .to_str()
            .expect("ASCII")
            .split("boundary=")
            .nth(1);
        let delimiter = format!("--{}", boundary.expect("a boundary"));
        let body = String::from_utf8(body.to_vec()).expect("ASCII files");
        let parts: Vec<&str> = body.split(&delimiter).collect();
        // Before the first delimiter nothing; after the last, its closing "--".
        assert_eq!(parts.len(), files.len() + 2);
        assert_eq!((parts[0], parts[files.len() + 1]), ("", "--\r\n"));
        for (part, file) in parts[1..=files.len()].iter().zip(&files) {
            let (_, content) = part.split_once("\r\n\r\n").expect("part headers");
            assert_eq!(content.strip_suffix("\r\n"), std::str::from_utf8(file).ok());
        }
    }
}
