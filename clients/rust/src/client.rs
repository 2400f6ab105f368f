//! `Client`: the cheap, clonable handle applications hold. Every call is a message to the
//! background task (`driver`) that owns the socket.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use serde_json::Value;
use tokio::sync::{broadcast, mpsc, oneshot};

use crate::config::Config;
use crate::driver::{Command, Driver, Purpose, Shared};
use crate::error::ClientError;
use crate::event::{Event, JoinInfo, Member, State, Welcome};
use crate::wire::{self, Outgoing};

/// Commands that may wait for the background task before callers feel backpressure.
const COMMAND_QUEUE: usize = 1024;

/// A connection to a Switchboard server that reconnects on its own.
///
/// Clones share one connection. When the last clone is dropped the connection closes (1000).
/// Calls made while the client is reconnecting fail with [`ClientError::Disconnected`] rather
/// than wait; calls after it closed for good fail with [`ClientError::Closed`].
#[derive(Clone)]
pub struct Client {
    commands: mpsc::Sender<Command>,
    events: broadcast::Sender<Event>,
    shared: Arc<Mutex<Shared>>,
    request_timeout: Duration,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Client")
            .field("state", &self.state())
            .finish_non_exhaustive()
    }
}

impl Client {
    /// Connects and returns once the server's `welcome` has arrived.
    ///
    /// Failed attempts are retried under `config.reconnect` (so a server that is still starting
    /// is waited for); the last attempt's error is returned when it gives up, or at once when
    /// reconnecting is off. A refusal with 401, 403 or 404 is [`ClientError::Auth`] and is never
    /// retried. Needs a tokio runtime; the background task is spawned on it.
    pub async fn connect(config: Config) -> Result<Client, ClientError> {
        let (commands, command_receiver) = mpsc::channel(COMMAND_QUEUE);
        let (events, _) = broadcast::channel(config.event_capacity.max(1));
        let shared = Arc::new(Mutex::new(Shared::default()));
        let (ready, ready_receiver) = oneshot::channel();
        let request_timeout = config.request_timeout;
        let driver = Driver::new(
            config,
            command_receiver,
            events.clone(),
            shared.clone(),
            ready,
        );
        tokio::spawn(driver.run());
        let client = Client {
            commands,
            events,
            shared,
            request_timeout,
        };
        match ready_receiver.await {
            Ok(Ok(())) => Ok(client),
            Ok(Err(error)) => Err(error),
            Err(_) => Err(ClientError::Closed),
        }
    }

    /// Sends a `type` envelope with a fresh `correlationId` and waits up to `timeout` for its
    /// reply: the `ack` payload (`null` when it has none, or for a `pong`), or
    /// [`ClientError::Server`] for an `error` reply.
    pub async fn request(
        &self,
        kind: &str,
        channel: Option<&str>,
        payload: Value,
        timeout: Duration,
    ) -> Result<Value, ClientError> {
        let message = Outgoing::new(kind, channel, payload);
        self.ask(message, Purpose::Plain, timeout).await
    }

    /// Sends a `type` envelope without a `correlationId`: no reply comes, though an error
    /// would arrive as [`Event::Error`]. Returns once the frame is written.
    pub async fn send(
        &self,
        kind: &str,
        channel: Option<&str>,
        payload: Value,
    ) -> Result<(), ClientError> {
        let (reply, answer) = oneshot::channel();
        let message = Outgoing::new(kind, channel, payload);
        self.command(Command::Send { message, reply }).await?;
        answer.await.unwrap_or(Err(ClientError::Closed))
    }

    /// Joins `channel` and remembers it: after a reconnect it is joined again, with `since`
    /// when a message of it was seen, and its presence list is kept (see [`Client::presence`]).
    pub async fn join(&self, channel: &str) -> Result<JoinInfo, ClientError> {
        let message = Outgoing::new("room:join", Some(channel), Value::Null);
        let purpose = Purpose::Join(channel.to_owned());
        let payload = self.ask(message, purpose, self.request_timeout).await?;
        Ok(wire::join_info(&payload))
    }

    /// Leaves `channel`; it is forgotten at once, so a reconnect does not join it again.
    pub async fn leave(&self, channel: &str) -> Result<(), ClientError> {
        let message = Outgoing::new("room:leave", Some(channel), Value::Null);
        let purpose = Purpose::Leave(channel.to_owned());
        self.ask(message, purpose, self.request_timeout)
            .await
            .map(drop)
    }

    /// The members of a joined room, sorted; empty for a room not joined or without presence.
    pub fn presence(&self, channel: &str) -> Vec<Member> {
        self.shared().rooms.members(channel)
    }

    /// The joined rooms, sorted.
    pub fn rooms(&self) -> Vec<String> {
        self.shared().rooms.names()
    }

    /// The current state.
    pub fn state(&self) -> State {
        self.shared().state.clone()
    }

    /// The current connection's `welcome`; `None` while not connected.
    pub fn welcome(&self) -> Option<Welcome> {
        self.shared().welcome.clone()
    }

    /// A receiver of every event from now on. A receiver that falls more than
    /// `Config::event_capacity` events behind skips the oldest (`RecvError::Lagged`).
    pub fn events(&self) -> broadcast::Receiver<Event> {
        self.events.subscribe()
    }

    /// Closes normally (1000) and waits until the background task has stopped; no reconnect
    /// follows. Pending requests fail with [`ClientError::Closed`]. Closing twice is harmless.
    pub async fn close(&self) {
        let (done, finished) = oneshot::channel();
        if self.commands.send(Command::Close { done }).await.is_ok() {
            let _ = finished.await;
        }
    }

    async fn ask(
        &self,
        message: Outgoing,
        purpose: Purpose,
        timeout: Duration,
    ) -> Result<Value, ClientError> {
        let exchange = async {
            let (reply, answer) = oneshot::channel();
            self.command(Command::Request {
                message,
                purpose,
                reply,
            })
            .await?;
            answer.await.unwrap_or(Err(ClientError::Closed))
        };
        tokio::time::timeout(timeout, exchange)
            .await
            .unwrap_or(Err(ClientError::Timeout))
    }

    async fn command(&self, command: Command) -> Result<(), ClientError> {
        self.commands
            .send(command)
            .await
            .map_err(|_| ClientError::Closed)
    }

    fn shared(&self) -> MutexGuard<'_, Shared> {
        self.shared.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
