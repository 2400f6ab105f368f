//! The background task that owns the socket: connects and reconnects with backoff, joins the
//! remembered rooms again with `since`, matches replies to requests, pings when the server has
//! gone quiet, and reports every change as an `Event`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio::time::{Instant, sleep_until, timeout};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{self, HeaderValue, header};
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{Connector, MaybeTlsStream, WebSocketStream};

use crate::backoff::Jitter;
use crate::config::{Config, Liveness, TokenTransport};
use crate::error::ClientError;
use crate::event::{Event, JoinInfo, PresenceChange, State, Welcome};
use crate::rooms::Rooms;
use crate::tls;
use crate::wire::{self, Incoming, Outcome, Outgoing};

/// The subprotocol the client offers (docs/protocol.md, "Handshake").
const SUBPROTOCOL: &str = "switchboard.v1";
/// How long a closing socket may take to finish its close handshake.
const CLOSE_WAIT: Duration = Duration::from_secs(1);
/// Pending requests kept before abandoned ones (their caller timed out) are swept.
const PRUNE_FLOOR: usize = 64;

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;
type Reply = oneshot::Sender<Result<Value, ClientError>>;

/// What the handles can read without asking the task.
#[derive(Debug)]
pub(crate) struct Shared {
    /// The current state.
    pub(crate) state: State,
    /// The current connection's welcome.
    pub(crate) welcome: Option<Welcome>,
    /// The joined rooms.
    pub(crate) rooms: Rooms,
}

impl Default for Shared {
    fn default() -> Self {
        Shared {
            state: State::Connecting,
            welcome: None,
            rooms: Rooms::default(),
        }
    }
}

/// What a handle asks of the task.
pub(crate) enum Command {
    /// Send with a `correlationId` and answer with the reply.
    Request {
        message: Outgoing,
        purpose: Purpose,
        reply: Reply,
    },
    /// Send without a `correlationId`; answer once written.
    Send {
        message: Outgoing,
        reply: oneshot::Sender<Result<(), ClientError>>,
    },
    /// Close normally and stop; `done` is told when the task has finished.
    Close { done: oneshot::Sender<()> },
}

/// What a request's reply means to the task besides going to its caller.
pub(crate) enum Purpose {
    /// Nothing.
    Plain,
    /// An ack makes the room joined.
    Join(String),
    /// The room is forgotten when the request is sent.
    Leave(String),
}

/// A request waiting for its reply.
enum Pending {
    Plain(Reply),
    Join {
        channel: String,
        reply: Reply,
    },
    Leave(Reply),
    /// A join made after a reconnect; its ack becomes `Event::Rejoined`.
    Rejoin(String),
    /// A liveness ping; any frame already counted as the answer.
    Ping,
    /// A reply that no longer matters (a rejoin of a room left meanwhile).
    Ignore,
}

/// Why the task stops for good.
enum Stop {
    /// `close` was called (`done` set) or every handle was dropped.
    Closed(Option<oneshot::Sender<()>>),
    /// The server closed the connection with 1000.
    ServerClosed(String),
    /// Retrying cannot help (refused upgrade, bad URL).
    Fatal(ClientError),
    /// Reconnecting is off or used up its attempts.
    GaveUp {
        code: u16,
        reason: String,
        error: ClientError,
    },
}

/// How a connection ended.
enum SessionEnd {
    /// Dropped: reconnect.
    Lost { code: u16, reason: String },
    /// Stop for good.
    Stop(Stop),
}

/// How one attempt to connect ended.
enum Attempt {
    Open(Box<Socket>, Welcome),
    Failed(ClientError),
    Stop(Stop),
}

/// The task's state.
pub(crate) struct Driver {
    config: Arc<Config>,
    commands: mpsc::Receiver<Command>,
    events: broadcast::Sender<Event>,
    shared: Arc<Mutex<Shared>>,
    /// Told the outcome of the first connection, then `None`.
    ready: Option<oneshot::Sender<Result<(), ClientError>>>,
    pending: HashMap<String, Pending>,
    prune_mark: usize,
    next_id: u64,
    jitter: Jitter,
}

impl Driver {
    /// A task for `config` that answers `commands`, reports to `events` and `shared`, and tells
    /// `ready` how the first connection went.
    pub(crate) fn new(
        config: Config,
        commands: mpsc::Receiver<Command>,
        events: broadcast::Sender<Event>,
        shared: Arc<Mutex<Shared>>,
        ready: oneshot::Sender<Result<(), ClientError>>,
    ) -> Driver {
        Driver {
            config: Arc::new(config),
            commands,
            events,
            shared,
            ready: Some(ready),
            pending: HashMap::new(),
            prune_mark: PRUNE_FLOOR,
            next_id: 0,
            jitter: Jitter::from_clock(),
        }
    }

    /// Connects, serves, reconnects, until something stops it for good.
    pub(crate) async fn run(mut self) {
        // Attempts since the last open connection; 0 only before the very first.
        let mut attempt: u32 = 0;
        let mut last_error = ClientError::Disconnected;
        let mut last_close = (1006, String::from("the connection was lost"));
        let stop = loop {
            if attempt > 0 {
                let policy = match &self.config.reconnect {
                    Some(policy) if !policy.exhausted(attempt) => policy.clone(),
                    _ => {
                        break Stop::GaveUp {
                            code: last_close.0,
                            reason: format!("{}; not reconnecting: {last_error}", last_close.1),
                            error: last_error,
                        };
                    }
                };
                let delay = policy.delay(attempt, &mut self.jitter);
                self.set_state(State::Reconnecting { attempt, delay });
                if let Some(stop) = self.wait(delay).await {
                    break stop;
                }
            }
            self.set_state(State::Connecting);
            match self.attempt().await {
                Attempt::Open(socket, welcome) => {
                    attempt = 1;
                    match self.session(*socket, welcome).await {
                        SessionEnd::Lost { code, reason } => {
                            tracing::debug!(code, %reason, "connection lost");
                            last_close = (code, reason);
                            last_error = ClientError::Disconnected;
                        }
                        SessionEnd::Stop(stop) => break stop,
                    }
                }
                Attempt::Failed(error) => {
                    tracing::debug!(%error, attempt, "connection attempt failed");
                    attempt = attempt.saturating_add(1);
                    last_error = error;
                }
                Attempt::Stop(stop) => break stop,
            }
        };
        self.finish(stop);
    }

    /// Waits `delay` before the next attempt, answering commands meanwhile.
    async fn wait(&mut self, delay: Duration) -> Option<Stop> {
        let deadline = Instant::now() + delay;
        loop {
            tokio::select! {
                () = sleep_until(deadline) => return None,
                command = self.commands.recv() => {
                    if let Some(stop) = self.refuse(command) {
                        return Some(stop);
                    }
                }
            }
        }
    }

    /// One attempt to connect, bounded by the connect timeout, answering commands meanwhile.
    async fn attempt(&mut self) -> Attempt {
        let config = self.config.clone();
        let limit = config.connect_timeout;
        let opening = timeout(limit, open(config));
        tokio::pin!(opening);
        loop {
            tokio::select! {
                result = &mut opening => {
                    return match result {
                        Ok(Ok((socket, welcome))) => Attempt::Open(Box::new(socket), welcome),
                        Ok(Err(error)) if error.is_fatal() => Attempt::Stop(Stop::Fatal(error)),
                        Ok(Err(error)) => Attempt::Failed(error),
                        Err(_) => Attempt::Failed(ClientError::Connect(format!(
                            "no welcome within {limit:?}"
                        ))),
                    };
                }
                command = self.commands.recv() => {
                    if let Some(stop) = self.refuse(command) {
                        return Attempt::Stop(stop);
                    }
                }
            }
        }
    }

    /// Answers a command while not connected.
    fn refuse(&mut self, command: Option<Command>) -> Option<Stop> {
        match command {
            None => Some(Stop::Closed(None)),
            Some(Command::Close { done }) => Some(Stop::Closed(Some(done))),
            Some(Command::Request {
                purpose: Purpose::Leave(channel),
                reply,
                ..
            }) => {
                // The server dropped the membership with the connection; not joining it again
                // is all that leaving takes now.
                self.forget_room(&channel);
                let _ = reply.send(Ok(Value::Null));
                None
            }
            Some(Command::Request { reply, .. }) => {
                let _ = reply.send(Err(ClientError::Disconnected));
                None
            }
            Some(Command::Send { reply, .. }) => {
                let _ = reply.send(Err(ClientError::Disconnected));
                None
            }
        }
    }

    /// Serves one open connection until it ends.
    async fn session(&mut self, mut socket: Socket, welcome: Welcome) -> SessionEnd {
        self.shared().welcome = Some(welcome.clone());
        self.emit(Event::Welcome(welcome));
        self.set_state(State::Open);
        if let Some(ready) = self.ready.take() {
            let _ = ready.send(Ok(()));
        }
        let end = self.serve(&mut socket).await;
        if let SessionEnd::Lost { .. } = end {
            self.fail_pending(&ClientError::Disconnected);
            self.shared().welcome = None;
        }
        end
    }

    async fn serve(&mut self, socket: &mut Socket) -> SessionEnd {
        let plan = self.shared().rooms.rejoin_plan();
        for (channel, since) in plan {
            let payload = since.map_or(Value::Null, |since| json!({ "since": since }));
            let message = Outgoing::new("room:join", Some(&channel), payload);
            if let Err(end) = self
                .write_request(socket, &message, Pending::Rejoin(channel))
                .await
            {
                return end;
            }
        }
        let mut alive = Alive::new(self.config.liveness.clone());
        loop {
            let deadline = alive.deadline();
            let watching = deadline.is_some();
            let deadline = deadline.unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
            tokio::select! {
                frame = socket.next() => {
                    alive.heard();
                    if let Some(end) = self.on_frame(socket, frame).await {
                        return end;
                    }
                }
                command = self.commands.recv() => {
                    if let Some(end) = self.on_command(socket, command).await {
                        return end;
                    }
                }
                () = sleep_until(deadline), if watching => {
                    if let Some(silence) = alive.unanswered() {
                        return SessionEnd::Lost {
                            code: 1006,
                            reason: format!("no sign of life for {silence:?} after a ping"),
                        };
                    }
                    let ping = Outgoing::new("ping", None, Value::Null);
                    if let Err(end) = self.write_request(socket, &ping, Pending::Ping).await {
                        return end;
                    }
                    alive.pinged();
                }
            }
        }
    }

    async fn on_frame(
        &mut self,
        socket: &mut Socket,
        frame: Option<Result<Message, tungstenite::Error>>,
    ) -> Option<SessionEnd> {
        match frame {
            Some(Ok(Message::Text(text))) => {
                self.on_text(text.as_str());
                None
            }
            Some(Ok(Message::Close(frame))) => {
                let (code, reason) = frame.map_or((1005, String::new()), |frame| {
                    (u16::from(frame.code), frame.reason.to_string())
                });
                // Reading on sends tungstenite's answer to the close and sees the end.
                drain(socket).await;
                if code == 1000 {
                    Some(SessionEnd::Stop(Stop::ServerClosed(format!(
                        "closed by the server: {reason}"
                    ))))
                } else {
                    Some(SessionEnd::Lost { code, reason })
                }
            }
            Some(Ok(_)) => None,
            Some(Err(error)) => Some(SessionEnd::Lost {
                code: 1006,
                reason: error.to_string(),
            }),
            None => Some(SessionEnd::Lost {
                code: 1006,
                reason: "the connection ended without a close frame".to_owned(),
            }),
        }
    }

    async fn on_command(
        &mut self,
        socket: &mut Socket,
        command: Option<Command>,
    ) -> Option<SessionEnd> {
        match command {
            None => {
                close(socket).await;
                Some(SessionEnd::Stop(Stop::Closed(None)))
            }
            Some(Command::Close { done }) => {
                close(socket).await;
                Some(SessionEnd::Stop(Stop::Closed(Some(done))))
            }
            Some(Command::Request {
                message,
                purpose,
                reply,
            }) => {
                let pending = match purpose {
                    Purpose::Plain => Pending::Plain(reply),
                    Purpose::Join(channel) => Pending::Join { channel, reply },
                    Purpose::Leave(channel) => {
                        self.forget_room(&channel);
                        Pending::Leave(reply)
                    }
                };
                self.write_request(socket, &message, pending).await.err()
            }
            Some(Command::Send { message, reply }) => {
                match self.write(socket, message.encode(None)).await {
                    Ok(()) => {
                        let _ = reply.send(Ok(()));
                        None
                    }
                    Err(end) => {
                        let _ = reply.send(Err(ClientError::Disconnected));
                        Some(end)
                    }
                }
            }
        }
    }

    fn on_text(&mut self, text: &str) {
        let incoming = match wire::decode(text) {
            Ok(incoming) => incoming,
            Err(error) => {
                tracing::warn!(%error, "ignoring a frame from the server");
                return;
            }
        };
        match incoming {
            Incoming::Welcome(_) => tracing::warn!("ignoring a second welcome"),
            Incoming::Reply {
                correlation_id,
                outcome,
            } => self.on_reply(&correlation_id, outcome),
            Incoming::Channel {
                channel,
                seq,
                envelope,
            } => {
                if self.shared().rooms.accept(&channel, seq) {
                    self.emit(Event::Message(envelope));
                } else {
                    tracing::debug!(%channel, seq, "dropping a message seen before");
                }
            }
            Incoming::Presence {
                joined,
                channel,
                member,
                envelope,
            } => {
                let members = {
                    let mut shared = self.shared();
                    if joined {
                        shared.rooms.member_joined(&channel, member.clone())
                    } else {
                        shared.rooms.member_left(&channel, &member)
                    }
                };
                self.emit(Event::Message(envelope));
                if let Some(members) = members {
                    let change = if joined {
                        PresenceChange::Join(member)
                    } else {
                        PresenceChange::Leave(member)
                    };
                    self.emit(Event::Presence {
                        channel,
                        change,
                        members,
                    });
                }
            }
            Incoming::Error { code, message } => self.emit(Event::Error { code, message }),
            Incoming::Other(envelope) => self.emit(Event::Message(envelope)),
        }
    }

    fn on_reply(&mut self, correlation_id: &str, outcome: Outcome) {
        let Some(pending) = self.pending.remove(correlation_id) else {
            tracing::debug!(correlation_id, "a reply no one waits for any more");
            return;
        };
        let result = match outcome {
            Outcome::Ack(payload) => Ok(payload),
            Outcome::Pong => Ok(Value::Null),
            Outcome::Error { code, message } => Err(ClientError::Server { code, message }),
        };
        match pending {
            Pending::Plain(reply) | Pending::Leave(reply) => {
                let _ = reply.send(result);
            }
            Pending::Join { channel, reply } => {
                if let Ok(payload) = &result {
                    self.record_join(&channel, payload, false);
                }
                let _ = reply.send(result);
            }
            Pending::Rejoin(channel) => match result {
                Ok(payload) => {
                    let info = self.record_join(&channel, &payload, true);
                    self.emit(Event::Rejoined {
                        channel,
                        recovered: info.recovered,
                    });
                }
                Err(error) => {
                    self.shared().rooms.forget(&channel);
                    let (code, message) = match error {
                        ClientError::Server { code, message } => (code, message),
                        other => (String::new(), other.to_string()),
                    };
                    self.emit(Event::RejoinFailed {
                        channel,
                        code,
                        message,
                    });
                }
            },
            Pending::Ping | Pending::Ignore => {}
        }
    }

    /// Records a join ack and reports the room's members.
    fn record_join(&mut self, channel: &str, payload: &Value, rejoin: bool) -> JoinInfo {
        let info = wire::join_info(payload);
        let members = {
            let mut shared = self.shared();
            shared
                .rooms
                .joined(channel, info.members.clone(), info.recovered, rejoin);
            shared.rooms.members(channel)
        };
        self.emit(Event::Presence {
            channel: channel.to_owned(),
            change: PresenceChange::Sync,
            members,
        });
        info
    }

    /// Forgets a room, and any rejoin of it still in flight.
    fn forget_room(&mut self, channel: &str) {
        self.shared().rooms.forget(channel);
        for pending in self.pending.values_mut() {
            if matches!(pending, Pending::Rejoin(rejoining) if rejoining == channel) {
                *pending = Pending::Ignore;
            }
        }
    }

    async fn write_request(
        &mut self,
        socket: &mut Socket,
        message: &Outgoing,
        pending: Pending,
    ) -> Result<(), SessionEnd> {
        self.next_id += 1;
        let correlation_id = self.next_id.to_string();
        let text = message.encode(Some(&correlation_id));
        self.prune();
        self.pending.insert(correlation_id, pending);
        self.write(socket, text).await
    }

    async fn write(&mut self, socket: &mut Socket, text: String) -> Result<(), SessionEnd> {
        match timeout(
            self.config.connect_timeout,
            socket.send(Message::text(text)),
        )
        .await
        {
            Ok(Ok(())) => Ok(()),
            Ok(Err(error)) => Err(SessionEnd::Lost {
                code: 1006,
                reason: format!("writing failed: {error}"),
            }),
            Err(_) => Err(SessionEnd::Lost {
                code: 1006,
                reason: "writing stalled".to_owned(),
            }),
        }
    }

    /// Drops requests whose callers stopped waiting (timed out) once there are many.
    fn prune(&mut self) {
        if self.pending.len() < self.prune_mark {
            return;
        }
        self.pending.retain(|_, pending| {
            !matches!(pending, Pending::Plain(reply) | Pending::Leave(reply) if reply.is_closed())
        });
        self.prune_mark = (self.pending.len() * 2).max(PRUNE_FLOOR);
    }

    fn fail_pending(&mut self, error: &ClientError) {
        for (_, pending) in self.pending.drain() {
            match pending {
                Pending::Plain(reply) | Pending::Leave(reply) | Pending::Join { reply, .. } => {
                    let _ = reply.send(Err(error.clone()));
                }
                Pending::Rejoin(_) | Pending::Ping | Pending::Ignore => {}
            }
        }
    }

    /// Stops for good: fails what is pending, reports `Closed`, tells whoever waits.
    fn finish(mut self, stop: Stop) {
        let (code, reason, error, done) = match stop {
            Stop::Closed(done) => (
                1000,
                "closed by the client".to_owned(),
                ClientError::Closed,
                done,
            ),
            Stop::ServerClosed(reason) => (1000, reason, ClientError::Closed, None),
            Stop::Fatal(error) => (1008, error.to_string(), error, None),
            Stop::GaveUp {
                code,
                reason,
                error,
            } => (code, reason, error, None),
        };
        self.fail_pending(&ClientError::Closed);
        self.shared().welcome = None;
        self.set_state(State::Closed);
        self.emit(Event::Closed { code, reason });
        if let Some(ready) = self.ready.take() {
            let _ = ready.send(Err(error));
        }
        // Commands still queued are dropped with the receiver: their callers see `Closed`.
        self.commands.close();
        if let Some(done) = done {
            let _ = done.send(());
        }
    }

    fn set_state(&self, state: State) {
        self.shared().state = state.clone();
        self.emit(Event::State(state));
    }

    fn emit(&self, event: Event) {
        // No receiver is fine: events are for whoever listens.
        let _ = self.events.send(event);
    }

    fn shared(&self) -> MutexGuard<'_, Shared> {
        self.shared.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Fetches a token, upgrades and reads the welcome.
async fn open(config: Arc<Config>) -> Result<(Socket, Welcome), ClientError> {
    let token = config.token.fetch().await.map_err(ClientError::Token)?;
    let request = upgrade_request(&config, &token)?;
    let host = request.uri().host().unwrap_or_default().to_owned();
    let connector = match request.uri().scheme_str() {
        Some("wss") => Some(Connector::Rustls(config.tls.client_config()?)),
        _ => None,
    };
    let opened =
        tokio_tungstenite::connect_async_tls_with_config(request, None, false, connector).await;
    let (mut socket, _response) = match opened {
        Ok(opened) => opened,
        Err(tungstenite::Error::Http(response)) => return Err(refusal(&response)),
        Err(tungstenite::Error::Url(error)) => {
            return Err(ClientError::Config(format!(
                "url `{}`: {error}",
                config.url
            )));
        }
        Err(tungstenite::Error::Tls(error)) => {
            return Err(ClientError::Config(format!(
                "url `{}`: {error}",
                config.url
            )));
        }
        Err(tungstenite::Error::Io(error)) => {
            return Err(tls::handshake_failure(&host, &error)
                .unwrap_or_else(|| ClientError::Connect(error.to_string())));
        }
        Err(error) => return Err(ClientError::Connect(error.to_string())),
    };
    let welcome = first_welcome(&mut socket).await?;
    Ok((socket, welcome))
}

fn upgrade_request(config: &Config, token: &str) -> Result<http::Request<()>, ClientError> {
    let mut request = config
        .url
        .as_str()
        .into_client_request()
        .map_err(|error| ClientError::Config(format!("url `{}`: {error}", config.url)))?;
    let invalid = |_| ClientError::Token("the token is not a valid header value".to_owned());
    let headers = request.headers_mut();
    match config.transport {
        TokenTransport::Header => {
            let bearer = HeaderValue::from_str(&format!("Bearer {token}")).map_err(invalid)?;
            headers.insert(header::AUTHORIZATION, bearer);
            headers.insert(
                header::SEC_WEBSOCKET_PROTOCOL,
                HeaderValue::from_static(SUBPROTOCOL),
            );
        }
        TokenTransport::Subprotocol => {
            let offer = HeaderValue::from_str(&format!("{SUBPROTOCOL}, bearer.{token}"))
                .map_err(invalid)?;
            headers.insert(header::SEC_WEBSOCKET_PROTOCOL, offer);
        }
    }
    Ok(request)
}

/// A refused upgrade: 401, 403 and 404 are final, anything else may pass.
fn refusal(response: &http::Response<Option<Vec<u8>>>) -> ClientError {
    let status = response.status().as_u16();
    let (error, message) = wire::refusal_fields(response.body().as_deref());
    if matches!(status, 401 | 403 | 404) {
        ClientError::Auth {
            status,
            error,
            message,
        }
    } else {
        ClientError::Connect(format!("HTTP {status} {error}: {message}"))
    }
}

/// The first text frame, which must be the welcome (the caller bounds the wait).
async fn first_welcome(socket: &mut Socket) -> Result<Welcome, ClientError> {
    loop {
        match socket.next().await {
            Some(Ok(Message::Text(text))) => {
                return match wire::decode(text.as_str()) {
                    Ok(Incoming::Welcome(welcome)) => Ok(welcome),
                    Ok(other) => Err(ClientError::Connect(format!(
                        "expected a welcome first, got {other:?}"
                    ))),
                    Err(error) => Err(ClientError::Connect(error)),
                };
            }
            Some(Ok(Message::Close(frame))) => {
                let detail = frame.map_or_else(String::new, |frame| {
                    format!("{} {}", u16::from(frame.code), frame.reason)
                });
                return Err(ClientError::Connect(format!(
                    "closed before the welcome: {detail}"
                )));
            }
            Some(Ok(_)) => continue,
            Some(Err(error)) => return Err(ClientError::Connect(error.to_string())),
            None => {
                return Err(ClientError::Connect(
                    "the connection ended before the welcome".to_owned(),
                ));
            }
        }
    }
}

/// Closes normally and waits (bounded) for the server's answer.
async fn close(socket: &mut Socket) {
    let frame = CloseFrame {
        code: CloseCode::Normal,
        reason: "bye".into(),
    };
    let _ = timeout(CLOSE_WAIT, socket.close(Some(frame))).await;
    drain(socket).await;
}

/// Reads until the connection ends, for at most `CLOSE_WAIT`.
async fn drain(socket: &mut Socket) {
    let _ = timeout(CLOSE_WAIT, async {
        while let Some(Ok(_)) = socket.next().await {}
    })
    .await;
}

/// Liveness bookkeeping for one connection.
struct Alive {
    settings: Option<Liveness>,
    last_heard: Instant,
    pinged_at: Option<Instant>,
}

impl Alive {
    fn new(settings: Option<Liveness>) -> Alive {
        Alive {
            settings,
            last_heard: Instant::now(),
            pinged_at: None,
        }
    }

    /// Something arrived.
    fn heard(&mut self) {
        self.last_heard = Instant::now();
        self.pinged_at = None;
    }

    /// A ping went out.
    fn pinged(&mut self) {
        self.pinged_at = Some(Instant::now());
    }

    /// When to act next: ping after `idle`, give up `timeout` after a ping; `None` when off.
    fn deadline(&self) -> Option<Instant> {
        let settings = self.settings.as_ref()?;
        Some(match self.pinged_at {
            Some(pinged_at) => pinged_at + settings.timeout,
            None => self.last_heard + settings.idle,
        })
    }

    /// At the deadline: how long it has been quiet, when a ping went unanswered.
    fn unanswered(&self) -> Option<Duration> {
        self.pinged_at.map(|_| self.last_heard.elapsed())
    }
}
