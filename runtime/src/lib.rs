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
pub mod tenant;
#[cfg(test)]
mod test_random;
pub mod wit;
