//! `tx` and `query`: client commands against a running node's HTTP API. Transactions are signed
//! here, with the key file; only the signed transaction is sent.

use std::{path::PathBuf, time::Duration};

use anyhow::{bail, Context};
use comms::Cid;
use ledger::{codec, PublicKey, SignedTransaction, Transaction, TxStatus};
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

    async fn get<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        let response = self.http.get(format!("{}{path}", self.base)).send().await;
        answer(response, &self.base).await
    }

    async fn post<T: DeserializeOwned>(
        &self,
        path: &str,
        body: &impl serde::Serialize,
    ) -> anyhow::Result<T> {
        let url = format!("{}{path}", self.base);
        let response = self.http.post(url).json(body).send().await;
        answer(response, &self.base).await
    }
}

/// The body of a 2xx reply; otherwise an error with the status and the node's message.
pub(crate) async fn answer<T: DeserializeOwned>(
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
    let client = Client::new(&args.node)?;
    runtime.block_on(async {
        match &args.what {
            Query::Agreement { nodes } => agreement(nodes).await,
            Query::Balance { account } => {
                let path = format!("/v1/accounts/{}", account.to_hex());
                print(&client.get::<AccountReply>(&path).await?)
            }
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
    let client = Client::new(&args.node)?;
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
        let request = SubmitRequest {
            transaction: ledger::hex(&codec::encode(&signed)),
        };
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

/// `query agreement`: compares the nodes' state roots at the highest height all of them committed.
async fn agreement(nodes: &[String]) -> anyhow::Result<()> {
    let clients = nodes
        .iter()
        .map(|node| Client::new(&NodeArg { node: node.clone() }))
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
