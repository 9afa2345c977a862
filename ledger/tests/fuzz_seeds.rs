//! The fuzz targets' seeds, taken from a simulated run: the blocks validators broadcast, the batches
//! and transactions they fetch, a state's root block, pubsub frames of those blocks as the kubo
//! backend sends them, an account's proof and its checkpoint's certificate, the genesis and the
//! core's config. (The `scenario` target's seeds are the
//! fitted scenarios in `benches/results`.) Every run checks that each decodes strictly to a value that re-encodes
//! to the same bytes (what the targets assert of any input); with `FUZZ_SEEDS=DIR` it also writes
//! them to `DIR/<target>/<CID>`, as `fuzz/seeds` was made:
//!
//!     FUZZ_SEEDS=fuzz/seeds cargo test --workspace --features node/testnet --test fuzz_seeds

use std::{collections::BTreeMap, time::Duration};

use comms::{frame, Communication};
use ledger::{codec, Payload, SignedBlock, SignedTransaction, StateRoot};
use scenario::Network;

/// Seeds by target, each keyed by its CID.
type Seeds = BTreeMap<&'static str, BTreeMap<String, Vec<u8>>>;

fn add(seeds: &mut Seeds, target: &'static str, bytes: &[u8]) {
    let cid = codec::cid_of(bytes).to_string();
    seeds.entry(target).or_default().insert(cid, bytes.to_vec());
}

#[tokio::test(start_paused = true)]
async fn what_validators_exchange_decodes_strictly_and_seeds_the_fuzzers() {
    let mut config = Network::test_config();
    // Small payloads inline, larger ones in batch blocks: both kinds of block.
    config.core.inline_bytes = 400;
    let network = Network::builder()
        .tests(7)
        .node_config(config)
        .start()
        .await
        .expect("the network starts");
    let peer = network.peer(3);
    let mut blocks = peer
        .subscribe(&ledger::node::blocks_topic(&network.chain()))
        .await
        .expect("subscribed");
    let mut accounts = network.accounts(2);
    let via = network.node(0).expect("running").clone();
    for burst in [1, 6] {
        for _ in 0..burst {
            let tx = accounts.transfer(0, 1, 5);
            let taken = accounts.submit(&via, 0, tx).await;
            taken.expect("running").expect("accepted");
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }

    let mut seeds = Seeds::new();
    let mut received = Vec::new();
    while let Ok(Some(message)) =
        tokio::time::timeout(Duration::from_millis(1), blocks.recv()).await
    {
        received.push(message.data);
    }
    for data in &received {
        let block = SignedBlock::decode(data).expect("a validator's block decodes strictly");
        assert_eq!(block.encode().0, &data[..], "and re-encodes to its bytes");
        add(&mut seeds, "block", data);
        let transactions = match &block.block.payload {
            Payload::Inline(transactions) => transactions.clone(),
            Payload::Batch { cid, .. } => {
                let batch = peer.fetch(cid, Duration::from_secs(5)).await;
                let batch = batch.expect("a batch is served");
                let decoded = codec::decode::<Vec<SignedTransaction>>(&batch);
                add(&mut seeds, "batch", &batch);
                decoded.expect("a batch decodes strictly")
            }
        };
        for transaction in transactions {
            add(&mut seeds, "transaction", &codec::encode(&transaction));
        }
    }
    // Frames of several blocks, and of one, as the kubo backend publishes them.
    for (seq, group) in received.chunks(3).take(8).enumerate() {
        let link = frame::Link {
            origin: 7,
            seq: seq as u64,
            prev: None,
        };
        add(&mut seeds, "frame", &frame::encode(&link, group));
    }
    let status = via.status().await.expect("running");
    let root = status.state_root.parse().expect("a CID");
    let bytes = peer.fetch(&root, Duration::from_secs(5)).await;
    let bytes = bytes.expect("the state's root block is served");
    codec::decode::<StateRoot>(&bytes).expect("a state root decodes strictly");
    add(&mut seeds, "state_root", &bytes);

    // An account's proof and its checkpoint's certificate, as a light client receives them:
    // blocks, each after its length (2 bytes, little-endian), the proof after the account's key.
    let alice = accounts.key(0);
    let mut proven = None;
    for _ in 0..120 {
        proven = via.proven_account(alice).await.expect("running");
        if proven.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let proven = proven.expect("a checkpoint is certified within a minute");
    let root = proven.checkpoint.state_root;
    let verified = ledger::state::verify_account(&root, &alice, &proven.proof);
    assert_eq!(verified.expect("the proof verifies"), proven.account);
    add(
        &mut seeds,
        "account_proof",
        &[&alice.0[..], &framed(&proven.proof)].concat(),
    );
    add(&mut seeds, "certificate", &framed(&proven.certificate));

    // The files a node reads: its genesis (JSON) and its core's table of the config (TOML).
    let genesis = serde_json::to_vec_pretty(network.genesis()).expect("a genesis as JSON");
    add(&mut seeds, "genesis", &genesis);
    let core = toml::to_string(&network.node_config().core).expect("a config as TOML");
    add(&mut seeds, "core_config", core.as_bytes());

    for target in [
        "block",
        "batch",
        "transaction",
        "frame",
        "state_root",
        "genesis",
        "core_config",
        "account_proof",
        "certificate",
    ] {
        let count = seeds.get(target).map_or(0, BTreeMap::len);
        assert!(count > 0, "no {target} seed: {:?}", seeds.keys());
    }
    if let Some(dir) = std::env::var_os("FUZZ_SEEDS") {
        // The `certificate` target checks against this chain.
        let chain = ledger::devnet::genesis("simulation-7", 7, 4, 2, 1_000_000);
        assert_eq!(
            network.genesis(),
            &chain,
            "write the seeds with the default seed, 7"
        );
        write(std::path::Path::new(&dir), &seeds);
    }
}

/// Each block after its length, 2 bytes little-endian, as the proof targets read them.
fn framed(blocks: &[bytes::Bytes]) -> Vec<u8> {
    let mut out = Vec::new();
    for block in blocks {
        let length = u16::try_from(block.len()).expect("a state or signed block under 64 KiB");
        out.extend_from_slice(&length.to_le_bytes());
        out.extend_from_slice(block);
    }
    out
}

fn write(dir: &std::path::Path, seeds: &Seeds) {
    for (target, files) in seeds {
        let dir = dir.join(target);
        std::fs::create_dir_all(&dir).expect("a seed directory");
        for (cid, bytes) in files {
            std::fs::write(dir.join(cid), bytes).expect("a seed written");
        }
        eprintln!("{} seeds in {}", files.len(), dir.display());
    }
}
