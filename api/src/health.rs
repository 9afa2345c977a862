//! Health probes, as orchestrators probe services: `GET /livez` (the node's tasks run and its
//! actor answers) and `GET /readyz` (live, its backend answers, and it is within
//! `node.ready_lag_rounds` of the highest round it has seen). Each is 200, or 503 with the reason,
//! in JSON; readiness appears in `GET /v1/status` as `health`.

use std::time::Duration;

use comms::Communication;
use ledger::NodeHandle;

use crate::wire::Health;

/// How long a probe waits for the node's actor or the backend to answer.
const PROBE_BOUND: Duration = Duration::from_secs(2);

/// Whether the node is live, and if so its status.
pub async fn live(node: &NodeHandle) -> Result<ledger::Status, String> {
    if let Some(exit) = node.exit() {
        return Err(format!("the node has stopped: {exit}"));
    }
    match tokio::time::timeout(PROBE_BOUND, node.status()).await {
        Ok(Ok(status)) => Ok(status),
        Ok(Err(_)) => Err("the node is stopping".into()),
        Err(_) => Err(format!("the node's task did not answer in {PROBE_BOUND:?}")),
    }
}

/// Whether a node with `status` is ready: its backend answers, it is not joining by snapshot, and
/// it is at most `max_lag` rounds below the highest round it has seen.
pub async fn ready(status: &ledger::Status, comms: &dyn Communication, max_lag: u64) -> Health {
    let lag = status
        .highest_round_seen
        .saturating_sub(status.highest_round);
    let reason = match tokio::time::timeout(PROBE_BOUND, comms.peers()).await {
        Err(_) => Some(format!(
            "the network backend did not answer in {PROBE_BOUND:?}"
        )),
        Ok(Err(error)) => Some(format!("the network backend fails: {error}")),
        Ok(Ok(_)) if status.joining => Some("joining: fetching a certified snapshot".into()),
        Ok(Ok(_)) if lag > max_lag => Some(format!(
            "syncing: {lag} rounds behind the highest seen ({} > {max_lag})",
            status.highest_round_seen
        )),
        Ok(Ok(_)) => None,
    };
    Health {
        live: true,
        ready: reason.is_none(),
        lag_rounds: lag,
        reason,
    }
}

/// Both probes' answer for the node.
pub async fn check(node: &NodeHandle, comms: &dyn Communication, max_lag: u64) -> Health {
    match live(node).await {
        Ok(status) => ready(&status, comms, max_lag).await,
        Err(reason) => Health {
            live: false,
            ready: false,
            lag_rounds: 0,
            reason: Some(reason),
        },
    }
}
