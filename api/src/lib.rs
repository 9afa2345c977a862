//! A ledger node's HTTP API, apart from the binary that runs it so that it can be driven in-process
//! (the fuzz target `api` sends it arbitrary requests) without the store or the backends:
//!
//! - [`api`]: the routes under `/v1`, the probes and `/metrics`, with every refusal a JSON error;
//! - [`wire`]: one type per request and reply body, shared with the clients (`ledger-node tx`,
//!   `query`, `load`);
//! - [`stream`]: the commit stream (Server-Sent Events), bounded per client;
//! - [`scrape`], [`metered`]: the registry of `/metrics` and the counters of the backend calls;
//! - [`health`]: the liveness and readiness probes;
//! - [`http`]: the server, which bounds its connections, their headers, bodies and timeouts.

pub mod api;
pub mod health;
pub mod http;
pub mod metered;
pub mod scrape;
pub mod stream;
pub mod wire;
