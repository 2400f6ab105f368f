//! Guest SDK for Switchboard plugins.
//!
//! A plugin is a type that implements [`Plugin`], exported with [`export_plugin!`] and built
//! with `cargo build --release --target wasm32-wasip2` as a `cdylib`. The host calls
//! [`Plugin::on_message`] for every envelope whose `type` the plugin declared in
//! [`Plugin::describe`]; the plugin answers, and acts through [`realtime`], [`kv`], [`log`]
//! and [`env`]. Guest memory is only a cache: instances are recycled, so lasting state belongs
//! in [`kv`].
//!
//! ```
//! use switchboard_sdk::{ConnInfo, HandlerError, Manifest, Message, Plugin, export_plugin};
//!
//! struct Echo;
//!
//! impl Plugin for Echo {
//!     fn describe() -> Manifest {
//!         Manifest::new("echo", "1.0.0", &["echo"])
//!     }
//!
//!     fn on_message(_conn: ConnInfo, msg: Message) -> Result<Option<String>, HandlerError> {
//!         Ok(Some(msg.payload_json))
//!     }
//! }
//!
//! export_plugin!(Echo);
//! ```
//!
//! Off wasm32 (in `cargo test`), the host functions talk to a [`mock`] host instead, so a
//! plugin's logic can be unit-tested natively.
//!
//! For typed handlers (a function per message type, payload and reply as serde types, the
//! manifest's type list made from them), see [`Router`].

#![deny(missing_docs)]

#[doc(hidden)]
#[allow(missing_docs, unsafe_code, reason = "generated bindings")]
pub mod __bindings {
    wit_bindgen::generate!({
        world: "plugin",
        path: "wit",
        pub_export_macro: true,
        default_bindings_module: "$crate::__bindings",
        // Tests compare what a plugin answered (frames, errors) with what they expect.
        additional_derives: [PartialEq, Eq],
    });
}

/// The `raw-plugin` world's bindings: its `raw-handler` export; its types are the ones above.
#[doc(hidden)]
#[allow(missing_docs, unsafe_code, reason = "generated bindings")]
pub mod __raw_bindings {
    wit_bindgen::generate!({
        world: "raw-plugin",
        path: "wit",
        pub_export_macro: true,
        default_bindings_module: "$crate::__raw_bindings",
        with: {
            "switchboard:plugin/types@0.1.0": crate::__bindings::switchboard::plugin::types,
            "switchboard:plugin/raw-frames@0.1.0": crate::__bindings::switchboard::plugin::raw_frames,
        },
    });
}

/// The `batch-plugin` world's bindings: its `batch-handler` export, which every plugin gets
/// from [`export_plugin!`]; its types and its `batch` import are the ones above.
#[doc(hidden)]
#[allow(missing_docs, unsafe_code, reason = "generated bindings")]
pub mod __batch_bindings {
    wit_bindgen::generate!({
        world: "batch-plugin",
        path: "wit",
        pub_export_macro: true,
        default_bindings_module: "$crate::__batch_bindings",
        with: {
            "switchboard:plugin/types@0.1.0": crate::__bindings::switchboard::plugin::types,
            "switchboard:plugin/batch@0.1.0": crate::__bindings::switchboard::plugin::batch,
        },
    });
}

pub mod env;
pub mod frames;
pub mod json;
pub mod kv;
pub mod log;
#[cfg(not(target_arch = "wasm32"))]
pub mod mock;
pub mod realtime;
pub mod router;

use __bindings::exports::switchboard::plugin::handler as exported;

pub use __bindings::switchboard::plugin::raw_frames::Frame;
pub use __bindings::switchboard::plugin::types::{
    ConnInfo, HandlerError, Hooks, HostError, LogLevel, Manifest, Message,
};
pub use router::{Request, Router};

/// A plugin: message handling plus optional lifecycle hooks. Every hook has a default that does
/// nothing, so a plugin implements only what it declared in its [`Manifest`].
pub trait Plugin {
    /// Name, version, the envelope types handled, and the hooks wanted. Called once at load.
    fn describe() -> Manifest;

    /// Called once per fresh instance before its first call.
    fn init() -> Result<(), String> {
        Ok(())
    }

    /// Handles one envelope. `Ok(Some(json))` answers a correlated message with that ack
    /// payload; `Err` becomes an `error` envelope with the given code.
    fn on_message(conn: ConnInfo, msg: Message) -> Result<Option<String>, HandlerError>;

    /// A connection of the tenant opened (needs [`Hooks::ON_CONNECT`]).
    fn on_connect(_conn: ConnInfo) {}

    /// A connection closed, for any reason (needs [`Hooks::ON_DISCONNECT`]).
    fn on_disconnect(_conn: ConnInfo, _code: u16) {}

    /// May refuse a `room:join`; the client then gets `forbidden` (needs
    /// [`Hooks::AUTHORIZE_JOIN`]).
    fn authorize_join(_conn: ConnInfo, _channel: String) -> bool {
        true
    }

    /// Periodic work on this node (needs [`Hooks::ON_TICK`] and a tick interval).
    fn on_tick(_now_ms: u64) {}
}

/// A plugin that takes a raw-frame tenant's messages (`protocol = "raw"` in the tenant's
/// config): the host calls [`RawPlugin::on_frame`] for every text and binary message of its
/// connections, and sends the frames it returns back to that connection, in order. Export it
/// with [`export_raw_plugin!`]; its [`Plugin`] side still describes it (its `handles` may be
/// empty) and may have hooks. A tenant takes raw frames through one such plugin.
pub trait RawPlugin: Plugin {
    /// One message of a connection; the frames returned go back to it. `Err` answers nothing:
    /// the host logs it and counts it as a handler error (the connection stays open).
    fn on_frame(conn: ConnInfo, frame: Frame) -> Result<Vec<Frame>, HandlerError>;
}

impl Manifest {
    /// A manifest that handles `types` and wants no hooks.
    pub fn new(name: &str, version: &str, types: &[&str]) -> Self {
        Manifest {
            name: name.to_owned(),
            version: version.to_owned(),
            handles: types.iter().map(|t| (*t).to_owned()).collect(),
            hooks: Hooks::empty(),
            tick_interval_ms: None,
        }
    }

    /// Adds hooks.
    pub fn with_hooks(mut self, hooks: Hooks) -> Self {
        self.hooks |= hooks;
        self
    }

    /// Asks for `on_tick` every `interval_ms`.
    pub fn with_tick(mut self, interval_ms: u32) -> Self {
        self.hooks |= Hooks::ON_TICK;
        self.tick_interval_ms = Some(interval_ms);
        self
    }
}

impl HandlerError {
    /// An error with a code of the plugin's choosing.
    pub fn new(code: &str, message: impl Into<String>) -> Self {
        HandlerError {
            code: code.to_owned(),
            message: message.into(),
        }
    }

    /// The `bad_request` error.
    pub fn bad_request(message: impl Into<String>) -> Self {
        HandlerError::new("bad_request", message)
    }

    /// The `forbidden` error.
    pub fn forbidden(message: impl Into<String>) -> Self {
        HandlerError::new("forbidden", message)
    }

    /// The `not_found` error: what the request names does not exist.
    pub fn not_found(message: impl Into<String>) -> Self {
        HandlerError::new("not_found", message)
    }

    /// The `conflict` error: the request lost a race (a version changed meanwhile); the client
    /// may read again and retry.
    pub fn conflict(message: impl Into<String>) -> Self {
        HandlerError::new("conflict", message)
    }

    /// The `unavailable` error: something the plugin needs is down; retry with backoff.
    pub fn unavailable(message: impl Into<String>) -> Self {
        HandlerError::new("unavailable", message)
    }

    /// The `internal` error: a bug in the plugin, not in the request.
    pub fn internal(message: impl Into<String>) -> Self {
        HandlerError::new("internal", message)
    }
}

/// A refused host call passed on with `?` becomes the error the client gets: a code for each
/// kind (`not_found`, `forbidden`, `rate_limited`, `too_large`, `unavailable`, `invalid`; the
/// list in docs/protocol.md) and a sentence, never Rust's `Debug` text.
impl From<HostError> for HandlerError {
    fn from(error: HostError) -> Self {
        match error {
            HostError::NotFound => {
                HandlerError::new("not_found", "the connection or key does not exist")
            }
            HostError::Forbidden => {
                HandlerError::new("forbidden", "the host refused the call for this tenant")
            }
            HostError::RateLimited => HandlerError::new(
                "rate_limited",
                "the call used up a per-call quota (sends, fan-out, bytes or key-value operations)",
            ),
            HostError::TooLarge => {
                HandlerError::new("too_large", "a value or a message is over its size limit")
            }
            HostError::Unavailable => HandlerError::new(
                "unavailable",
                "the backplane or the key-value store is unavailable; retry later",
            ),
            HostError::Invalid(why) => HandlerError::new("invalid", why),
        }
    }
}

impl ConnInfo {
    /// The verified JWT claims.
    pub fn claims(&self) -> serde_json::Value {
        serde_json::from_str(&self.claims_json).unwrap_or(serde_json::Value::Null)
    }
}

impl Message {
    /// The payload parsed into `T`, or `bad_request`.
    pub fn payload<T: serde::de::DeserializeOwned>(&self) -> Result<T, HandlerError> {
        json::parse(&self.payload_json)
    }
}

/// Routes panics to the host log, so a trapped call leaves a readable reason.
#[doc(hidden)]
pub fn __install_panic_hook() {
    static INSTALLED: std::sync::Once = std::sync::Once::new();
    INSTALLED.call_once(|| {
        std::panic::set_hook(Box::new(|info| {
            log::error(&format!("plugin panicked: {info}"));
        }));
    });
}

#[doc(hidden)]
pub struct __Adapter<T>(std::marker::PhantomData<T>);

impl<T: Plugin> exported::Guest for __Adapter<T> {
    fn describe() -> Manifest {
        __install_panic_hook();
        T::describe()
    }
    fn init() -> Result<(), String> {
        __install_panic_hook();
        T::init()
    }
    fn on_message(conn: ConnInfo, msg: Message) -> Result<Option<String>, HandlerError> {
        T::on_message(conn, msg)
    }
    fn on_connect(conn: ConnInfo) {
        T::on_connect(conn);
    }
    fn on_disconnect(conn: ConnInfo, code: u16) {
        T::on_disconnect(conn, code);
    }
    fn authorize_join(conn: ConnInfo, channel: String) -> bool {
        T::authorize_join(conn, channel)
    }
    fn on_tick(now_ms: u64) {
        T::on_tick(now_ms);
    }
}

#[doc(hidden)]
pub struct __BatchAdapter<T>(std::marker::PhantomData<T>);

/// Several messages of one connection in one call: each is handled as its own
/// [`Plugin::on_message`] call would be, and answered before the next is handled (the host
/// counts each message's CPU budget and quotas from the previous answer).
impl<T: Plugin> __batch_bindings::exports::switchboard::plugin::batch_handler::Guest
    for __BatchAdapter<T>
{
    fn on_messages(conn: ConnInfo, msgs: Vec<Message>) {
        let mut msgs = msgs.into_iter().peekable();
        let mut conn = Some(conn);
        while let Some(msg) = msgs.next() {
            // The last message takes the connection info; the others get a copy.
            let conn = match msgs.peek() {
                Some(_) => conn.clone(),
                None => conn.take(),
            };
            let Some(conn) = conn else { return };
            let reply = T::on_message(conn, msg);
            __bindings::switchboard::plugin::batch::answer(reply.as_ref().map(Option::as_deref));
        }
    }
}

#[doc(hidden)]
pub struct __RawAdapter<T>(std::marker::PhantomData<T>);

impl<T: RawPlugin> __raw_bindings::exports::switchboard::plugin::raw_handler::Guest
    for __RawAdapter<T>
{
    fn on_frame(conn: ConnInfo, frame: Frame) -> Result<Vec<Frame>, HandlerError> {
        T::on_frame(conn, frame)
    }
}

/// Exports a [`RawPlugin`] implementation as the component's `handler` and `raw-handler`.
/// Off wasm32 it expands to nothing, as [`export_plugin!`] does.
#[macro_export]
macro_rules! export_raw_plugin {
    ($plugin:ty) => {
        $crate::export_plugin!($plugin);
        #[cfg(target_arch = "wasm32")]
        mod __switchboard_raw_plugin_export {
            #[allow(unused_imports)]
            use super::*;
            type __SwitchboardRawPluginExport = $crate::__RawAdapter<$plugin>;
            $crate::__raw_bindings::export!(__SwitchboardRawPluginExport with_types_in $crate::__raw_bindings);
        }
    };
}

/// Exports a [`Plugin`] implementation as the component's `handler`, and as its
/// `batch-handler` (several messages of a connection in one call, each handled by
/// [`Plugin::on_message`]). Off wasm32 it expands to nothing, so the plugin crate also builds
/// and tests natively against [`mock`].
#[macro_export]
macro_rules! export_plugin {
    ($plugin:ty) => {
        #[cfg(target_arch = "wasm32")]
        mod __switchboard_plugin_export {
            #[allow(unused_imports)]
            use super::*;
            type __SwitchboardPluginExport = $crate::__Adapter<$plugin>;
            $crate::__bindings::export!(__SwitchboardPluginExport with_types_in $crate::__bindings);
            type __SwitchboardBatchExport = $crate::__BatchAdapter<$plugin>;
            $crate::__batch_bindings::export!(__SwitchboardBatchExport with_types_in $crate::__batch_bindings);
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_host_call_becomes_a_documented_code_with_a_sentence() {
        let cases = [
            (HostError::NotFound, "not_found"),
            (HostError::Forbidden, "forbidden"),
            (HostError::RateLimited, "rate_limited"),
            (HostError::TooLarge, "too_large"),
            (HostError::Unavailable, "unavailable"),
            (HostError::Invalid("bad key".to_owned()), "invalid"),
        ];
        for (host, code) in cases {
            let error = HandlerError::from(host);
            assert_eq!(error.code, code);
            assert!(
                !error.message.contains("RateLimited") && error.message.len() > 5,
                "{}",
                error.message
            );
        }
        assert_eq!(
            HandlerError::from(HostError::Invalid("bad key".to_owned())).message,
            "bad key"
        );
    }
}
