//! `/metrics`: one registry, built when the API starts. Live counters (the backend's, the API's
//! commit latency) are registered as they are; the node's status is read once per scrape and encoded
//! by a collector, so a scrape costs one status request and allocates no new metrics.

use std::sync::{Arc, Mutex};

use ledger::Status;
use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric},
    metrics::{counter::ConstCounter, gauge::ConstGauge},
    registry::Registry,
};

use crate::stream::Streams;

/// The status of the node at the last scrape, and the commit stream's clients: the `ledger_`
/// metrics that are not live counters.
#[derive(Debug)]
pub struct StatusCollector {
    latest: Arc<Mutex<Option<Status>>>,
    streams: Arc<Streams>,
}

impl StatusCollector {
    /// A collector over `streams`, and where the scrape puts the status it read.
    pub fn new(streams: Arc<Streams>) -> (StatusCollector, Arc<Mutex<Option<Status>>>) {
        let latest = Arc::new(Mutex::new(None));
        let collector = StatusCollector {
            latest: latest.clone(),
            streams,
        };
        (collector, latest)
    }
}

/// Encodes one metric with its name and help.
pub fn put(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    metric: &impl EncodeMetric,
) -> Result<(), std::fmt::Error> {
    metric.encode(encoder.encode_descriptor(name, help, None, metric.metric_type())?)
}

impl Collector for StatusCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(status) = crate::api::lock(&self.latest).clone() else {
            return Ok(());
        };
        let gauges = [
            ("height", "Commits so far", status.height),
            (
                "dag_blocks",
                "Accepted blocks in memory (from the floor up)",
                status.dag_blocks as u64,
            ),
            (
                "dag_floor",
                "The lowest round in memory; older blocks are on disk",
                status.dag_floor,
            ),
            (
                "highest_round",
                "The DAG's highest round",
                status.highest_round,
            ),
            (
                "pending_blocks",
                "Blocks waiting for their ancestors",
                status.pending_blocks as u64,
            ),
            (
                "pending_fetches",
                "CIDs being fetched",
                status.pending_fetches as u64,
            ),
            (
                "mempool",
                "Transactions submitted here, not committed yet",
                status.mempool as u64,
            ),
            (
                "commit_stream_clients",
                "Clients following GET /v1/commits/stream",
                self.streams.open() as u64,
            ),
        ];
        for (name, help, value) in gauges {
            put(&mut encoder, name, help, &ConstGauge::new(value as i64))?;
        }
        let stats = &status.stats;
        let counters = [
            (
                "blocks_accepted",
                "Blocks accepted into the DAG",
                stats.accepted,
            ),
            (
                "committed_transactions",
                "Transactions committed, valid or not",
                stats.committed_transactions,
            ),
            (
                "equivocations",
                "Slots where a validator signed two blocks",
                stats.equivocations,
            ),
            ("skipped_slots", "Leader slots skipped", stats.skipped_slots),
            (
                "leader_timeouts",
                "Own blocks proposed without the round's first leader, after leader_timeout",
                stats.leader_timeouts,
            ),
            (
                "new_blocks_by_broadcast",
                "Valid blocks new here that arrived by broadcast",
                stats.new_blocks_by_broadcast,
            ),
            (
                "new_blocks_by_fetch",
                "Valid blocks new here that had to be fetched by CID",
                stats.new_blocks_by_fetch,
            ),
            (
                "commit_stream_dropped",
                "Clients of the commit stream dropped for reading too slowly",
                self.streams.dropped(),
            ),
        ];
        for (name, help, value) in counters {
            put(&mut encoder, name, help, &ConstCounter::new(value))?;
        }
        put(
            &mut encoder,
            "broadcast_delivery_ratio",
            "Share of the valid blocks new here that arrived by broadcast rather than by fetch",
            &ConstGauge::new(stats.broadcast_share()),
        )?;
        let mut invalid = encoder.encode_descriptor(
            "invalid_inputs",
            "Refused blocks and batches, by kind",
            None,
            prometheus_client::metrics::MetricType::Counter,
        )?;
        for (kind, count) in &stats.rejected {
            let labels = [("kind", kind.as_str())];
            ConstCounter::new(*count).encode(invalid.encode_family(&labels)?)?;
        }
        Ok(())
    }
}

/// The registry of a node's `/metrics`: the status collector and the commit latency under
/// `ledger_`, then whatever `register` adds (the backend's metrics).
pub fn registry(
    collector: StatusCollector,
    commit_latency: prometheus_client::metrics::histogram::Histogram,
    register: impl FnOnce(&mut Registry),
) -> Registry {
    let mut registry = Registry::default();
    let ledger = registry.sub_registry_with_prefix("ledger");
    ledger.register_collector(Box::new(collector));
    ledger.register(
        "commit_latency_seconds",
        "Submission here to commit, for transactions submitted through this API",
        commit_latency,
    );
    register(&mut registry);
    registry
}
