//! `lifecycle`: announces every hook on the `audit` channel, so tests can watch them fire:
//! `{"event":"connect"|"disconnect","userId","code"?}` and `{"event":"tick","n"}` (every
//! 100 ms). `lifecycle:count` answers how many connects the key-value store has seen.

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
        Manifest::new("lifecycle", env!("CARGO_PKG_VERSION"), &["lifecycle:count"])
            .with_hooks(Hooks::ON_CONNECT | Hooks::ON_DISCONNECT)
            .with_tick(100)
    }

    fn on_message(_conn: ConnInfo, _msg: Message) -> Result<Option<String>, HandlerError> {
        let connects = kv::incr("connects", 0)?;
        Ok(Some(json!({"connects": connects}).to_string()))
    }

    fn on_connect(conn: ConnInfo) {
        let _ = kv::incr("connects", 1);
        announce(json!({"event": "connect", "userId": conn.user_id}));
    }

    fn on_disconnect(conn: ConnInfo, code: u16) {
        announce(json!({"event": "disconnect", "userId": conn.user_id, "code": code}));
    }

    fn on_tick(_now_ms: u64) {
        let n = kv::incr("ticks", 1).unwrap_or(-1);
        announce(json!({"event": "tick", "n": n}));
    }
}

export_plugin!(Lifecycle);
