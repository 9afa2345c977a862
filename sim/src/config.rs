//! What a simulated network is made of: the seed, the link model, limits and queue sizes. All of it
//! is serde, so a scenario can live in a TOML file; durations are human-readable (`"40ms"`).

use std::time::Duration;

use comms::Limits;
use serde::{Deserialize, Serialize};

use crate::dist::Latency;

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
            record_trace: false,
        }
    }
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
    /// Bytes per second; a payload of `n` bytes takes `n / bandwidth` longer. `None`: unlimited.
    pub bandwidth: Option<u64>,
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
        assert_eq!(config.limits.max_message_bytes, 65536);
        assert_eq!(config.limits.max_block_bytes, Limits::MIB);
        assert!(
            toml::from_str::<SimConfig>("sede = 1").is_err(),
            "unknown keys are refused"
        );
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
