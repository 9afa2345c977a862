//! `tx` and `query`: client commands against a running node's HTTP API. Transactions are signed
//! here, with the key file; only the signed transaction is sent.

use std::{path::PathBuf, time::Duration};

use anyhow::{bail, Context};
use comms::Cid;
use ledger::{codec, PublicKey, SignedTransaction, Transaction};
use serde_json::Value;

use crate::{
    api::{CommitsReply, SubmitRequest},
    keys,
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
    /// An account's balance and nonce.
    Balance { account: PublicKey },
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

struct Client {
    http: reqwest::Client,
    base: String,
}

impl Client {
    fn new(node: &NodeArg) -> anyhow::Result<Client> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()?;
        Ok(Client {
            http,
            base: node.node.trim_end_matches('/').to_string(),
        })
    }

    async fn get(&self, path: &str) -> anyhow::Result<Value> {
        let response = self.http.get(format!("{}{path}", self.base)).send().await;
        answer(response, &self.base).await
    }

    async fn post(&self, path: &str, body: &impl serde::Serialize) -> anyhow::Result<Value> {
        let url = format!("{}{path}", self.base);
        let response = self.http.post(url).json(body).send().await;
        answer(response, &self.base).await
    }
}

/// The JSON body of a 2xx reply; otherwise an error with the status and the node's message.
pub(crate) async fn answer(
    response: reqwest::Result<reqwest::Response>,
    base: &str,
) -> anyhow::Result<Value> {
    let response = response.with_context(|| format!("no answer from the node at {base}"))?;
    let status = response.status();
    let body: Value = response
        .json()
        .await
        .with_context(|| format!("the node answered {status} without JSON"))?;
    if !status.is_success() {
        let message = body["message"].as_str().unwrap_or("no message");
        bail!("{status}: {message}");
    }
    Ok(body)
}

/// The chain's CID in a `GET /v1/status` answer.
pub(crate) fn chain_in(status: &Value) -> anyhow::Result<Cid> {
    status["chain"]
        .as_str()
        .and_then(|c| c.parse().ok())
        .context("the node's status has no chain CID")
}

/// The committed nonce in a `GET /v1/accounts/{key}` answer.
pub(crate) fn nonce_in(account: &Value) -> anyhow::Result<u64> {
    account["nonce"].as_u64().context("no nonce in the reply")
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

fn print(value: &Value) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

pub fn query(args: QueryArgs) -> anyhow::Result<()> {
    if let Query::Agreement { nodes } = &args.what {
        return runtime()?.block_on(agreement(nodes));
    }
    let client = Client::new(&args.node)?;
    let path = match &args.what {
        Query::Balance { account } => format!("/v1/accounts/{}", account.to_hex()),
        Query::Block { cid } => format!("/v1/blocks/{cid}"),
        Query::Tx { id } => format!("/v1/transactions/{id}"),
        Query::Status => "/v1/status".to_string(),
        Query::Commits { limit } => format!("/v1/commits?limit={limit}"),
        Query::Peers => "/v1/peers".to_string(),
        Query::Agreement { .. } => unreachable!("answered above"),
    };
    print(&runtime()?.block_on(client.get(&path))?)
}

pub fn tx(args: TxArgs) -> anyhow::Result<()> {
    let client = Client::new(&args.node)?;
    let key_path = args
        .key
        .as_deref()
        .context("--key: the signer's key file")?;
    let key = keys::read_key(key_path)?;
    runtime()?.block_on(async {
        let status = client.get("/v1/status").await?;
        let chain = chain_in(&status)?;
        let nonce = match args.nonce {
            Some(nonce) => nonce,
            None => {
                let account = client
                    .get(&format!("/v1/accounts/{}", key.public().to_hex()))
                    .await?;
                nonce_in(&account)?
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
        let signed = SignedTransaction::sign(&chain, tx, &key);
        let request = SubmitRequest {
            transaction: ledger::node::hex(&codec::encode(&signed)),
        };
        let reply = client.post("/v1/transactions", &request).await?;
        let Some(wait) = args.wait else {
            return print(&reply);
        };
        let id = reply["id"]
            .as_str()
            .context("no id in the reply")?
            .to_string();
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let status = client.get(&format!("/v1/transactions/{id}")).await?;
            if status["status"] == "committed" {
                return print(&status);
            }
            if tokio::time::Instant::now() >= deadline {
                bail!(
                    "{id} not committed within {wait:?} (still {})",
                    status["status"]
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
}

/// `query agreement`: compares the nodes' state roots at the highest height all of them committed.
async fn agreement(nodes: &[String]) -> anyhow::Result<()> {
    let clients = nodes
        .iter()
        .map(|node| Client::new(&NodeArg { node: node.clone() }))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mut commits = Vec::new();
    for client in &clients {
        let reply: CommitsReply =
            serde_json::from_value(client.get("/v1/commits?limit=256").await?)
                .context("not the commits expected")?;
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
                client.base
            );
        };
        println!(
            "{}  height {top:>6}  state root at {common}: {root}",
            client.base
        );
        roots.insert(root.clone());
    }
    match roots.len() {
        1 => {
            println!("all {} nodes agree at height {common}", clients.len());
            Ok(())
        }
        _ => bail!("the nodes DISAGREE at height {common}"),
    }
}
