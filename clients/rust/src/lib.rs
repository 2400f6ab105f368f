//! `switchboard-client`: a Rust client for the Switchboard WebSocket protocol (`switchboard.v1`).
//!
//! Modules in reading order:
//! - `client`: the [`Client`] handle, the public API;
//! - `config`: [`Config`], [`TokenSource`], [`TokenTransport`], [`Liveness`];
//! - `tls`: [`Tls`], the certificate authorities trusted for `wss://`;
//! - `backoff`: the [`Reconnect`] policy (exponential backoff with full jitter);
//! - `event`: [`Event`], [`State`] and the value types they carry;
//! - `error`: [`ClientError`];
//! - `driver`: the background task that owns the socket;
//! - `rooms`: joined rooms, their last `seq` and presence lists;
//! - `wire`: the only module that reads or writes the wire JSON.
//!
#![doc = include_str!("../README.md")]
#![deny(missing_docs)]

mod backoff;
mod client;
mod config;
mod driver;
mod error;
mod event;
mod rooms;
mod tls;
mod wire;

pub use backoff::Reconnect;
pub use client::Client;
pub use config::{Config, Liveness, TokenSource, TokenTransport};
pub use error::ClientError;
pub use event::{Event, JoinInfo, Member, PresenceChange, State, Welcome};
pub use tls::Tls;
