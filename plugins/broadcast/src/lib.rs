//! `broadcast`: relays a `broadcast` message to every member of its channel, the sender
//! included, as `{"type":"broadcast","channel","payload","seq"}`; the ack carries the `seq`.

use switchboard_sdk::{ConnInfo, HandlerError, Manifest, Message, Plugin, export_plugin, realtime};

/// The plugin.
pub struct Broadcast;

impl Plugin for Broadcast {
    fn describe() -> Manifest {
        Manifest::new("broadcast", env!("CARGO_PKG_VERSION"), &["broadcast"])
    }

    fn on_message(_conn: ConnInfo, msg: Message) -> Result<Option<String>, HandlerError> {
        let channel = msg
            .channel
            .as_deref()
            .ok_or_else(|| HandlerError::bad_request("`broadcast` needs a `channel`"))?;
        let seq = realtime::broadcast(channel, "broadcast", &msg.payload_json, None)?;
        Ok(Some(format!(r#"{{"seq":{seq}}}"#)))
    }
}

export_plugin!(Broadcast);

#[cfg(test)]
mod tests {
    use serde_json::json;
    use switchboard_sdk::{Plugin, mock};

    use super::Broadcast;

    #[test]
    fn relays_to_the_channel_and_acks_the_seq() {
        mock::reset();
        let conn = mock::conn("n-1", "u", json!({}));
        let reply = Broadcast::on_message(
            conn.clone(),
            mock::message("broadcast", Some("c"), json!(1)),
        );
        assert_eq!(reply.ok().flatten().as_deref(), Some(r#"{"seq":1}"#));
        mock::with(|host| {
            assert_eq!(host.broadcasts.len(), 1);
            assert_eq!(host.broadcasts[0].channel, "c");
            assert_eq!(host.broadcasts[0].except, None);
        });
        let missing = Broadcast::on_message(conn, mock::message("broadcast", None, json!(1)));
        assert_eq!(
            missing.err().map(|e| e.code),
            Some("bad_request".to_owned())
        );
    }
}
