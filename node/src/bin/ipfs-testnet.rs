//! `ipfs-testnet`: K IPFS daemons on loopback for a local devnet, set up as the tests set up theirs
//! (kubo from `comms-ipfs/kubo/install.sh`, or the binary `$IPFS_TEST_DAEMON` names; own repositories, free ports, no discovery or routing, pubsub on). Writes one line per daemon, `API_URL SWARM_MULTIADDR`, to
//! `--out` once all are up; runs until SIGINT or SIGTERM, then stops them and removes their
//! repositories. The daemons also die if this process is killed.

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use comms_ipfs::testnet;
use tokio::signal::unix::{signal, SignalKind};

#[derive(Parser)]
#[command(version, about, long_about)]
/// Starts K IPFS daemons on loopback for a local devnet and keeps them until SIGINT or SIGTERM.
struct Args {
    /// How many daemons.
    #[arg(long, default_value_t = 4)]
    count: usize,
    /// Where to write `API_URL SWARM_MULTIADDR`, one line per daemon (written whole, once all
    /// daemons are up).
    #[arg(long)]
    out: PathBuf,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    // Handlers first: a SIGTERM during the start-up must still stop the daemons.
    let (mut interrupt, mut terminate) = runtime.block_on(async {
        anyhow::Ok((
            signal(SignalKind::interrupt())?,
            signal(SignalKind::terminate())?,
        ))
    })?;
    let daemons = testnet::start_daemons(args.count);
    let lines: String = daemons
        .iter()
        .map(|d| format!("{} {}\n", d.api(), d.swarm_address()))
        .collect();
    let partial = args.out.with_extension("partial");
    std::fs::write(&partial, lines).with_context(|| format!("writing {}", partial.display()))?;
    std::fs::rename(&partial, &args.out)
        .with_context(|| format!("writing {}", args.out.display()))?;
    eprintln!(
        "{} IPFS daemons running (addresses in {}); SIGINT or SIGTERM stops them",
        daemons.len(),
        args.out.display()
    );
    runtime.block_on(async {
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = terminate.recv() => {}
        }
    });
    drop(daemons);
    eprintln!("IPFS daemons stopped");
    Ok(())
}
