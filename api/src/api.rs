//! The node's HTTP API (JSON under `/v1`) and `/metrics` (Prometheus text format).
//!
//! Every refusal is a JSON body `{"error": kind, "message": text}` with a 4xx or 5xx status and an
//! info-level log line; no input can panic a handler.

use std::{
    collections::{HashMap, VecDeque},
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{
    extract::{rejection::JsonRejection, DefaultBodyLimit, Path, Query, Request, State},
    http::{header, StatusCode},
    middleware::Next,
    response::{IntoResponse, Response},
    routing::{get, post},
    Json, Router,
};
use comms::{Cid, Communication, Topic};
use ledger::{codec, Commit, NodeHandle, PublicKey, SignedTransaction, SubmitError};
use prometheus_client::{metrics::histogram::Histogram, registry::Registry};
use serde::Deserialize;
use tokio::{sync::broadcast::error::RecvError, time::Instant};
use tracing::{info, warn};

use crate::{
    health,
    http::{HttpConfig, HttpStats},
    metered::CommsMetrics,
    scrape::{self, StatusCollector},
    stream::Streams,
    wire::{
        AccountReply, BlockReply, CommitView, CommitsReply, ErrorReply, Health, Liveness,
        PeersReply, ProofView, StatusReply, SubmitRequest, TransactionReply,
    },
};

/// Recent commits kept for `GET /v1/commits`.
const RECENT_COMMITS: usize = 256;
/// Submissions whose commit latency is being timed, at most: beyond, the oldest is forgotten.
const TIMED_SUBMISSIONS: usize = 100_000;
/// How long a submission is timed: one that has not committed by then (it was refused at
/// execution, or its commit was missed while the API fell behind) is forgotten.
const TIMED_FOR: Duration = Duration::from_secs(600);
/// The commit stream's route: exempt from the request timeout.
const COMMIT_STREAM: &str = "/v1/commits/stream";

/// Registers backend-specific metrics (for IPFS: the daemon's errors and retries), once.
pub type ExtraMetrics = Box<dyn FnOnce(&mut Registry) + Send>;

/// What the handlers share.
pub struct Api {
    node: NodeHandle,
    comms: Arc<dyn Communication>,
    topic: Topic,
    chain: Cid,
    chain_id: String,
    validator: Option<u32>,
    backend: &'static str,
    ready_lag_rounds: u64,
    recent: Mutex<VecDeque<Arc<Commit>>>,
    submitted: Mutex<Timings>,
    commit_latency: Histogram,
    /// `/metrics`, built once; the status the last scrape read, for its collector.
    registry: Registry,
    latest_status: Arc<Mutex<Option<ledger::Status>>>,
    streams: Arc<Streams>,
}

/// What the API needs to know about the node it serves.
pub struct ApiParts {
    pub node: NodeHandle,
    pub comms: Arc<dyn Communication>,
    pub genesis: ledger::Genesis,
    pub validator: Option<u32>,
    pub backend: &'static str,
    /// How far behind the highest round seen the node may be and still be ready.
    pub ready_lag_rounds: u64,
    pub comms_metrics: Arc<CommsMetrics>,
    pub extra: ExtraMetrics,
}

impl Api {
    /// The API state, and a task that follows the node's commits (recent commits, latencies).
    pub async fn start(parts: ApiParts) -> anyhow::Result<Arc<Api>> {
        let chain = parts.genesis.encode().1;
        // 10 ms to about 5.5 min, doubling.
        let buckets = prometheus_client::metrics::histogram::exponential_buckets(0.01, 2.0, 16);
        let commit_latency = Histogram::new(buckets);
        let streams = Arc::<Streams>::default();
        let (collector, latest_status) = StatusCollector::new(streams.clone());
        let (comms_metrics, extra) = (parts.comms_metrics, parts.extra);
        let registry = scrape::registry(collector, commit_latency.clone(), |registry| {
            comms_metrics.register(registry);
            extra(registry);
        });
        let api = Arc::new(Api {
            node: parts.node,
            comms: parts.comms,
            topic: ledger::node::blocks_topic(&chain),
            chain,
            chain_id: parts.genesis.chain_id,
            validator: parts.validator,
            backend: parts.backend,
            ready_lag_rounds: parts.ready_lag_rounds,
            recent: Mutex::new(VecDeque::new()),
            submitted: Mutex::new(Timings::default()),
            commit_latency,
            registry,
            latest_status,
            streams,
        });
        let mut commits = api.node.commits().await?;
        let follower = Arc::downgrade(&api);
        tokio::spawn(async move {
            loop {
                let commit = match commits.recv().await {
                    Ok(commit) => commit,
                    Err(RecvError::Lagged(missed)) => {
                        warn!(missed, "the API fell behind the commits");
                        continue;
                    }
                    Err(RecvError::Closed) => return,
                };
                let Some(api) = follower.upgrade() else {
                    return;
                };
                api.committed(commit);
            }
        });
        Ok(api)
    }

    /// Ends every commit stream with a `close` event (`stopping`): the server is shutting down.
    pub fn close_streams(&self) {
        self.streams.stop();
    }

    fn committed(&self, commit: Arc<Commit>) {
        {
            let mut submitted = lock(&self.submitted);
            for (id, _) in &commit.transactions {
                if let Some(at) = submitted.take(id) {
                    self.commit_latency.observe(at.elapsed().as_secs_f64());
                }
            }
        }
        let mut recent = lock(&self.recent);
        if recent.len() == RECENT_COMMITS {
            recent.pop_front();
        }
        recent.push_back(commit);
    }
}

/// Submissions being timed until they commit, bounded in number and in age.
#[derive(Default)]
struct Timings {
    started: HashMap<Cid, Instant>,
    /// Every entry of `started`, oldest first, and entries taken since (dropped when they reach the
    /// front): never more than `TIMED_SUBMISSIONS`.
    order: VecDeque<(Instant, Cid)>,
}

impl Timings {
    /// Times `id` from `now`, unless it is timed already; forgets the entries too old or too many.
    fn start(&mut self, id: Cid, now: Instant) {
        while let Some(&(at, oldest)) = self.order.front() {
            let full = self.order.len() >= TIMED_SUBMISSIONS;
            if !full && now.duration_since(at) < TIMED_FOR {
                break;
            }
            self.order.pop_front();
            if self.started.get(&oldest) == Some(&at) {
                self.started.remove(&oldest);
            }
        }
        if let std::collections::hash_map::Entry::Vacant(entry) = self.started.entry(id) {
            entry.insert(now);
            self.order.push_back((now, id));
        }
    }

    /// When `id` was submitted, if it is being timed; it no longer is.
    fn take(&mut self, id: &Cid) -> Option<Instant> {
        self.started.remove(id)
    }
}

/// A poisoned lock still holds consistent data here (every critical section is one update).
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The routes, with `http`'s body limit and request timeout (counted in `stats`).
pub fn router(api: Arc<Api>, http: &HttpConfig, stats: Arc<HttpStats>) -> Router {
    let limit = http.request_timeout;
    Router::new()
        .route("/v1/status", get(status))
        .route("/v1/transactions", post(submit))
        .route("/v1/transactions/{id}", get(transaction))
        .route("/v1/accounts/{key}", get(account))
        .route("/v1/blocks/{cid}", get(block))
        .route("/v1/commits", get(commits))
        .route(COMMIT_STREAM, get(commit_stream))
        .route("/v1/peers", get(peers))
        .route("/metrics", get(metrics))
        .route("/livez", get(livez))
        .route("/readyz", get(readyz))
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such route") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "method not allowed on this route",
            )
        })
        .layer(DefaultBodyLimit::max(http.max_body_bytes))
        .layer(axum::middleware::from_fn(move |request, next| {
            within(limit, stats.clone(), request, next)
        }))
        .with_state(api)
}

/// Answers `request` within `limit` (its body read included), or `408 request_timeout`; the
/// commit stream is exempt (its sends are bounded by the server's `send_timeout`).
async fn within(limit: Duration, stats: Arc<HttpStats>, request: Request, next: Next) -> Response {
    if request.uri().path() == COMMIT_STREAM {
        return next.run(request).await;
    }
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => {
            comms::bump(&stats.counters.request_timeouts);
            let message = format!(
                "the request was not read and answered within {limit:?}; a submission may still have been accepted: ask for its id"
            );
            ApiError::new(StatusCode::REQUEST_TIMEOUT, "request_timeout", message).into_response()
        }
    }
}

/// A refusal: status, a stable kind, a message.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    kind: &'static str,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            kind,
            message: message.into(),
        }
    }

    fn bad_request(kind: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, kind, message)
    }

    fn stopped() -> ApiError {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "stopping",
            "the node is shutting down",
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match self.status.is_server_error() {
            true => {
                warn!(status = %self.status, kind = self.kind, message = %self.message, "request failed")
            }
            false => {
                info!(status = %self.status, kind = self.kind, message = %self.message, "request refused")
            }
        }
        let body = Json(ErrorReply {
            error: self.kind.to_string(),
            message: self.message,
        });
        (self.status, body).into_response()
    }
}

impl From<ledger::NodeError> for ApiError {
    fn from(_: ledger::NodeError) -> ApiError {
        ApiError::stopped()
    }
}

type Reply<T> = Result<Json<T>, ApiError>;

async fn status(State(api): State<Arc<Api>>) -> Reply<StatusReply> {
    // A panic in a request's task (tests).
    fail::fail_point!("api::status");
    let status = api.node.status().await?;
    let health = health::ready(&status, api.comms.as_ref(), api.ready_lag_rounds).await;
    Ok(Json(StatusReply {
        chain: api.chain,
        chain_id: api.chain_id.clone(),
        validator: api.validator,
        backend: api.backend.to_string(),
        peer: api.comms.local_peer().as_str().to_string(),
        status,
        health,
    }))
}

/// A probe's answer: 200 when it passed, else 503.
fn probe<T>(passed: bool, body: T) -> (StatusCode, Json<T>) {
    let code = match passed {
        true => StatusCode::OK,
        false => StatusCode::SERVICE_UNAVAILABLE,
    };
    (code, Json(body))
}

async fn livez(State(api): State<Arc<Api>>) -> (StatusCode, Json<Liveness>) {
    let reason = health::live(&api.node).await.err();
    probe(
        reason.is_none(),
        Liveness {
            live: reason.is_none(),
            reason,
        },
    )
}

async fn readyz(State(api): State<Arc<Api>>) -> (StatusCode, Json<Health>) {
    let health = health::check(&api.node, api.comms.as_ref(), api.ready_lag_rounds).await;
    probe(health.ready, health)
}

/// The answer to a refused submission.
fn refusal(error: SubmitError) -> ApiError {
    let (status, kind) = match &error {
        SubmitError::Invalid(_) => (StatusCode::UNPROCESSABLE_ENTITY, "invalid_transaction"),
        SubmitError::StaleNonce { .. } => (StatusCode::CONFLICT, "stale_nonce"),
        SubmitError::NonceTaken(_) => (StatusCode::CONFLICT, "nonce_taken"),
        SubmitError::Full(_) => (StatusCode::SERVICE_UNAVAILABLE, "mempool_full"),
        SubmitError::SignerFull(_) => (StatusCode::TOO_MANY_REQUESTS, "signer_full"),
        SubmitError::Joining => (StatusCode::SERVICE_UNAVAILABLE, "joining"),
        _ => (StatusCode::FORBIDDEN, "observer"),
    };
    let message = match error {
        SubmitError::Full(limit) => format!("the mempool holds {limit} transactions: retry later"),
        error => error.to_string(),
    };
    ApiError::new(status, kind, message)
}

async fn submit(
    State(api): State<Arc<Api>>,
    body: Result<Json<SubmitRequest>, JsonRejection>,
) -> Result<(StatusCode, Json<TransactionReply>), ApiError> {
    let Json(request) = body.map_err(|rejection| {
        ApiError::new(rejection.status(), "bad_body", rejection.body_text())
    })?;
    let bytes = hex::decode(request.transaction.trim()).map_err(|error| {
        ApiError::bad_request("bad_hex", format!("`transaction` is not hex: {error}"))
    })?;
    let tx: SignedTransaction = codec::decode(&bytes).map_err(|error| {
        ApiError::bad_request(
            "bad_transaction",
            format!("not a canonical DAG-CBOR signed transaction: {error}"),
        )
    })?;
    let id = api.node.submit(tx).await?.map_err(refusal)?;
    lock(&api.submitted).start(id, Instant::now());
    let status = ledger::TxStatus::Pending;
    Ok((StatusCode::ACCEPTED, Json(TransactionReply { id, status })))
}

async fn transaction(
    State(api): State<Arc<Api>>,
    Path(id): Path<String>,
) -> Reply<TransactionReply> {
    let id = parse_cid(&id)?;
    let status = api.node.transaction(id).await?;
    if status == ledger::TxStatus::Unknown {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_transaction",
            "neither pending here nor committed",
        ));
    }
    Ok(Json(TransactionReply { id, status }))
}

#[derive(Deserialize)]
struct AccountQuery {
    /// Whether to add the proof of the account at the latest certified checkpoint.
    proof: Option<bool>,
}

/// `GET /v1/accounts/{key}[?proof=true]`: the account in the latest state, and with `proof`, the
/// account at the latest certified checkpoint with what proves it (see [`ProofView`]).
async fn account(
    State(api): State<Arc<Api>>,
    Path(key): Path<String>,
    query: Result<Query<AccountQuery>, axum::extract::rejection::QueryRejection>,
) -> Reply<AccountReply> {
    let Query(query) =
        query.map_err(|rejection| ApiError::bad_request("bad_query", rejection.body_text()))?;
    let key: PublicKey = key
        .parse()
        .map_err(|error| ApiError::bad_request("bad_key", format!("{error}")))?;
    let account = api.node.account(key).await?;
    let proof =
        match query.proof {
            Some(true) => match api.node.proven_account(key).await? {
                Some(proven) => Some(ProofView::from(&proven)),
                None => return Err(ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "no_certified_state",
                    "no checkpoint is certified yet whose state this node holds: try again shortly",
                )),
            },
            _ => None,
        };
    Ok(Json(AccountReply {
        account: key,
        balance: account.balance,
        nonce: account.nonce,
        proof,
    }))
}

async fn block(State(api): State<Arc<Api>>, Path(cid): Path<String>) -> Reply<BlockReply> {
    let cid = parse_cid(&cid)?;
    let Some(accepted) = api.node.block(cid).await? else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_block",
            "no accepted block with this CID",
        ));
    };
    Ok(Json(BlockReply::from(accepted.as_ref())))
}

#[derive(Deserialize)]
struct CommitsQuery {
    limit: Option<usize>,
}

async fn commits(
    State(api): State<Arc<Api>>,
    query: Result<Query<CommitsQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<CommitsReply>, ApiError> {
    let Query(query) =
        query.map_err(|rejection| ApiError::bad_request("bad_query", rejection.body_text()))?;
    let limit = query.limit.unwrap_or(20).min(RECENT_COMMITS);
    let recent = lock(&api.recent);
    let commits = recent
        .iter()
        .rev()
        .take(limit)
        .map(|commit| CommitView::from(commit.as_ref()))
        .collect();
    Ok(Json(CommitsReply { commits }))
}

/// `GET /v1/commits/stream`: Server-Sent Events, one `commit` per commit from now on (see
/// [`crate::stream`]).
async fn commit_stream(State(api): State<Arc<Api>>) -> Result<Response, ApiError> {
    let Some(slot) = api.streams.slot() else {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "too_many_streams",
            format!(
                "{} clients follow the commit stream, the most at once",
                crate::stream::MAX_STREAMS
            ),
        ));
    };
    let commits = api.node.commits().await?;
    Ok(crate::stream::serve(api.streams.clone(), slot, commits).into_response())
}

async fn peers(State(api): State<Arc<Api>>) -> Reply<PeersReply> {
    let (peers, topic_peers) = tokio::join!(api.comms.peers(), api.comms.topic_peers(&api.topic));
    let names = |peers: Vec<comms::PeerId>| {
        peers
            .iter()
            .map(|p| p.as_str().to_string())
            .collect::<Vec<_>>()
    };
    match (peers, topic_peers) {
        (Ok(peers), Ok(topic_peers)) => Ok(Json(PeersReply {
            healthy: true,
            peers: names(peers),
            topic_peers: names(topic_peers),
        })),
        (Err(error), _) | (_, Err(error)) => Err(ApiError::new(
            StatusCode::BAD_GATEWAY,
            "backend_unavailable",
            format!("the {} backend: {error}", api.backend),
        )),
    }
}

async fn metrics(State(api): State<Arc<Api>>) -> Result<Response, ApiError> {
    let status = api.node.status().await?;
    *lock(&api.latest_status) = Some(status);
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &api.registry).map_err(|_| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "metrics",
            "encoding the metrics failed",
        )
    })?;
    Ok((
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
        .into_response())
}

fn parse_cid(text: &str) -> Result<Cid, ApiError> {
    text.parse().map_err(|error| {
        ApiError::bad_request("bad_cid", format!("{text:?} is not a CID: {error}"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(i: usize) -> Cid {
        comms::cid_for(comms::Codec::Raw, &i.to_be_bytes())
    }

    #[test]
    fn submission_timings_stay_bounded_in_number_and_age() {
        let (mut timings, start) = (Timings::default(), Instant::now());
        for i in 0..TIMED_SUBMISSIONS + 10 {
            timings.start(id(i), start);
        }
        assert!(timings.order.len() <= TIMED_SUBMISSIONS);
        assert!(timings.started.len() <= TIMED_SUBMISSIONS);
        assert_eq!(timings.take(&id(0)), None, "the oldest was forgotten");
        assert_eq!(timings.take(&id(TIMED_SUBMISSIONS + 9)), Some(start));
        assert_eq!(timings.take(&id(TIMED_SUBMISSIONS + 9)), None, "taken once");

        // Whatever was never taken (its commit missed) is forgotten once too old.
        timings.start(id(usize::MAX), start + TIMED_FOR);
        assert_eq!((timings.started.len(), timings.order.len()), (1, 1));
    }
}
