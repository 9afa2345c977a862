//! `ipfs-testnet`: K IPFS daemons on loopback for a local devnet, set up as the tests set up theirs
//! (kubo from `comms-ipfs/kubo/install.sh`, or the binary `$IPFS_TEST_DAEMON` names; own repositories, free ports, no discovery or routing, pubsub on). Writes one line per daemon, `API_URL SWARM_MULTIADDR`, to
//! `--out` once all are up; runs until SIGINT or SIGTERM, then stops them and removes their
//! repositories. The daemons also die if this process is killed.
//!
//! With `--link-delay D`, each daemon's swarm is reached through a relay on loopback that holds
//! every byte for `D` in each direction, and the relay's address is the one written: peers connected
//! through those addresses see a link with a one-way delay of `D` (a stand-in for `tc netem`, which
//! the kernels here lack).

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use anyhow::Context;
use clap::Parser;
use comms_ipfs::testnet;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{tcp::OwnedReadHalf, tcp::OwnedWriteHalf, TcpListener, TcpStream},
    signal::unix::{signal, SignalKind},
    sync::mpsc,
    time::Instant,
};

/// Chunks a relay holds per direction before it stops reading (TCP then pushes back).
const CHUNKS_HELD: usize = 1024;
/// The largest chunk a relay reads at once.
const CHUNK: usize = 64 * 1024;

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
    /// Put this one-way delay (e.g. `20ms`) on every link between two daemons: their swarm
    /// addresses in `--out` are relays that hold every byte this long, both ways.
    #[arg(long, value_parser = humantime::parse_duration)]
    link_delay: Option<Duration>,
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
    let mut lines = String::new();
    for daemon in &daemons {
        let swarm = match args.link_delay {
            None => daemon.swarm_address(),
            Some(delay) => {
                let upstream = swarm_socket(&daemon.swarm_address())?;
                let relay = runtime.block_on(delay_relay(upstream, delay))?;
                format!(
                    "/ip4/127.0.0.1/tcp/{}/p2p/{}",
                    relay.port(),
                    daemon.peer_id()
                )
            }
        };
        lines.push_str(&format!("{} {swarm}\n", daemon.api()));
    }
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

/// The loopback TCP socket of a `/ip4/127.0.0.1/tcp/PORT/p2p/ID` swarm address.
fn swarm_socket(multiaddr: &str) -> anyhow::Result<SocketAddr> {
    let port = multiaddr
        .split('/')
        .skip_while(|part| *part != "tcp")
        .nth(1)
        .and_then(|port| port.parse::<u16>().ok())
        .with_context(|| format!("no TCP port in the swarm address {multiaddr}"))?;
    Ok(SocketAddr::from(([127, 0, 0, 1], port)))
}

/// Listens on a free loopback port and joins each connection to `upstream`, holding every byte
/// `delay` in each direction, in order. Runs on the runtime until the process ends.
async fn delay_relay(upstream: SocketAddr, delay: Duration) -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?;
    tokio::spawn(async move {
        loop {
            let inbound = match listener.accept().await {
                Ok((inbound, _)) => inbound,
                Err(error) => {
                    eprintln!("relay to {upstream}: accept failed: {error}");
                    continue;
                }
            };
            tokio::spawn(async move {
                let outbound = match TcpStream::connect(upstream).await {
                    Ok(outbound) => outbound,
                    Err(error) => return eprintln!("relay to {upstream}: {error}"),
                };
                let _ = (inbound.set_nodelay(true), outbound.set_nodelay(true));
                let (from_client, to_client) = inbound.into_split();
                let (from_daemon, to_daemon) = outbound.into_split();
                tokio::join!(
                    delayed_pipe(from_client, to_daemon, delay),
                    delayed_pipe(from_daemon, to_client, delay)
                );
            });
        }
    });
    Ok(address)
}

/// Copies `from` to `to`, writing each chunk `delay` after it was read; closes `to` after `from`.
async fn delayed_pipe(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, delay: Duration) {
    let (held, mut due) = mpsc::channel::<(Instant, Vec<u8>)>(CHUNKS_HELD);
    let read = async move {
        let mut buffer = vec![0; CHUNK];
        while let Ok(n @ 1..) = from.read(&mut buffer).await {
            if held
                .send((Instant::now() + delay, buffer[..n].to_vec()))
                .await
                .is_err()
            {
                break;
            }
        }
    };
    let write = async move {
        while let Some((at, chunk)) = due.recv().await {
            tokio::time::sleep_until(at).await;
            if to.write_all(&chunk).await.is_err() {
                break;
            }
        }
        let _ = to.shutdown().await;
    };
    tokio::join!(read, write);
}
