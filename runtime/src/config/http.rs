//! The `[http]` section: bounds of the HTTP listener on what a client can make the node hold
//! (request heads, request bodies, stalled responses, open sockets).

use std::time::Duration;

use serde::Deserialize;

use super::{RawDuration, Validator};

/// Bounds of the HTTP listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpConfig {
    /// A request head (request line and headers) must arrive within this; an idle keep-alive
    /// connection is closed after it too.
    pub header_timeout: Duration,
    /// Largest request head in bytes; past it, 431.
    pub max_header_bytes: usize,
    /// Longest request target (path and query) in bytes; past it, 414.
    pub max_uri_bytes: usize,
    /// A response that makes no write progress for this long closes its connection (a client
    /// that never reads).
    pub write_timeout: Duration,
    /// A request body (publish, plugin upload) must arrive within this; past it, 408.
    pub body_timeout: Duration,
    /// Request bodies being received at once, node-wide; past it, 503.
    pub max_bodies_in_flight: usize,
    /// Bytes of request bodies being received at once, node-wide; past it, 503.
    pub max_body_bytes_in_flight: usize,
    /// Largest publish body whose bearer key matches no tenant's API key (it can only be
    /// refused); past it, 401.
    pub max_unauthenticated_body_bytes: usize,
    /// How long such a body may take; past it, 401.
    pub unauthenticated_body_timeout: Duration,
    /// Caps the node's socket budget below what the open-files limit allows (`None`: the limit
    /// decides).
    pub max_open_sockets: Option<usize>,
    /// Descriptors kept out of the socket budget for everything else (listener, Redis, plugin
    /// files, logs, the runtime).
    pub reserved_files: usize,
    /// Descriptors kept out of the socket budget to answer connections that arrive while it is
    /// full (503 with `Retry-After`, `/healthz`, `/readyz`, `/metrics`).
    pub refusal_sockets: usize,
}

/// The default `http.header_timeout`.
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// The default `http.max_header_bytes`.
pub const DEFAULT_MAX_HEADER_BYTES: usize = 16 * 1024;
/// The default `http.max_uri_bytes`.
pub const DEFAULT_MAX_URI_BYTES: usize = 8 * 1024;
/// The default `http.write_timeout`.
pub const DEFAULT_WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// The default `http.body_timeout`.
pub const DEFAULT_BODY_TIMEOUT: Duration = Duration::from_secs(30);
/// The default `http.max_bodies_in_flight`.
pub const DEFAULT_MAX_BODIES_IN_FLIGHT: usize = 256;
/// The default `http.max_body_bytes_in_flight`.
pub const DEFAULT_MAX_BODY_BYTES_IN_FLIGHT: usize = 64 * 1024 * 1024;
/// The default `http.max_unauthenticated_body_bytes`.
pub const DEFAULT_MAX_UNAUTHENTICATED_BODY_BYTES: usize = 64 * 1024;
/// The default `http.unauthenticated_body_timeout`.
pub const DEFAULT_UNAUTHENTICATED_BODY_TIMEOUT: Duration = Duration::from_secs(5);
/// The default `http.reserved_files`.
pub const DEFAULT_RESERVED_FILES: usize = 64;
/// The default `http.refusal_sockets`.
pub const DEFAULT_REFUSAL_SOCKETS: usize = 16;

/// Smallest accepted `http.max_header_bytes`: a request line and a few ordinary headers.
const MIN_HEADER_BYTES: usize = 1024;
/// Largest accepted `http.max_header_bytes`: hyper's own read buffer must hold the head.
const MAX_HEADER_BYTES: usize = 1024 * 1024;

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            header_timeout: DEFAULT_HEADER_TIMEOUT,
            max_header_bytes: DEFAULT_MAX_HEADER_BYTES,
            max_uri_bytes: DEFAULT_MAX_URI_BYTES,
            write_timeout: DEFAULT_WRITE_TIMEOUT,
            body_timeout: DEFAULT_BODY_TIMEOUT,
            max_bodies_in_flight: DEFAULT_MAX_BODIES_IN_FLIGHT,
            max_body_bytes_in_flight: DEFAULT_MAX_BODY_BYTES_IN_FLIGHT,
            max_unauthenticated_body_bytes: DEFAULT_MAX_UNAUTHENTICATED_BODY_BYTES,
            unauthenticated_body_timeout: DEFAULT_UNAUTHENTICATED_BODY_TIMEOUT,
            max_open_sockets: None,
            reserved_files: DEFAULT_RESERVED_FILES,
            refusal_sockets: DEFAULT_REFUSAL_SOCKETS,
        }
    }
}

/// The raw `[http]` table.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHttp {
    header_timeout: Option<RawDuration>,
    max_header_bytes: Option<i64>,
    max_uri_bytes: Option<i64>,
    write_timeout: Option<RawDuration>,
    body_timeout: Option<RawDuration>,
    max_bodies_in_flight: Option<i64>,
    max_body_bytes_in_flight: Option<i64>,
    max_unauthenticated_body_bytes: Option<i64>,
    unauthenticated_body_timeout: Option<RawDuration>,
    max_open_sockets: Option<i64>,
    reserved_files: Option<i64>,
    refusal_sockets: Option<i64>,
}

impl Validator<'_> {
    pub(super) fn http(&mut self, raw: RawHttp) -> HttpConfig {
        let max_header_bytes = self.positive(
            "http.max_header_bytes",
            raw.max_header_bytes,
            DEFAULT_MAX_HEADER_BYTES,
        );
        if !(MIN_HEADER_BYTES..=MAX_HEADER_BYTES).contains(&max_header_bytes) {
            self.issue(
                "http.max_header_bytes",
                format!("must be {MIN_HEADER_BYTES}..{MAX_HEADER_BYTES}"),
            );
        }
        let max_unauthenticated_body_bytes = self.positive(
            "http.max_unauthenticated_body_bytes",
            raw.max_unauthenticated_body_bytes,
            DEFAULT_MAX_UNAUTHENTICATED_BODY_BYTES,
        );
        let body_timeout =
            self.duration("http.body_timeout", raw.body_timeout, DEFAULT_BODY_TIMEOUT);
        let unauthenticated_body_timeout = self.duration(
            "http.unauthenticated_body_timeout",
            raw.unauthenticated_body_timeout,
            DEFAULT_UNAUTHENTICATED_BODY_TIMEOUT,
        );
        if unauthenticated_body_timeout > body_timeout {
            self.issue(
                "http.unauthenticated_body_timeout",
                "must not be longer than http.body_timeout",
            );
        }
        HttpConfig {
            header_timeout: self.duration(
                "http.header_timeout",
                raw.header_timeout,
                DEFAULT_HEADER_TIMEOUT,
            ),
            max_header_bytes,
            max_uri_bytes: self.positive(
                "http.max_uri_bytes",
                raw.max_uri_bytes,
                DEFAULT_MAX_URI_BYTES,
            ),
            write_timeout: self.duration(
                "http.write_timeout",
                raw.write_timeout,
                DEFAULT_WRITE_TIMEOUT,
            ),
            body_timeout,
            max_bodies_in_flight: self.positive(
                "http.max_bodies_in_flight",
                raw.max_bodies_in_flight,
                DEFAULT_MAX_BODIES_IN_FLIGHT,
            ),
            max_body_bytes_in_flight: self.positive(
                "http.max_body_bytes_in_flight",
                raw.max_body_bytes_in_flight,
                DEFAULT_MAX_BODY_BYTES_IN_FLIGHT,
            ),
            max_unauthenticated_body_bytes,
            unauthenticated_body_timeout,
            max_open_sockets: raw
                .max_open_sockets
                .map(|value| self.positive("http.max_open_sockets", Some(value), 1)),
            reserved_files: self.count(
                "http.reserved_files",
                raw.reserved_files,
                DEFAULT_RESERVED_FILES,
            ),
            refusal_sockets: self.positive(
                "http.refusal_sockets",
                raw.refusal_sockets,
                DEFAULT_REFUSAL_SOCKETS,
            ),
        }
    }
}
