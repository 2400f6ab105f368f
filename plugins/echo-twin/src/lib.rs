//! `echo-twin`: a second plugin claiming `echo`, so tests can show that two plugins claiming
//! one type is refused with both names.

use switchboard_sdk::{ConnInfo, HandlerError, Manifest, Message, Plugin, export_plugin};

/// The plugin.
pub struct EchoTwin;

impl Plugin for EchoTwin {
    fn describe() -> Manifest {
        Manifest::new("echo-twin", env!("CARGO_PKG_VERSION"), &["echo"])
    }

    fn on_message(_conn: ConnInfo, msg: Message) -> Result<Option<String>, HandlerError> {
        Ok(Some(msg.payload_json))
    }
}

export_plugin!(EchoTwin);
