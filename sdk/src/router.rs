//! Typed handlers: one function per message type, taking its payload and returning its reply as
//! serde types. The manifest's type list is made from the registrations, so the two cannot drift
//! apart, and a reply is encoded by serde, so it is always JSON.
//!
//! ```
//! use serde::{Deserialize, Serialize};
//! use switchboard_sdk::{
//!     ConnInfo, HandlerError, Manifest, Message, Plugin, Request, Router, export_plugin,
//! };
//!
//! #[derive(Deserialize)]
//! struct Vote {
//!     option: usize,
//! }
//!
//! #[derive(Serialize)]
//! struct Voted {
//!     option: usize,
//! }
//!
//! fn vote(request: Request<Vote>) -> Result<Voted, HandlerError> {
//!     if request.payload.option > 3 {
//!         return Err(HandlerError::bad_request("options are 0 to 3"));
//!     }
//!     Ok(Voted { option: request.payload.option })
//! }
//!
//! fn router() -> Router {
//!     Router::new("poll", "1.0.0").on("poll:vote", vote)
//! }
//!
//! struct Poll;
//!
//! impl Plugin for Poll {
//!     fn describe() -> Manifest {
//!         router().manifest()
//!     }
//!
//!     fn on_message(conn: ConnInfo, msg: Message) -> Result<Option<String>, HandlerError> {
//!         router().handle(conn, msg)
//!     }
//! }
//!
//! export_plugin!(Poll);
//! ```

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::{ConnInfo, HandlerError, Hooks, Manifest, Message};

/// One message as a typed handler gets it.
#[derive(Debug, Clone)]
pub struct Request<P> {
    /// The sender.
    pub conn: ConnInfo,
    /// The envelope's `payload`, decoded (`null` when the envelope had none).
    pub payload: P,
    /// The envelope's `type`.
    pub msg_type: String,
    /// The envelope's `channel`.
    pub channel: Option<String>,
    /// The envelope's `correlationId`: only a correlated message gets the reply.
    pub correlation_id: Option<String>,
    /// When the host received it (Unix milliseconds).
    pub received_at_ms: u64,
}

type Handler = Box<dyn Fn(ConnInfo, Message) -> Result<Option<String>, HandlerError>>;

/// Message types and their typed handlers, and the manifest made from them.
pub struct Router {
    /// Name, version and hooks; its `handles` are filled from `routes` by [`Router::manifest`].
    manifest: Manifest,
    routes: Vec<(String, Handler)>,
}

impl std::fmt::Debug for Router {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Router")
            .field("name", &self.manifest.name)
            .field("version", &self.manifest.version)
            .field("types", &self.types())
            .finish()
    }
}

impl Router {
    /// A router for the plugin `name` at `version`, with no types yet.
    pub fn new(name: &str, version: &str) -> Router {
        Router {
            manifest: Manifest::new(name, version, &[]),
            routes: Vec::new(),
        }
    }

    /// Routes `msg_type` to `handler`. Its payload is decoded into `P` (a mismatch answers
    /// `bad_request` naming the problem; `()` or `Option<T>` accept a missing payload); its
    /// `Ok` is encoded as the ack payload (a value encoded as `null`, such as `()`, acks
    /// without one). Registering a type twice is a bug and panics.
    pub fn on<P, R, F>(mut self, msg_type: &str, handler: F) -> Router
    where
        P: DeserializeOwned,
        R: Serialize,
        F: Fn(Request<P>) -> Result<R, HandlerError> + 'static,
    {
        assert!(
            !self.routes.iter().any(|(known, _)| known == msg_type),
            "`{msg_type}` is registered twice"
        );
        let shown = msg_type.to_owned();
        let handler: Handler = Box::new(move |conn, msg| {
            let payload = serde_json::from_str(&msg.payload_json).map_err(|error| {
                HandlerError::bad_request(format!("the payload of `{shown}`: {error}"))
            })?;
            let reply = handler(Request {
                conn,
                payload,
                msg_type: msg.msg_type,
                channel: msg.channel,
                correlation_id: msg.correlation_id,
                received_at_ms: msg.received_at_ms,
            })?;
            encode(&reply)
        });
        self.routes.push((msg_type.to_owned(), handler));
        self
    }

    /// Also asks for `hooks` (implemented on the [`Plugin`](crate::Plugin) as usual).
    pub fn with_hooks(mut self, hooks: Hooks) -> Router {
        self.manifest = self.manifest.with_hooks(hooks);
        self
    }

    /// Also asks for `on_tick` every `interval_ms`.
    pub fn with_tick(mut self, interval_ms: u32) -> Router {
        self.manifest = self.manifest.with_tick(interval_ms);
        self
    }

    /// The types registered, in registration order.
    pub fn types(&self) -> Vec<&str> {
        self.routes
            .iter()
            .map(|(msg_type, _)| msg_type.as_str())
            .collect()
    }

    /// The manifest: the name, version and hooks given, and every type registered.
    pub fn manifest(&self) -> Manifest {
        Manifest {
            handles: self.types().into_iter().map(str::to_owned).collect(),
            ..self.manifest.clone()
        }
    }

    /// Hands `msg` to the handler of its type (for [`Plugin::on_message`](crate::Plugin)).
    pub fn handle(&self, conn: ConnInfo, msg: Message) -> Result<Option<String>, HandlerError> {
        match self.routes.iter().find(|(known, _)| *known == msg.msg_type) {
            Some((_, handler)) => handler(conn, msg),
            None => Err(HandlerError::new(
                "unknown_type",
                format!("`{}` has no handler", msg.msg_type),
            )),
        }
    }
}

/// A reply as the ack payload: `None` for a value encoded as `null`.
fn encode<R: Serialize>(reply: &R) -> Result<Option<String>, HandlerError> {
    match serde_json::to_string(reply) {
        Ok(text) if text == "null" => Ok(None),
        Ok(text) => Ok(Some(text)),
        Err(error) => Err(HandlerError::internal(format!(
            "the reply does not encode as JSON: {error}"
        ))),
    }
}

#[cfg(all(test, not(target_arch = "wasm32")))]
mod tests {
    use std::collections::HashMap;

    use serde::{Deserialize, Serialize};
    use serde_json::json;

    use super::*;
    use crate::mock;

    #[derive(Deserialize)]
    struct Add {
        a: i64,
        b: i64,
    }

    #[derive(Serialize)]
    struct Sum {
        sum: i64,
    }

    fn router() -> Router {
        Router::new("calc", "1.2.3")
            .on("calc:add", |request: Request<Add>| {
                Ok(Sum {
                    sum: request.payload.a + request.payload.b,
                })
            })
            .on("calc:who", |request: Request<()>| Ok(request.conn.user_id))
            .on("calc:nothing", |_: Request<Option<i64>>| Ok(()))
            .on(
                "calc:refuse",
                |_: Request<()>| -> Result<(), HandlerError> { Err(HandlerError::forbidden("no")) },
            )
            .with_tick(1000)
    }

    fn call(msg_type: &str, payload: serde_json::Value) -> Result<Option<String>, HandlerError> {
        let conn = mock::conn("n-1", "ada", json!({}));
        router().handle(conn, mock::message(msg_type, None, payload))
    }

    #[test]
    fn the_manifest_lists_every_registered_type_and_the_hooks() {
        let manifest = router().manifest();
        assert_eq!(
            (manifest.name.as_str(), manifest.version.as_str()),
            ("calc", "1.2.3")
        );
        assert_eq!(
            manifest.handles,
            ["calc:add", "calc:who", "calc:nothing", "calc:refuse"]
        );
        assert_eq!(manifest.hooks, Hooks::ON_TICK);
        assert_eq!(manifest.tick_interval_ms, Some(1000));
    }

    #[test]
    fn payloads_are_decoded_and_replies_encoded() {
        assert_eq!(
            call("calc:add", json!({"a": 2, "b": 3}))
                .ok()
                .flatten()
                .as_deref(),
            Some(r#"{"sum":5}"#)
        );
        assert_eq!(
            call("calc:who", json!(null)).ok().flatten().as_deref(),
            Some(r#""ada""#)
        );
        assert_eq!(call("calc:nothing", json!(null)).ok(), Some(None));
        assert_eq!(call("calc:nothing", json!(4)).ok(), Some(None));
    }

    #[test]
    fn a_payload_of_the_wrong_shape_is_a_bad_request_naming_the_type() {
        let error = call("calc:add", json!({"a": 2})).expect_err("refused");
        assert_eq!(error.code, "bad_request");
        assert!(
            error.message.contains("calc:add") && error.message.contains("`b`"),
            "{}",
            error.message
        );
    }

    #[test]
    fn handler_errors_pass_through_and_unknown_types_are_named() {
        assert_eq!(
            call("calc:refuse", json!(null)).expect_err("refused").code,
            "forbidden"
        );
        let error = call("calc:other", json!(null)).expect_err("refused");
        assert_eq!(error.code, "unknown_type");
    }

    #[test]
    fn a_reply_that_cannot_be_json_is_an_error_not_a_broken_frame() {
        let router = Router::new("maps", "1.0.0").on("maps:bad", |_: Request<()>| {
            // JSON object keys must be strings.
            Ok(HashMap::from([((1, 2), 3)]))
        });
        let conn = mock::conn("n-1", "ada", json!({}));
        let error = router
            .handle(conn, mock::message("maps:bad", None, json!(null)))
            .expect_err("refused");
        assert_eq!(error.code, "internal");
    }

    #[test]
    #[should_panic(expected = "registered twice")]
    fn a_type_registered_twice_is_a_bug() {
        let _ = Router::new("twice", "1.0.0")
            .on("a", |_: Request<()>| Ok(()))
            .on("a", |_: Request<()>| Ok(()));
    }
}
