//! One connection after the upgrade: a single task reads frames, enforces size, UTF-8, rate
//! and envelope rules, handles the built-in types, drains the outbox in batches, and keeps the
//! heartbeat. Generic over `Stream`/`Sink` so it can be driven without a socket.

use std::collections::VecDeque;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{FutureExt, Sink, SinkExt, Stream, StreamExt};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::{Instant, sleep_until, timeout, timeout_at};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use crate::config::TenantProtocol;
use crate::conn_handle::ConnHandle;
use crate::heartbeat::{Heartbeat, HeartbeatAction};
use crate::node::Node;
use crate::outbox::Batch;
use crate::plugins::pool::LoadedPlugin;
use crate::protocol::{self, CloseReason, Envelope, ErrorCode, Frame};
use crate::ratelimit::TokenBucket;
use crate::wit::{self as plugin_bindings, RawFrame};

/// At most this many already-received messages are handled before the outbox gets its turn.
const READ_BATCH: usize = 32;

/// Frames a connection's write queue keeps room for between batches.
const RETAINED_QUEUE: usize = 64;

/// How long the server waits for the peer's close frame after sending its own, and then for
/// the peer to close its side.
const CLOSE_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(2);

/// Bytes read at a time while discarding a closed connection's unread input.
const LINGER_READ_BYTES: usize = 4096;

/// How a connection ended, for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// The server sent a close frame with this code.
    ClosedByServer(u16),
    /// The client sent a close frame with this code (1005 when it had none).
    ClosedByClient(u16),
    /// The TCP connection ended or was dropped without a close handshake.
    Dropped,
}

impl Ending {
    /// The close code to report: 1006 (abnormal closure) for a drop without a close frame.
    pub fn code(self) -> u16 {
        match self {
            Ending::ClosedByServer(code) | Ending::ClosedByClient(code) => code,
            Ending::Dropped => 1006,
        }
    }
}

enum Step {
    Continue,
    Close(CloseReason),
    PeerClosed(u16),
    /// The peer is gone without a close handshake.
    Dropped,
}

/// Messages of the read batch in progress that go to one plugin, held so that they reach it
/// in one call. They are handed over before anything else of the connection happens (another
/// message, the outbox's turn, a close), so replies keep the order of the requests.
#[derive(Default)]
struct Held {
    plugin: Option<Arc<LoadedPlugin>>,
    messages: Vec<plugin_bindings::Message>,
    /// What the held messages' strings take.
    bytes: usize,
}

/// Bytes a held batch may take beyond its first message: a read batch of large messages would
/// otherwise hold up to `READ_BATCH` times `limits.max_message_bytes` per connection at once,
/// where handling them one by one holds one.
const HELD_BYTES: usize = 64 * 1024;

impl Held {
    /// Whether a message of `bytes` may join the held ones (else they are handed over first).
    fn has_room(&self, bytes: usize) -> bool {
        self.messages.is_empty() || self.bytes.saturating_add(bytes) <= HELD_BYTES
    }
}

/// What a plugin message's strings take.
fn message_bytes(message: &plugin_bindings::Message) -> usize {
    message.msg_type.len()
        + message.payload_json.len()
        + message.channel.as_ref().map_or(0, String::len)
        + message.correlation_id.as_ref().map_or(0, String::len)
}

/// The transport under the WebSocket layer, reached only to end a connection cleanly.
pub trait Linger {
    /// After the close handshake: stops sending (a TCP FIN) and discards whatever the peer still
    /// sends until it closes its side or `deadline` passes. Closing a socket whose input is
    /// unread resets the connection, and a reset makes a proxy in between throw away the close
    /// frame it was still relaying.
    fn linger(&mut self, deadline: Instant) -> impl Future<Output = ()> + Send;
}

impl<T> Linger for WebSocketStream<T>
where
    T: AsyncRead + AsyncWrite + Unpin + Send,
{
    async fn linger(&mut self, deadline: Instant) {
        let io = self.get_mut();
        if timeout_at(deadline, io.shutdown()).await.is_err() {
            return;
        }
        // Only reached at the end of a connection: the buffer is not part of an idle one.
        let mut discard = vec![0u8; LINGER_READ_BYTES];
        while let Ok(Ok(read)) = timeout_at(deadline, io.read(&mut discard)).await {
            if read == 0 {
                break;
            }
        }
    }
}

/// Runs a registered connection to its end, then removes it from the registry and every room;
/// `held` (such as its connection-limit slots) is released last, once the socket is closed.
pub async fn serve<S, H>(node: Arc<Node>, conn: Arc<ConnHandle>, mut socket: S, held: H) -> Ending
where
    S: Stream<Item = Result<Message, WsError>> + Sink<Message, Error = WsError> + Linger + Unpin,
{
    let ending = run(&node, &conn, &mut socket).await;
    // Boxed, like every rare or deep step below: the task's future is sized by its largest
    // await point and stays allocated for the connection's whole life, idle or not.
    Box::pin(node.disconnect(&conn, ending.code())).await;
    if !matches!(ending, Ending::Dropped) {
        Box::pin(socket.linger(Instant::now() + CLOSE_HANDSHAKE_TIMEOUT)).await;
    }
    drop(socket);
    tracing::debug!(connection = %conn.id, ?ending, "connection ended");
    drop(held);
    ending
}

async fn run<S>(node: &Node, conn: &Arc<ConnHandle>, socket: &mut S) -> Ending
where
    S: Stream<Item = Result<Message, WsError>> + Sink<Message, Error = WsError> + Unpin,
{
    let config = &node.config;
    let limits = &conn.tenant.limits;
    let now = Instant::now();
    let mut bucket = TokenBucket::new(limits.messages_per_second, limits.burst, now);
    let mut heartbeat = Heartbeat::new(config.heartbeat_interval, config.heartbeat_timeout, now);
    // A write that cannot finish within this time means the peer stopped reading.
    let write_timeout = config.heartbeat_interval + config.heartbeat_timeout;

    // One timer for the connection's life, moved only when the heartbeat's deadline moves: a
    // fresh `sleep_until` per wake-up would register and cancel a timer for every message.
    let heartbeat_timer = sleep_until(heartbeat.next_deadline());
    tokio::pin!(heartbeat_timer);
    // Frames being written; its allocation alternates with the outbox's queue.
    let mut writing = VecDeque::new();
    // The welcome was queued before the connection was registered, so it goes first.
    loop {
        let deadline = heartbeat.next_deadline();
        if heartbeat_timer.deadline() != deadline {
            heartbeat_timer.as_mut().reset(deadline);
        }
        tokio::select! {
            biased;
            () = conn.outbox.ready() => {
                while let Some(batch) = conn.outbox.take(&mut writing) {
                    match batch {
                        Batch::Frames => {
                            match write_batch(socket, conn, &mut writing, write_timeout).await {
                                Ok(()) => {}
                                Err(WriteFailed::Dropped) => return Ending::Dropped,
                                Err(WriteFailed::SlowConsumer) => {
                                    writing.clear();
                                    return close(socket, CloseReason::SlowConsumer).await;
                                }
                            }
                        }
                        Batch::Close(reason) => return close(socket, reason).await,
                    }
                }
            }
            incoming = socket.next() => {
                let mut incoming = incoming;
                // Messages the socket already holds are handled before the outbox is written:
                // replies to pipelined requests then leave in one write, not one each, and
                // those for one plugin reach it in one call.
                let mut held = Held::default();
                let mut handled = 0;
                let step = loop {
                    heartbeat.received();
                    let step = match incoming {
                        None => Step::Dropped,
                        Some(Ok(message)) => {
                            handle_message(node, conn, &mut bucket, &mut held, message).await
                        }
                        Some(Err(error)) => match close_reason_for(&error) {
                            Some(reason) => Step::Close(reason),
                            None => Step::Dropped,
                        },
                    };
                    if !matches!(step, Step::Continue) {
                        break step;
                    }
                    handled += 1;
                    // The batch ends before the next message is taken off the socket, never
                    // after: a message taken and not handled would be lost.
                    if handled == READ_BATCH {
                        break Step::Continue;
                    }
                    match socket.next().now_or_never() {
                        Some(next) => incoming = next,
                        None => break Step::Continue,
                    }
                };
                hand_over(node, conn, &mut held).await;
                match step {
                    Step::Continue => {}
                    Step::Dropped => return Ending::Dropped,
                    // Through the outbox: the replies to the messages handled before the
                    // fault are written first, then the close; nothing after it is read.
                    Step::Close(reason) => conn.outbox.close(reason),
                    Step::PeerClosed(code) => {
                        finish_close_handshake(socket).await;
                        return Ending::ClosedByClient(code);
                    }
                }
            }
            () = &mut heartbeat_timer => match heartbeat.poll(Instant::now()) {
                HeartbeatAction::SendPing => {
                    let ping = socket.send(Message::Ping(Bytes::new()));
                    match bounded_if_waiting(conn, ping, write_timeout).await {
                        Ok(()) => {}
                        Err(WriteFailed::Dropped) => return Ending::Dropped,
                        Err(WriteFailed::SlowConsumer) => {
                            return close(socket, CloseReason::SlowConsumer).await;
                        }
                    }
                }
                // Presumed dead: no close handshake with a peer that does not answer.
                HeartbeatAction::Dead => return Ending::Dropped,
                HeartbeatAction::Wait => {}
            },
        }
    }
}

/// Why a write did not complete.
enum WriteFailed {
    /// The socket failed or the write outlived its time limit: the peer is gone.
    Dropped,
    /// The outbox passed its bound while the write waited for the peer to read.
    SlowConsumer,
}

/// Writes and flushes the frames, leaving `frames` empty.
async fn write_batch<S>(
    socket: &mut S,
    conn: &ConnHandle,
    frames: &mut VecDeque<Frame>,
    write_timeout: Duration,
) -> Result<(), WriteFailed>
where
    S: Sink<Message, Error = WsError> + Unpin,
{
    let count = frames.len();
    let write = async {
        let mut bytes = 0;
        for frame in frames.drain(..) {
            bytes += frame.len();
            socket.feed(frame.into_message()).await?;
        }
        socket.flush().await?;
        Ok::<usize, WsError>(bytes)
    };
    let written = bounded_if_waiting(conn, write, write_timeout).await;
    // A burst's queue is not kept for the connection's whole life.
    if frames.capacity() > RETAINED_QUEUE {
        *frames = VecDeque::new();
    }
    let bytes = written?;
    conn.tenant.metrics.messages_out(count, bytes);
    Ok(())
}

/// Runs a write within `limit`. Most writes finish at once (the socket buffer has room): only
/// one that has to wait registers the timer that bounds it, and watches the outbox, so that a
/// peer which stopped reading is closed as a slow consumer as soon as its queue passes the
/// bound, not when the time limit runs out.
async fn bounded_if_waiting<T>(
    conn: &ConnHandle,
    write: impl Future<Output = Result<T, WsError>>,
    limit: Duration,
) -> Result<T, WriteFailed> {
    let mut write = std::pin::pin!(write);
    if let Poll::Ready(written) =
        std::future::poll_fn(|cx| Poll::Ready(write.as_mut().poll(cx))).await
    {
        return written.map_err(|_| WriteFailed::Dropped);
    }
    let deadline = tokio::time::sleep(limit);
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            biased;
            written = write.as_mut() => return written.map_err(|_| WriteFailed::Dropped),
            // A wake-up for a plain push is not lost by taking it here: the connection's loop
            // takes everything queued after this write.
            () = conn.outbox.ready() => {
                if conn.outbox.has_overflowed() {
                    return Err(WriteFailed::SlowConsumer);
                }
            }
            () = &mut deadline => return Err(WriteFailed::Dropped),
        }
    }
}

/// Sends the close frame, then waits briefly for the peer's answer. The frame is sent after
/// whatever the socket still buffers; a peer that reads nothing within the time limit does not
/// get it, but the close still counts with its code.
async fn close<S>(socket: &mut S, reason: CloseReason) -> Ending
where
    S: Stream<Item = Result<Message, WsError>> + Sink<Message, Error = WsError> + Unpin,
{
    let code = reason.code();
    let frame = CloseFrame {
        code: CloseCode::from(code),
        reason: reason.reason().into(),
    };
    if timeout(
        CLOSE_HANDSHAKE_TIMEOUT,
        socket.send(Message::Close(Some(frame))),
    )
    .await
    .is_ok()
    {
        finish_close_handshake(socket).await;
    }
    Ending::ClosedByServer(code)
}

async fn finish_close_handshake<S>(socket: &mut S)
where
    S: Stream<Item = Result<Message, WsError>> + Unpin,
{
    let drain = async { while let Some(Ok(_)) = socket.next().await {} };
    let _ = timeout(CLOSE_HANDSHAKE_TIMEOUT, drain).await;
}

/// The close a read error calls for; `None` when the peer is simply gone.
fn close_reason_for(error: &WsError) -> Option<CloseReason> {
    use tokio_tungstenite::tungstenite::error::ProtocolError;
    match error {
        WsError::Capacity(_) => Some(CloseReason::TooBig),
        WsError::Utf8(_) => Some(CloseReason::InvalidUtf8),
        WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake) => None,
        WsError::Protocol(detail) => Some(CloseReason::ProtocolError(detail.to_string())),
        _ => None,
    }
}

async fn handle_message(
    node: &Node,
    conn: &Arc<ConnHandle>,
    bucket: &mut TokenBucket,
    held: &mut Held,
    message: Message,
) -> Step {
    let raw = conn.tenant.protocol == TenantProtocol::Raw;
    let text = match message {
        Message::Text(text) => text,
        Message::Binary(data) => {
            conn.tenant.metrics.message_in(data.len());
            if !raw {
                return Step::Close(CloseReason::BinaryFrame);
            }
            if !bucket.try_take(Instant::now()) {
                return Step::Close(CloseReason::RateLimited);
            }
            return Box::pin(raw_frame(node, conn, RawFrame::Binary(Vec::from(data)))).await;
        }
        Message::Close(frame) => {
            return Step::PeerClosed(frame.map_or(1005, |frame| u16::from(frame.code)));
        }
        // Control frames prove liveness and cost nothing; tungstenite answers pings itself.
        Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => return Step::Continue,
    };
    conn.tenant.metrics.message_in(text.len());
    if !bucket.try_take(Instant::now()) {
        return Step::Close(CloseReason::RateLimited);
    }
    if raw {
        return Box::pin(raw_frame(
            node,
            conn,
            RawFrame::Text(text.as_str().to_owned()),
        ))
        .await;
    }
    let envelope = match Envelope::parse(text.as_str()) {
        Ok(envelope) => envelope,
        Err(error) => return Step::Close(CloseReason::InvalidEnvelope(error.to_string())),
    };
    let msg_type = envelope.msg_type.as_ref();
    let plugin = match msg_type {
        "ping" | "room:join" | "room:leave" => None,
        _ => node.plugins.handler_for(conn, msg_type),
    };
    match plugin {
        Some(plugin) => {
            let message = plugin_message(&envelope);
            let bytes = message_bytes(&message);
            let other_plugin = held
                .plugin
                .as_ref()
                .is_some_and(|holding| !Arc::ptr_eq(holding, &plugin));
            if other_plugin || !held.has_room(bytes) {
                hand_over(node, conn, held).await;
            }
            held.plugin = Some(plugin);
            held.messages.push(message);
            held.bytes += bytes;
        }
        None => {
            hand_over(node, conn, held).await;
            if msg_type == "ping" {
                // The cheapest built-in stays inline; everything else may reach a plugin or
                // the backplane, whose futures are large (see `serve`).
                conn.outbox
                    .push(protocol::pong(envelope.correlation_id.as_deref()));
            } else {
                Box::pin(dispatch(node, conn, &envelope)).await;
            }
        }
    }
    Step::Continue
}

/// What a plugin gets of an envelope.
fn plugin_message(envelope: &Envelope<'_>) -> plugin_bindings::Message {
    plugin_bindings::Message {
        msg_type: envelope.msg_type.to_string(),
        channel: envelope.channel.as_deref().map(str::to_owned),
        payload_json: envelope
            .payload
            .map_or_else(|| "null".to_owned(), |raw| raw.get().to_owned()),
        correlation_id: envelope.correlation_id.as_deref().map(str::to_owned),
        received_at_ms: crate::clock::unix_millis(),
    }
}

/// Hands the held messages to their plugin and queues one reply per message, in order.
async fn hand_over(node: &Node, conn: &Arc<ConnHandle>, held: &mut Held) {
    let Some(plugin) = held.plugin.take() else {
        return;
    };
    // Taken, not cleared: an idle connection keeps no buffer.
    let messages = std::mem::take(&mut held.messages);
    held.bytes = 0;
    // Boxed: a plugin call's future is large (see `serve`).
    Box::pin(async {
        let routed = node.plugins.to_plugin(conn, &plugin, &messages).await;
        let expose_panics = conn.tenant.plugin_limits.expose_panics;
        for (message, routed) in messages.iter().zip(routed) {
            let correlation_id = message.correlation_id.as_deref();
            if let Some(frame) = routed.reply(correlation_id, expose_panics) {
                conn.outbox.push(frame);
            }
        }
    })
    .await;
}

/// A raw-frame tenant's message: to the frame plugin, whose answer frames are queued in order.
async fn raw_frame(node: &Node, conn: &Arc<ConnHandle>, frame: RawFrame) -> Step {
    match node.plugins.on_frame(conn, frame).await {
        Ok(frames) => {
            for frame in frames {
                conn.outbox.push(frame);
            }
            Step::Continue
        }
        Err(reason) => Step::Close(reason),
    }
}

async fn dispatch(node: &Node, conn: &Arc<ConnHandle>, envelope: &Envelope<'_>) {
    let correlation_id = envelope.correlation_id.as_deref();
    let result = match envelope.msg_type.as_ref() {
        "room:join" => match (envelope.channel.as_deref(), envelope.recovery_since()) {
            (None, _) => Err((
                ErrorCode::BadRequest,
                "`room:join` needs a `channel`".to_owned(),
            )),
            (_, Err(error)) => Err((ErrorCode::BadRequest, error.to_string())),
            (Some(channel), Ok(since)) => match node.plugins.authorize_join(conn, channel).await {
                Err(refused) => Err((ErrorCode::Forbidden, refused.to_string())),
                Ok(()) => node
                    .rooms
                    .join(conn, channel, since, correlation_id)
                    .await
                    .map_err(|error| (error.code, error.message)),
            },
        },
        "room:leave" => match envelope.channel.as_deref() {
            None => Err((
                ErrorCode::BadRequest,
                "`room:leave` needs a `channel`".to_owned(),
            )),
            Some(channel) => node
                .rooms
                .leave(conn, channel, correlation_id)
                .await
                .map_err(|error| (error.code, error.message)),
        },
        // No plugin declared the type (`handle_message` holds the others for theirs).
        msg_type => Err((
            ErrorCode::UnknownType,
            format!("no handler for type `{msg_type}`"),
        )),
    };
    if let Err((code, message)) = result {
        conn.outbox
            .push(protocol::error(correlation_id, code, &message));
    }
}

#[cfg(test)]
mod tests;
