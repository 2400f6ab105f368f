//! `chat`: `chat:send` becomes `chat:message` to the room with the sender's user id and a
//! timestamp; `typing:start`/`typing:stop` go to the other members; joins to `private-*`
//! rooms need the token claim `rooms` listing the room (or `role: "admin"`); each room's
//! message count lives in the key-value store (`chat:stats` reads it); `chat:dm` sends a
//! direct message to every connection of another user, on whichever node they are.

use serde::Deserialize;
use serde_json::json;
use switchboard_sdk::{
    ConnInfo, HandlerError, Hooks, Manifest, Message, Plugin, env, export_plugin, kv, realtime,
};

/// The plugin.
pub struct Chat;

#[derive(Deserialize)]
struct SendPayload {
    text: String,
}

#[derive(Deserialize)]
struct DirectPayload {
    to: String,
    text: String,
}

const DEFAULT_MAX_TEXT_BYTES: usize = 2000;

fn channel_of(msg: &Message) -> Result<&str, HandlerError> {
    msg.channel
        .as_deref()
        .ok_or_else(|| HandlerError::bad_request(format!("`{}` needs a `channel`", msg.msg_type)))
}

fn require_member(conn: &ConnInfo, channel: &str) -> Result<Vec<(String, String)>, HandlerError> {
    let members = realtime::members(channel)?;
    if members.iter().any(|(id, _)| *id == conn.id) {
        Ok(members)
    } else {
        Err(HandlerError::new(
            "not_member",
            format!("join `{channel}` before writing to it"),
        ))
    }
}

fn count_key(channel: &str) -> String {
    format!("count:{channel}")
}

fn check_text(text: &str) -> Result<(), HandlerError> {
    let max = env::config("max_text_bytes")
        .and_then(|value| value.parse().ok())
        .unwrap_or(DEFAULT_MAX_TEXT_BYTES);
    if text.trim().is_empty() || text.len() > max {
        return Err(HandlerError::bad_request(format!(
            "`text` must be 1..{max} bytes"
        )));
    }
    Ok(())
}

fn send_message(conn: &ConnInfo, msg: &Message) -> Result<Option<String>, HandlerError> {
    let channel = channel_of(msg)?;
    let payload: SendPayload = msg.payload()?;
    check_text(&payload.text)?;
    require_member(conn, channel)?;
    let message = json!({"userId": conn.user_id, "text": payload.text, "ts": env::now_ms()});
    let seq = realtime::broadcast(channel, "chat:message", &message.to_string(), None)?;
    let count = kv::incr(&count_key(channel), 1)?;
    Ok(Some(json!({"seq": seq, "count": count}).to_string()))
}

fn direct_message(conn: &ConnInfo, msg: &Message) -> Result<Option<String>, HandlerError> {
    let payload: DirectPayload = msg.payload()?;
    check_text(&payload.text)?;
    let message = json!({"from": conn.user_id, "text": payload.text, "ts": env::now_ms()});
    let delivered = realtime::send_to_user(&payload.to, "chat:dm", &message.to_string())?;
    Ok(Some(json!({"delivered": delivered}).to_string()))
}

fn relay_typing(conn: &ConnInfo, msg: &Message) -> Result<Option<String>, HandlerError> {
    let channel = channel_of(msg)?;
    let members = require_member(conn, channel)?;
    let payload = json!({"userId": conn.user_id}).to_string();
    for (id, _) in members.iter().filter(|(id, _)| *id != conn.id) {
        // A member that left meanwhile is not an error for the typist.
        let _ = realtime::send(id, &msg.msg_type, Some(channel), &payload);
    }
    Ok(None)
}

fn stats(msg: &Message) -> Result<Option<String>, HandlerError> {
    let channel = channel_of(msg)?;
    let count = kv::incr(&count_key(channel), 0)?;
    Ok(Some(
        json!({"channel": channel, "count": count}).to_string(),
    ))
}

impl Plugin for Chat {
    fn describe() -> Manifest {
        Manifest::new(
            "chat",
            env!("CARGO_PKG_VERSION"),
            &[
                "chat:send",
                "chat:dm",
                "typing:start",
                "typing:stop",
                "chat:stats",
            ],
        )
        .with_hooks(Hooks::AUTHORIZE_JOIN)
    }

    fn on_message(conn: ConnInfo, msg: Message) -> Result<Option<String>, HandlerError> {
        match msg.msg_type.as_str() {
            "chat:send" => send_message(&conn, &msg),
            "chat:dm" => direct_message(&conn, &msg),
            "typing:start" | "typing:stop" => relay_typing(&conn, &msg),
            "chat:stats" => stats(&msg),
            other => Err(HandlerError::new("unknown_type", other)),
        }
    }

    fn authorize_join(conn: ConnInfo, channel: String) -> bool {
        if !channel.starts_with("private-") {
            return true;
        }
        let claims = conn.claims();
        claims["role"] == "admin"
            || claims["rooms"]
                .as_array()
                .is_some_and(|rooms| rooms.iter().any(|room| room == channel.as_str()))
    }
}

export_plugin!(Chat);

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};
    use switchboard_sdk::{Plugin, mock};

    use super::Chat;

    fn setup() {
        mock::reset();
        mock::with(|host| {
            host.now_ms = 1234;
            host.members.insert(
                "lobby".into(),
                vec![("n-1".into(), "alice".into()), ("n-2".into(), "bob".into())],
            );
        });
    }

    #[test]
    fn send_broadcasts_with_user_and_time_and_counts() {
        setup();
        let alice = mock::conn("n-1", "alice", json!({}));
        for expected in 1..=2 {
            let reply = Chat::on_message(
                alice.clone(),
                mock::message("chat:send", Some("lobby"), json!({"text": "hi"})),
            )
            .expect("sent")
            .expect("acked");
            let reply: Value = serde_json::from_str(&reply).expect("json");
            assert_eq!(reply["count"], expected);
        }
        mock::with(|host| {
            let first = &host.broadcasts[0];
            assert_eq!(first.msg_type, "chat:message");
            let payload: Value = serde_json::from_str(&first.payload_json).expect("json");
            assert_eq!(
                payload,
                json!({"userId": "alice", "text": "hi", "ts": 1234})
            );
        });
    }

    #[test]
    fn send_refuses_empty_text_and_non_members() {
        setup();
        let alice = mock::conn("n-1", "alice", json!({}));
        let empty = Chat::on_message(
            alice,
            mock::message("chat:send", Some("lobby"), json!({"text": " "})),
        );
        assert_eq!(empty.err().map(|e| e.code).as_deref(), Some("bad_request"));
        let stranger = mock::conn("n-9", "eve", json!({}));
        let refused = Chat::on_message(
            stranger,
            mock::message("chat:send", Some("lobby"), json!({"text": "hi"})),
        );
        assert_eq!(refused.err().map(|e| e.code).as_deref(), Some("not_member"));
    }

    #[test]
    fn direct_messages_go_to_the_user_with_the_sender() {
        setup();
        let alice = mock::conn("n-1", "alice", json!({}));
        let reply = Chat::on_message(
            alice.clone(),
            mock::message("chat:dm", None, json!({"to": "bob", "text": "psst"})),
        )
        .expect("sent")
        .expect("acked");
        assert_eq!(reply, json!({"delivered": 1}).to_string());
        mock::with(|host| {
            let (user, msg_type, payload) = &host.sent_to_users[0];
            assert_eq!((user.as_str(), msg_type.as_str()), ("bob", "chat:dm"));
            let payload: Value = serde_json::from_str(payload).expect("json");
            assert_eq!(
                payload,
                json!({"from": "alice", "text": "psst", "ts": 1234})
            );
        });
        let empty = Chat::on_message(
            alice,
            mock::message("chat:dm", None, json!({"to": "bob", "text": ""})),
        );
        assert_eq!(empty.err().map(|e| e.code).as_deref(), Some("bad_request"));
    }

    #[test]
    fn typing_goes_to_the_others_only() {
        setup();
        let alice = mock::conn("n-1", "alice", json!({}));
        let reply = Chat::on_message(
            alice,
            mock::message("typing:start", Some("lobby"), json!(null)),
        );
        assert_eq!(reply.ok(), Some(None));
        mock::with(|host| {
            assert_eq!(host.sent.len(), 1);
            assert_eq!(host.sent[0].to, "n-2");
            assert_eq!(host.sent[0].msg_type, "typing:start");
        });
    }

    #[test]
    fn private_rooms_need_a_claim() {
        let plain = mock::conn("n-1", "alice", json!({}));
        assert!(Chat::authorize_join(plain.clone(), "lobby".into()));
        assert!(!Chat::authorize_join(plain, "private-ops".into()));
        let invited = mock::conn("n-1", "alice", json!({"rooms": ["private-ops"]}));
        assert!(Chat::authorize_join(invited.clone(), "private-ops".into()));
        assert!(!Chat::authorize_join(invited, "private-hr".into()));
        let admin = mock::conn("n-1", "root", json!({"role": "admin"}));
        assert!(Chat::authorize_join(admin, "private-hr".into()));
    }
}
