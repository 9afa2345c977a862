//! Fetches with retries: each CID is tried with exponential backoff, and given up only after
//! `fetch_attempts`.

use std::time::Duration;

use bytes::Bytes;
use comms::{Cid, Communication};
use tracing::debug;

/// Fetches `cid`, retrying with exponential backoff (200 ms doubling to 10 s) up to `attempts` times.
pub(super) async fn fetch_with_retry<C: Communication>(
    comms: &C,
    cid: &Cid,
    timeout: Duration,
    attempts: u32,
) -> Result<Bytes, comms::Error> {
    let mut delay = Duration::from_millis(200);
    let mut attempt = 1;
    loop {
        match comms.fetch(cid, timeout).await {
            Ok(bytes) => return Ok(bytes),
            Err(error)
                if attempt >= attempts
                    || matches!(
                        error,
                        comms::Error::UnsupportedCid { .. } | comms::Error::Closed
                    ) =>
            {
                return Err(error)
            }
            Err(error) => debug!(%cid, attempt, %error, "fetch failed, retrying"),
        }
        back_off(&mut delay).await;
        attempt += 1;
    }
}

/// Sleeps `delay`, then doubles it up to 10 s. On tokio's clock, so it runs in a simulation's virtual
/// time too (the `backoff` crate measures elapsed time on the real clock).
pub(super) async fn back_off(delay: &mut Duration) {
    tokio::time::sleep(*delay).await;
    *delay = (*delay * 2).min(Duration::from_secs(10));
}
