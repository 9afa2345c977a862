//! `load`: a load generator to point at any network of nodes. It signs transfers ahead of time,
//! submits them as a burst or at a rate with bounded concurrency, spread over the nodes, follows
//! the commits at every node (`GET /v1/commits/stream`), and reports throughput, latency from
//! submission to committed at the first node and at all of them, and what was lost or refused.

use std::{
    collections::{BTreeMap, HashMap},
    path::PathBuf,
    sync::Arc,
    time::Duration,
};

use anyhow::{bail, Context};
use comms::Cid;
use ledger::{Keypair, SignedTransaction, Transaction};
use report::{latency_line, LatencyHistogram, LatencySummary};
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use tokio::{
    sync::{mpsc, Semaphore},
    time::Instant,
};

use crate::{
    client::ApiClient,
    keys,
    stream::{Close, EventParser},
    wire::{AccountReply, CommitView, StatusReply},
};

/// Options of `load`.
#[derive(clap::Args)]
pub struct LoadArgs {
    /// The nodes' API addresses: submissions go to them in turn, and commits are followed at each.
    #[arg(long = "node", required = true, num_args = 1..)]
    nodes: Vec<String>,
    /// Key files of funded accounts to send from (repeat the option, or list several).
    #[arg(long = "key", required = true, num_args = 1..)]
    keys: Vec<PathBuf>,
    /// Send from this many fresh accounts instead, funded first from the first key.
    #[arg(long)]
    accounts: Option<usize>,
    /// Transfers to send.
    #[arg(long, default_value_t = 1000)]
    count: u64,
    /// Transfers per second; without it, all at once (a burst).
    #[arg(long)]
    rate: Option<f64>,
    /// Submissions in flight at once.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// How long to wait for commits after the last submission.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    timeout: Duration,
    /// Write the report here as JSON.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Draw each transfer's latency (committed at all nodes) here as an SVG chart.
    #[arg(long)]
    svg: Option<PathBuf>,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
}

/// What a run measured.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LoadReport {
    pub nodes: usize,
    pub senders: usize,
    pub count: u64,
    /// Transfers per second asked for; `None` for a burst.
    pub rate: Option<f64>,
    pub concurrency: usize,
    /// Accepted by a node (202).
    pub accepted: u64,
    /// Refused by a node, by the API's error kind (`unreachable` when no answer came).
    pub refused: BTreeMap<String, u64>,
    /// Accepted and committed at every node, by outcome (`applied`, `bad_nonce`, ...).
    pub outcomes: BTreeMap<String, u64>,
    /// Accepted but not committed at every node within the timeout.
    pub lost: u64,
    /// From the first submission to the last commit at every node.
    pub seconds: f64,
    /// Transfers committed at every node per second over that time.
    pub throughput: f64,
    /// Submission to committed at the first node that committed it.
    pub latency_first: LatencySummary,
    /// Submission to committed at every node.
    pub latency_all: LatencySummary,
    /// Commit streams that a node ended, with its reason.
    pub streams_closed: Vec<String>,
}

pub fn main(args: LoadArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.concurrency > 0, "--concurrency must be at least 1");
    anyhow::ensure!(
        args.rate.is_none_or(|r| r > 0.0 && r.is_finite()),
        "--rate must be a positive number of transfers per second"
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let report = runtime.block_on(run(&args))?;
    print_report(&report);
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&report)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    let unapplied: u64 = report
        .outcomes
        .iter()
        .filter(|(kind, _)| *kind != "applied")
        .map(|(_, n)| n)
        .sum();
    if report.lost > 0 || unapplied > 0 || !report.refused.is_empty() {
        bail!(
            "{} lost, {unapplied} committed without effect, {} refused",
            report.lost,
            report.refused.values().sum::<u64>()
        );
    }
    Ok(())
}

/// The nodes, over HTTP (one pool of connections).
struct Nodes {
    clients: Vec<ApiClient>,
}

impl Nodes {
    fn new(bases: &[String]) -> anyhow::Result<Nodes> {
        let http = crate::client::http_client()?;
        let clients = (bases.iter())
            .map(|base| ApiClient::sharing(http.clone(), base))
            .collect();
        Ok(Nodes { clients })
    }

    /// How many there are.
    fn len(&self) -> usize {
        self.clients.len()
    }

    /// Node `node`'s address.
    fn base(&self, node: usize) -> &str {
        self.clients[node].base()
    }

    /// Node `node`'s answer to `GET path`.
    async fn get<T: DeserializeOwned>(&self, node: usize, path: &str) -> anyhow::Result<T> {
        self.clients[node].get(path).await
    }

    /// Submits `tx` to node `node`: taken, or the API's error kind.
    async fn submit(&self, node: usize, tx: &SignedTransaction) -> Result<(), String> {
        self.clients[node].submit(tx).await.map(|_| ())
    }

    /// Follows node `node`'s commit stream, sending each commit (with when it arrived) to `sink`
    /// until the stream ends; returns why it ended. Returns once the stream is open.
    async fn follow(
        self: &Arc<Self>,
        node: usize,
        sink: mpsc::UnboundedSender<Seen>,
    ) -> anyhow::Result<tokio::task::JoinHandle<String>> {
        let mut response = self.clients[node].commit_stream().await?;
        Ok(tokio::spawn(async move {
            let mut parser = EventParser::default();
            loop {
                let chunk = match response.chunk().await {
                    Ok(Some(chunk)) => chunk,
                    Ok(None) => return format!("node {node}: the stream ended"),
                    Err(error) => return format!("node {node}: {error}"),
                };
                let events = match parser.feed(&chunk) {
                    Ok(events) => events,
                    Err(error) => return format!("node {node}: {error}"),
                };
                let at = Instant::now();
                for event in events {
                    match event.event.as_str() {
                        "commit" => match serde_json::from_str::<CommitView>(&event.data) {
                            Ok(commit) => {
                                let _ = sink.send(Seen { node, at, commit });
                            }
                            Err(error) => return format!("node {node}: a bad commit: {error}"),
                        },
                        "close" => {
                            let close: Option<Close> = serde_json::from_str(&event.data).ok();
                            let reason = close.map_or(event.data, |c| c.message);
                            return format!("node {node}: closed: {reason}");
                        }
                        _ => {}
                    }
                }
            }
        }))
    }
}

/// A commit as one node's stream delivered it.
struct Seen {
    node: usize,
    at: Instant,
    commit: CommitView,
}

/// One transfer's life.
#[derive(Clone, Default)]
struct Track {
    submitted: Option<Instant>,
    refused: Option<String>,
    first: Option<Instant>,
    /// The nodes that committed it.
    nodes_seen: Vec<usize>,
    all: Option<Instant>,
    outcome: Option<String>,
}

async fn run(args: &LoadArgs) -> anyhow::Result<LoadReport> {
    let nodes = Arc::new(Nodes::new(&args.nodes)?);
    let chain = chain_of(&nodes).await?;
    let given = args
        .keys
        .iter()
        .map(|path| keys::read_key(path))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let (seen_tx, mut seen) = mpsc::unbounded_channel();
    let mut followers = Vec::new();
    for node in 0..nodes.len() {
        followers.push(nodes.follow(node, seen_tx.clone()).await?);
    }
    drop(seen_tx);
    let senders = match args.accounts {
        None => given,
        Some(count) => {
            let funding = fund(&nodes, &chain, &given[0], count, args.count).await?;
            let (txs, senders) = funding;
            let wave = Wave::new(txs, 1, None);
            let tracks = wave.run(&nodes, &mut seen, args.timeout, None).await;
            let lost = tracks.iter().filter(|t| t.all.is_none()).count();
            anyhow::ensure!(
                lost == 0,
                "{lost} funding transfers did not commit everywhere"
            );
            senders
        }
    };
    let txs = sign_transfers(&nodes, &chain, &senders, args.count).await?;
    let progress = (!args.quiet).then(|| progress_bar(args.count));
    let wave = Wave::new(txs, args.concurrency, args.rate);
    let tracks = wave
        .run(&nodes, &mut seen, args.timeout, progress.as_ref())
        .await;
    if let Some(bar) = progress {
        bar.finish_and_clear();
    }
    let mut closed = Vec::new();
    for follower in followers {
        follower.abort();
        if let Ok(reason) = follower.await {
            closed.push(reason);
        }
    }
    let report = summarize(args, senders.len(), &tracks, closed);
    if let Some(path) = &args.svg {
        let start = tracks.iter().filter_map(|t| t.submitted).min();
        let samples: Vec<(f64, f64)> = tracks
            .iter()
            .filter_map(|t| {
                let (submitted, all) = (t.submitted?, t.all?);
                let x = (all - start?).as_secs_f64();
                Some((x, (all - submitted).as_secs_f64()))
            })
            .collect();
        let title = format!(
            "{} transfers over {} nodes: submission to committed at all",
            args.count,
            nodes.len()
        );
        report::chart::latency_over_time(path, &title, "commit time (s)", &samples)?;
    }
    Ok(report)
}

/// The chain's CID, the same at every node.
async fn chain_of(nodes: &Nodes) -> anyhow::Result<Cid> {
    let mut chain = None;
    for node in 0..nodes.len() {
        let this = nodes.get::<StatusReply>(node, "/v1/status").await?.chain;
        match chain {
            Some(first) if first != this => {
                bail!("{} is on chain {this}, not {first}", nodes.base(node))
            }
            _ => chain = Some(this),
        }
    }
    chain.context("no nodes")
}

/// An account's committed nonce, at node 0.
async fn nonce_of(nodes: &Nodes, key: &Keypair) -> anyhow::Result<u64> {
    let path = format!("/v1/accounts/{}", key.public().to_hex());
    Ok(nodes.get::<AccountReply>(0, &path).await?.nonce)
}

/// `count` fresh accounts, and the transfers from `funder` that give each enough for its share of
/// `transfers` transfers of 1.
async fn fund(
    nodes: &Nodes,
    chain: &Cid,
    funder: &Keypair,
    count: usize,
    transfers: u64,
) -> anyhow::Result<(Vec<SignedTransaction>, Vec<Keypair>)> {
    anyhow::ensure!(count > 0, "--accounts must be at least 1");
    let accounts = (0..count)
        .map(|_| Keypair::generate())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| anyhow::anyhow!("the system's random source failed: {error}"))?;
    let share = transfers.div_ceil(count as u64);
    let base = nonce_of(nodes, funder).await?;
    let txs = accounts
        .iter()
        .zip(base..)
        .map(|(account, nonce)| {
            let tx = Transaction::Transfer {
                from: funder.public(),
                to: account.public(),
                amount: share,
                nonce,
            };
            SignedTransaction::sign(chain, tx, funder)
        })
        .collect();
    Ok((txs, accounts))
}

/// `count` transfers of 1, sender after sender, each sender's in nonce order from its committed
/// nonce, each to the next sender.
async fn sign_transfers(
    nodes: &Nodes,
    chain: &Cid,
    senders: &[Keypair],
    count: u64,
) -> anyhow::Result<Vec<SignedTransaction>> {
    let mut nonces = Vec::new();
    for sender in senders {
        nonces.push(nonce_of(nodes, sender).await?);
    }
    let n = senders.len() as u64;
    Ok((0..count)
        .map(|k| {
            let i = (k % n) as usize;
            let tx = Transaction::Transfer {
                from: senders[i].public(),
                to: senders[(i + 1) % senders.len()].public(),
                amount: 1,
                nonce: nonces[i] + k / n,
            };
            SignedTransaction::sign(chain, tx, &senders[i])
        })
        .collect())
}

/// Transactions to submit and follow to their commits.
struct Wave {
    txs: Arc<Vec<SignedTransaction>>,
    concurrency: usize,
    rate: Option<f64>,
}

impl Wave {
    fn new(txs: Vec<SignedTransaction>, concurrency: usize, rate: Option<f64>) -> Wave {
        Wave {
            txs: Arc::new(txs),
            concurrency,
            rate,
        }
    }

    /// Submits every transaction (the `k`th to node `k` mod the nodes), and follows the commits
    /// until every accepted one committed at every node, or `timeout` after the last submission.
    async fn run(
        &self,
        nodes: &Arc<Nodes>,
        seen: &mut mpsc::UnboundedReceiver<Seen>,
        timeout: Duration,
        progress: Option<&indicatif::ProgressBar>,
    ) -> Vec<Track> {
        let ids: HashMap<String, usize> = (self.txs.iter().enumerate())
            .map(|(k, tx)| (tx.id().to_string(), k))
            .collect();
        let mut tracks = vec![Track::default(); self.txs.len()];
        let (answers_tx, mut answers) = mpsc::unbounded_channel();
        let submitter = tokio::spawn(self.submit_all(nodes.clone(), answers_tx));
        let (mut answered, mut refused, mut committed) = (0, 0, 0);
        let mut deadline = None::<Instant>;
        while answered < tracks.len() || committed < answered - refused {
            let until = deadline.unwrap_or_else(|| Instant::now() + Duration::from_secs(86_400));
            tokio::select! {
                answer = answers.recv(), if answered < tracks.len() => {
                    let Some((k, at, result)) = answer else { break };
                    answered += 1;
                    let track: &mut Track = &mut tracks[k];
                    track.submitted = Some(at);
                    if let Err(kind) = result {
                        track.refused = Some(kind);
                        refused += 1;
                    }
                    if answered == tracks.len() {
                        deadline = Some(Instant::now() + timeout);
                    }
                }
                event = seen.recv() => {
                    let Some(event) = event else { break };
                    committed += record(&mut tracks, &ids, &event, nodes.len());
                    if let Some(bar) = progress {
                        bar.set_position(committed as u64);
                    }
                }
                _ = tokio::time::sleep_until(until) => break,
            }
        }
        submitter.abort();
        tracks
    }

    fn submit_all(
        &self,
        nodes: Arc<Nodes>,
        answers: mpsc::UnboundedSender<(usize, Instant, Result<(), String>)>,
    ) -> impl std::future::Future<Output = ()> + Send + 'static {
        let (txs, rate) = (self.txs.clone(), self.rate);
        let slots = Arc::new(Semaphore::new(self.concurrency));
        async move {
            let start = Instant::now();
            for k in 0..txs.len() {
                if let Some(rate) = rate {
                    tokio::time::sleep_until(start + Duration::from_secs_f64(k as f64 / rate))
                        .await;
                }
                let Ok(slot) = slots.clone().acquire_owned().await else {
                    return;
                };
                let (nodes, txs, answers) = (nodes.clone(), txs.clone(), answers.clone());
                tokio::spawn(async move {
                    let at = Instant::now();
                    let result = nodes.submit(k % nodes.len(), &txs[k]).await;
                    let _ = answers.send((k, at, result));
                    drop(slot);
                });
            }
        }
    }
}

/// Records a node's commit against the tracks; returns how many transactions it completed (now
/// committed at every node).
fn record(tracks: &mut [Track], ids: &HashMap<String, usize>, seen: &Seen, nodes: usize) -> usize {
    let mut completed = 0;
    for tx in &seen.commit.transactions {
        let Some(&k) = ids.get(&tx.id) else { continue };
        let track = &mut tracks[k];
        if track.nodes_seen.contains(&seen.node) {
            // Ordered again (a copy re-proposed): the first commit is the one that counts.
            continue;
        }
        track.first.get_or_insert(seen.at);
        track.nodes_seen.push(seen.node);
        track
            .outcome
            .get_or_insert_with(|| outcome_kind(&tx.outcome));
        if track.nodes_seen.len() == nodes {
            track.all = Some(seen.at);
            completed += 1;
        }
    }
    completed
}

/// An outcome's name, as the API writes it (`applied`, `bad_nonce`, ...).
fn outcome_kind(outcome: &ledger::Outcome) -> String {
    match serde_json::to_value(outcome) {
        Ok(serde_json::Value::String(kind)) => kind,
        Ok(serde_json::Value::Object(map)) => map.keys().next().cloned().unwrap_or_default(),
        _ => "unknown".into(),
    }
}

fn summarize(args: &LoadArgs, senders: usize, tracks: &[Track], closed: Vec<String>) -> LoadReport {
    let mut refused = BTreeMap::new();
    let mut outcomes = BTreeMap::new();
    let (mut first, mut all) = (LatencyHistogram::default(), LatencyHistogram::default());
    let mut lost = 0;
    for track in tracks {
        if let Some(kind) = &track.refused {
            *refused.entry(kind.clone()).or_default() += 1;
            continue;
        }
        let Some(submitted) = track.submitted else {
            continue;
        };
        match (track.first, track.all) {
            (Some(f), Some(a)) => {
                first.record(f - submitted);
                all.record(a - submitted);
                let kind = track.outcome.clone().unwrap_or_default();
                *outcomes.entry(kind).or_default() += 1;
            }
            _ => lost += 1,
        }
    }
    let start = tracks.iter().filter_map(|t| t.submitted).min();
    let end = tracks.iter().filter_map(|t| t.all).max();
    let seconds = match (start, end) {
        (Some(s), Some(e)) => (e - s).as_secs_f64(),
        _ => 0.0,
    };
    let committed: u64 = outcomes.values().sum();
    LoadReport {
        nodes: args.nodes.len(),
        senders,
        count: args.count,
        rate: args.rate,
        concurrency: args.concurrency,
        accepted: (tracks.len() - refused.values().sum::<u64>() as usize) as u64,
        refused,
        outcomes,
        lost,
        seconds,
        throughput: match seconds > 0.0 {
            true => committed as f64 / seconds,
            false => 0.0,
        },
        latency_first: first.summary(),
        latency_all: all.summary(),
        streams_closed: closed,
    }
}

fn progress_bar(count: u64) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(count);
    let style = indicatif::ProgressStyle::with_template(
        "{elapsed_precise} [{bar:40}] {pos}/{len} committed at every node ({per_sec})",
    );
    if let Ok(style) = style {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

fn print_report(r: &LoadReport) {
    let pace = match r.rate {
        Some(rate) => format!("at {rate} tx/s"),
        None => "as a burst".into(),
    };
    println!(
        "{} transfers from {} accounts {pace}, {} in flight, over {} nodes",
        r.count, r.senders, r.concurrency, r.nodes
    );
    println!(
        "  accepted {}, committed at every node {}, lost {}",
        r.accepted,
        r.outcomes.values().sum::<u64>(),
        r.lost
    );
    for (kind, n) in &r.refused {
        println!("  refused  {kind}: {n}");
    }
    for (kind, n) in &r.outcomes {
        println!("  outcome  {kind}: {n}");
    }
    println!(
        "  {:.3} s from the first submission to the last commit at every node: {:.0} tx/s",
        r.seconds, r.throughput
    );
    println!("{}", latency_line("committed at first", &r.latency_first));
    println!("{}", latency_line("committed at all", &r.latency_all));
    for closed in &r.streams_closed {
        println!("  stream   {closed}");
    }
}
