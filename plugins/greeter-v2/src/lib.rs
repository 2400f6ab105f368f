//! `greeter` version 2: answers `greet` with `{"version": 2}`. Two versions of one plugin,
//! so tests can swap them live and see which one answered. Version 1 implements
//! [`Plugin::on_message`] by hand; this one is written with typed handlers ([`Router`]), so the
//! tests run both styles through the real runtime.

use serde::Serialize;
use switchboard_sdk::{
    ConnInfo, HandlerError, Manifest, Message, Plugin, Request, Router, export_plugin,
};

/// The plugin.
pub struct Greeter;

/// The answer to `greet`.
#[derive(Serialize)]
struct Greeting {
    version: u32,
}

fn router() -> Router {
    Router::new("greeter", env!("CARGO_PKG_VERSION"))
        .on("greet", |_: Request<serde::de::IgnoredAny>| {
            Ok(Greeting { version: 2 })
        })
}

impl Plugin for Greeter {
    fn describe() -> Manifest {
        router().manifest()
    }

    fn on_message(conn: ConnInfo, msg: Message) -> Result<Option<String>, HandlerError> {
        router().handle(conn, msg)
    }
}

export_plugin!(Greeter);

#[cfg(test)]
mod tests {
    use serde_json::json;
    use switchboard_sdk::{Plugin, mock};

    use super::Greeter;

    #[test]
    fn greet_answers_version_2_whatever_the_payload() {
        assert_eq!(Greeter::describe().handles, ["greet"]);
        for payload in [json!(null), json!({"name": "ada"})] {
            let conn = mock::conn("n-1", "ada", json!({}));
            let reply = Greeter::on_message(conn, mock::message("greet", None, payload));
            assert_eq!(reply.ok().flatten().as_deref(), Some(r#"{"version":2}"#));
        }
    }
}
