//! `ledger-node`: run a ledger node, or simulate a network of them.

mod simulate;

use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

/// A distributed-ledger node whose network layer is IPFS or an embedded network simulator.
#[derive(Parser)]
#[command(name = "ledger-node", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Simulate a network of peers in one process, in virtual time: nothing to install.
    Simulate(simulate::Args),
}

fn main() -> anyhow::Result<()> {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .without_time()
        .init();
    match Cli::parse().command {
        Command::Simulate(args) => simulate::main(args),
    }
}
