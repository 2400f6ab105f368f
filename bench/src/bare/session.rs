//! One connection: the upgrade, the welcome, a read loop that answers each envelope, and a
//! writer task that drains the outbox (every ready frame, then one flush).

use std::borrow::Cow;
use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use serde_json::value::RawValue;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};

use crate::Shared;
use crate::handshake;
use crate::rooms::{Member, json_string};

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
    let (Ok(socket), Some(user)) = (accepted, user) else {
        return;
    };
    let id = shared.next_connection.fetch_add(1, Ordering::Relaxed);
    let (sink, mut stream) = socket.split();
    let (outbox, inbox) = mpsc::unbounded_channel();
    let writer = tokio::spawn(write_loop(sink, inbox));
    let mut connection = Connection {
        shared: &shared,
        id,
        me: Member {
            user_id: user.into(),
            connection_id: format!("bare-{id}").into(),
            outbox,
        },
        joined: HashSet::new(),
    };
    connection.send(format!(
        r#"{{"type":"welcome","payload":{{"connectionId":{},"userId":{},"tenant":"default","heartbeatSec":30,"heartbeatTimeoutSec":10}}}}"#,
        json_string(&connection.me.connection_id),
        json_string(&connection.me.user_id)
    ));
    while let Some(Ok(message)) = stream.next().await {
        let outcome = match message {
            Message::Text(text) => connection.handle(text.as_str()),
            Message::Binary(_) => Err(Close(
                CloseCode::Unsupported,
                "binary frames are not supported",
            )),
            Message::Close(_) => break,
            _ => Ok(()),
        };
        if let Err(Close(code, reason)) = outcome {
            let _ = connection.me.outbox.send(Message::Close(Some(CloseFrame {
                code,
                reason: reason.into(),
            })));
            break;
        }
    }
    for channel in std::mem::take(&mut connection.joined) {
        shared.rooms.leave(&channel, id);
    }
    // The last sender goes with the connection: the writer drains, closes and ends.
    drop(connection);
    let _ = writer.await;
}

async fn write_loop(
    mut sink: futures_util::stream::SplitSink<WebSocketStream<TcpStream>, Message>,
    mut inbox: mpsc::UnboundedReceiver<Message>,
) {
    while let Some(message) = inbox.recv().await {
        if sink.feed(message).await.is_err() {
            return;
        }
        while let Ok(message) = inbox.try_recv() {
            if sink.feed(message).await.is_err() {
                return;
            }
        }
        if sink.flush().await.is_err() {
            return;
        }
    }
    let _ = sink.close().await;
}

fn in_range(value: Option<&str>, max: usize) -> bool {
    value.is_none_or(|value| (1..=max).contains(&value.len()))
}

impl Connection<'_> {
    fn send(&self, frame: String) {
        let _ = self.me.outbox.send(Message::text(frame));
    }

    fn ack(&self, correlation_id: Option<&str>, payload: Option<&str>) {
        let Some(correlation_id) = correlation_id else {
            return;
        };
        let payload = payload.map_or(String::new(), |p| format!(r#","payload":{p}"#));
        self.send(format!(
            r#"{{"type":"ack","correlationId":{}{payload}}}"#,
            json_string(correlation_id)
        ));
    }

    fn error(&self, correlation_id: Option<&str>, code: &str, message: &str) {
        let correlation = correlation_id.map_or(String::new(), |id| {
            format!(r#""correlationId":{},"#, json_string(id))
        });
        self.send(format!(
            r#"{{"type":"error",{correlation}"payload":{{"code":"{code}","message":{}}}}}"#,
            json_string(message)
        ));
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
            "ping" => {
                let correlation = correlation_id.map_or(String::new(), |id| {
                    format!(r#","correlationId":{}"#, json_string(id))
                });
                self.send(format!(r#"{{"type":"pong"{correlation}}}"#));
            }
            "broadcast" => match channel {
                None => self.error(
                    correlation_id,
                    "bad_request",
                    "`broadcast` needs a `channel`",
                ),
                Some(channel) => {
                    let payload = envelope.payload.map_or("null", RawValue::get);
                    let seq = self.shared.rooms.broadcast(channel, payload);
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
