//! What a client reports: its `State`, the `Event`s of its event stream, and the values they
//! carry (`Welcome`, `Member`, `JoinInfo`, `PresenceChange`).

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Where the client is in its life.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    /// An attempt to connect is under way.
    Connecting,
    /// Connected: the `welcome` has arrived.
    Open,
    /// Waiting `delay` before attempt number `attempt` (from 1) after a lost connection or a
    /// failed attempt.
    Reconnecting {
        /// The attempt about to be made, from 1.
        attempt: u32,
        /// How long the client waits before it.
        delay: Duration,
    },
    /// Closed for good; no further attempt is made.
    Closed,
}

/// The `welcome` payload: who and where this connection is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Welcome {
    /// The connection's id (new on every reconnect).
    pub connection_id: String,
    /// The token's `sub`.
    pub user_id: String,
    /// The tenant the connection belongs to.
    pub tenant: String,
    /// The server's ping interval, in seconds.
    pub heartbeat_sec: f64,
    /// How long the server waits for a sign of life after a ping, in seconds.
    pub heartbeat_timeout_sec: f64,
}

/// One connection in a room.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Member {
    /// The member's user id.
    pub user_id: String,
    /// The member's connection id.
    pub connection_id: String,
}

/// The answer to a join.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinInfo {
    /// The room's members, the joiner included; empty when the room has presence turned off.
    pub members: Vec<Member>,
    /// Whether the server replayed what was missed since the `since` the join carried.
    pub recovered: bool,
}

/// What changed in a room's presence list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PresenceChange {
    /// A connection joined.
    Join(Member),
    /// A connection left (or dropped).
    Leave(Member),
    /// The whole list was replaced by a join ack's `members`.
    Sync,
}

/// Something that happened, as seen by [`events`](crate::Client::events) receivers.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// The client's state changed.
    State(State),
    /// A connection opened and the server greeted it.
    Welcome(Welcome),
    /// A server envelope that is not a reply: channel messages (with `seq`; a `seq` already
    /// seen on a joined room is dropped, so each arrives once), `presence:*`, custom types.
    Message(Value),
    /// A joined room's presence list changed; `members` is the list after the change.
    Presence {
        /// The room.
        channel: String,
        /// What changed.
        change: PresenceChange,
        /// The room's members now.
        members: Vec<Member>,
    },
    /// After a reconnect, a room was joined again. With `recovered` the messages missed in
    /// between follow (in order, before newer ones); without, the application must
    /// resynchronise the room on its own.
    Rejoined {
        /// The room.
        channel: String,
        /// Whether the missed messages are replayed.
        recovered: bool,
    },
    /// After a reconnect, joining a room again was refused; the client no longer counts it as
    /// joined.
    RejoinFailed {
        /// The room.
        channel: String,
        /// The error code.
        code: String,
        /// The server's explanation.
        message: String,
    },
    /// An `error` envelope without a `correlationId` (the answer to a `send`).
    Error {
        /// The error code.
        code: String,
        /// The server's explanation.
        message: String,
    },
    /// The client stopped for good. `code` is 1000 after `close` or the server's normal close,
    /// 1008 when a reconnect was refused (401, 403, 404), otherwise the last close code seen
    /// (1006 when the connection ended without one) when reconnecting was off or gave up.
    Closed {
        /// A WebSocket close code.
        code: u16,
        /// Why, in words.
        reason: String,
    },
}
