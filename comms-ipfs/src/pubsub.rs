//! Subscriptions over `pubsub/sub`: our own decoder of its ndjson stream, and a task per subscription
//! that re-opens it whenever the daemon loses it.
//!
//! The stream is decoded here rather than by `ipfs-api-backend-hyper`, whose decoder panics on a
//! sequence number shorter than 8 bytes (any remote peer can send one). Only `from`, `data` and
//! `topicIDs` are read; everything else a daemon adds (seqno, key, signature, a first `{}` line) is
//! ignored, and a line that cannot be decoded is dropped and counted, never fatal.

use std::{sync::Arc, time::Duration};

use bytes::{Buf, Bytes, BytesMut};
use comms::{Limits, PeerId, Subscription, Topic};
use futures::{stream::BoxStream, StreamExt, TryFutureExt, TryStreamExt};
use ipfs_api_prelude::request::{PubsubLs, PubsubSub};
use serde::Deserialize;
use tokio::{sync::mpsc, time::Instant};
use tracing::{debug, info, warn};

use crate::{
    metrics::{bump, IpfsMetrics},
    peering::Peering,
    repair::{Outlet, Repair},
    rpc::{Deadline, Failure, Rpc},
    RetryPolicy,
};

/// One line of a `pubsub/sub` reply, as far as it is read.
#[derive(Deserialize)]
struct Line {
    from: Option<String>,
    data: Option<String>,
    #[serde(rename = "topicIDs")]
    topic_ids: Option<Vec<String>>,
}

/// What a line held.
#[derive(Debug, PartialEq)]
pub(crate) enum Decoded {
    /// A message from a peer.
    Message { from: PeerId, data: Bytes },
    /// A line without a message (older kubo opens the stream with `{}`).
    Nothing,
}

/// Why a line was dropped.
#[derive(Debug, PartialEq, thiserror::Error)]
pub(crate) enum Dropped {
    #[error("not a JSON object: {0}")]
    Json(String),
    #[error("field {0} missing or not multibase")]
    Field(&'static str),
    #[error("message for another topic")]
    OtherTopic,
    #[error("message of {size} bytes over the limit of {limit}")]
    TooLarge { size: usize, limit: usize },
}

/// Decodes one ndjson line of topic `topic`, refusing data over `max_data` bytes.
pub(crate) fn decode_line(line: &[u8], topic: &Topic, max_data: usize) -> Result<Decoded, Dropped> {
    let line: Line =
        serde_json::from_slice(line).map_err(|error| Dropped::Json(error.to_string()))?;
    let Some(data) = line.data else {
        return Ok(Decoded::Nothing);
    };
    let from = line.from.ok_or(Dropped::Field("from"))?;
    if let Some(ids) = line.topic_ids {
        let ours = ids.iter().any(|id| {
            multibase::decode(id).is_ok_and(|(_, name)| name == topic.as_str().as_bytes())
        });
        if !ours {
            return Err(Dropped::OtherTopic);
        }
    }
    // Base64 needs 4 characters per 3 bytes: refuse an oversized message before decoding it.
    let encoded_limit = max_data.div_ceil(3) * 4 + 1;
    if data.len() > encoded_limit {
        return Err(Dropped::TooLarge {
            size: data.len() / 4 * 3,
            limit: max_data,
        });
    }
    let (_, data) = multibase::decode(&data).map_err(|_| Dropped::Field("data"))?;
    if data.len() > max_data {
        return Err(Dropped::TooLarge {
            size: data.len(),
            limit: max_data,
        });
    }
    Ok(Decoded::Message {
        from: PeerId::new(from),
        data: data.into(),
    })
}

/// The longest line a subscription reads for messages of `max_data` bytes: their base64 and the
/// JSON around it.
fn max_line(max_data: usize) -> usize {
    max_data.div_ceil(3) * 4 + 4096
}

/// Splits a byte stream into lines of at most `max_line` bytes; a longer line is skipped whole.
pub(crate) struct Lines {
    buffer: BytesMut,
    max_line: usize,
    skipping: bool,
}

/// A piece of the stream: a complete line, or the news that an overlong one was skipped.
#[derive(Debug, PartialEq)]
pub(crate) enum Piece {
    Line(Bytes),
    Overlong,
}

impl Lines {
    pub fn new(max_line: usize) -> Lines {
        Lines {
            buffer: BytesMut::new(),
            max_line,
            skipping: false,
        }
    }

    /// Adds received bytes.
    pub fn push(&mut self, chunk: &[u8]) {
        self.buffer.extend_from_slice(chunk);
    }

    /// The next complete piece, if any.
    pub fn next_piece(&mut self) -> Option<Piece> {
        loop {
            let Some(end) = self.buffer.iter().position(|&b| b == b'\n') else {
                if self.buffer.len() > self.max_line {
                    self.buffer.clear();
                    return (!std::mem::replace(&mut self.skipping, true))
                        .then_some(Piece::Overlong);
                }
                return None;
            };
            let line = self.buffer.split_to(end).freeze();
            self.buffer.advance(1);
            if std::mem::take(&mut self.skipping) {
                continue;
            }
            if line.len() > self.max_line {
                return Some(Piece::Overlong);
            }
            if !line.iter().all(u8::is_ascii_whitespace) {
                return Some(Piece::Line(line));
            }
        }
    }
}

/// What a subscription makes of the bytes a daemon's `pubsub/sub` stream brings, cut into
/// `chunks` as the network cut them: the broadcasts of each line for `topic`, up to `max_data`
/// bytes each, or why the line or its frame was dropped. For the fuzz targets (feature
/// `fuzzing`); the subscription runs the same steps (`feed`, `deliver`).
#[cfg(feature = "fuzzing")]
pub fn decode_stream(
    chunks: &[&[u8]],
    topic: &Topic,
    max_data: usize,
) -> Vec<Result<Vec<Bytes>, String>> {
    let mut lines = Lines::new(max_line(max_data));
    let mut out = Vec::new();
    for chunk in chunks {
        lines.push(chunk);
        while let Some(piece) = lines.next_piece() {
            let line = match piece {
                Piece::Line(line) => line,
                Piece::Overlong => {
                    out.push(Err("an overlong line".to_string()));
                    continue;
                }
            };
            let limit = max_data + comms::frame::FRAME_SLACK;
            let decoded = match decode_line(&line, topic, limit) {
                Ok(Decoded::Message { data, .. }) => comms::frame::decode(data)
                    .map(|frame| frame.messages)
                    .map_err(str::to_string),
                Ok(Decoded::Nothing) => Ok(Vec::new()),
                Err(dropped) => Err(dropped.to_string()),
            };
            out.push(decoded);
        }
    }
    out
}

/// What a subscription needs from its backend.
#[derive(Clone)]
pub(crate) struct Context {
    pub rpc: Rpc,
    pub local: PeerId,
    pub limits: Limits,
    pub metrics: Arc<IpfsMetrics>,
    pub peering: Arc<Peering>,
    pub call: Deadline,
    pub resubscribe: RetryPolicy,
    pub check_every: Duration,
    pub queue: usize,
}

type ByteStream = BoxStream<'static, Result<Bytes, Failure>>;

/// Opens a subscription: returns once the daemon is subscribed, then keeps it open in a task.
pub(crate) async fn subscribe(
    context: Context,
    topic: Topic,
) -> Result<Subscription, comms::Error> {
    let stream = context
        .rpc
        .call(comms::Operation::Subscribe, context.call, |_| {
            open(&context.rpc, &topic)
        })
        .await?;
    let (sender, receiver) = mpsc::channel(context.queue);
    let outlet = Outlet {
        sender,
        topic: topic.clone(),
        metrics: context.metrics.clone(),
        limits: context.limits,
    };
    let task = Task {
        lines: Lines::new(max_line(context.limits.max_message_bytes)),
        repair: Repair::new(context.rpc.clone(), outlet.clone(), context.call.total),
        context,
        outlet,
    };
    tokio::spawn(task.run(stream));
    let messages = futures::stream::unfold(receiver, |mut receiver| async move {
        receiver.recv().await.map(|message| (message, receiver))
    });
    Ok(Subscription::new(topic, messages))
}

/// Sends `pubsub/sub` and waits until the daemon is subscribed: kubo sends the reply's headers once
/// it has registered the subscription; or, if the topic was not listed in `pubsub/ls` before, until
/// it is (in case a daemon holds the headers back until the first message). A topic listed already
/// is another subscription's: taking it for this one's would let a message sent before the daemon
/// registered this one miss it, if the other were dropped meanwhile.
async fn open(rpc: &Rpc, topic: &Topic) -> Result<ByteStream, Failure> {
    let listed_before = is_listed(rpc, topic).await?;
    let mut reply = rpc.streamed(PubsubSub {
        topic: topic.as_str().as_bytes(),
    })?;
    let newly_listed = async {
        if listed_before {
            return std::future::pending().await;
        }
        loop {
            // Each look bounded, so that one request that hangs does not use up the attempt.
            let look = tokio::time::timeout(Duration::from_secs(2), is_listed(rpc, topic)).await;
            if matches!(look, Ok(Ok(true))) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::select! {
        body = &mut reply => Ok(crate::rpc::chunks(body?)),
        () = newly_listed => Ok(reply.map_ok(crate::rpc::chunks).try_flatten_stream().boxed()),
    }
}

/// Whether the daemon lists `topic` among its subscriptions.
async fn is_listed(rpc: &Rpc, topic: &Topic) -> Result<bool, Failure> {
    let listed: crate::Strings = rpc.json(PubsubLs, None).await?;
    Ok(listed.strings.iter().any(|name| {
        name == topic.as_str()
            || multibase::decode(name).is_ok_and(|(_, name)| name == topic.as_str().as_bytes())
    }))
}

/// Keeps one subscription open until its receiver is dropped.
struct Task {
    context: Context,
    /// The subscriber, and the topic.
    outlet: Outlet,
    repair: Arc<Repair>,
    lines: Lines,
}

/// Why a stream stopped being read.
enum Stop {
    /// Our subscriber is gone.
    Unsubscribed,
    /// The daemon lost the subscription.
    Lost(String),
}

impl Task {
    async fn run(mut self, mut stream: ByteStream) {
        loop {
            let reason = match self.read(&mut stream).await {
                Stop::Unsubscribed => return,
                Stop::Lost(reason) => reason,
            };
            drop(stream);
            let lost_at = Instant::now();
            warn!(topic = %self.outlet.topic, %reason, "subscription lost; re-opening");
            let Some(reopened) = self.reopen().await else {
                return;
            };
            let gap = lost_at.elapsed();
            bump(&self.context.metrics.resubscribes);
            self.context
                .metrics
                .subscription_gap_ms
                .fetch_add(gap.as_millis() as u64, std::sync::atomic::Ordering::Relaxed);
            info!(topic = %self.outlet.topic, gap_ms = gap.as_millis() as u64, "subscription re-opened");
            stream = reopened;
        }
    }

    /// Reads until the stream ends, fails, the daemon forgets the topic, or the subscriber leaves.
    async fn read(&mut self, stream: &mut ByteStream) -> Stop {
        let mut check = tokio::time::interval(self.context.check_every);
        check.tick().await;
        loop {
            tokio::select! {
                chunk = stream.try_next() => match chunk {
                    Ok(Some(chunk)) => if !self.feed(&chunk) { return Stop::Unsubscribed },
                    Ok(None) => return Stop::Lost("the daemon ended the stream".into()),
                    Err(failure) => return Stop::Lost(format!("{failure:?}")),
                },
                _ = check.tick() => {
                    if let Ok(false) = is_listed(&self.context.rpc, &self.outlet.topic).await {
                        return Stop::Lost("the daemon no longer lists the topic".into());
                    }
                }
                () = self.outlet.sender.closed() => return Stop::Unsubscribed,
            }
        }
    }

    /// Re-opens the subscription with backoff, for as long as the subscriber stays. Reconnects the
    /// known peers first: a restarted daemon has lost its connections.
    async fn reopen(&self) -> Option<ByteStream> {
        let mut schedule = self.context.resubscribe.schedule(None);
        loop {
            if self.outlet.sender.is_closed() {
                return None;
            }
            self.context.peering.connect_all().await;
            match tokio::time::timeout(
                self.context.call.attempt,
                open(&self.context.rpc, &self.outlet.topic),
            )
            .await
            {
                Ok(Ok(opened)) => return Some(opened),
                Ok(Err(failure)) => {
                    debug!(topic = %self.outlet.topic, ?failure, "re-subscribing failed")
                }
                Err(_) => debug!(topic = %self.outlet.topic, "re-subscribing timed out"),
            }
            let wait = backoff::backoff::Backoff::next_backoff(&mut schedule)
                .unwrap_or(self.context.resubscribe.max_interval);
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = self.outlet.sender.closed() => return None,
            }
        }
    }

    /// Decodes the messages in `chunk` and hands them on; false once the subscriber is gone.
    fn feed(&mut self, chunk: &[u8]) -> bool {
        self.lines.push(chunk);
        while let Some(piece) = self.lines.next_piece() {
            let decoded = match piece {
                Piece::Line(line) => decode_line(
                    &line,
                    &self.outlet.topic,
                    self.context.limits.max_message_bytes + comms::frame::FRAME_SLACK,
                ),
                Piece::Overlong => Err(Dropped::TooLarge {
                    size: self.lines.max_line,
                    limit: self.context.limits.max_message_bytes,
                }),
            };
            if !self.deliver(decoded) {
                return false;
            }
        }
        true
    }

    fn deliver(&self, decoded: Result<Decoded, Dropped>) -> bool {
        let metrics = &self.context.metrics;
        match decoded {
            Ok(Decoded::Nothing) => true,
            Ok(Decoded::Message { from, .. }) if from == self.context.local => {
                bump(&metrics.echoes_dropped);
                true
            }
            Ok(Decoded::Message { from, data }) => match comms::frame::decode(data) {
                Ok(frame) => self.repair.receive(from, frame),
                Err(reason) => {
                    bump(&metrics.malformed_dropped);
                    debug!(topic = %self.outlet.topic, %from, reason, "dropped a malformed frame");
                    true
                }
            },
            Err(dropped) => {
                match dropped {
                    Dropped::TooLarge { .. } => bump(&metrics.oversized_dropped),
                    _ => bump(&metrics.malformed_dropped),
                }
                debug!(topic = %self.outlet.topic, %dropped, "dropped a pubsub line");
                true
            }
        }
    }
}

#[cfg(test)]
#[path = "pubsub_tests.rs"]
mod tests;
