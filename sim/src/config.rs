//! What a simulated network is made of: the seed, the link model, limits and queue sizes. All of it
//! is serde, so a scenario can live in a TOML file; durations are human-readable (`"40ms"`).

use std::time::Duration;

use comms::{
    config::{within, ConfigError},
    Limits,
};
use serde::{Deserialize, Serialize};

use crate::dist::{Latency, SimRng};

/// The network-wide settings of a simulation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SimConfig {
    /// Drives every random choice; the same seed and scenario give the same trace.
    pub seed: u64,
    /// The model of every link that has no override.
    pub link: LinkModel,
    /// Size limits, enforced when sending and again when receiving (a faulty peer may ignore its own).
    pub limits: Limits,
    /// Messages a subscription may hold unread before further ones are dropped (and counted), as a
    /// gossipsub router drops for a slow consumer.
    pub subscriber_queue: usize,
    /// How often a pending fetch asks the reachable holders again (bitswap re-sends its want list).
    #[serde(with = "humantime_serde")]
    pub want_retry: Duration,
    /// The most holders one want goes to, picked at random among the reachable ones.
    pub max_providers_per_want: usize,
    /// How long a holder takes to answer a want, before its response leaves (a daemon's lookup
    /// and scheduling: the fixed cost of a fetch). Zero by default.
    pub serve_delay: Latency,
    /// What publishing costs each peer: its broadcasts queue there. Free by default.
    pub publisher: SenderModel,
    /// What answering fetches costs each peer: its responses queue there (a daemon's block
    /// exchange is a separate path from its pubsub router). Free by default.
    pub server: SenderModel,
    /// Keep every trace event in memory for export (the digest is kept either way).
    pub record_trace: bool,
}

impl Default for SimConfig {
    fn default() -> SimConfig {
        SimConfig {
            seed: 0,
            link: LinkModel::default(),
            limits: Limits::default(),
            subscriber_queue: 65_536,
            want_retry: Duration::from_millis(500),
            max_providers_per_want: 8,
            serve_delay: Latency::constant(Duration::ZERO),
            publisher: SenderModel::default(),
            server: SenderModel::default(),
            record_trace: false,
        }
    }
}

/// The longest delay a scenario may give anything: an hour.
const HOUR: Duration = Duration::from_secs(3600);

impl SimConfig {
    /// Checks a scenario (what a file may say that the code never would), naming the first field
    /// out of bounds as the file spells it (`link.loss`, `publisher.sigma`): delays up to an hour,
    /// a loss from 0 to 1, shapes finite and positive, limits from 1 byte to 64 MiB, a queue and a
    /// fan-out from 1, a want retry from 1 ms.
    pub fn check(&self) -> Result<(), ConfigError> {
        self.link.check().map_err(|e| e.within_table("link"))?;
        within(
            "limits.max_message_bytes",
            self.limits.max_message_bytes,
            1,
            64 * Limits::MIB,
        )?;
        within(
            "limits.max_block_bytes",
            self.limits.max_block_bytes,
            1,
            64 * Limits::MIB,
        )?;
        within("subscriber_queue", self.subscriber_queue, 1, 1 << 24)?;
        within(
            "want_retry",
            self.want_retry,
            Duration::from_millis(1),
            HOUR,
        )?;
        within(
            "max_providers_per_want",
            self.max_providers_per_want,
            1,
            1 << 16,
        )?;
        self.serve_delay
            .check()
            .map_err(|e| e.within_table("serve_delay"))?;
        self.publisher
            .check()
            .map_err(|e| e.within_table("publisher"))?;
        self.server.check().map_err(|e| e.within_table("server"))
    }
}

/// One of a peer's sending paths: each message sent on it occupies it for `per_message` plus its
/// size over `bandwidth`, one message after another, so latency grows with load (the links
/// themselves do not contend). A broadcast is one message however many copies it fans out to, as a
/// pubsub router encodes and signs it once.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SenderModel {
    /// The cost of sending one message: always this, or the median when `sigma` is set.
    #[serde(with = "humantime_serde")]
    pub per_message: Duration,
    /// Bytes per second all of a peer's messages share. `None`: no cost per byte.
    pub bandwidth: Option<u64>,
    /// Makes the cost per message log-normal with this shape (a daemon's handling of a message
    /// varies); 0, the default, makes it constant.
    pub sigma: f64,
}

impl SenderModel {
    /// Checks the cost per message (up to an hour) and its shape (0 to 10).
    pub fn check(&self) -> Result<(), ConfigError> {
        within("per_message", self.per_message, Duration::ZERO, HOUR)?;
        within("sigma", self.sigma, 0.0, 10.0)
    }

    /// How long a message of `size` bytes occupies the sending side, in nanoseconds, at the median
    /// cost per message.
    pub fn occupancy(&self, size: usize) -> u64 {
        (self.per_message.as_nanos() as u64).saturating_add(self.per_byte(size))
    }

    /// How long one message of `size` bytes occupies the sending side, its cost per message drawn
    /// from `rng` when it varies (and nothing drawn when it does not).
    pub(crate) fn sample(&self, size: usize, rng: &mut SimRng) -> u64 {
        let per_message = match self.sigma > 0.0 {
            true => Latency::LogNormal {
                median: self.per_message,
                sigma: self.sigma,
            }
            .sample(rng),
            false => self.per_message.as_nanos() as u64,
        };
        per_message.saturating_add(self.per_byte(size))
    }

    fn per_byte(&self, size: usize) -> u64 {
        self.bandwidth
            .filter(|&b| b > 0)
            .map_or(0, |b| transfer_nanos(size, b))
    }
}

/// Nanoseconds that `size` bytes take at `bandwidth` bytes per second.
pub(crate) fn transfer_nanos(size: usize, bandwidth: u64) -> u64 {
    (size as u128 * 1_000_000_000 / bandwidth as u128) as u64
}

/// One direction of a link between two peers.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LinkModel {
    /// One-way propagation delay.
    pub latency: Latency,
    /// Extra delay drawn uniformly from zero to this, per message.
    #[serde(with = "humantime_serde")]
    pub jitter: Duration,
    /// Probability that a message (or one leg of a fetch) is lost, from 0 to 1.
    pub loss: f64,
    /// Bytes per second; a payload of `n` bytes takes `n / bandwidth` longer. `None` (0 in a
    /// scenario file, which has no null): unlimited.
    #[serde(with = "zero_is_unlimited")]
    pub bandwidth: Option<u64>,
}

/// A bandwidth written as a number, 0 for unlimited: TOML has no null, and an absent key means the
/// default link's bandwidth.
mod zero_is_unlimited {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(
        bandwidth: &Option<u64>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.serialize_u64(bandwidth.unwrap_or(0))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<u64>, D::Error> {
        Ok(Some(u64::deserialize(deserializer)?).filter(|&b| b > 0))
    }
}

impl LinkModel {
    /// Checks the latency, the jitter (up to an hour) and the loss (0 to 1).
    pub fn check(&self) -> Result<(), ConfigError> {
        self.latency
            .check()
            .map_err(|e| e.within_table("latency"))?;
        within("jitter", self.jitter, Duration::ZERO, HOUR)?;
        within("loss", self.loss, 0.0, 1.0)
    }
}

impl Default for LinkModel {
    /// 20 ms ± 5 ms, no loss, 100 Mbit/s: a rough continental link.
    fn default() -> LinkModel {
        LinkModel {
            latency: Latency::Constant {
                value: Duration::from_millis(20),
            },
            jitter: Duration::from_millis(5),
            loss: 0.0,
            bandwidth: Some(12_500_000),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_scenario_written_by_hand() {
        let text = r#"
            seed = 7
            want_retry = "250ms"
            [link]
            latency = { kind = "log-normal", median = "40ms", sigma = 0.6 }
            jitter = "2ms"
            loss = 0.01
            [publisher]
            per_message = "1ms"
            bandwidth = 10000000
            [limits]
            max_message_bytes = 65536
        "#;
        let config: SimConfig = toml::from_str(text).expect("valid scenario");
        assert_eq!(config.seed, 7);
        assert_eq!(config.want_retry, Duration::from_millis(250));
        assert_eq!(
            config.link.latency,
            Latency::LogNormal {
                median: Duration::from_millis(40),
                sigma: 0.6
            }
        );
        assert_eq!(config.link.bandwidth, LinkModel::default().bandwidth);
        assert_eq!(config.publisher.occupancy(10_000), 2_000_000, "1 ms + 1 ms");
        assert_eq!(config.serve_delay, SimConfig::default().serve_delay);
        assert_eq!(config.server, SenderModel::default());
        assert_eq!(config.limits.max_message_bytes, 65536);
        assert_eq!(config.limits.max_block_bytes, Limits::MIB);
        assert!(
            toml::from_str::<SimConfig>("sede = 1").is_err(),
            "unknown keys are refused"
        );
    }

    #[test]
    fn a_scenario_out_of_bounds_is_refused_naming_its_field() {
        for (text, field) in [
            ("[link]\nloss = 1.5\n", "link.loss"),
            ("[link]\nloss = nan\n", "link.loss"),
            (
                "[link.latency]\nkind = \"uniform\"\nmin = \"2ms\"\nmax = \"1ms\"\n",
                "link.latency.min",
            ),
            (
                "[link.latency]\nkind = \"log-normal\"\nmedian = \"1ms\"\nsigma = -1.0\n",
                "link.latency.sigma",
            ),
            (
                "[serve_delay]\nkind = \"pareto\"\nmin = \"1ms\"\nshape = 0.0\n",
                "serve_delay.shape",
            ),
            ("[publisher]\nsigma = inf\n", "publisher.sigma"),
            ("subscriber_queue = 0\n", "subscriber_queue"),
            ("want_retry = \"0s\"\n", "want_retry"),
            ("[limits]\nmax_block_bytes = 0\n", "limits.max_block_bytes"),
        ] {
            let config: SimConfig = toml::from_str(text).expect(field);
            let error = config.check().expect_err(field);
            assert_eq!(error.field, field, "{error}");
        }
        SimConfig::default().check().expect("the default is valid");
        for fitted in [
            include_str!("../../benches/results/sim-fitted.toml"),
            include_str!("../../benches/results/sim-fitted-embedded.toml"),
        ] {
            let config: SimConfig = toml::from_str(fitted).expect("a fitted scenario");
            config.check().expect("a fitted scenario is valid");
        }
    }

    #[test]
    fn a_written_scenario_reads_back_the_same() {
        let config = SimConfig {
            link: LinkModel {
                bandwidth: None,
                ..LinkModel::default()
            },
            serve_delay: Latency::constant(Duration::from_millis(250)),
            server: SenderModel {
                per_message: Duration::from_millis(7),
                bandwidth: Some(32_000_000),
                sigma: 0.4,
            },
            ..SimConfig::default()
        };
        let text = toml::to_string_pretty(&config).expect("writes");
        let read: SimConfig = toml::from_str(&text).expect("reads");
        assert_eq!(read, config, "{text}");
        assert_eq!(read.link.bandwidth, None, "unlimited stays unlimited");
    }
}

/// Misbehaviour injected into one peer, for adversarial tests.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Fault {
    /// Every block this peer serves arrives with one byte flipped.
    CorruptBlocks,
    /// This peer publishes `size` bytes of junk on `topic` every `every`, ignoring size limits.
    Flood {
        topic: comms::Topic,
        #[serde(with = "humantime_serde")]
        every: Duration,
        size: usize,
    },
}
