//! One connection: the upgrade, the welcome, then one task that reads and writes. Each turn
//! takes every message the socket already holds (a read batch), answers each into a reply
//! buffer, adds the frames other connections queued for it (broadcasts), feeds them all and
//! flushes once. Replies are written into one per-connection `BytesMut` and handed to
//! tungstenite as slices of it, which it copies into its write buffer and drops, so the buffer
//! is reused: no allocation per reply.

use std::borrow::Cow;
use std::collections::HashSet;
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::{BufMut, BytesMut};
use futures_util::{FutureExt, SinkExt, StreamExt};
use serde::Deserialize;
use serde_json::value::RawValue;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

use crate::Shared;
use crate::handshake;
use crate::rooms::{Member, json_string};

/// Messages one read batch takes at most before it writes (a bound for a fast sender).
const MAX_BATCH: usize = 256;

/// How long the closing handshake may take once the connection ends.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(borrow, default)]
    channel: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    payload: Option<&'a RawValue>,
    #[serde(rename = "correlationId", borrow, default)]
    correlation_id: Option<Cow<'a, str>>,
}

/// Why the read loop closes the connection.
struct Close(CloseCode, &'static str);

/// One connection's state in the read loop.
struct Connection<'a> {
    shared: &'a Shared,
    id: u64,
    me: Member,
    joined: HashSet<String>,
    /// Frames queued to this connection by others (broadcasts).
    inbox: mpsc::UnboundedReceiver<Message>,
    /// The frames of the current batch, in order.
    replies: Vec<Message>,
    /// Where replies are written; each reply is split off as its own `Bytes`.
    scratch: BytesMut,
}

/// Serves one accepted TCP connection until it closes.
#[allow(
    clippy::result_large_err,
    reason = "tungstenite's handshake callback fixes the error type"
)]
pub async fn run(stream: TcpStream, shared: Arc<Shared>) {
    let _ = stream.set_nodelay(true);
    let mut user = None;
    // tungstenite's default read buffer is 128 KiB per connection, all of it touched; 4 KiB
    // matches Switchboard's read buffer and keeps idle connections comparable.
    let config = WebSocketConfig::default().read_buffer_size(4 * 1024);
    let accepted = tokio_tungstenite::accept_hdr_async_with_config(
        stream,
        |request: &_, response| handshake::check(&shared.verifier, request, response, &mut user),
        Some(config),
    )
    .await;
    let (Ok(mut socket), Some(user)) = (accepted, user) else {
        return;
    };
    let id = shared.next_connection.fetch_add(1, Ordering::Relaxed);
    let (outbox, inbox) = mpsc::unbounded_channel();
    let mut connection = Connection {
        shared: &shared,
        id,
        me: Member {
            user_id: user.into(),
            connection_id: format!("bare-{id}").into(),
            outbox,
        },
        joined: HashSet::new(),
        inbox,
        replies: Vec::new(),
        scratch: BytesMut::new(),
    };
    let welcome = format!(
        r#"{{"type":"welcome","payload":{{"connectionId":{},"userId":{},"tenant":"default","heartbeatSec":30,"heartbeatTimeoutSec":10}}}}"#,
        json_string(&connection.me.connection_id),
        json_string(&connection.me.user_id)
    );
    let close = if socket.send(Message::text(welcome)).await.is_ok() {
        connection.serve(&mut socket).await
    } else {
        None
    };
    for channel in std::mem::take(&mut connection.joined) {
        shared.rooms.leave(&channel, id);
    }
    let ending = async {
        if let Some(Close(code, reason)) = close {
            let frame = CloseFrame {
                code,
                reason: reason.into(),
            };
            let _ = socket.send(Message::Close(Some(frame))).await;
        }
        let _ = socket.close(None).await;
    };
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, ending).await;
}

fn in_range(value: Option<&str>, max: usize) -> bool {
    value.is_none_or(|value| (1..=max).contains(&value.len()))
}

/// How a batch ended the connection: `Some(close)` to close with a code, `None` when the peer
/// closed or the socket failed.
type Ending = Option<Close>;

impl Connection<'_> {
    /// The read and write loop; returns how the connection ends.
    async fn serve(&mut self, socket: &mut WebSocketStream<TcpStream>) -> Ending {
        loop {
            let ending = tokio::select! {
                biased;
                first = socket.next() => self.read_batch(socket, first),
                Some(frame) = self.inbox.recv() => {
                    self.replies.push(frame);
                    Ok(())
                }
            };
            // Frames others queued meanwhile go out with this batch, after its replies.
            while let Ok(frame) = self.inbox.try_recv() {
                self.replies.push(frame);
            }
            for frame in self.replies.drain(..) {
                if socket.feed(frame).await.is_err() {
                    return None;
                }
            }
            if socket.flush().await.is_err() {
                return None;
            }
            if let Err(ending) = ending {
                return ending;
            }
        }
    }

    /// Answers `first` and every message the socket already holds (up to `MAX_BATCH`) into
    /// `replies`; `Err` ends the connection once the replies before it are written.
    fn read_batch(
        &mut self,
        socket: &mut WebSocketStream<TcpStream>,
        first: Option<Result<Message, tokio_tungstenite::tungstenite::Error>>,
    ) -> Result<(), Ending> {
        let mut next = Some(first);
        let mut taken = 0;
        while let Some(message) = next.take() {
            match message {
                Some(Ok(Message::Text(text))) => self.handle(text.as_str()).map_err(Some)?,
                Some(Ok(Message::Binary(_))) => {
                    return Err(Some(Close(
                        CloseCode::Unsupported,
                        "binary frames are not supported",
                    )));
                }
                Some(Ok(Message::Close(_)) | Err(_)) | None => return Err(None),
                Some(Ok(_)) => {}
            }
            taken += 1;
            if taken < MAX_BATCH {
                next = socket.next().now_or_never();
            }
        }
        Ok(())
    }

    /// Queues the text in `scratch` as the batch's next frame.
    fn push_scratch(&mut self) {
        let bytes = self.scratch.split().freeze();
        // Only `str` and JSON text went in; the check is a pass over ~100 bytes.
        if let Ok(text) = Utf8Bytes::try_from(bytes) {
            self.replies.push(Message::Text(text));
        }
    }

    /// Appends `value` as a JSON string (escaped and quoted) to `scratch`.
    fn push_json_string(&mut self, value: &str) {
        let _ = serde_json::to_writer((&mut self.scratch).writer(), value);
    }

    fn send(&mut self, frame: &str) {
        self.scratch.reserve(frame.len());
        self.scratch.extend_from_slice(frame.as_bytes());
        self.push_scratch();
    }

    fn ack(&mut self, correlation_id: Option<&str>, payload: Option<&str>) {
        let Some(correlation_id) = correlation_id else {
            return;
        };
        self.scratch
            .reserve(48 + correlation_id.len() + payload.map_or(0, str::len));
        self.scratch
            .extend_from_slice(br#"{"type":"ack","correlationId":"#);
        self.push_json_string(correlation_id);
        if let Some(payload) = payload {
            self.scratch.extend_from_slice(br#","payload":"#);
            self.scratch.extend_from_slice(payload.as_bytes());
        }
        self.scratch.extend_from_slice(b"}");
        self.push_scratch();
    }

    fn pong(&mut self, correlation_id: Option<&str>) {
        self.scratch
            .reserve(48 + correlation_id.map_or(0, str::len));
        self.scratch.extend_from_slice(br#"{"type":"pong""#);
        if let Some(correlation_id) = correlation_id {
            self.scratch.extend_from_slice(br#","correlationId":"#);
            self.push_json_string(correlation_id);
        }
        self.scratch.extend_from_slice(b"}");
        self.push_scratch();
    }

    fn error(&mut self, correlation_id: Option<&str>, code: &str, message: &str) {
        let correlation = correlation_id.map_or(String::new(), |id| {
            format!(r#""correlationId":{},"#, json_string(id))
        });
        let mut frame = String::new();
        let _ = write!(
            frame,
            r#"{{"type":"error",{correlation}"payload":{{"code":"{code}","message":{}}}}}"#,
            json_string(message)
        );
        self.send(&frame);
    }

    fn handle(&mut self, text: &str) -> Result<(), Close> {
        let Ok(envelope) = serde_json::from_str::<Envelope<'_>>(text) else {
            return Err(Close(CloseCode::Policy, "invalid envelope"));
        };
        let channel = envelope.channel.as_deref();
        let correlation_id = envelope.correlation_id.as_deref();
        if !in_range(Some(&envelope.kind), 128)
            || !in_range(channel, 256)
            || !in_range(correlation_id, 128)
        {
            return Err(Close(CloseCode::Policy, "invalid envelope"));
        }
        match envelope.kind.as_ref() {
            "echo" => self.ack(
                correlation_id,
                Some(envelope.payload.map_or("null", RawValue::get)),
            ),
            "ping" => self.pong(correlation_id),
            "broadcast" => match channel {
                None => self.error(
                    correlation_id,
                    "bad_request",
                    "`broadcast` needs a `channel`",
                ),
                Some(channel) => {
                    let payload = envelope.payload.map_or("null", RawValue::get);
                    let seq = self.shared.rooms.broadcast(channel, payload);
                    // A member's own copy comes before its ack, as it would through a queue.
                    while let Ok(frame) = self.inbox.try_recv() {
                        self.replies.push(frame);
                    }
                    self.ack(correlation_id, Some(&format!(r#"{{"seq":{seq}}}"#)));
                }
            },
            "room:join" => match channel {
                None => self.error(
                    correlation_id,
                    "bad_request",
                    "`room:join` needs a `channel`",
                ),
                Some(channel) => {
                    let list = self.shared.presence_on(channel);
                    let members = self
                        .shared
                        .rooms
                        .join(channel, self.id, self.me.clone(), list);
                    self.joined.insert(channel.to_owned());
                    let members = members.map_or(String::new(), |m| format!(r#","members":{m}"#));
                    let payload = format!(r#"{{"channel":{}{members}}}"#, json_string(channel));
                    self.ack(correlation_id, Some(&payload));
                }
            },
            "room:leave" => match channel {
                None => self.error(
                    correlation_id,
                    "bad_request",
                    "`room:leave` needs a `channel`",
                ),
                Some(channel) => {
                    if self.shared.rooms.leave(channel, self.id) {
                        self.joined.remove(channel);
                        let payload = format!(r#"{{"channel":{}}}"#, json_string(channel));
                        self.ack(correlation_id, Some(&payload));
                    } else {
                        self.error(
                            correlation_id,
                            "not_member",
                            &format!("not a member of `{channel}`"),
                        );
                    }
                }
            },
            other => self.error(
                correlation_id,
                "unknown_type",
                &format!("no handler for `{other}`"),
            ),
        }
        Ok(())
    }
}
