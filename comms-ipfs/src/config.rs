//! How to reach the daemon, how long to wait for it, and how to retry.

use std::{path::PathBuf, time::Duration};

use comms::Limits;
use serde::{Deserialize, Serialize};

/// Configuration of an [`IpfsComms`](crate::IpfsComms) backend.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IpfsConfig {
    /// The daemon's RPC API, as a URL (`http://127.0.0.1:5001`) or a multiaddr
    /// (`/ip4/127.0.0.1/tcp/5001`, the form kubo writes to `$IPFS_PATH/api`).
    pub api: String,
    /// Size limits. Messages default to 1 MiB less 16 KiB: gossipsub's 1 MiB ceiling applies to the
    /// whole frame, signature and sender included, so a full-MiB payload would be dropped by kubo peers.
    pub limits: Limits,
    /// Deadline of one RPC call, retries included (`fetch` uses its own timeout instead).
    #[serde(with = "humantime_serde")]
    pub call_timeout: Duration,
    /// Retry of transient failures (connection refused or reset, 5xx replies, timeouts, malformed replies).
    pub retry: RetryPolicy,
    /// Backoff between attempts to re-open a lost subscription. Its `max_elapsed` is ignored: a
    /// subscription keeps trying until it is dropped.
    pub resubscribe: RetryPolicy,
    /// How often each subscription asks the daemon (`pubsub/ls`) whether it is still subscribed, to
    /// catch a subscription the daemon lost without closing the stream.
    #[serde(with = "humantime_serde")]
    pub subscription_check: Duration,
    /// Messages a subscription holds for a slow reader; more are dropped and counted.
    pub subscriber_queue: usize,
    /// Peers to connect to at start (multiaddrs ending in `/p2p/<peer id>`).
    pub peers: Vec<String>,
    /// File remembering the multiaddrs of peers seen, reconnected to at the next start. None: no memory.
    pub contact_store: Option<PathBuf>,
    /// How often the connected peers are recorded in the contact store.
    #[serde(with = "humantime_serde")]
    pub contact_refresh: Duration,
}

impl Default for IpfsConfig {
    fn default() -> IpfsConfig {
        IpfsConfig {
            api: "http://127.0.0.1:5001".into(),
            limits: Limits {
                max_message_bytes: Limits::MIB - 16 * 1024,
                max_block_bytes: Limits::MIB,
            },
            call_timeout: Duration::from_secs(10),
            retry: RetryPolicy::default(),
            resubscribe: RetryPolicy {
                initial: Duration::from_millis(100),
                max_interval: Duration::from_secs(5),
                ..RetryPolicy::default()
            },
            subscription_check: Duration::from_secs(5),
            subscriber_queue: 4096,
            peers: Vec::new(),
            contact_store: None,
            contact_refresh: Duration::from_secs(30),
        }
    }
}

/// Exponential backoff with jitter, as the `backoff` crate implements it.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetryPolicy {
    /// The first wait.
    #[serde(with = "humantime_serde")]
    pub initial: Duration,
    /// Each wait is the previous one times this.
    pub multiplier: f64,
    /// Each wait is randomized by ± this fraction.
    pub jitter: f64,
    /// No wait is longer than this.
    #[serde(with = "humantime_serde")]
    pub max_interval: Duration,
    /// Retrying stops this long after the first attempt (also bounded by the call's deadline).
    #[serde(with = "humantime_serde")]
    pub max_elapsed: Duration,
}

impl Default for RetryPolicy {
    fn default() -> RetryPolicy {
        RetryPolicy {
            initial: Duration::from_millis(50),
            multiplier: 2.0,
            jitter: 0.5,
            max_interval: Duration::from_secs(2),
            max_elapsed: Duration::from_secs(10),
        }
    }
}

impl RetryPolicy {
    /// The `backoff` schedule for one call, giving up after `max_elapsed` or `budget`, whichever is
    /// shorter; `None` retries forever.
    pub(crate) fn schedule(&self, budget: Option<Duration>) -> backoff::ExponentialBackoff {
        backoff::ExponentialBackoff {
            current_interval: self.initial,
            initial_interval: self.initial,
            randomization_factor: self.jitter,
            multiplier: self.multiplier,
            max_interval: self.max_interval,
            max_elapsed_time: budget.map(|budget| budget.min(self.max_elapsed)),
            ..backoff::ExponentialBackoff::default()
        }
    }
}
