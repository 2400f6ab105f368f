//! Every router refusal: its status, error code, message and `Retry-After`, in one table.

use http::StatusCode;
use http_body_util::BodyExt as _;

use super::RouteError;

#[tokio::test]
async fn every_route_error_answers_as_documented() {
    let cases = [
        (
            RouteError::UriTooLong(8192),
            StatusCode::URI_TOO_LONG,
            "uri_too_long",
            "the request target is over 8192 bytes",
            None,
        ),
        (
            RouteError::Draining,
            StatusCode::SERVICE_UNAVAILABLE,
            "not_ready",
            "draining",
            Some("5"),
        ),
        (
            RouteError::BackplaneNotReady,
            StatusCode::SERVICE_UNAVAILABLE,
            "not_ready",
            "backplane not ready",
            Some("5"),
        ),
        (
            RouteError::MethodNotAllowed,
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "use POST",
            None,
        ),
        (
            RouteError::NotFound,
            StatusCode::NOT_FOUND,
            "not_found",
            "no such path",
            None,
        ),
        (
            RouteError::SocketsFull,
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "node at its open socket capacity",
            Some("1"),
        ),
    ];
    for (error, status, code, message, retry_after) in cases {
        let response = error.response();
        assert_eq!(response.status(), status, "{error:?}");
        assert_eq!(
            response
                .headers()
                .get(http::header::RETRY_AFTER)
                .map(|value| value.to_str().expect("ascii")),
            retry_after,
            "{error:?}"
        );
        assert_eq!(
            response.headers().get(http::header::CONTENT_TYPE),
            Some(&http::HeaderValue::from_static("application/json")),
            "{error:?}"
        );
        let body = response
            .into_body()
            .collect()
            .await
            .expect("a full body")
            .to_bytes();
        let body: serde_json::Value = serde_json::from_slice(&body).expect("JSON");
        assert_eq!(body["error"], code, "{error:?}");
        assert_eq!(body["message"], message, "{error:?}");
    }
}
