//! End to end over real IPFS: four validators, each on its own kubo daemon (pubsub carries the
//! blocks, bitswap serves what a validator missed), commit transfers and agree on every state root;
//! then kubo's own commands read, walk, pin, export and import the history they built, and walk the
//! state tree from a commit's state root.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::Arc,
    time::Duration,
};

use comms::{conformance::eventually, Cid};
use comms_ipfs::{testnet, IpfsComms, IpfsConfig};
use ledger::{
    devnet::{self, Role},
    Commit, NodeConfig, NodeHandle, SignedTransaction, Transaction,
};
use tokio::time::Instant;

const VALIDATORS: usize = 4;
const TRANSFERS_PER_ACCOUNT: u64 = 3;
const BOUND: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_validators_on_four_kubo_daemons_commit_and_agree_in_native_ipld() {
    let daemons = testnet::start_daemons(VALIDATORS);
    let (chain, logs) = commit_and_agree(&daemons).await;
    the_history_is_native_ipld(&daemons, &chain, &logs[0]).await;
}

/// Four validators, validator i on `daemons[i]`: transfers from every account commit on every node,
/// with the same state root at every height. The chain's CID and each node's commits.
async fn commit_and_agree(daemons: &[testnet::Daemon]) -> (Cid, Vec<Vec<Arc<Commit>>>) {
    let genesis = devnet::genesis("ipfs-end-to-end", 7, VALIDATORS, VALIDATORS, 1_000_000);
    let chain = genesis.encode().1;
    let mut nodes = Vec::new();
    let mut collectors = Vec::new();
    for (i, daemon) in daemons.iter().enumerate() {
        let config = IpfsConfig {
            api: daemon.api(),
            peers: daemons[..i]
                .iter()
                .map(testnet::Daemon::swarm_address)
                .collect(),
            ..IpfsConfig::default()
        };
        let comms = IpfsComms::connect(config)
            .await
            .expect("connect to the daemon");
        let key = Some(devnet::key(7, Role::Validator, i));
        let node = ledger::spawn(&genesis, key, NodeConfig::default(), comms, None)
            .await
            .expect("the validator starts");
        collectors.push(scenario::CommitLog::open(&node).await.expect("running"));
        nodes.push(node);
    }

    // Account i sends to account i+1 through validator i (one validator per account keeps nonces in order).
    for nonce in 0..TRANSFERS_PER_ACCOUNT {
        for (i, node) in nodes.iter().enumerate() {
            let transfer = Transaction::Transfer {
                from: devnet::key(7, Role::Account, i).public(),
                to: devnet::key(7, Role::Account, (i + 1) % VALIDATORS).public(),
                amount: 10 * (i as u64 + 1),
                nonce,
            };
            let signed =
                SignedTransaction::sign(&chain, transfer, &devnet::key(7, Role::Account, i));
            node.submit(signed)
                .await
                .expect("running")
                .expect("accepted");
        }
    }

    let started = Instant::now();
    let committed = tokio::time::timeout(
        BOUND,
        eventually(BOUND, "every transfer committed on every node", || {
            all_applied(&nodes)
        }),
    );
    if committed.await.is_err() {
        for node in &nodes {
            eprintln!("{:?}", node.status().await);
        }
        panic!("transfers not committed everywhere within {BOUND:?}: statuses above");
    }
    eprintln!(
        "all transfers committed everywhere after {:?}",
        started.elapsed()
    );
    // Account i sent 3 × 10(i+1) and received 3 × 10 i from account i-1 (account 0 from the last).
    for node in &nodes {
        for i in 0..VALIDATORS {
            let account = node
                .account(devnet::key(7, Role::Account, i).public())
                .await
                .expect("running");
            let received = 10 * ((i + VALIDATORS - 1) % VALIDATORS + 1) as u64;
            let sent = 10 * (i as u64 + 1);
            assert_eq!(
                account.balance,
                1_000_000 + TRANSFERS_PER_ACCOUNT * received - TRANSFERS_PER_ACCOUNT * sent
            );
        }
    }
    for node in &nodes {
        node.shutdown().await.expect("running");
    }

    let mut roots: BTreeMap<u64, Cid> = BTreeMap::new();
    let mut logs = Vec::new();
    for collector in collectors {
        logs.push(collector.commits().await.expect("a complete commit log"));
    }
    for log in &logs {
        for commit in log {
            let root = *roots.entry(commit.height).or_insert(commit.state_root);
            assert_eq!(
                root, commit.state_root,
                "state roots differ at height {}",
                commit.height
            );
        }
    }
    assert!(roots.len() >= 3, "only {} heights committed", roots.len());
    (chain, logs)
}

/// kubo's own commands read, walk, pin and move the ledger's DAG: a block's parents and its chain
/// (the genesis) are IPLD links, and every block they reach is on the daemon.
async fn the_history_is_native_ipld(
    daemons: &[testnet::Daemon],
    genesis: &Cid,
    commits: &[Arc<Commit>],
) {
    let last = commits.last().expect("commits");
    let leader = last.leader.to_string();

    // `dag get` shows the block as IPLD, and a path through it follows a parent link.
    let block = dag_get(&daemons[0], &leader).await;
    assert_eq!(block["block"]["round"], last.round, "{block}");
    assert_eq!(block["block"]["chain"]["/"], genesis.to_string(), "{block}");
    let parent = block["block"]["parents"][0]["/"]
        .as_str()
        .unwrap_or_else(|| panic!("the leader's first parent is a link: {block}"))
        .to_owned();
    let walked = dag_get(&daemons[0], &format!("{leader}/block/parents/0")).await;
    assert_eq!(walked, dag_get(&daemons[0], &parent).await);
    // A parent is of the round before, or the author's own earlier block after a gap.
    let parent_round = walked["block"]["round"].as_u64().expect("a round");
    assert!(parent_round < last.round, "{walked}");

    // Everything below the leader is on the daemon: the genesis, and every block committed with a
    // leader two or more rounds older (a committed leader was voted for by a quorum, so every block
    // two rounds up links it; a leader of the same round, the other slot, does not).
    let below = refs(&daemons[0], &leader, false).await;
    let older: Vec<&Cid> = commits
        .iter()
        .filter(|c| c.round + 2 <= last.round)
        .flat_map(|c| &c.blocks)
        .collect();
    assert!(!older.is_empty(), "no commits two rounds below the last");
    for cid in older {
        assert!(
            below.contains(&cid.to_string()),
            "committed block {cid} is not below the last leader"
        );
    }
    assert!(
        below.contains(&genesis.to_string()),
        "the genesis is not below the leader"
    );

    // The state is IPLD too: the last commit's state root links the accounts tree, whose node
    // holds every account (four, in buckets under one root node), and kubo walks all of it.
    let root = last.state_root.to_string();
    let state = dag_get(&daemons[0], &root).await;
    let accounts_tree = state["accounts"]["/"]
        .as_str()
        .unwrap_or_else(|| panic!("the state root links the accounts tree: {state}"))
        .to_owned();
    let node = dag_get(&daemons[0], &format!("{root}/accounts")).await;
    assert!(node[0]["/"]["bytes"].is_string(), "a bitmap first: {node}");
    let pairs: usize = (node[1].as_array().expect("slots").iter())
        .map(|slot| slot.as_array().map_or(0, Vec::len))
        .sum();
    assert_eq!(pairs, VALIDATORS, "one pair per account: {node}");
    let state_blocks = refs(&daemons[0], &root, false).await;
    assert!(state_blocks.contains(&accounts_tree), "{state_blocks:?}");
    let waiting_tree = state["waiting"]["/"].as_str().unwrap_or_default();
    assert!(state_blocks.contains(waiting_tree), "{state_blocks:?}");

    // A recursive pin of the leader pins that whole history.
    ipfs(&daemons[0], &["pin", "add", "--recursive", &leader]).await;
    let pins = ipfs(&daemons[0], &["pin", "ls", "--type=recursive", &leader]).await;
    assert!(pins.contains(&leader), "{pins}");
    // kubo's garbage collector walks every pin: it needs every link on the daemon, and keeps them.
    ipfs(&daemons[0], &["repo", "gc", "--quiet"]).await;
    assert_eq!(refs(&daemons[0], &leader, true).await, below);

    // Exported as a CAR and imported into a daemon that knows no one, the history has the same CIDs,
    // all there: the import pins the root, and the walk below it needs no network.
    let car = daemons[0].repo().with_extension("car");
    let exported = ipfs_bytes(&daemons[0], &["dag", "export", &leader]).await;
    std::fs::write(&car, exported).expect("write the CAR");
    let fresh = testnet::Daemon::start();
    let car_path = car.to_str().expect("a UTF-8 temp path");
    let imported = ipfs(&fresh, &["dag", "import", "--pin-roots", car_path]).await;
    assert!(imported.contains(&leader), "{imported}");
    assert_eq!(refs(&fresh, &leader, true).await, below);
    eprintln!(
        "kubo walked, pinned, exported ({} KiB) and imported the {} blocks below the leader of height {}",
        std::fs::metadata(&car).map_or(0, |m| m.len() >> 10),
        below.len(),
        last.height
    );
    let _ = std::fs::remove_file(&car);
}

/// `ipfs dag get PATH`, parsed.
async fn dag_get(daemon: &testnet::Daemon, path: &str) -> serde_json::Value {
    let json = ipfs(daemon, &["dag", "get", path]).await;
    serde_json::from_str(&json).unwrap_or_else(|e| panic!("dag get {path}: {e}: {json}"))
}

/// The CIDs below `root`, each once (`ipfs refs -r --unique`), without asking the network when
/// `offline`.
async fn refs(daemon: &testnet::Daemon, root: &str, offline: bool) -> BTreeSet<String> {
    let mut args = vec!["refs", "-r", "--unique", root];
    if offline {
        args.push("--offline");
    }
    ipfs(daemon, &args)
        .await
        .lines()
        .map(str::to_owned)
        .collect()
}

/// Runs the daemon's command line with `args` (within [`BOUND`]); its standard output.
async fn ipfs(daemon: &testnet::Daemon, args: &[&str]) -> String {
    String::from_utf8(ipfs_bytes(daemon, args).await).expect("UTF-8 output")
}

async fn ipfs_bytes(daemon: &testnet::Daemon, args: &[&str]) -> Vec<u8> {
    let mut command = tokio::process::Command::from(daemon.command());
    command.args(args).kill_on_drop(true);
    let output = tokio::time::timeout(BOUND, command.output())
        .await
        .unwrap_or_else(|_| panic!("`ipfs {}` took over {BOUND:?}", args.join(" ")))
        .expect("run the ipfs command line");
    assert!(
        output.status.success(),
        "`ipfs {}` failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr)
    );
    output.stdout
}

/// Whether every node has applied every transfer (each account's nonce is at its last one).
async fn all_applied(nodes: &[NodeHandle]) -> bool {
    for node in nodes {
        for i in 0..VALIDATORS {
            let account = node
                .account(devnet::key(7, Role::Account, i).public())
                .await;
            if account.map_or(true, |account| account.nonce < TRANSFERS_PER_ACCOUNT) {
                return false;
            }
        }
    }
    true
}
