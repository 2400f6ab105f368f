//! `lifecycle`: announces every hook on the `audit` channel, so tests can watch them fire:
//! `{"event":"connect"|"disconnect","userId","code"?}` and `{"event":"tick","n"}` (every
//! 100 ms). `lifecycle:count` answers how many connects the key-value store has seen.
//! `lifecycle:attach` stores its payload string as the caller's attachment and answers the
//! attachment the call arrived with (`{"seen": null | "..."}`); `on-disconnect` reports it too.

use serde_json::json;
use switchboard_sdk::{
    ConnInfo, HandlerError, Hooks, Manifest, Message, Plugin, export_plugin, kv, realtime,
};

/// The plugin.
pub struct Lifecycle;

const AUDIT: &str = "audit";

fn announce(event: serde_json::Value) {
    // Nobody listening is fine; the hook has no one to report an error to.
    let _ = realtime::broadcast(AUDIT, "audit", &event.to_string(), None);
}

impl Plugin for Lifecycle {
    fn describe() -> Manifest {
        Manifest::new(
            "lifecycle",
            env!("CARGO_PKG_VERSION"),
            &["lifecycle:count", "lifecycle:attach"],
        )
        .with_hooks(Hooks::ON_CONNECT | Hooks::ON_DISCONNECT)
        .with_tick(100)
    }

    fn on_message(conn: ConnInfo, msg: Message) -> Result<Option<String>, HandlerError> {
        if msg.msg_type == "lifecycle:attach" {
            let text: String = msg.payload()?;
            realtime::set_attachment(&conn.id, text.as_bytes())?;
            return Ok(Some(json!({"seen": attachment_text(&conn)}).to_string()));
        }
        let connects = kv::incr("connects", 0)?;
        Ok(Some(json!({"connects": connects}).to_string()))
    }

    fn on_connect(conn: ConnInfo) {
        let _ = kv::incr("connects", 1);
        announce(json!({"event": "connect", "userId": conn.user_id}));
    }

    fn on_disconnect(conn: ConnInfo, code: u16) {
        let mut event = json!({"event": "disconnect", "userId": conn.user_id, "code": code});
        if let Some(seen) = attachment_text(&conn) {
            event["attachment"] = json!(seen);
        }
        announce(event);
    }

    fn on_tick(_now_ms: u64) {
        let n = kv::incr("ticks", 1).unwrap_or(-1);
        announce(json!({"event": "tick", "n": n}));
    }
}

fn attachment_text(conn: &ConnInfo) -> Option<String> {
    conn.attachment
        .as_deref()
        .map(|bytes| String::from_utf8_lossy(bytes).into_owned())
}

export_plugin!(Lifecycle);
