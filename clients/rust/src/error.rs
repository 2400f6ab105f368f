//! `ClientError`: every way a client call or a connection can fail.

use thiserror::Error;

/// Why a client call failed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ClientError {
    /// The server answered the request with an `error` envelope.
    #[error("the server answered `{code}`: {message}")]
    Server {
        /// The error code, e.g. `unknown_type`, `forbidden`, `not_member`.
        code: String,
        /// The server's explanation.
        message: String,
    },
    /// No reply arrived within the request's timeout.
    #[error("no reply in time")]
    Timeout,
    /// The connection dropped (or was not open) before the reply; the client may be
    /// reconnecting, and whether the server acted on the request is unknown.
    #[error("not connected (the client is reconnecting)")]
    Disconnected,
    /// The client is closed for good (by `close`, by the server, or after giving up).
    #[error("the client is closed")]
    Closed,
    /// The server refused the upgrade with 401, 403 or 404: the token, the origin or the
    /// tenant is wrong. Never retried.
    #[error("the server refused the connection with HTTP {status} ({error}): {message}")]
    Auth {
        /// The HTTP status.
        status: u16,
        /// The `error` field of the refusal's body.
        error: String,
        /// The `message` field of the refusal's body.
        message: String,
    },
    /// An attempt to connect failed (network, handshake, another HTTP status, no `welcome`);
    /// this is what `connect` returns when reconnecting is off or out of attempts.
    #[error("connecting failed: {0}")]
    Connect(String),
    /// The server's TLS certificate was refused (expired, for another name, signed by an
    /// authority the client does not trust). Never retried: a reconnect would meet the same
    /// certificate.
    #[error("{0}")]
    Certificate(String),
    /// The token source failed.
    #[error("the token source failed: {0}")]
    Token(String),
    /// The configuration cannot work (e.g. the URL does not parse). Never retried.
    #[error("invalid configuration: {0}")]
    Config(String),
}

impl ClientError {
    /// Whether retrying cannot help, so the client stops instead of reconnecting.
    pub(crate) fn is_fatal(&self) -> bool {
        matches!(
            self,
            ClientError::Auth { .. } | ClientError::Certificate(_) | ClientError::Config(_)
        )
    }
}
