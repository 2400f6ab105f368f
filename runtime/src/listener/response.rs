//! HTTP responses of the server: every error carries the JSON body `{"error", "message"}`.

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::Full;

use crate::protocol::http_error_body;

/// A JSON response with the given body.
pub fn json_ok(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// An error response with the JSON error body.
pub fn json_error(status: StatusCode, error: &str, message: &str) -> Response<Full<Bytes>> {
    json_ok(status, http_error_body(error, message))
}

/// A 503 with `Retry-After` (seconds).
pub fn unavailable(message: &str, retry_after_secs: u32) -> Response<Full<Bytes>> {
    let mut response = json_error(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message);
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(retry_after_secs));
    response
}
