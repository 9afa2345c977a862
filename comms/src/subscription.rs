//! The stream a subscription yields.

use std::{
    fmt,
    pin::Pin,
    task::{Context, Poll},
};

use futures::{stream::BoxStream, Stream, StreamExt};

use crate::{Message, Topic};

/// Messages arriving on one topic. Dropping it unsubscribes; the stream ends when the backend closes
/// (or the local peer crashes, in the simulator).
pub struct Subscription {
    topic: Topic,
    messages: BoxStream<'static, Message>,
}

impl Subscription {
    /// Wraps a backend's stream. The backend arranges for dropping `messages` to unsubscribe.
    pub fn new(
        topic: Topic,
        messages: impl Stream<Item = Message> + Send + 'static,
    ) -> Subscription {
        Subscription {
            topic,
            messages: messages.boxed(),
        }
    }

    /// The topic subscribed to.
    pub fn topic(&self) -> &Topic {
        &self.topic
    }

    /// The next message, or `None` once the backend has closed the subscription.
    pub async fn recv(&mut self) -> Option<Message> {
        self.messages.next().await
    }
}

impl Stream for Subscription {
    type Item = Message;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Message>> {
        self.messages.poll_next_unpin(cx)
    }
}

impl fmt::Debug for Subscription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Subscription")
            .field("topic", &self.topic)
            .finish_non_exhaustive()
    }
}
