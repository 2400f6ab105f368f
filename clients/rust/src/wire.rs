//! The wire JSON (docs/protocol.md, "Frames" and "Message types"): encoding outgoing envelopes
//! and sorting incoming ones. The only module that knows field names.

use serde_json::{Map, Value};

use crate::event::{JoinInfo, Member, Welcome};

/// An outgoing envelope, before it gets a `correlationId`.
#[derive(Debug, Clone)]
pub(crate) struct Outgoing {
    /// The `type`.
    pub(crate) kind: String,
    /// The `channel`, if any.
    pub(crate) channel: Option<String>,
    /// The `payload`; `null` leaves the field out.
    pub(crate) payload: Value,
}

impl Outgoing {
    /// An envelope of `kind` about `channel` carrying `payload`.
    pub(crate) fn new(kind: &str, channel: Option<&str>, payload: Value) -> Outgoing {
        Outgoing {
            kind: kind.to_owned(),
            channel: channel.map(str::to_owned),
            payload,
        }
    }

    /// The JSON text of the envelope with an optional `correlationId`.
    pub(crate) fn encode(&self, correlation_id: Option<&str>) -> String {
        let mut envelope = Map::new();
        envelope.insert("type".to_owned(), Value::from(self.kind.as_str()));
        if let Some(channel) = &self.channel {
            envelope.insert("channel".to_owned(), Value::from(channel.as_str()));
        }
        if !self.payload.is_null() {
            envelope.insert("payload".to_owned(), self.payload.clone());
        }
        if let Some(id) = correlation_id {
            envelope.insert("correlationId".to_owned(), Value::from(id));
        }
        Value::Object(envelope).to_string()
    }
}

/// An incoming envelope, sorted by what the client does with it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Incoming {
    /// The greeting that opens every connection.
    Welcome(Welcome),
    /// The one reply to a request of ours.
    Reply {
        /// The request's `correlationId`.
        correlation_id: String,
        /// What it says.
        outcome: Outcome,
    },
    /// A channel message: it has a `channel` and a `seq`.
    Channel {
        /// The channel.
        channel: String,
        /// Its `seq`.
        seq: u64,
        /// The whole envelope.
        envelope: Value,
    },
    /// `presence:join` or `presence:leave`.
    Presence {
        /// `true` for a join.
        joined: bool,
        /// The room.
        channel: String,
        /// Who.
        member: Member,
        /// The whole envelope.
        envelope: Value,
    },
    /// An `error` without a `correlationId`.
    Error {
        /// The error code.
        code: String,
        /// The explanation.
        message: String,
    },
    /// Anything else the server sends.
    Other(Value),
}

/// A reply's content.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Outcome {
    /// `ack` with its payload (`null` when it has none).
    Ack(Value),
    /// `error` with its code and message.
    Error {
        /// The error code.
        code: String,
        /// The explanation.
        message: String,
    },
    /// `pong`.
    Pong,
}

/// Sorts one text frame. Errors say what was wrong; they never panic on any input.
pub(crate) fn decode(text: &str) -> Result<Incoming, String> {
    let envelope: Value =
        serde_json::from_str(text).map_err(|error| format!("frame is not JSON: {error}"))?;
    let kind = envelope
        .get("type")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| "frame has no string `type`".to_owned())?;
    let correlation_id = envelope
        .get("correlationId")
        .and_then(Value::as_str)
        .map(str::to_owned);
    let channel = envelope
        .get("channel")
        .and_then(Value::as_str)
        .map(str::to_owned);
    let payload = envelope.get("payload").cloned().unwrap_or(Value::Null);
    let incoming = match (kind.as_str(), correlation_id, channel) {
        ("welcome", _, _) => Incoming::Welcome(
            serde_json::from_value(payload)
                .map_err(|error| format!("welcome payload is invalid: {error}"))?,
        ),
        ("ack", Some(correlation_id), _) => Incoming::Reply {
            correlation_id,
            outcome: Outcome::Ack(payload),
        },
        ("pong", Some(correlation_id), _) => Incoming::Reply {
            correlation_id,
            outcome: Outcome::Pong,
        },
        ("error", correlation_id, _) => {
            let (code, message) = error_fields(&payload);
            match correlation_id {
                Some(correlation_id) => Incoming::Reply {
                    correlation_id,
                    outcome: Outcome::Error { code, message },
                },
                None => Incoming::Error { code, message },
            }
        }
        ("presence:join" | "presence:leave", _, Some(channel)) => {
            match serde_json::from_value::<Member>(payload) {
                Ok(member) => Incoming::Presence {
                    joined: kind == "presence:join",
                    channel,
                    member,
                    envelope,
                },
                Err(_) => Incoming::Other(envelope),
            }
        }
        (_, _, Some(channel)) => match envelope.get("seq").and_then(Value::as_u64) {
            Some(seq) => Incoming::Channel {
                channel,
                seq,
                envelope,
            },
            None => Incoming::Other(envelope),
        },
        _ => Incoming::Other(envelope),
    };
    Ok(incoming)
}

fn error_fields(payload: &Value) -> (String, String) {
    let field = |name: &str| {
        payload
            .get(name)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    (field("code"), field("message"))
}

/// The members and `recovered` flag of a join ack's payload; missing parts read as none and
/// `false`, members that do not parse are skipped.
pub(crate) fn join_info(payload: &Value) -> JoinInfo {
    let members = payload
        .get("members")
        .and_then(Value::as_array)
        .map(|members| {
            members
                .iter()
                .filter_map(|member| serde_json::from_value(member.clone()).ok())
                .collect()
        })
        .unwrap_or_default();
    let recovered = payload
        .get("recovered")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    JoinInfo { members, recovered }
}

/// The `error` and `message` of an HTTP refusal's JSON body (docs/protocol.md, "Handshake"), or
/// the body as text when it is not that.
pub(crate) fn refusal_fields(body: Option<&[u8]>) -> (String, String) {
    let Some(body) = body else {
        return (String::new(), String::new());
    };
    match serde_json::from_slice::<Value>(body) {
        Ok(value) => {
            let field = |name: &str| {
                value
                    .get(name)
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned()
            };
            (field("error"), field("message"))
        }
        Err(_) => (String::new(), String::from_utf8_lossy(body).into_owned()),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::{Incoming, Outcome, Outgoing, decode, join_info, refusal_fields};
    use crate::event::{JoinInfo, Member};

    fn check(text: &str, expect: Result<Incoming, &str>) {
        let decoded = decode(text);
        match (&decoded, &expect) {
            (Ok(got), Ok(want)) => assert_eq!(got, want, "decoding {text}"),
            (Err(got), Err(want)) => assert!(got.contains(want), "decoding {text}: {got}"),
            _ => panic!("decoding {text}: got {decoded:?}, want {expect:?}"),
        }
    }

    fn member(user: &str, connection: &str) -> Member {
        Member {
            user_id: user.to_owned(),
            connection_id: connection.to_owned(),
        }
    }

    #[test]
    fn encodes_only_the_fields_it_has() {
        let bare = Outgoing::new("ping", None, Value::Null).encode(None);
        assert_eq!(bare, r#"{"type":"ping"}"#);
        let full =
            Outgoing::new("chat:send", Some("lobby"), json!({"text": "hi"})).encode(Some("7"));
        let parsed: Value = serde_json::from_str(&full).expect("JSON");
        assert_eq!(
            parsed,
            json!({"type": "chat:send", "channel": "lobby", "payload": {"text": "hi"}, "correlationId": "7"})
        );
    }

    #[test]
    fn sorts_replies_by_correlation_id() {
        check(
            r#"{"type":"ack","correlationId":"1","payload":{"a":1}}"#,
            Ok(Incoming::Reply {
                correlation_id: "1".into(),
                outcome: Outcome::Ack(json!({"a": 1})),
            }),
        );
        check(
            r#"{"type":"ack","correlationId":"2"}"#,
            Ok(Incoming::Reply {
                correlation_id: "2".into(),
                outcome: Outcome::Ack(Value::Null),
            }),
        );
        check(
            r#"{"type":"pong","correlationId":"3"}"#,
            Ok(Incoming::Reply {
                correlation_id: "3".into(),
                outcome: Outcome::Pong,
            }),
        );
        check(
            r#"{"type":"error","correlationId":"4","payload":{"code":"forbidden","message":"no"}}"#,
            Ok(Incoming::Reply {
                correlation_id: "4".into(),
                outcome: Outcome::Error {
                    code: "forbidden".into(),
                    message: "no".into(),
                },
            }),
        );
        check(
            r#"{"type":"error","payload":{"code":"unknown_type","message":"x"}}"#,
            Ok(Incoming::Error {
                code: "unknown_type".into(),
                message: "x".into(),
            }),
        );
    }

    #[test]
    fn sorts_welcome_channel_messages_presence_and_the_rest() {
        check(
            r#"{"type":"welcome","payload":{"connectionId":"c","userId":"u","tenant":"t","heartbeatSec":30,"heartbeatTimeoutSec":2.5}}"#,
            Ok(Incoming::Welcome(crate::event::Welcome {
                connection_id: "c".into(),
                user_id: "u".into(),
                tenant: "t".into(),
                heartbeat_sec: 30.0,
                heartbeat_timeout_sec: 2.5,
            })),
        );
        let news = json!({"type": "news", "channel": "c", "payload": 1, "seq": 9});
        check(
            &news.to_string(),
            Ok(Incoming::Channel {
                channel: "c".into(),
                seq: 9,
                envelope: news.clone(),
            }),
        );
        let join = json!({"type": "presence:join", "channel": "c", "payload": {"userId": "u", "connectionId": "k"}});
        check(
            &join.to_string(),
            Ok(Incoming::Presence {
                joined: true,
                channel: "c".into(),
                member: member("u", "k"),
                envelope: join.clone(),
            }),
        );
        // A direct send (no channel), or a channel frame without seq, is just a message.
        for other in [
            json!({"type": "dm", "payload": 1}),
            json!({"type": "x", "channel": "c"}),
            json!({"type": "presence:leave", "channel": "c", "payload": {}}),
            json!({"type": "ack", "payload": 1}),
        ] {
            check(&other.to_string(), Ok(Incoming::Other(other.clone())));
        }
    }

    #[test]
    fn bad_frames_are_errors_not_panics() {
        check("not json", Err("not JSON"));
        check("[]", Err("no string `type`"));
        check(r#"{"type":5}"#, Err("no string `type`"));
        check(r#"{"type":"welcome","payload":{}}"#, Err("welcome payload"));
    }

    #[test]
    fn reads_join_acks() {
        let payload = json!({"channel": "c", "members": [{"userId": "u", "connectionId": "k"}, 5], "recovered": true});
        assert_eq!(
            join_info(&payload),
            JoinInfo {
                members: vec![member("u", "k")],
                recovered: true
            }
        );
        assert_eq!(
            join_info(&json!({"channel": "c"})),
            JoinInfo {
                members: vec![],
                recovered: false
            }
        );
    }

    #[test]
    fn reads_refusal_bodies() {
        assert_eq!(
            refusal_fields(Some(br#"{"error":"invalid_token","message":"expired"}"#)),
            ("invalid_token".to_owned(), "expired".to_owned())
        );
        assert_eq!(
            refusal_fields(Some(b"plain")),
            (String::new(), "plain".to_owned())
        );
        assert_eq!(refusal_fields(None), (String::new(), String::new()));
    }
}
