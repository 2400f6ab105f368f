//! Switchboard: a WebSocket runtime. The modules, in reading order:
//!
//! - `config`: the TOML file, validated into typed settings;
//! - `protocol`: the wire envelope, frames, error and close codes;
//! - `auth`: token verification and origin policy, before the upgrade;
//! - `tenant`: a tenant's keys, limits and connection count; `cpu_share`: its plugins' share of
//!   the node's CPU;
//! - `server`: the listener, routes and the upgrade handshake;
//! - `connection`: one connection's loop; with `outbox`, `ratelimit`, `heartbeat`;
//! - `registry`: live connections; `rooms`: membership, presence and fan-out;
//! - `backplane`: what crosses nodes (in memory for one node);
//! - `plugins`: WASM plugins (host API, pooled instances, limits, reload);
//! - `admin`: the publish and plugin APIs; `metrics`: Prometheus text; `node`: the shared
//!   state; `clock`: Unix milliseconds;
//! - `scaffold`: `switchboard plugin new`, a plugin crate to start from.

pub mod admin;
pub mod auth;
pub mod backplane;
pub mod clock;
pub mod config;
pub mod conn_handle;
pub mod connection;
pub mod cpu_share;
pub mod deployments;
pub mod heartbeat;
pub mod ids;
pub mod kv;
pub mod listener;
pub mod metrics;
pub mod node;
pub mod outbox;
pub mod plugins;
pub mod protocol;
pub mod ratelimit;
pub mod registry;
pub mod rooms;
pub mod scaffold;
pub mod server;
pub mod state;
pub mod tenant;
#[cfg(test)]
mod test_random;
pub mod wit;

/// Entry points for the fuzz targets in `fuzz/`: the parsers of untrusted input that are not
/// public on their own. Not part of the API: no stability promise, hidden from the docs.
#[doc(hidden)]
pub mod fuzzing {
    use http::{HeaderMap, HeaderValue, Request};

    pub use crate::backplane::redis::entries::{history_entry, presence_user, presence_value};
    pub use crate::backplane::redis::wire::{
        Wire, WireError, attach, close, membership, probe, signal, to_connection, to_user, unhex,
    };
    use crate::server::refusal::Refusal;
    use crate::server::upgrade;

    /// Checks 2 to 4 of the handshake on a request (`server::upgrade::check_handshake`): an
    /// upgrade request, version 13, a valid key, which it answers with.
    pub fn check_handshake<B>(request: &Request<B>) -> Result<HeaderValue, Refusal> {
        upgrade::check_handshake(request)
    }

    /// Every entry of every `Sec-WebSocket-Protocol` header, in order.
    pub fn offered_subprotocols(headers: &HeaderMap) -> Vec<String> {
        upgrade::offered_subprotocols(headers)
    }

    /// The token of an upgrade request, from the first source present.
    pub fn find_token(
        headers: &HeaderMap,
        query: Option<&str>,
        offered: &[String],
    ) -> Option<String> {
        upgrade::find_token(headers, query, offered)
    }
}
