//! Counters of one backend: what was retried and why, what was dropped, how long subscriptions were
//! gone. Injected (one per backend, never global), so that many nodes can share a process.

comms::counters! {
    /// Live counters, updated by the backend.
    IpfsMetrics,
    /// A copy of the counters at one moment.
    MetricsSnapshot {
        /// RPC requests sent to the daemon, retries included.
        requests,
        /// Calls that failed after their retries.
        failed_calls,
        /// Retries after a refused connection (the daemon down or restarting).
        retries_connect,
        /// Retries after a connection reset or a body cut short.
        retries_io,
        /// Retries after a 5xx reply or a daemon error that may pass.
        retries_server_error,
        /// Retries after an attempt ran past its own deadline.
        retries_timeout,
        /// Retries after a reply that could not be parsed.
        retries_malformed,
        /// Fetched blocks whose bytes did not hash to the CID asked for.
        cid_mismatches,
        /// Messages received and handed to a subscriber.
        messages_received,
        /// Received messages dropped for exceeding the message limit.
        oversized_dropped,
        /// Received pubsub lines dropped as malformed.
        malformed_dropped,
        /// Received messages dropped because the subscriber's queue was full.
        queue_full_dropped,
        /// Our own messages, echoed back by the daemon, dropped.
        echoes_dropped,
        /// Received frames dropped because they had been received already.
        duplicates_dropped,
        /// Frames a subscription did not receive, fetched from their publisher's daemon and handed on.
        frames_repaired,
        /// Lost frames that could not be fetched (not stored, gone, or no answer in time).
        repairs_failed,
        /// Lost frames not fetched because as many repairs as allowed were already running.
        repairs_skipped,
        /// Our own published frames that could not be stored for receivers to repair from.
        frame_puts_failed,
        /// Subscriptions re-opened after the daemon lost them.
        resubscribes,
        /// Total time subscriptions were gone before being re-opened, in milliseconds.
        subscription_gap_ms,
    }
}

/// Why a call was retried.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RetryCause {
    Connect,
    Io,
    ServerError,
    Timeout,
    Malformed,
}

impl IpfsMetrics {
    pub(crate) fn retried(&self, cause: RetryCause) {
        let counter = match cause {
            RetryCause::Connect => &self.retries_connect,
            RetryCause::Io => &self.retries_io,
            RetryCause::ServerError => &self.retries_server_error,
            RetryCause::Timeout => &self.retries_timeout,
            RetryCause::Malformed => &self.retries_malformed,
        };
        bump(counter);
    }
}

pub(crate) use comms::bump;
