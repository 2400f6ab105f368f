//! `greeter` version 1: answers `greet` with `{"version": 1}`. Two versions of one plugin,
//! so tests can swap them live and see which one answered.

use switchboard_sdk::{ConnInfo, HandlerError, Manifest, Message, Plugin, export_plugin};

/// The plugin.
pub struct Greeter;

impl Plugin for Greeter {
    fn describe() -> Manifest {
        Manifest::new("greeter", env!("CARGO_PKG_VERSION"), &["greet"])
    }

    fn on_message(_conn: ConnInfo, _msg: Message) -> Result<Option<String>, HandlerError> {
        Ok(Some(r#"{"version":1}"#.to_owned()))
    }
}

export_plugin!(Greeter);
