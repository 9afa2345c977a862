//! `GET /v1/commits/stream`: every commit, as it happens, as a Server-Sent Event, so that clients
//! (the load generator, dashboards) need not poll.
//!
//! Each client gets a forwarding task that reads the node's commit broadcast and fills a bounded
//! queue that the response drains. The node never waits for a client: the broadcast does not block
//! its sender. A client that falls [`QUEUE`] commits behind, or so far behind that the broadcast
//! overwrote commits it had not read, gets a last `close` event with the reason and is dropped; a
//! client that reads nothing at all loses its slot in the same way, whatever its socket does.

use std::{
    convert::Infallible,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use axum::response::sse::{Event, KeepAlive, Sse};
use futures::Stream;
use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, mpsc, watch, OwnedSemaphorePermit, Semaphore};
use tracing::info;

use crate::wire::CommitView;

/// Commits queued for one client, at most.
pub const QUEUE: usize = 256;
/// Clients of the stream at once, at most; more get `503 too_many_streams`.
pub const MAX_STREAMS: usize = 64;
/// A comment line this often keeps proxies from closing an idle stream.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// The last event of a stream that the node ended: `event: close`, this as JSON data.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Close {
    /// `lagged` (the client read too slowly) or `stopping` (the node is shutting down).
    pub reason: String,
    /// What happened, for people.
    pub message: String,
}

/// The stream's bounds and counters, shared by its clients.
#[derive(Debug)]
pub struct Streams {
    slots: Arc<Semaphore>,
    dropped: AtomicU64,
    /// Becomes `true` when the server shuts down: every stream ends.
    stopping: watch::Sender<bool>,
}

impl Default for Streams {
    fn default() -> Streams {
        Streams {
            slots: Arc::new(Semaphore::new(MAX_STREAMS)),
            dropped: AtomicU64::new(0),
            stopping: watch::Sender::new(false),
        }
    }
}

impl Streams {
    /// Clients connected now.
    pub fn open(&self) -> usize {
        MAX_STREAMS - self.slots.available_permits()
    }

    /// Clients dropped for lagging, since start.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Ends every stream, now and to come, with a `close` event (`stopping`).
    pub fn stop(&self) {
        self.stopping.send_replace(true);
    }

    /// A slot for one more client, if there is one.
    pub fn slot(&self) -> Option<OwnedSemaphorePermit> {
        self.slots.clone().try_acquire_owned().ok()
    }
}

/// What the forwarding task queues for its client.
#[derive(Debug, PartialEq)]
enum Message {
    Commit(CommitView),
    Close(Close),
}

impl Message {
    fn event(&self) -> Event {
        let event = match self {
            Message::Commit(view) => Event::default()
                .event("commit")
                .id(view.height.to_string())
                .json_data(view),
            Message::Close(close) => Event::default().event("close").json_data(close),
        };
        // Serializing these plain structs cannot fail; a comment stands in if it ever did.
        event.unwrap_or_else(|_| Event::default().comment("unserializable"))
    }
}

/// The event stream of one client, fed from `commits` by a task that holds `slot`.
pub fn serve(
    streams: Arc<Streams>,
    slot: OwnedSemaphorePermit,
    commits: broadcast::Receiver<Arc<ledger::Commit>>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let (messages, mut queue) = mpsc::channel(QUEUE);
    tokio::spawn(forward(streams, slot, commits, messages));
    let stream = futures::stream::poll_fn(move |cx| {
        queue
            .poll_recv(cx)
            .map(|message| message.map(|m: Message| Ok(m.event())))
    });
    Sse::new(stream).keep_alive(KeepAlive::new().interval(KEEP_ALIVE))
}

async fn forward(
    streams: Arc<Streams>,
    _slot: OwnedSemaphorePermit,
    mut commits: broadcast::Receiver<Arc<ledger::Commit>>,
    messages: mpsc::Sender<Message>,
) {
    let mut stopping = streams.stopping.subscribe();
    let close = loop {
        let commit = tokio::select! {
            commit = commits.recv() => commit,
            _ = messages.closed() => return,
            _ = stopping.wait_for(|stopping| *stopping) => break stopping_close(),
        };
        let commit = match commit {
            Ok(commit) => commit,
            Err(broadcast::error::RecvError::Lagged(missed)) => {
                break lagged(format!(
                    "{missed} commits were overwritten before it read them"
                ))
            }
            Err(broadcast::error::RecvError::Closed) => break stopping_close(),
        };
        // The last slot is kept for the close message.
        if messages.capacity() <= 1 {
            break lagged(format!("{} commits wait for it to read them", QUEUE - 1));
        }
        let _ = messages.try_send(Message::Commit(CommitView::from(commit.as_ref())));
    };
    if close.reason == "lagged" {
        streams.dropped.fetch_add(1, Ordering::Relaxed);
    }
    info!(reason = %close.reason, message = %close.message, "commit stream client dropped");
    let _ = messages.try_send(Message::Close(close));
}

fn lagged(why: String) -> Close {
    Close {
        reason: "lagged".into(),
        message: format!("the client fell behind the commits: {why}"),
    }
}

fn stopping_close() -> Close {
    Close {
        reason: "stopping".into(),
        message: "the node is shutting down".into(),
    }
}

/// One event of a Server-Sent Event stream: its `event` name and its `data` lines joined.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ClientEvent {
    pub event: String,
    pub data: String,
}

/// Splits a Server-Sent Event stream, fed in chunks as they arrive, into events (the client side
/// of the commit stream). Comment lines (the keep-alives) and other fields are skipped.
#[derive(Default)]
pub struct EventParser {
    line: Vec<u8>,
    event: ClientEvent,
}

/// A line longer than this ends the stream as malformed (a commit's JSON is far below it).
const MAX_LINE: usize = 64 << 20;

impl EventParser {
    /// The events completed by `chunk`; an error if a line grows beyond reason or is not UTF-8.
    pub fn feed(&mut self, chunk: &[u8]) -> anyhow::Result<Vec<ClientEvent>> {
        let mut events = Vec::new();
        for &byte in chunk {
            if byte != b'\n' {
                self.line.push(byte);
                anyhow::ensure!(
                    self.line.len() <= MAX_LINE,
                    "an event line over {MAX_LINE} bytes"
                );
                continue;
            }
            let line = std::mem::take(&mut self.line);
            let line = std::str::from_utf8(&line)?.trim_end_matches('\r');
            if line.is_empty() {
                if !self.event.data.is_empty() || !self.event.event.is_empty() {
                    events.push(std::mem::take(&mut self.event));
                }
                continue;
            }
            let (field, value) = line.split_once(':').unwrap_or((line, ""));
            let value = value.strip_prefix(' ').unwrap_or(value);
            match field {
                "event" => self.event.event = value.to_string(),
                "data" if self.event.data.is_empty() => self.event.data = value.to_string(),
                "data" => {
                    self.event.data.push('\n');
                    self.event.data.push_str(value);
                }
                _ => {}
            }
        }
        Ok(events)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn commit(height: u64) -> Arc<ledger::Commit> {
        let cid = ledger::codec::cid_of(&height.to_be_bytes());
        Arc::new(ledger::Commit {
            height,
            round: height,
            leader: cid,
            blocks: vec![cid],
            transactions: Vec::new(),
            changed: Vec::new(),
            state_root: cid,
        })
    }

    /// One client's forwarding task on a commit broadcast of `capacity`: the streams, the
    /// broadcast's sender, the client's queue and the task.
    fn forwarder(
        capacity: usize,
    ) -> (
        Arc<Streams>,
        broadcast::Sender<Arc<ledger::Commit>>,
        mpsc::Receiver<Message>,
        tokio::task::JoinHandle<()>,
    ) {
        let streams = Arc::new(Streams::default());
        let (sender, commits) = broadcast::channel(capacity);
        let (messages, queue) = mpsc::channel(QUEUE);
        let slot = streams.slot().expect("a free slot");
        let task = tokio::spawn(forward(streams.clone(), slot, commits, messages));
        (streams, sender, queue, task)
    }

    /// A client that reads nothing gets the commits its queue holds, then a `lagged` close, and
    /// its slot is free again; the sender never waits for it.
    #[tokio::test]
    async fn a_client_that_does_not_read_is_dropped_with_a_reason() {
        let (streams, sender, mut queue, task) = forwarder(1024);
        assert_eq!(streams.open(), 1);
        for height in 1..=2 * QUEUE as u64 {
            sender.send(commit(height)).expect("a subscriber");
        }
        tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .expect("the forwarder gives up on the client")
            .expect("join");
        let mut received = Vec::new();
        while let Ok(message) = queue.try_recv() {
            received.push(message);
        }
        assert_eq!(received.len(), QUEUE);
        assert!(matches!(&received[0], Message::Commit(c) if c.height == 1));
        assert!(
            matches!(received.last(), Some(Message::Close(c)) if c.reason == "lagged"),
            "{:?}",
            received.last()
        );
        assert_eq!((streams.open(), streams.dropped()), (0, 1));
    }

    /// The node stopping ends every stream with a `stopping` close.
    #[tokio::test]
    async fn a_stopping_node_closes_the_stream() {
        let (streams, sender, mut queue, task) = forwarder(16);
        sender.send(commit(1)).expect("a subscriber");
        drop(sender);
        task.await.expect("join");
        assert!(matches!(queue.recv().await, Some(Message::Commit(c)) if c.height == 1));
        assert!(matches!(queue.recv().await, Some(Message::Close(c)) if c.reason == "stopping"));
        assert_eq!(streams.dropped(), 0);
    }

    #[test]
    fn events_split_across_chunks_are_parsed_whole() {
        let text = b": keep-alive\n\nevent: commit\nid: 1\ndata: {\"a\":\ndata: 1}\n\nevent: close\r\ndata: x\r\n\r\n";
        for cut in 0..text.len() {
            let mut parser = EventParser::default();
            let mut events = parser.feed(&text[..cut]).expect("utf-8");
            events.extend(parser.feed(&text[cut..]).expect("utf-8"));
            assert_eq!(
                events,
                vec![
                    ClientEvent {
                        event: "commit".into(),
                        data: "{\"a\":\n1}".into()
                    },
                    ClientEvent {
                        event: "close".into(),
                        data: "x".into()
                    },
                ],
                "cut at {cut}"
            );
        }
    }
}
