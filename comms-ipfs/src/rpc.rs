//! Calls to the daemon's RPC API, each with a deadline, retried with backoff on transient failures
//! only. `ipfs-api-backend-hyper` builds the requests and carries them; status codes and bodies are
//! judged here, because its own helpers drop the status and trust the body.

use std::{future::Future, io::Cursor, sync::Arc, time::Duration};

use bytes::Bytes;
use comms::{BoxError, Error, Operation};
use futures::{StreamExt, TryStreamExt};
use ipfs_api_backend_hyper::{Form, IpfsClient};
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
    client: IpfsClient,
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
        Rpc {
            client,
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
        let body = self.raw(request, data).await?;
        serde_json::from_slice(&body).map_err(|error| {
            Failure::transient(
                RetryCause::Malformed,
                format!("{error} in {}", preview(&body)),
            )
        })
    }

    /// One request whose reply body is ignored.
    pub async fn empty<Req: ApiRequest>(
        &self,
        request: Req,
        data: Option<&Bytes>,
    ) -> Result<(), Failure> {
        self.raw(request, data).await.map(drop)
    }

    async fn raw<Req: ApiRequest>(
        &self,
        request: Req,
        data: Option<&Bytes>,
    ) -> Result<Bytes, Failure> {
        let form = data.map(|data| {
            let mut form = Form::default();
            form.add_reader("data", Cursor::new(data.clone()));
            form
        });
        let (status, body) = self
            .client
            .request_raw(request, form)
            .await
            .map_err(transport_failure)?;
        match status.as_u16() {
            200 => Ok(body),
            code @ 500..=599 => Err(daemon_failure(code, &body)),
            code @ 400..=499 => Err(Failure::Refused(
                format!("daemon refused the request ({code}): {}", preview(&body)).into(),
            )),
            code => Err(Failure::transient(
                RetryCause::Malformed,
                format!("unexpected status {code}: {}", preview(&body)),
            )),
        }
    }

    /// The body of a streamed reply, refused once it exceeds `limit` bytes.
    pub async fn bytes<Req: ApiRequest>(
        &self,
        request: Req,
        limit: usize,
    ) -> Result<Bytes, Failure> {
        let request = self
            .client
            .build_base_request(request, None)
            .map_err(transport_failure)?;
        let mut chunks = self.client.request_stream_bytes(request);
        let mut body = Vec::new();
        while let Some(chunk) = chunks.try_next().await.map_err(transport_failure)? {
            if body.len() + chunk.len() > limit {
                return Err(Failure::Permanent(Error::TooLarge {
                    kind: comms::SizeKind::Block,
                    size: body.len() + chunk.len(),
                    limit,
                }));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body.into())
    }

    /// A streamed reply, for `pubsub/sub`.
    pub fn stream<Req: ApiRequest>(
        &self,
        request: Req,
    ) -> Result<futures::stream::BoxStream<'static, Result<Bytes, Failure>>, Failure> {
        let request = self
            .client
            .build_base_request(request, None)
            .map_err(transport_failure)?;
        Ok(self
            .client
            .request_stream_bytes(request)
            .map_err(transport_failure)
            .boxed())
    }
}

/// A 5xx reply: kubo answers 500 to most failed commands, including ones that pass (a daemon still
/// starting, a fetch that timed out on its side), so all of them are retried within the deadline.
fn daemon_failure(code: u16, body: &[u8]) -> Failure {
    let message = preview(body);
    let cause = if message.contains("timed out") || message.contains("deadline exceeded") {
        RetryCause::Timeout
    } else {
        RetryCause::ServerError
    };
    Failure::transient(cause, format!("daemon error ({code}): {message}"))
}

/// Classifies what the HTTP client reports.
fn transport_failure(error: ipfs_api_backend_hyper::Error) -> Failure {
    use ipfs_api_backend_hyper::Error as E;
    use ipfs_api_prelude::Error as P;
    match error {
        E::Client(error) if error.is_connect() => Failure::transient(RetryCause::Connect, error),
        E::Client(error) => Failure::transient(RetryCause::Io, error),
        // A streamed request answered with an error status (the client keeps only the body).
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
