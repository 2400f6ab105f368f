//! Why a WebSocket upgrade is refused: one type that knows, for each refusal, its HTTP status,
//! error code, message, metric label and `Retry-After` (docs/protocol.md, "Handshake").

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::Full;

use crate::auth::AuthError;
use crate::listener::response::json_error;

/// A refused upgrade, in the order the checks run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The path names no configured tenant.
    #[error("unknown tenant")]
    UnknownTenant,
    /// A plain request (no `Upgrade: websocket`) on a WebSocket path.
    #[error("this path takes a WebSocket upgrade")]
    NotUpgrade,
    /// `Sec-WebSocket-Version` is not 13.
    #[error("only WebSocket version 13 is supported")]
    BadVersion,
    /// No `Sec-WebSocket-Key`.
    #[error("missing Sec-WebSocket-Key")]
    MissingKey,
    /// A `Sec-WebSocket-Key` that is not 16 bytes in base64.
    #[error("Sec-WebSocket-Key must be the base64 encoding of 16 bytes")]
    BadKey,
    /// The node is draining.
    #[error("server shutting down")]
    Draining,
    /// The node's socket budget is spent (the descriptor limit).
    #[error("node at its open socket capacity")]
    SocketsFull,
    /// The node is at `max_connections`.
    #[error("node at its connection limit")]
    NodeFull,
    /// The origin is not allowed or the token does not verify.
    #[error(transparent)]
    Auth(AuthError),
    /// The tenant is at its `limits.max_connections`.
    #[error("tenant at its connection limit")]
    TenantFull,
}

impl Refusal {
    /// The HTTP status of the answer.
    pub fn status(&self) -> StatusCode {
        match self {
            Refusal::UnknownTenant => StatusCode::NOT_FOUND,
            Refusal::NotUpgrade | Refusal::BadVersion => StatusCode::UPGRADE_REQUIRED,
            Refusal::MissingKey | Refusal::BadKey => StatusCode::BAD_REQUEST,
            Refusal::Draining | Refusal::SocketsFull | Refusal::NodeFull | Refusal::TenantFull => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Refusal::Auth(AuthError::OriginNotAllowed) => StatusCode::FORBIDDEN,
            Refusal::Auth(_) => StatusCode::UNAUTHORIZED,
        }
    }

    /// The `error` field of the JSON body.
    pub fn error_code(&self) -> &'static str {
        match self.status() {
            StatusCode::NOT_FOUND => "not_found",
            StatusCode::UPGRADE_REQUIRED => "upgrade_required",
            StatusCode::BAD_REQUEST => "bad_request",
            StatusCode::FORBIDDEN => "forbidden",
            StatusCode::UNAUTHORIZED => "unauthorized",
            _ => "unavailable",
        }
    }

    /// The `reason` label of `switchboard_handshake_rejections_total`.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Refusal::UnknownTenant => "unknown_tenant",
            Refusal::NotUpgrade => "not_upgrade",
            Refusal::BadVersion => "bad_version",
            Refusal::MissingKey | Refusal::BadKey => "bad_key",
            Refusal::Draining => "draining",
            Refusal::SocketsFull => "socket_capacity",
            Refusal::NodeFull => "node_full",
            Refusal::Auth(error) => error.label(),
            Refusal::TenantFull => "tenant_full",
        }
    }

    /// Seconds a client should wait before it tries again; `None` when trying again as it is
    /// cannot help.
    pub fn retry_after_secs(&self) -> Option<u32> {
        match self {
            // A drain ends with the process; its replacement takes a few seconds to start.
            Refusal::Draining => Some(5),
            Refusal::SocketsFull | Refusal::NodeFull | Refusal::TenantFull => Some(1),
            _ => None,
        }
    }

    /// The answer: the status, the JSON error body, `Retry-After`, and the headers that tell
    /// the client what the upgrade needs.
    pub fn response(&self) -> Response<Full<Bytes>> {
        let mut response = json_error(self.status(), self.error_code(), &self.to_string());
        let headers = response.headers_mut();
        if let Some(seconds) = self.retry_after_secs() {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        match self {
            Refusal::NotUpgrade => {
                headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
            }
            Refusal::BadVersion => {
                headers.insert(
                    header::SEC_WEBSOCKET_VERSION,
                    HeaderValue::from_static("13"),
                );
            }
            _ => {}
        }
        response
    }
}

#[cfg(test)]
mod tests;
