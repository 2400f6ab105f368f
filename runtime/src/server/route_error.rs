//! Why a request that is not an upgrade or an API call is refused by the router itself: one
//! type that knows, for each refusal, its HTTP status, error code, message and `Retry-After`
//! (upgrades have `refusal.rs`, the HTTP API `admin/error.rs`).

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::Full;

use crate::listener::response::json_error;

/// A request the router answers with an error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    /// The request target is longer than `http.max_uri_bytes` (the number).
    #[error("the request target is over {0} bytes")]
    UriTooLong(usize),
    /// `/readyz` while the node drains.
    #[error("draining")]
    Draining,
    /// `/readyz` while the backplane is not ready.
    #[error("backplane not ready")]
    BackplaneNotReady,
    /// A method the path does not take (`/api/publish` takes `POST`).
    #[error("use POST")]
    MethodNotAllowed,
    /// No route has this path.
    #[error("no such path")]
    NotFound,
    /// Any other path while the socket budget is spent (answered from the refusal reserve).
    #[error("node at its open socket capacity")]
    SocketsFull,
}

impl RouteError {
    /// The HTTP status of the answer.
    pub fn status(&self) -> StatusCode {
        match self {
            RouteError::UriTooLong(_) => StatusCode::URI_TOO_LONG,
            RouteError::Draining | RouteError::BackplaneNotReady | RouteError::SocketsFull => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            RouteError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            RouteError::NotFound => StatusCode::NOT_FOUND,
        }
    }

    /// The `error` field of the JSON body.
    pub fn error_code(&self) -> &'static str {
        match self {
            RouteError::UriTooLong(_) => "uri_too_long",
            RouteError::Draining | RouteError::BackplaneNotReady => "not_ready",
            RouteError::MethodNotAllowed => "method_not_allowed",
            RouteError::NotFound => "not_found",
            RouteError::SocketsFull => "unavailable",
        }
    }

    /// Seconds a client (or a load balancer's health check) should wait before it tries
    /// again; `None` when trying again as it is cannot help.
    pub fn retry_after_secs(&self) -> Option<u32> {
        match self {
            RouteError::Draining | RouteError::BackplaneNotReady => Some(5),
            RouteError::SocketsFull => Some(1),
            _ => None,
        }
    }

    /// The answer: the status, the JSON error body and `Retry-After`.
    pub fn response(&self) -> Response<Full<Bytes>> {
        let mut response = json_error(self.status(), self.error_code(), &self.to_string());
        if let Some(seconds) = self.retry_after_secs() {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

#[cfg(test)]
mod tests;
