//! The node's HTTP API (JSON under `/v1`) and `/metrics` (Prometheus text format).
//!
//! Every refusal is a JSON body `{"error": kind, "message": text}` with a 4xx or 5xx status and an
//! info-level log line; no input can panic a handler.

use std::{
    collections::{HashMap, VecDeque},
    sync::{Arc, Mutex},
};

use axum::{
    extract::{rejection::JsonRejection, DefaultBodyLimit, Path, Query, State},
    http::{header, StatusCode},
    response::{IntoResponse, Response},
    routing::{get, post},
    Json, Router,
};
use comms::{Cid, Communication, Topic};
use ledger::{
    codec, Commit, NodeHandle, Payload, PublicKey, SignedTransaction, SubmitError, Transaction,
};
use prometheus_client::{
    metrics::{
        counter::{ConstCounter, Counter},
        family::Family,
        gauge::ConstGauge,
        histogram::Histogram,
    },
    registry::Registry,
};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::{sync::broadcast::error::RecvError, time::Instant};
use tracing::{info, warn};

use crate::{metered::CommsMetrics, stream::Streams};

/// Recent commits kept for `GET /v1/commits`.
const RECENT_COMMITS: usize = 256;
/// Submissions whose commit latency is being timed, at most.
const TIMED_SUBMISSIONS: usize = 100_000;
/// The largest request body: a signed transaction in hex is far below it.
const MAX_BODY: usize = 64 << 10;

/// Registers backend-specific metrics (for IPFS: the daemon's errors and retries) at each scrape.
pub type ExtraMetrics = Box<dyn Fn(&mut Registry) + Send + Sync>;

/// What the handlers share.
pub struct Api {
    node: NodeHandle,
    comms: Arc<dyn Communication>,
    topic: Topic,
    chain: Cid,
    chain_id: String,
    validator: Option<u32>,
    backend: &'static str,
    recent: Mutex<VecDeque<Arc<Commit>>>,
    submitted: Mutex<HashMap<Cid, Instant>>,
    commit_latency: Histogram,
    comms_metrics: Arc<CommsMetrics>,
    extra: ExtraMetrics,
    streams: Arc<Streams>,
}

/// What the API needs to know about the node it serves.
pub struct ApiParts {
    pub node: NodeHandle,
    pub comms: Arc<dyn Communication>,
    pub genesis: ledger::Genesis,
    pub validator: Option<u32>,
    pub backend: &'static str,
    pub comms_metrics: Arc<CommsMetrics>,
    pub extra: ExtraMetrics,
}

impl Api {
    /// The API state, and a task that follows the node's commits (recent commits, latencies).
    pub async fn start(parts: ApiParts) -> anyhow::Result<Arc<Api>> {
        let chain = parts.genesis.encode().1;
        // 10 ms to about 5.5 min, doubling.
        let buckets = prometheus_client::metrics::histogram::exponential_buckets(0.01, 2.0, 16);
        let api = Arc::new(Api {
            node: parts.node,
            comms: parts.comms,
            topic: ledger::node::blocks_topic(&chain),
            chain,
            chain_id: parts.genesis.chain_id,
            validator: parts.validator,
            backend: parts.backend,
            recent: Mutex::new(VecDeque::new()),
            submitted: Mutex::new(HashMap::new()),
            commit_latency: Histogram::new(buckets),
            comms_metrics: parts.comms_metrics,
            extra: parts.extra,
            streams: Arc::default(),
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

    fn committed(&self, commit: Arc<Commit>) {
        {
            let mut submitted = lock(&self.submitted);
            for (id, _) in &commit.transactions {
                if let Some(at) = submitted.remove(id) {
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

/// A poisoned lock still holds consistent data here (every critical section is one update).
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The routes.
pub fn router(api: Arc<Api>) -> Router {
    Router::new()
        .route("/v1/status", get(status))
        .route("/v1/transactions", post(submit))
        .route("/v1/transactions/{id}", get(transaction))
        .route("/v1/accounts/{key}", get(account))
        .route("/v1/blocks/{cid}", get(block))
        .route("/v1/commits", get(commits))
        .route("/v1/commits/stream", get(commit_stream))
        .route("/v1/peers", get(peers))
        .route("/metrics", get(metrics))
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such route") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "method not allowed on this route",
            )
        })
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(api)
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
        let body = Json(json!({ "error": self.kind, "message": self.message }));
        (self.status, body).into_response()
    }
}

impl From<ledger::NodeError> for ApiError {
    fn from(_: ledger::NodeError) -> ApiError {
        ApiError::stopped()
    }
}

type Reply = Result<Json<Value>, ApiError>;

async fn status(State(api): State<Arc<Api>>) -> Reply {
    let status = api.node.status().await?;
    Ok(Json(json!({
        "chain": api.chain.to_string(),
        "chain_id": api.chain_id,
        "validator": api.validator,
        "backend": api.backend,
        "peer": api.comms.local_peer().as_str(),
        "height": status.height,
        "state_root": status.state_root,
        "dag_blocks": status.dag_blocks,
        "dag_floor": status.dag_floor,
        "pruned_in_memory": status.pruned_in_memory,
        "highest_round": status.highest_round,
        "pending_blocks": status.pending_blocks,
        "pending_fetches": status.pending_fetches,
        "mempool": status.mempool,
        "stats": status.stats,
    })))
}

/// `POST /v1/transactions`: a signed transaction, DAG-CBOR in hex.
#[derive(Serialize, Deserialize)]
pub struct SubmitRequest {
    pub transaction: String,
}

/// The answer to a refused submission.
fn refusal(error: SubmitError) -> ApiError {
    let (status, kind) = match &error {
        SubmitError::Invalid(_) => (StatusCode::UNPROCESSABLE_ENTITY, "invalid_transaction"),
        SubmitError::StaleNonce { .. } => (StatusCode::CONFLICT, "stale_nonce"),
        SubmitError::NonceTaken(_) => (StatusCode::CONFLICT, "nonce_taken"),
        SubmitError::Full(_) => (StatusCode::SERVICE_UNAVAILABLE, "mempool_full"),
        SubmitError::SignerFull(_) => (StatusCode::TOO_MANY_REQUESTS, "signer_full"),
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
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let Json(request) = body.map_err(|rejection| {
        ApiError::new(rejection.status(), "bad_body", rejection.body_text())
    })?;
    let bytes = hex_bytes(request.transaction.trim())
        .ok_or_else(|| ApiError::bad_request("bad_hex", "`transaction` is not hex"))?;
    let tx: SignedTransaction = codec::decode(&bytes).map_err(|error| {
        ApiError::bad_request(
            "bad_transaction",
            format!("not a canonical DAG-CBOR signed transaction: {error}"),
        )
    })?;
    let id = api.node.submit(tx).await?.map_err(refusal)?;
    {
        let mut submitted = lock(&api.submitted);
        if submitted.len() < TIMED_SUBMISSIONS {
            submitted.entry(id).or_insert_with(Instant::now);
        }
    }
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({ "id": id.to_string(), "status": "pending" })),
    ))
}

async fn transaction(State(api): State<Arc<Api>>, Path(id): Path<String>) -> Reply {
    let id = parse_cid(&id)?;
    let status = api.node.transaction(id).await?;
    if status == ledger::TxStatus::Unknown {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_transaction",
            "neither pending here nor committed",
        ));
    }
    let mut body = serde_json::to_value(status).unwrap_or(Value::Null);
    body["id"] = json!(id.to_string());
    Ok(Json(body))
}

async fn account(State(api): State<Arc<Api>>, Path(key): Path<String>) -> Reply {
    let key: PublicKey = key
        .parse()
        .map_err(|error| ApiError::bad_request("bad_key", format!("{error}")))?;
    let account = api.node.account(key).await?;
    Ok(Json(json!({
        "account": key.to_hex(),
        "balance": account.balance,
        "nonce": account.nonce,
    })))
}

async fn block(State(api): State<Arc<Api>>, Path(cid): Path<String>) -> Reply {
    let cid = parse_cid(&cid)?;
    let Some(accepted) = api.node.block(cid).await? else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_block",
            "no accepted block with this CID",
        ));
    };
    let block = &accepted.block.block;
    let payload = match &block.payload {
        Payload::Inline(_) => json!({ "inline": true }),
        Payload::Batch { cid, count, size } => {
            json!({ "batch": cid.to_string(), "count": count, "size": size })
        }
    };
    Ok(Json(json!({
        "cid": cid.to_string(),
        "author": block.author,
        "round": block.round,
        "parents": block.parents.iter().map(Cid::to_string).collect::<Vec<_>>(),
        "timestamp_ms": block.timestamp_ms,
        "payload": payload,
        "transactions": accepted.transactions.iter().map(transaction_view).collect::<Vec<_>>(),
    })))
}

fn transaction_view(tx: &SignedTransaction) -> Value {
    let mut view = match &tx.tx {
        Transaction::Transfer {
            from,
            to,
            amount,
            nonce,
        } => json!({
            "type": "transfer", "from": from.to_hex(), "to": to.to_hex(),
            "amount": amount, "nonce": nonce,
        }),
        Transaction::Record {
            author,
            nonce,
            payload,
            size,
        } => json!({
            "type": "record", "author": author.to_hex(), "nonce": nonce,
            "payload": payload.to_string(), "size": size,
        }),
    };
    view["id"] = json!(tx.id().to_string());
    view
}

#[derive(Deserialize)]
struct CommitsQuery {
    limit: Option<usize>,
}

/// A commit as the API shows it, in `GET /v1/commits` and in the commit stream.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CommitView {
    pub height: u64,
    pub round: u64,
    pub leader: String,
    /// How many blocks it ordered.
    pub blocks: usize,
    pub transactions: Vec<TransactionOutcome>,
    pub state_root: String,
}

/// A committed transaction's ID and outcome.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TransactionOutcome {
    pub id: String,
    pub outcome: ledger::Outcome,
}

impl From<&Commit> for CommitView {
    fn from(commit: &Commit) -> CommitView {
        CommitView {
            height: commit.height,
            round: commit.round,
            leader: commit.leader.to_string(),
            blocks: commit.blocks.len(),
            transactions: commit
                .transactions
                .iter()
                .map(|(id, outcome)| TransactionOutcome {
                    id: id.to_string(),
                    outcome: *outcome,
                })
                .collect(),
            state_root: ledger::node::hex(&commit.state_root),
        }
    }
}

/// `GET /v1/commits`: the latest commits, newest first.
#[derive(Debug, Serialize, Deserialize)]
pub struct CommitsReply {
    pub commits: Vec<CommitView>,
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

async fn peers(State(api): State<Arc<Api>>) -> Reply {
    let (peers, topic_peers) = tokio::join!(api.comms.peers(), api.comms.topic_peers(&api.topic));
    let names = |peers: Vec<comms::PeerId>| {
        peers
            .iter()
            .map(|p| p.as_str().to_string())
            .collect::<Vec<_>>()
    };
    match (peers, topic_peers) {
        (Ok(peers), Ok(topic_peers)) => Ok(Json(json!({
            "healthy": true,
            "peers": names(peers),
            "topic_peers": names(topic_peers),
        }))),
        (Err(error), _) | (_, Err(error)) => Err(ApiError::new(
            StatusCode::BAD_GATEWAY,
            "backend_unavailable",
            format!("the {} backend: {error}", api.backend),
        )),
    }
}

async fn metrics(State(api): State<Arc<Api>>) -> Result<Response, ApiError> {
    let status = api.node.status().await?;
    let mut registry = Registry::default();
    {
        let ledger = registry.sub_registry_with_prefix("ledger");
        let gauges = [
            ("height", "Commits so far", status.height),
            (
                "dag_blocks",
                "Accepted blocks in memory (from the floor up)",
                status.dag_blocks as u64,
            ),
            (
                "dag_floor",
                "The lowest round in memory; older blocks are on disk",
                status.dag_floor,
            ),
            (
                "highest_round",
                "The DAG's highest round",
                status.highest_round,
            ),
            (
                "pending_blocks",
                "Blocks waiting for their ancestors",
                status.pending_blocks as u64,
            ),
            (
                "pending_fetches",
                "CIDs being fetched",
                status.pending_fetches as u64,
            ),
            (
                "mempool",
                "Transactions submitted here, not committed yet",
                status.mempool as u64,
            ),
        ];
        for (name, help, value) in gauges {
            ledger.register(name, help, ConstGauge::new(value as i64));
        }
        let stats = &status.stats;
        let counters = [
            (
                "blocks_accepted",
                "Blocks accepted into the DAG",
                stats.accepted,
            ),
            (
                "committed_transactions",
                "Transactions committed, valid or not",
                stats.committed_transactions,
            ),
            (
                "equivocations",
                "Slots where a validator signed two blocks",
                stats.equivocations,
            ),
            ("skipped_slots", "Leader slots skipped", stats.skipped_slots),
            (
                "leader_timeouts",
                "Own blocks proposed without the round's first leader, after leader_timeout",
                stats.leader_timeouts,
            ),
            (
                "new_blocks_by_broadcast",
                "Valid blocks new here that arrived by broadcast",
                stats.new_blocks_by_broadcast,
            ),
            (
                "new_blocks_by_fetch",
                "Valid blocks new here that had to be fetched by CID",
                stats.new_blocks_by_fetch,
            ),
        ];
        for (name, help, value) in counters {
            ledger.register(name, help, ConstCounter::new(value));
        }
        ledger.register(
            "broadcast_delivery_ratio",
            "Share of the valid blocks new here that arrived by broadcast rather than by fetch",
            ConstGauge::new(stats.broadcast_share()),
        );
        let rejected = Family::<Vec<(String, String)>, Counter>::default();
        for (kind, count) in &stats.rejected {
            rejected
                .get_or_create(&vec![("kind".to_string(), kind.clone())])
                .inc_by(*count);
        }
        ledger.register(
            "invalid_inputs",
            "Refused blocks and batches, by kind",
            rejected,
        );
        ledger.register(
            "commit_stream_clients",
            "Clients following GET /v1/commits/stream",
            ConstGauge::new(api.streams.open() as i64),
        );
        ledger.register(
            "commit_stream_dropped",
            "Clients of the commit stream dropped for reading too slowly",
            ConstCounter::new(api.streams.dropped()),
        );
        ledger.register(
            "commit_latency_seconds",
            "Submission here to commit, for transactions submitted through this API",
            api.commit_latency.clone(),
        );
    }
    api.comms_metrics.register(&mut registry);
    (api.extra)(&mut registry);
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).map_err(|_| {
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

/// Decodes hex of any even length; `None` for anything else.
pub fn hex_bytes(text: &str) -> Option<Vec<u8>> {
    if text.len() % 2 != 0 || !text.is_ascii() {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).ok())
        .collect()
}
