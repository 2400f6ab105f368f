//! Why the HTTP API refuses a request: one type that knows, for each refusal, its HTTP status,
//! error code, message and `Retry-After` (docs/protocol.md, "Publish API" and "Plugin API").

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::Full;

use crate::listener::body::{BodyError, closing};
use crate::listener::response::json_error;
use crate::plugins::PluginLimit;
use crate::plugins::compile::CompileError;

/// A refused API request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    /// The body or a field of it is malformed.
    #[error("{0}")]
    BadRequest(String),
    /// The path is not one of the API's.
    #[error("no such path")]
    NoSuchPath,
    /// The request names no configured tenant.
    #[error("unknown tenant")]
    UnknownTenant,
    /// The tenant has no plugin of that name.
    #[error("the tenant has no plugin `{0}`")]
    UnknownPlugin(String),
    /// The plugin's kept history has no such version.
    #[error("{0}")]
    UnknownVersion(String),
    /// No API key, or not this tenant's. `closing` when the body was left unread, so the
    /// connection cannot carry another request.
    #[error("missing or wrong API key for this tenant")]
    Unauthorized { closing: bool },
    /// The tenant API without the operator's key (`admin.api_key`; none configured: the
    /// tenant API is off).
    #[error("missing or wrong operator key (admin.api_key)")]
    NotOperator,
    /// Tenant settings that are not valid; the message names each field.
    #[error("{0}")]
    InvalidTenant(String),
    /// A published payload over the tenant's `limits.max_message_bytes`.
    #[error("the payload is over the tenant's message size limit")]
    PayloadTooLarge,
    /// The body could not be read within its bounds.
    #[error("{error}")]
    Body {
        error: BodyError,
        /// The message of a 413.
        too_large: &'static str,
        /// The time the body had, for the message of a 408.
        timeout: Duration,
    },
    /// Another method on an API path; the message names the ones it takes.
    #[error("{0}")]
    MethodNotAllowed(&'static str),
    /// The upload would pass a bound on the plugins held.
    #[error("{0}")]
    PluginLimit(PluginLimit),
    /// The upload's compile did not produce a build; `message` names the plugin.
    #[error("{message}")]
    Compile {
        error: CompileError,
        message: String,
    },
    /// The upload is not a plugin this node can load.
    #[error("{0}")]
    InvalidPlugin(String),
    /// The upload clashes with another plugin of the tenant (a message type both handle).
    #[error("{0}")]
    Conflict(String),
    /// The backplane could not take the message.
    #[error("{0}")]
    Unavailable(String),
}

impl ApiError {
    /// The HTTP status of the answer.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::NoSuchPath
            | ApiError::UnknownTenant
            | ApiError::UnknownPlugin(_)
            | ApiError::UnknownVersion(_) => StatusCode::NOT_FOUND,
            ApiError::Unauthorized { .. } | ApiError::NotOperator => StatusCode::UNAUTHORIZED,
            ApiError::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::InvalidTenant(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::Body { error, .. } => match error {
                BodyError::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
                BodyError::Timeout => StatusCode::REQUEST_TIMEOUT,
                BodyError::Busy => StatusCode::SERVICE_UNAVAILABLE,
                BodyError::Incomplete => StatusCode::BAD_REQUEST,
            },
            ApiError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::PluginLimit(_) | ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::Compile { error, .. } => match error {
                CompileError::TenantBusy(_) => StatusCode::TOO_MANY_REQUESTS,
                CompileError::NodeBusy(_)
                | CompileError::WaitTimeout(_)
                | CompileError::ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
                CompileError::Superseded => StatusCode::CONFLICT,
                CompileError::TimeLimit(_)
                | CompileError::MemoryLimit(_)
                | CompileError::Invalid(_)
                | CompileError::Crashed(_) => StatusCode::UNPROCESSABLE_ENTITY,
                CompileError::Worker { .. } => StatusCode::INTERNAL_SERVER_ERROR,
            },
            ApiError::InvalidPlugin(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The `error` field of the JSON body.
    pub fn error_code(&self) -> &'static str {
        match self {
            ApiError::BadRequest(_) => "bad_request",
            ApiError::NoSuchPath
            | ApiError::UnknownTenant
            | ApiError::UnknownPlugin(_)
            | ApiError::UnknownVersion(_) => "not_found",
            ApiError::Unauthorized { .. } | ApiError::NotOperator => "unauthorized",
            ApiError::PayloadTooLarge => "payload_too_large",
            ApiError::InvalidTenant(_) => "invalid_tenant",
            ApiError::Body { error, .. } => match error {
                BodyError::TooLarge => "payload_too_large",
                BodyError::Timeout => "request_timeout",
                BodyError::Busy => "unavailable",
                BodyError::Incomplete => "bad_request",
            },
            ApiError::MethodNotAllowed(_) => "method_not_allowed",
            ApiError::PluginLimit(_) => "plugin_limit",
            ApiError::Compile { error, .. } => match error {
                CompileError::TenantBusy(_)
                | CompileError::NodeBusy(_)
                | CompileError::WaitTimeout(_) => "compile_busy",
                CompileError::ShuttingDown => "draining",
                CompileError::Superseded => "superseded",
                CompileError::TimeLimit(_) => "compile_time_limit",
                CompileError::MemoryLimit(_) => "compile_memory_limit",
                CompileError::Invalid(_) | CompileError::Crashed(_) => "invalid_plugin",
                CompileError::Worker { .. } => "internal",
            },
            ApiError::InvalidPlugin(_) => "invalid_plugin",
            ApiError::Conflict(_) => "conflict",
            ApiError::Unavailable(_) => "unavailable",
        }
    }

    /// Seconds a client should wait before it tries again, when waiting can help.
    pub fn retry_after_secs(&self) -> Option<u32> {
        match self {
            ApiError::Body {
                error: BodyError::Busy,
                ..
            }
            | ApiError::Compile {
                error: CompileError::TenantBusy(_),
                ..
            } => Some(1),
            ApiError::Compile {
                error:
                    CompileError::NodeBusy(_)
                    | CompileError::WaitTimeout(_)
                    | CompileError::ShuttingDown,
                ..
            } => Some(5),
            _ => None,
        }
    }

    /// The answer: status, JSON error body, `Retry-After`, and `Connection: close` where the
    /// request's body was not read to its end.
    pub fn response(&self) -> Response<Full<Bytes>> {
        if let ApiError::Body {
            error,
            too_large,
            timeout,
        } = self
        {
            return error.response(too_large, *timeout);
        }
        let mut response = json_error(self.status(), self.error_code(), &self.to_string());
        if let Some(seconds) = self.retry_after_secs() {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        match self {
            // The tenant API reads no body before it knows the operator.
            ApiError::Unauthorized { closing: true } | ApiError::NotOperator => closing(response),
            _ => response,
        }
    }
}

#[cfg(test)]
mod tests;
