//! `echo`: answers a correlated `echo` with an ack carrying the same payload.

use switchboard_sdk::{ConnInfo, HandlerError, Manifest, Message, Plugin, export_plugin};

/// The plugin.
pub struct Echo;

impl Plugin for Echo {
    fn describe() -> Manifest {
        Manifest::new("echo", env!("CARGO_PKG_VERSION"), &["echo"])
    }

    fn on_message(_conn: ConnInfo, msg: Message) -> Result<Option<String>, HandlerError> {
        Ok(Some(msg.payload_json))
    }
}

export_plugin!(Echo);

#[cfg(test)]
mod tests {
    use switchboard_sdk::{Plugin, mock};

    use super::Echo;

    #[test]
    fn answers_with_the_payload() {
        let conn = mock::conn("n-1", "u", serde_json::json!({}));
        let reply = Echo::on_message(
            conn,
            mock::message("echo", None, serde_json::json!({"a": [1]})),
        );
        assert_eq!(reply.ok().flatten().as_deref(), Some(r#"{"a":[1]}"#));
    }
}
