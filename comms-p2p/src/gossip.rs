//! gossipsub as kubo's go-libp2p-pubsub speaks it, and a count of the messages it refuses.
//!
//! rust-libp2p checks each received message (its signature, its sender, its sequence number, its
//! size for the topic) before the behaviour sees it, and drops a bad one without an event: the only
//! trace is a log line and, with peer scoring on, gossipsub's own metrics. So the behaviour records into a registry of its own, and
//! [`Refused::check`] reads its count of invalid messages and turns what is new into our counter
//! (`p2p_messages_invalid`) and a log line.

use std::time::Duration;

use comms::Limits;
use libp2p::{
    gossipsub::{self, MessageAuthenticity, ValidationMode},
    identity,
};
use prometheus_client::{encoding::text::encode, registry::Registry};
use tracing::warn;

use crate::{metrics::P2pMetrics, P2pError};

/// How often [`Refused::check`] runs.
pub const CHECK_EVERY: Duration = Duration::from_secs(1);

/// The behaviour, strict and with Go's message IDs, and the record of what it refuses.
pub fn behaviour(
    key: &identity::Keypair,
    limits: &Limits,
) -> Result<(gossipsub::Behaviour, Refused), P2pError> {
    let config = gossipsub::ConfigBuilder::default()
        .validation_mode(ValidationMode::Strict)
        .message_id_fn(go_message_id)
        // kubo's limit; a payload of the message limit fits with its signature, key, sequence
        // number and topic around it.
        .max_transmit_size(Limits::MIB.max(limits.max_message_bytes + 16 * 1024))
        .heartbeat_interval(Duration::from_secs(1))
        .build()
        .map_err(|error| P2pError::Transport(error.to_string()))?;
    let failed = |error: String| P2pError::Transport(error);
    let mut registry = Registry::default();
    let mut behaviour = gossipsub::Behaviour::new(MessageAuthenticity::Signed(key.clone()), config)
        .map_err(|error| failed(error.to_string()))?
        .with_metrics(&mut registry, gossipsub::MetricsConfig::default());
    // gossipsub counts invalid messages only with peer scoring on. It is on with every weight at
    // zero, so that every peer scores 0 and meshes form as without it: penalties tuned for
    // Ethereum could graylist a kubo peer, or the peers of a devnet on one host.
    let neutral = gossipsub::PeerScoreParams {
        ip_colocation_factor_weight: 0.0,
        behaviour_penalty_weight: 0.0,
        slow_peer_weight: 0.0,
        app_specific_weight: 0.0,
        ..gossipsub::PeerScoreParams::default()
    };
    let thresholds = gossipsub::PeerScoreThresholds::default();
    behaviour
        .with_peer_score(neutral, thresholds)
        .map_err(failed)?;
    Ok((behaviour, Refused { registry, seen: 0 }))
}

/// Go's default message ID: the `from` peer's bytes, then the sequence number's (big-endian).
fn go_message_id(message: &gossipsub::Message) -> gossipsub::MessageId {
    let mut id = message.source.map(|p| p.to_bytes()).unwrap_or_default();
    if let Some(seqno) = message.sequence_number {
        id.extend_from_slice(&seqno.to_be_bytes());
    }
    gossipsub::MessageId::from(id)
}

/// gossipsub's metrics, read for the invalid messages it dropped.
pub struct Refused {
    registry: Registry,
    /// Invalid messages counted so far.
    seen: u64,
}

impl Refused {
    /// Adds the invalid messages dropped since the last check to `metrics`, with a log line.
    pub fn check(&mut self, metrics: &P2pMetrics) {
        let total = self.invalid();
        let new = total.saturating_sub(self.seen);
        if new > 0 {
            self.seen = total;
            (metrics.messages_invalid).fetch_add(new, std::sync::atomic::Ordering::Relaxed);
            warn!(
                new,
                total, "dropped pubsub messages with a bad signature, sender or sequence number"
            );
        }
    }

    /// The invalid messages gossipsub has counted, over every topic.
    fn invalid(&self) -> u64 {
        let mut text = String::new();
        if encode(&mut text, &self.registry).is_err() {
            return self.seen;
        }
        (text.lines())
            .filter(|line| line.starts_with("invalid_messages_per_topic_total"))
            .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>() as u64
    }
}
