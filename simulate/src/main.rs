//! `ledger-simulate`: the main job, a simulated ledger network.

use clap::Parser;
use tracing_subscriber::EnvFilter;

/// Simulate a network of ledger validators in one process, in virtual time: nothing to install.
///
/// Logs go to stderr (RUST_LOG chooses what they show), in virtual time, so without wall times.
#[derive(Parser)]
#[command(name = "ledger-simulate", version, about, long_about)]
struct Cli {
    #[command(flatten)]
    args: simulate::Args,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .without_time()
        .init();
    simulate::main(cli.args)
}
