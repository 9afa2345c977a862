//! `ledger-node`: run a ledger node and talk to a running one. (A simulated network of them is
//! the main job, `ledger-simulate`, in the `simulate` package.)

mod client;
mod config;
mod keys;
mod load;
mod proof;
mod run;

use clap::{Parser, Subcommand};
// The API's modules, under the names the binary's own modules use.
use ledger_api::{api, http, metered, stream, wire};
use tracing_subscriber::EnvFilter;

/// A distributed-ledger node over IPFS.
///
/// Logs go to stderr; set RUST_LOG (for example `RUST_LOG=debug` or `RUST_LOG=ledger=debug`) to
/// choose what they show. To simulate a network of validators, run `ledger-simulate` (the
/// `simulate` package): it needs nothing installed.
#[derive(Parser)]
#[command(name = "ledger-node", version, about, long_about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Write a new ed25519 key file (permissions 0600) and print its public key.
    Keygen(keys::KeygenArgs),
    /// Build a genesis file from validator keys and initial balances; prints the chain's CID.
    Genesis(keys::GenesisArgs),
    /// Write a node's configuration file, with every default spelled out.
    Config(config::ConfigArgs),
    /// Run a validator (with a key) or an observer over an IPFS daemon, until SIGINT or SIGTERM.
    Run(run::RunArgs),
    /// Sign a transaction with a key file and submit it to a running node.
    Tx(client::TxArgs),
    /// Ask a running node about accounts, blocks, transactions, commits and peers.
    Query(client::QueryArgs),
    /// Send signed transfers to running nodes, as a burst or at a rate, and measure their commits.
    Load(load::LoadArgs),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false);
    match &cli.command {
        // A service's logs need times; a simulation's are in virtual time, so wall times would mislead.
        Command::Run(_) => logs.init(),
        _ => logs.without_time().init(),
    }
    match cli.command {
        Command::Keygen(args) => keys::keygen(args),
        Command::Genesis(args) => keys::genesis(args),
        Command::Config(args) => config::write(args),
        Command::Run(args) => run::main(args),
        Command::Tx(args) => client::tx(args),
        Command::Query(args) => client::query(args),
        Command::Load(args) => load::main(args),
    }
}
