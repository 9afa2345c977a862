//! The HTTP API driven in-process: an arbitrary method, path and query, content type and body
//! sent through the real router to a real single-validator node (over the simulator's backend).
//! No input may panic a handler or yield a 5xx other than the documented ones (README, "HTTP
//! API"): 503 with its kind (`stopping`, `mempool_full`, `joining`, `too_many_streams`,
//! `no_certified_state`), 503 from a probe that fails, 502 `backend_unavailable`; never a 500.
//! An answer to HEAD has no body (RFC 9110), so only its status is checked; that an answer to
//! HEAD was read as a 5xx without a JSON body was the one failure fuzzing found here (the seed
//! `head-of-a-503-has-no-body`).
//!
//! The input: its first byte picks the method and the content type, the bytes up to the first
//! newline are the path and query, the rest is the body.
#![no_main]

use std::sync::{Arc, OnceLock};

use axum::{body::Body, http::Request, Router};
use ledger_api::{
    api::{router, Api, ApiParts},
    http::{HttpConfig, HttpStats},
    metered::CommsMetrics,
};
use ledger_core::devnet::{self, Role};
use libfuzzer_sys::fuzz_target;
use tower::ServiceExt;

const METHODS: [&str; 8] = ["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "BREW"];
/// The 5xx kinds the README documents for the API.
const DOCUMENTED: [&str; 6] = [
    "stopping",
    "mempool_full",
    "joining",
    "too_many_streams",
    "no_certified_state",
    "backend_unavailable",
];

/// The node and its router, started once on a runtime of their own.
fn served() -> &'static (tokio::runtime::Runtime, Router) {
    static SERVED: OnceLock<(tokio::runtime::Runtime, Router)> = OnceLock::new();
    SERVED.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("a runtime");
        let router = runtime.block_on(async {
            let genesis = devnet::genesis("fuzz-api", 1, 1, 2, 1_000_000);
            let key = devnet::key(1, Role::Validator, 0);
            let (sim, peers) = sim::Sim::builder().peers(1).build();
            std::mem::forget(sim);
            let peer = peers[0].clone();
            let config = ledger::NodeConfig::default();
            let node = ledger::spawn(&genesis, Some(key), config, peer.clone(), None)
                .await
                .expect("the node starts");
            let api = Api::start(ApiParts {
                node,
                comms: Arc::new(peer),
                genesis,
                validator: Some(0),
                backend: "sim",
                ready_lag_rounds: 10,
                comms_metrics: Arc::new(CommsMetrics::default()),
                extra: Box::new(|_| {}),
            })
            .await
            .expect("the API starts");
            router(api, &HttpConfig::default(), Arc::new(HttpStats::default()))
        });
        (runtime, router)
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let method = METHODS[usize::from(first) % METHODS.len()];
    let (target, body) = match rest.iter().position(|&byte| byte == b'\n') {
        Some(at) => (&rest[..at], &rest[at + 1..]),
        None => (rest, &[][..]),
    };
    let Ok(target) = std::str::from_utf8(target) else {
        return;
    };
    let mut request = Request::builder().method(method).uri(target);
    if first & 0x80 != 0 {
        request = request.header("content-type", "application/json");
    }
    // What hyper would refuse before the router (a malformed method or target) is not the
    // router's to answer.
    let Ok(request) = request.body(Body::from(body.to_vec())) else {
        return;
    };
    let path = request.uri().path().to_string();
    let (runtime, router) = served();
    runtime.block_on(async {
        let response = router.clone().oneshot(request).await.expect("infallible");
        let status = response.status();
        if !status.is_server_error() || path == "/livez" || path == "/readyz" {
            return;
        }
        let documented = status.as_u16() == 503 || status.as_u16() == 502;
        if method == "HEAD" {
            // The answer to HEAD is GET's without its body (RFC 9110), so there is no kind to read.
            assert!(documented, "{method} {path}: {status}");
            return;
        }
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .expect("an error body is small");
        let reply: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_else(|error| {
            panic!("{method} {path}: {status} with no JSON error ({error}): {bytes:?}")
        });
        let kind = reply["error"].as_str().unwrap_or_default();
        assert!(documented, "{method} {path}: {status} {reply}");
        assert!(DOCUMENTED.contains(&kind), "{method} {path}: {status} {reply}");
    });
});
