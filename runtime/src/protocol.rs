//! The wire protocol (docs/protocol.md): the client envelope, its validation, the frames the
//! server sends, error codes and close codes; `api` holds the HTTP API's bodies. The only
//! module that knows the JSON shape of the wire: every other module calls a typed function here.

use std::borrow::Cow;
use std::fmt::Write as _;

use bytes::Bytes;
use serde::Deserialize;
use serde::Serialize;
use serde_json::error::Category;
use serde_json::value::RawValue;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

pub mod api;

/// The subprotocol the server selects when a client offers it.
pub const SUBPROTOCOL: &str = "switchboard.v1";
/// Prefix of a `Sec-WebSocket-Protocol` entry that carries a token.
pub const BEARER_SUBPROTOCOL_PREFIX: &str = "bearer.";

const MAX_TYPE_BYTES: usize = 128;
const MAX_CHANNEL_BYTES: usize = 256;
const MAX_CORRELATION_ID_BYTES: usize = 128;

/// A parsed client envelope, borrowing from the frame where it can.
#[derive(Debug)]
pub struct Envelope<'a> {
    /// Routes the message.
    pub msg_type: Cow<'a, str>,
    /// The room it concerns.
    pub channel: Option<Cow<'a, str>>,
    /// The body, as raw JSON text; `None` when absent or `null`.
    pub payload: Option<&'a RawValue>,
    /// Ties a reply to the request.
    pub correlation_id: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct WireEnvelope<'a> {
    #[serde(rename = "type", borrow)]
    msg_type: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    channel: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    payload: Option<&'a RawValue>,
    #[serde(rename = "correlationId", borrow, default)]
    correlation_id: Option<Cow<'a, str>>,
}

/// Why an envelope was refused; the connection closes with 1008.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvelopeError {
    /// The text is not a JSON object.
    #[error("not a JSON object")]
    NotAnObject,
    /// The JSON did not parse or a field had the wrong JSON type.
    #[error("{0}")]
    Malformed(String),
    /// `type` is missing.
    #[error("missing `type`")]
    MissingType,
    /// A field's length is outside its range.
    #[error("`{field}` must be 1..{max} bytes")]
    Length {
        /// The field name as on the wire.
        field: &'static str,
        /// The upper bound in bytes.
        max: usize,
    },
}

impl<'a> Envelope<'a> {
    /// Parses and validates one text frame.
    pub fn parse(text: &'a str) -> Result<Self, EnvelopeError> {
        // serde would also accept a JSON array for a struct; the protocol wants an object.
        if !text.trim_start().starts_with('{') {
            return Err(EnvelopeError::NotAnObject);
        }
        let wire: WireEnvelope<'a> = serde_json::from_str(text).map_err(|error| {
            let message = error.to_string();
            // Drop serde's position suffix: the client knows its own frame.
            let message = match message.find(" at line ") {
                Some(index) => message[..index].to_owned(),
                None => message,
            };
            EnvelopeError::Malformed(message)
        })?;
        let msg_type = wire.msg_type.ok_or(EnvelopeError::MissingType)?;
        check_length("type", &msg_type, MAX_TYPE_BYTES)?;
        if let Some(channel) = &wire.channel {
            check_length("channel", channel, MAX_CHANNEL_BYTES)?;
        }
        if let Some(correlation_id) = &wire.correlation_id {
            check_length("correlationId", correlation_id, MAX_CORRELATION_ID_BYTES)?;
        }
        Ok(Envelope {
            msg_type,
            channel: wire.channel,
            payload: wire.payload.filter(|raw| raw.get() != "null"),
            correlation_id: wire.correlation_id,
        })
    }
}

/// Why the `since` of a `room:join` payload was refused (a `bad_request` reply).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SinceError {
    /// The payload nests past what the parser reads.
    #[error("the `room:join` payload nests too deeply")]
    TooDeep,
    /// `since` is present but not a non-negative integer.
    #[error("`since` must be a non-negative integer")]
    NotASeq,
}

impl Envelope<'_> {
    /// `payload.since` of a `room:join`: absent, or a non-negative integer. A payload that is
    /// not an object carries no `since`.
    pub fn recovery_since(&self) -> Result<Option<u64>, SinceError> {
        let Some(payload) = self.payload else {
            return Ok(None);
        };
        // Only the top level is read: `since` itself stays raw, however deep it nests.
        let fields = match serde_json::from_str::<std::collections::HashMap<Cow<'_, str>, &RawValue>>(
            payload.get(),
        ) {
            Ok(fields) => fields,
            Err(error) if error.classify() == Category::Data => return Ok(None),
            // The envelope parser checked the syntax: what fails here is the nesting limit.
            Err(_) => return Err(SinceError::TooDeep),
        };
        match fields.get("since") {
            None => Ok(None),
            Some(raw) if raw.get() == "null" => Ok(None),
            Some(raw) => serde_json::from_str::<u64>(raw.get())
                .map(Some)
                .map_err(|_| SinceError::NotASeq),
        }
    }
}

/// Why a payload given as JSON text (a plugin's reply, `send` or `broadcast`) was refused: the
/// parser's own description.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct NotJson(String);

/// Checks that `text` is one JSON value, as a frame's `payload` must be.
pub fn validate_payload(text: &str) -> Result<(), NotJson> {
    serde_json::from_str::<&RawValue>(text)
        .map(|_| ())
        .map_err(|error| NotJson(error.to_string()))
}

fn check_length(field: &'static str, value: &str, max: usize) -> Result<(), EnvelopeError> {
    if value.is_empty() || value.len() > max {
        return Err(EnvelopeError::Length { field, max });
    }
    Ok(())
}

/// Checks a channel name given outside an envelope (the publish API).
pub fn check_channel(channel: &str) -> Result<(), EnvelopeError> {
    check_length("channel", channel, MAX_CHANNEL_BYTES)
}

/// Checks a message type given outside an envelope (the publish API).
pub fn check_type(msg_type: &str) -> Result<(), EnvelopeError> {
    check_length("type", msg_type, MAX_TYPE_BYTES)
}

/// An encoded frame, cheap to clone: one serialisation shared by every recipient. Envelope
/// frames are text; a raw-frame tenant's plugin may also send binary frames.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame(Repr);

#[derive(Debug, Clone, PartialEq, Eq)]
enum Repr {
    Text(Utf8Bytes),
    Binary(Bytes),
}

/// Starts a frame's wire text (the backplane's form of it) when the frame is binary or its
/// own text starts with this character; no envelope frame does (they start with `{`).
const WIRE_ESCAPE: char = '\u{1}';

impl Frame {
    fn from_string(text: String) -> Self {
        Frame(Repr::Text(Utf8Bytes::from(text)))
    }

    /// A frame encoded earlier by one of these encoders, on this node or another one (the
    /// backplane carries frames as text).
    pub fn encoded(text: String) -> Self {
        Frame::from_string(text)
    }

    /// A raw text frame, as a raw-frame tenant's plugin sends it.
    pub fn raw_text(text: String) -> Self {
        Frame::from_string(text)
    }

    /// A raw binary frame, as a raw-frame tenant's plugin sends it.
    pub fn binary(data: impl Into<Bytes>) -> Self {
        Frame(Repr::Binary(data.into()))
    }

    /// Encoded length in bytes.
    pub fn len(&self) -> usize {
        match &self.0 {
            Repr::Text(text) => text.len(),
            Repr::Binary(data) => data.len(),
        }
    }

    /// True for an empty frame (never produced by the encoders here).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// True for a binary frame.
    pub fn is_binary(&self) -> bool {
        matches!(self.0, Repr::Binary(_))
    }

    /// The text of a text frame (the JSON of an envelope frame); empty for a binary frame.
    pub fn as_str(&self) -> &str {
        match &self.0 {
            Repr::Text(text) => text.as_str(),
            Repr::Binary(_) => "",
        }
    }

    /// The frame as the backplane carries it between nodes: a text frame as itself (escaped
    /// when it starts with the escape character), a binary frame as base64 after the escape.
    pub fn wire_text(&self) -> Cow<'_, str> {
        use base64::Engine;
        match &self.0 {
            Repr::Text(text) if !text.as_str().starts_with(WIRE_ESCAPE) => {
                Cow::Borrowed(text.as_str())
            }
            Repr::Text(text) => Cow::Owned(format!("{WIRE_ESCAPE}t{}", text.as_str())),
            Repr::Binary(data) => Cow::Owned(format!(
                "{WIRE_ESCAPE}b{}",
                base64::engine::general_purpose::STANDARD.encode(data)
            )),
        }
    }

    /// A frame from its wire text ([`Frame::wire_text`], or an envelope frame of an older
    /// node); `None` when an escaped binary frame's base64 does not decode.
    pub fn from_wire(text: &str) -> Option<Frame> {
        use base64::Engine;
        let Some(escaped) = text.strip_prefix(WIRE_ESCAPE) else {
            return Some(Frame::encoded(text.to_owned()));
        };
        if let Some(data) = escaped.strip_prefix('b') {
            return base64::engine::general_purpose::STANDARD
                .decode(data)
                .ok()
                .map(Frame::binary);
        }
        escaped
            .strip_prefix('t')
            .map(|raw| Frame::raw_text(raw.to_owned()))
    }

    /// The WebSocket message to put on the socket.
    pub fn into_message(self) -> Message {
        match self.0 {
            Repr::Text(text) => Message::Text(text),
            Repr::Binary(data) => Message::Binary(data),
        }
    }
}

/// Error codes of `error` replies (docs/protocol.md, "Replies and errors").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// No built-in and no plugin handles the type.
    UnknownType,
    /// The request is malformed for its type.
    BadRequest,
    /// A policy refused it.
    Forbidden,
    /// Leaving a room one is not in.
    NotMember,
    /// The plugin trapped.
    HandlerFailed,
    /// The plugin ran past its CPU budget.
    HandlerTimeout,
    /// No capacity to handle it now.
    Overloaded,
}

impl ErrorCode {
    /// The code as on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::UnknownType => "unknown_type",
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::NotMember => "not_member",
            ErrorCode::HandlerFailed => "handler_failed",
            ErrorCode::HandlerTimeout => "handler_timeout",
            ErrorCode::Overloaded => "overloaded",
        }
    }
}

/// Why the server closes a connection; the one place that maps a reason to a close code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CloseReason {
    /// 1000.
    Normal,
    /// 1001: graceful drain.
    ShuttingDown,
    /// 1002: a WebSocket protocol violation (bad framing, unmasked frames).
    ProtocolError(String),
    /// 1003: a binary frame.
    BinaryFrame,
    /// 1007: a text frame that is not UTF-8.
    InvalidUtf8,
    /// 1008: an envelope that breaks the protocol; the detail follows the reason prefix.
    InvalidEnvelope(String),
    /// 1008: the token bucket ran dry.
    RateLimited,
    /// 1008: the operator deleted the connection's tenant.
    TenantRemoved,
    /// 1009: a message over the size limit.
    TooBig,
    /// 1011: an internal error.
    Internal,
    /// 1011: a raw-frame tenant's plugin could not take a message (no plugin, a trap, past
    /// its CPU budget); the detail follows the reason prefix.
    HandlerFailed(String),
    /// 1013: the outbound queue passed its bound.
    SlowConsumer,
    /// A close requested by the host API with its own code and reason.
    Custom(u16, String),
}

impl CloseReason {
    /// The close code.
    pub fn code(&self) -> u16 {
        match self {
            CloseReason::Normal => 1000,
            CloseReason::ShuttingDown => 1001,
            CloseReason::ProtocolError(_) => 1002,
            CloseReason::BinaryFrame => 1003,
            CloseReason::InvalidUtf8 => 1007,
            CloseReason::InvalidEnvelope(_)
            | CloseReason::RateLimited
            | CloseReason::TenantRemoved => 1008,
            CloseReason::TooBig => 1009,
            CloseReason::Internal | CloseReason::HandlerFailed(_) => 1011,
            CloseReason::SlowConsumer => 1013,
            CloseReason::Custom(code, _) => *code,
        }
    }

    /// The close reason text (at most 123 bytes, as a close frame allows).
    pub fn reason(&self) -> String {
        let text = match self {
            CloseReason::Normal => "normal closure".to_owned(),
            CloseReason::ShuttingDown => "server shutting down".to_owned(),
            CloseReason::ProtocolError(detail) => format!("protocol error: {detail}"),
            CloseReason::BinaryFrame => "binary frames are not supported in switchboard.v1".into(),
            CloseReason::InvalidUtf8 => "text frame is not valid UTF-8".to_owned(),
            CloseReason::InvalidEnvelope(detail) => format!("invalid envelope: {detail}"),
            CloseReason::RateLimited => "rate limit exceeded".to_owned(),
            CloseReason::TenantRemoved => "tenant removed".to_owned(),
            CloseReason::TooBig => "message too big".to_owned(),
            CloseReason::Internal => "internal error".to_owned(),
            CloseReason::HandlerFailed(detail) => format!("handler failed: {detail}"),
            CloseReason::SlowConsumer => "slow consumer".to_owned(),
            CloseReason::Custom(_, reason) => reason.clone(),
        };
        truncate_to_boundary(text, 123)
    }
}

fn truncate_to_boundary(mut text: String, max: usize) -> String {
    if text.len() > max {
        let mut end = max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    text
}

// ---- encoders: each builds one frame, serialised once ----

fn json_string(out: &mut String, value: &str) {
    // Most values (ids, codes) need no escape: copied as they are, with the same bytes
    // serde_json would write, and without its intermediate string.
    if value.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
        out.push('"');
        out.push_str(value);
        out.push('"');
        return;
    }
    // Serialising a &str into a String cannot fail.
    let quoted = serde_json::to_string(value).unwrap_or_else(|_| "\"\"".to_owned());
    out.push_str(&quoted);
}

/// The `welcome` frame sent right after the upgrade.
pub fn welcome(
    connection_id: &str,
    user_id: &str,
    tenant: &str,
    heartbeat_sec: f64,
    heartbeat_timeout_sec: f64,
) -> Frame {
    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct Payload<'a> {
        connection_id: &'a str,
        user_id: &'a str,
        tenant: &'a str,
        heartbeat_sec: f64,
        heartbeat_timeout_sec: f64,
    }
    let payload = Payload {
        connection_id,
        user_id,
        tenant,
        heartbeat_sec,
        heartbeat_timeout_sec,
    };
    let payload = serde_json::to_string(&payload).unwrap_or_else(|_| "{}".to_owned());
    Frame::from_string(format!(r#"{{"type":"welcome","payload":{payload}}}"#))
}

/// An `ack` reply; `payload` is raw JSON.
pub fn ack(correlation_id: &str, payload: Option<&str>) -> Frame {
    // Room for the payload too: growing the string would copy it once more.
    let payload_len = payload.map_or(0, str::len);
    let mut out = String::with_capacity(48 + correlation_id.len() + payload_len);
    out.push_str(r#"{"type":"ack","correlationId":"#);
    json_string(&mut out, correlation_id);
    if let Some(payload) = payload {
        out.push_str(r#","payload":"#);
        out.push_str(payload);
    }
    out.push('}');
    Frame::from_string(out)
}

/// An `error` reply, correlated when the request was.
pub fn error(correlation_id: Option<&str>, code: ErrorCode, message: &str) -> Frame {
    error_with_code(correlation_id, code.as_str(), message)
}

/// An `error` reply with a code of a plugin's choosing.
pub fn error_with_code(correlation_id: Option<&str>, code: &str, message: &str) -> Frame {
    let mut out = String::with_capacity(80 + message.len());
    out.push_str(r#"{"type":"error","#);
    if let Some(correlation_id) = correlation_id {
        out.push_str(r#""correlationId":"#);
        json_string(&mut out, correlation_id);
        out.push(',');
    }
    out.push_str(r#""payload":{"code":"#);
    json_string(&mut out, code);
    out.push_str(r#","message":"#);
    json_string(&mut out, message);
    out.push_str("}}");
    Frame::from_string(out)
}

/// The `pong` answer to an application-level `ping`.
pub fn pong(correlation_id: Option<&str>) -> Frame {
    let mut out = String::from(r#"{"type":"pong""#);
    if let Some(correlation_id) = correlation_id {
        out.push_str(r#","correlationId":"#);
        json_string(&mut out, correlation_id);
    }
    out.push('}');
    Frame::from_string(out)
}

/// A sequenced channel message; `payload` is raw JSON (`None` is sent as `null`).
pub fn channel_message(msg_type: &str, channel: &str, payload: Option<&str>, seq: u64) -> Frame {
    let mut out = channel_message_head(msg_type, channel, payload);
    // Writing to a String cannot fail.
    let _ = write!(out, "{seq}}}");
    Frame::from_string(out)
}

/// A channel message up to its `seq` value (it always ends with `,"seq":`): what a cluster-wide
/// sequencer stores and passes on as opaque text next to the `seq` it assigned, and
/// `channel_message_from_head` completes.
pub fn channel_message_head(msg_type: &str, channel: &str, payload: Option<&str>) -> String {
    let payload = payload.unwrap_or("null");
    let mut out = String::with_capacity(48 + msg_type.len() + channel.len() + payload.len());
    out.push_str(r#"{"type":"#);
    json_string(&mut out, msg_type);
    out.push_str(r#","channel":"#);
    json_string(&mut out, channel);
    out.push_str(r#","payload":"#);
    out.push_str(payload);
    out.push_str(SEQ_KEY);
    out
}

/// How every channel message head ends.
const SEQ_KEY: &str = r#","seq":"#;

/// The channel message of a head from `channel_message_head` and its `seq`, in one allocation.
///
/// A complete frame (what builds before the head and the `seq` were kept apart stored in
/// history, and published) is taken as it is: a head ends with `"seq":`, a frame with `}`.
pub fn channel_message_from_head(head: &str, seq: u64) -> Frame {
    if !head.ends_with(SEQ_KEY) {
        return Frame::from_string(head.to_owned());
    }
    // `u64::MAX` has 20 digits, then the closing brace.
    let mut out = String::with_capacity(head.len() + 21);
    out.push_str(head);
    // Writing to a String cannot fail.
    let _ = write!(out, "{seq}}}");
    Frame::from_string(out)
}

/// An unsequenced message to one connection (`send` from a plugin); `payload` is raw JSON.
pub fn message(msg_type: &str, channel: Option<&str>, payload: &str) -> Frame {
    let mut out = String::with_capacity(40 + msg_type.len() + payload.len());
    out.push_str(r#"{"type":"#);
    json_string(&mut out, msg_type);
    if let Some(channel) = channel {
        out.push_str(r#","channel":"#);
        json_string(&mut out, channel);
    }
    out.push_str(r#","payload":"#);
    out.push_str(payload);
    out.push('}');
    Frame::from_string(out)
}

/// Which way a presence event goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PresenceChange {
    /// `presence:join`.
    Join,
    /// `presence:leave`.
    Leave,
}

/// A `presence:join` or `presence:leave` event.
pub fn presence(
    change: PresenceChange,
    channel: &str,
    user_id: &str,
    connection_id: &str,
) -> Frame {
    let msg_type = match change {
        PresenceChange::Join => "presence:join",
        PresenceChange::Leave => "presence:leave",
    };
    let mut out = String::with_capacity(96 + channel.len() + user_id.len());
    out.push_str(r#"{"type":""#);
    out.push_str(msg_type);
    out.push_str(r#"","channel":"#);
    json_string(&mut out, channel);
    out.push_str(r#","payload":{"userId":"#);
    json_string(&mut out, user_id);
    out.push_str(r#","connectionId":"#);
    json_string(&mut out, connection_id);
    out.push_str("}}");
    Frame::from_string(out)
}

/// One member of a room as listed in a join ack.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MemberInfo {
    /// The member's user id.
    pub user_id: String,
    /// The member's connection id.
    pub connection_id: String,
}

/// The payload of a `room:join` ack.
#[derive(Debug, Serialize)]
pub struct JoinAck<'a> {
    /// The room joined.
    pub channel: &'a str,
    /// Present unless presence is off for the channel.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub members: Option<&'a [MemberInfo]>,
    /// Present when the join asked for recovery.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recovered: Option<bool>,
}

/// The payload of a `room:leave` ack.
pub fn leave_ack_payload(channel: &str) -> String {
    let mut out = String::from(r#"{"channel":"#);
    json_string(&mut out, channel);
    out.push('}');
    out
}

impl JoinAck<'_> {
    /// The ack payload as JSON text.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|_| "{}".to_owned())
    }
}

/// The JSON body of every HTTP error response: `{"error", "message"}`.
pub fn http_error_body(error: &str, message: &str) -> String {
    let mut out = String::from(r#"{"error":"#);
    json_string(&mut out, error);
    out.push_str(r#","message":"#);
    json_string(&mut out, message);
    out.push('}');
    out
}

#[cfg(test)]
mod tests;
