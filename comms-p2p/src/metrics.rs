//! The embedded peer's counters: what it received, what it dropped and why. Injected (one per
//! peer, never global), so that many peers can share a process.

comms::counters! {
    /// Live counters, updated by the peer.
    P2pMetrics,
    /// A copy of the counters at one moment.
    P2pSnapshot {
        /// Broadcasts received and handed to a subscriber.
        messages_received,
        /// Received pubsub messages gossipsub dropped as invalid: a bad or missing signature, a
        /// sender that does not match its key, a missing sequence number.
        messages_invalid,
        /// Received pubsub data dropped as a malformed frame.
        malformed_dropped,
        /// Received broadcasts dropped for exceeding the message limit.
        oversized_dropped,
        /// Received broadcasts dropped because the subscriber's queue was full.
        queue_full_dropped,
        /// Blocks received from peers and stored.
        blocks_received,
        /// Blocks sent to peers.
        blocks_served,
        /// Received block bytes that did not hash to the CID they were sent for.
        cid_mismatches,
        /// Wants a peer sent beyond its wantlist's bound, refused (answered DONT_HAVE).
        wants_refused,
        /// Bitswap streams closed because a peer sent bytes that are no message: a length that is
        /// no varint or above the limit, or a body that is no bitswap protobuf.
        bitswap_malformed,
        /// Connections opened here and refused by a bound of the config: too many handshakes in
        /// progress, too many connections in, or too many with one peer.
        connections_refused,
        /// Connections opened here whose handshake failed: too slow, or not noise and yamux.
        handshakes_failed,
        /// Blockstore reads or writes that failed.
        store_errors,
    }
}
