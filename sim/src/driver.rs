//! The task that owns the engine, and the cheap handle that talks to it.
//!
//! Commands are closures run on the engine at the current time. Their channel is unbounded because
//! a dropped subscription must be able to send its unsubscribe without waiting; every other sender
//! awaits its reply, so the queue holds at most one command per caller in flight.

use std::time::Duration;

use tokio::{
    sync::{mpsc, oneshot},
    time::Instant,
};

use crate::{engine::Engine, SimError};

/// A command: a closure run on the engine.
pub(crate) type Command = Box<dyn FnOnce(&mut Engine) + Send>;

/// A handle to the driver task. Clone it freely; the task ends when the last handle is dropped.
#[derive(Clone)]
pub(crate) struct Driver {
    commands: mpsc::UnboundedSender<Command>,
    start: Instant,
}

impl Driver {
    /// Spawns the task that owns `engine` on the current tokio runtime.
    pub(crate) fn spawn(engine: Engine) -> Driver {
        let (commands, receiver) = mpsc::unbounded_channel();
        let start = Instant::now();
        tokio::spawn(run(engine, receiver, start));
        Driver { commands, start }
    }

    /// Simulated time since the start.
    pub(crate) fn elapsed(&self) -> Duration {
        self.start.elapsed()
    }

    /// Runs `f` on the engine and returns what it returns.
    pub(crate) async fn call<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Engine) -> T + Send + 'static,
    ) -> Result<T, SimError> {
        self.request(move |engine, reply| {
            let _ = reply.send(f(engine));
        })
        .await
    }

    /// Runs `f` on the engine with a reply slot it may fill now or later, and awaits the reply.
    pub(crate) async fn request<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Engine, oneshot::Sender<T>) + Send + 'static,
    ) -> Result<T, SimError> {
        let (reply, answer) = oneshot::channel();
        self.send(Box::new(move |engine| f(engine, reply)))?;
        answer.await.map_err(|_| SimError::Closed)
    }

    /// Queues a command without waiting.
    pub(crate) fn send(&self, command: Command) -> Result<(), SimError> {
        self.commands.send(command).map_err(|_| SimError::Closed)
    }

    /// A handle that does not keep the driver alive.
    pub(crate) fn downgrade(&self) -> mpsc::WeakUnboundedSender<Command> {
        self.commands.downgrade()
    }
}

/// The driver loop: run due events, then wait for the next event or command, whichever comes first.
async fn run(mut engine: Engine, mut commands: mpsc::UnboundedReceiver<Command>, start: Instant) {
    let timer = tokio::time::sleep_until(start);
    tokio::pin!(timer);
    let mut armed = None;
    loop {
        let now = || start.elapsed().as_nanos() as u64;
        engine.advance_to(now());
        let next = engine.next_event_at();
        if next != armed {
            if let Some(at) = next {
                timer.as_mut().reset(start + Duration::from_nanos(at));
            }
            armed = next;
        }
        tokio::select! {
            biased;
            command = commands.recv() => match command {
                Some(command) => {
                    engine.advance_to(now());
                    command(&mut engine);
                }
                None => break,
            },
            () = &mut timer, if armed.is_some() => armed = None,
        }
    }
}
