//! How to reach the daemon, how long to wait for it, and how to retry.

use std::{path::PathBuf, time::Duration};

use comms::{
    config::{self, within, ConfigError},
    Limits,
};
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

impl IpfsConfig {
    /// Checks every field against its bound, naming the first that breaks one as the config file
    /// spells it (`ipfs.call_timeout`, `ipfs.retry.jitter`): an http URL or multiaddr for the API,
    /// peers as `/…/p2p/<id>` multiaddrs, durations from 1 ms (a subscription check from 10 ms, a
    /// contact refresh from 1 s) to an hour, queues from 1, the size limits of
    /// [`comms::config::limits`].
    pub fn check(&self) -> Result<(), ConfigError> {
        self.check_fields().map_err(|e| e.within_table("ipfs"))
    }

    fn check_fields(&self) -> Result<(), ConfigError> {
        let (ms, hour) = (Duration::from_millis(1), Duration::from_secs(3600));
        if let Err(error) = crate::client_for(&self.api) {
            return Err(ConfigError::new("api", error.to_string()));
        }
        config::limits(&self.limits)?;
        within("call_timeout", self.call_timeout, ms, hour)?;
        (self.retry.check()).map_err(|e| e.within_table("retry"))?;
        (self.resubscribe.check()).map_err(|e| e.within_table("resubscribe"))?;
        let check_every = self.subscription_check;
        within("subscription_check", check_every, 10 * ms, hour)?;
        within("subscriber_queue", self.subscriber_queue, 1, 1 << 20)?;
        for peer in &self.peers {
            config::peer_address("peers", peer)?;
        }
        let refresh = self.contact_refresh;
        within(
            "contact_refresh",
            refresh,
            Duration::from_secs(1),
            24 * hour,
        )
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
    /// Checks each field: the first wait from 1 ms to `max_interval`, which is at most an hour; a
    /// multiplier from 1 to 100; jitter from 0 to 1; giving up after at most a day.
    pub fn check(&self) -> Result<(), ConfigError> {
        let hour = Duration::from_secs(3600);
        within(
            "max_interval",
            self.max_interval,
            Duration::from_millis(1),
            hour,
        )?;
        let first = (Duration::from_millis(1), self.max_interval);
        within("initial", self.initial, first.0, first.1)?;
        within("multiplier", self.multiplier, 1.0, 100.0)?;
        within("jitter", self.jitter, 0.0, 1.0)?;
        within("max_elapsed", self.max_elapsed, Duration::ZERO, 24 * hour)
    }

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
