//! `tx` and `query`: client commands against a running node's HTTP API. Transactions are signed
//! here, with the key file; only the signed transaction is sent.

use std::{path::PathBuf, time::Duration};

use anyhow::{bail, Context};
use comms::Cid;
use ledger::{PublicKey, SignedTransaction, Transaction, TxStatus};
use serde::de::DeserializeOwned;

use crate::{
    keys,
    wire::{
        AccountReply, BlockReply, CommitsReply, ErrorReply, PeersReply, StatusReply, SubmitRequest,
        TransactionReply,
    },
};

/// Which node to talk to.
#[derive(clap::Args)]
pub struct NodeArg {
    /// The node's API address.
    #[arg(long, env = "LEDGER_NODE", default_value = "http://127.0.0.1:8650")]
    node: String,
}

/// Options of `tx`.
#[derive(clap::Args)]
pub struct TxArgs {
    #[command(flatten)]
    node: NodeArg,
    /// The signer's key file.
    #[arg(long, global = true)]
    key: Option<PathBuf>,
    /// The signer's nonce; by default the next one after its committed transactions.
    #[arg(long, global = true)]
    nonce: Option<u64>,
    /// Wait until the transaction commits and print its outcome (up to this long).
    #[arg(long, global = true, value_parser = humantime::parse_duration)]
    wait: Option<Duration>,
    #[command(subcommand)]
    kind: TxKind,
}

#[derive(clap::Subcommand)]
enum TxKind {
    /// Move AMOUNT from the key's account to TO.
    Transfer {
        /// The receiving account's public key (hex).
        #[arg(long)]
        to: PublicKey,
        #[arg(long)]
        amount: u64,
    },
    /// Anchor data that lives in IPFS: its CID and size in bytes.
    Record {
        #[arg(long)]
        payload: Cid,
        #[arg(long)]
        size: u64,
    },
}

/// Options of `query`.
#[derive(clap::Args)]
pub struct QueryArgs {
    #[command(flatten)]
    node: NodeArg,
    #[command(subcommand)]
    what: Query,
}

#[derive(clap::Subcommand)]
enum Query {
    /// An account's balance and nonce. With `--verify`: the account at the latest certified
    /// checkpoint, checked against the genesis alone (the certificate's signatures and stake,
    /// and the state blocks from its root to the account).
    Balance {
        account: PublicKey,
        /// Ask for the proof and check it; prints what it shows.
        #[arg(long, requires = "genesis")]
        verify: bool,
        /// The chain's genesis file, the only thing `--verify` trusts.
        #[arg(long)]
        genesis: Option<std::path::PathBuf>,
    },
    /// A block by CID.
    Block { cid: Cid },
    /// A transaction's status by ID.
    Tx { id: Cid },
    /// Height, state root, DAG and mempool sizes, counters.
    Status,
    /// The latest commits.
    Commits {
        #[arg(long, default_value_t = 10)]
        limit: usize,
    },
    /// The backend's peers.
    Peers,
    /// Whether several nodes agree: the state root of each at the highest height all of them
    /// have committed. Exits with an error if they differ.
    Agreement {
        /// The nodes' API addresses (the `--node` option is not used).
        #[arg(required = true, num_args = 2..)]
        nodes: Vec<String>,
    },
}

/// How long one request may take (the commit stream, which stays open, has no such bound).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// A typed client of one node's HTTP API, for `tx`, `query` and `load`. Clones share their
/// connections.
#[derive(Clone)]
pub(crate) struct ApiClient {
    http: reqwest::Client,
    base: String,
}

/// The HTTP client of the node's tools. An idle connection is dropped before the node's
/// `http.header_timeout` (10 s by default) would close it, so that a request is never sent on a
/// connection the node is closing.
pub(crate) fn http_client() -> reqwest::Result<reqwest::Client> {
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .pool_idle_timeout(Duration::from_secs(5))
        .build()
}

impl ApiClient {
    /// A client of the node at `base` (`http://host:port`).
    pub(crate) fn new(base: &str) -> anyhow::Result<ApiClient> {
        Ok(ApiClient::sharing(http_client()?, base))
    }

    /// A client of the node at `base` over the connections of `http`.
    pub(crate) fn sharing(http: reqwest::Client, base: &str) -> ApiClient {
        let base = base.trim_end_matches('/').to_string();
        ApiClient { http, base }
    }

    /// The node's address.
    pub(crate) fn base(&self) -> &str {
        &self.base
    }

    /// The node's answer to `GET path`.
    pub(crate) async fn get<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        let request = self.http.get(format!("{}{path}", self.base));
        answer(request.timeout(REQUEST_TIMEOUT).send().await, &self.base).await
    }

    /// The node's answer to `POST path` with `body`.
    pub(crate) async fn post<T: DeserializeOwned>(
        &self,
        path: &str,
        body: &impl serde::Serialize,
    ) -> anyhow::Result<T> {
        let request = self.http.post(format!("{}{path}", self.base)).json(body);
        answer(request.timeout(REQUEST_TIMEOUT).send().await, &self.base).await
    }

    /// Submits `tx`: the node's answer, or the API's error kind (`unreachable` when none came).
    pub(crate) async fn submit(&self, tx: &SignedTransaction) -> Result<TransactionReply, String> {
        let request = SubmitRequest::of(tx);
        let url = format!("{}/v1/transactions", self.base);
        let sent = self.http.post(url).json(&request).timeout(REQUEST_TIMEOUT);
        let response = sent.send().await.map_err(|_| "unreachable".to_string())?;
        if !response.status().is_success() {
            let refusal = response.json::<ErrorReply>().await;
            return Err(refusal.map_or_else(|_| "bad_answer".to_string(), |r| r.error));
        }
        response.json().await.map_err(|_| "bad_answer".to_string())
    }

    /// `GET /v1/commits/stream`, open (no timeout: it stays open).
    pub(crate) async fn commit_stream(&self) -> anyhow::Result<reqwest::Response> {
        let url = format!("{}/v1/commits/stream", self.base);
        let response = self.http.get(&url).send().await;
        let response = response.with_context(|| format!("no answer from {url}"))?;
        let status = response.status();
        anyhow::ensure!(status.is_success(), "{url} answered {status}");
        Ok(response)
    }
}

/// The body of a 2xx reply; otherwise an error with the status and the node's message.
async fn answer<T: DeserializeOwned>(
    response: reqwest::Result<reqwest::Response>,
    base: &str,
) -> anyhow::Result<T> {
    let response = response.with_context(|| format!("no answer from the node at {base}"))?;
    let status = response.status();
    let body = (response.bytes().await)
        .with_context(|| format!("the node at {base} answered {status}, then broke off"))?;
    if !status.is_success() {
        let refusal = serde_json::from_slice::<ErrorReply>(&body);
        let message = refusal.map_or_else(|_| "no message".to_string(), |r| r.message);
        bail!("{status}: {message}");
    }
    serde_json::from_slice(&body)
        .with_context(|| format!("the node at {base} answered {status} with an unexpected body"))
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

fn print(value: &impl serde::Serialize) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

pub fn query(args: QueryArgs) -> anyhow::Result<()> {
    let runtime = runtime()?;
    let client = ApiClient::new(&args.node.node)?;
    runtime.block_on(async {
        match &args.what {
            Query::Agreement { nodes } => agreement(nodes).await,
            Query::Balance {
                account,
                verify: false,
                ..
            } => {
                let path = format!("/v1/accounts/{}", account.to_hex());
                print(&client.get::<AccountReply>(&path).await?)
            }
            Query::Balance {
                account,
                genesis: Some(genesis),
                ..
            } => {
                let genesis = keys::read_genesis(genesis)?;
                let path = format!("/v1/accounts/{}?proof=true", account.to_hex());
                let reply = client.get::<AccountReply>(&path).await?;
                print(&crate::proof::verify(&reply, &genesis)?)
            }
            Query::Balance { genesis: None, .. } => bail!("--verify needs --genesis"),
            Query::Block { cid } => print(
                &client
                    .get::<BlockReply>(&format!("/v1/blocks/{cid}"))
                    .await?,
            ),
            Query::Tx { id } => {
                let path = format!("/v1/transactions/{id}");
                print(&client.get::<TransactionReply>(&path).await?)
            }
            Query::Status => print(&client.get::<StatusReply>("/v1/status").await?),
            Query::Commits { limit } => {
                let path = format!("/v1/commits?limit={limit}");
                print(&client.get::<CommitsReply>(&path).await?)
            }
            Query::Peers => print(&client.get::<PeersReply>("/v1/peers").await?),
        }
    })
}

pub fn tx(args: TxArgs) -> anyhow::Result<()> {
    let client = ApiClient::new(&args.node.node)?;
    let key_path = args
        .key
        .as_deref()
        .context("--key: the signer's key file")?;
    let key = keys::read_key(key_path)?;
    runtime()?.block_on(async {
        let status: StatusReply = client.get("/v1/status").await?;
        let nonce = match args.nonce {
            Some(nonce) => nonce,
            None => {
                let path = format!("/v1/accounts/{}", key.public().to_hex());
                client.get::<AccountReply>(&path).await?.nonce
            }
        };
        let tx = match args.kind {
            TxKind::Transfer { to, amount } => Transaction::Transfer {
                from: key.public(),
                to,
                amount,
                nonce,
            },
            TxKind::Record { payload, size } => Transaction::Record {
                author: key.public(),
                nonce,
                payload,
                size,
            },
        };
        let signed = SignedTransaction::sign(&status.chain, tx, &key);
        let request = SubmitRequest::of(&signed);
        let reply: TransactionReply = client.post("/v1/transactions", &request).await?;
        let Some(wait) = args.wait else {
            return print(&reply);
        };
        let deadline = tokio::time::Instant::now() + wait;
        let path = format!("/v1/transactions/{}", reply.id);
        loop {
            let answer: TransactionReply = client.get(&path).await?;
            if let TxStatus::Committed(_) = answer.status {
                return print(&answer);
            }
            if tokio::time::Instant::now() >= deadline {
                bail!(
                    "{} not committed within {wait:?} (still {:?})",
                    reply.id,
                    answer.status
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
}

/// `query agreement`: compares the nodes' state roots at the highest height all of them committed,
/// and at every earlier height that all of them list among their recent commits.
async fn agreement(nodes: &[String]) -> anyhow::Result<()> {
    let clients = nodes
        .iter()
        .map(|node| ApiClient::new(node))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mut commits = Vec::new();
    for client in &clients {
        let reply: CommitsReply = client.get("/v1/commits?limit=256").await?;
        let by_height: std::collections::BTreeMap<u64, String> = reply
            .commits
            .into_iter()
            .map(|c| (c.height, c.state_root))
            .collect();
        commits.push(by_height);
    }
    let common = commits
        .iter()
        .map(|c| c.keys().next_back().copied().unwrap_or(0))
        .min()
        .unwrap_or(0);
    let mut roots = std::collections::BTreeSet::new();
    for (client, by_height) in clients.iter().zip(&commits) {
        let top = by_height.keys().next_back().copied().unwrap_or(0);
        let Some(root) = by_height.get(&common) else {
            bail!(
                "{} has no commit {common} among its recent ones (its latest is {top}): query again",
                client.base()
            );
        };
        println!(
            "{}  height {top:>6}  state root at {common}: {root}",
            client.base()
        );
        roots.insert(root.clone());
    }
    if roots.len() != 1 {
        bail!("the nodes DISAGREE at height {common}");
    }
    // Every earlier height that every node still lists must agree too.
    let Some((first, rest)) = commits.split_first() else {
        bail!("no nodes to compare");
    };
    let mut compared = 0;
    for (height, root) in first.range(..=common) {
        let others: Vec<Option<&String>> = rest.iter().map(|c| c.get(height)).collect();
        if others.contains(&None) {
            continue;
        }
        if others.iter().any(|other| *other != Some(root)) {
            bail!("the nodes DISAGREE at height {height}");
        }
        compared += 1;
    }
    println!(
        "all {} nodes agree at height {common}, and on each of the {compared} state roots from height {} that all of them list",
        clients.len(),
        first.range(..=common).next().map_or(0, |(h, _)| *h),
    );
    Ok(())
}
