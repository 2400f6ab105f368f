//! Every API refusal's status, error code, `Retry-After` and `Connection: close`.

use std::time::Duration;

use http::header;

use super::ApiError;
use crate::listener::body::BodyError;
use crate::plugins::PluginLimit;
use crate::plugins::compile::CompileError;

fn body(error: BodyError) -> ApiError {
    ApiError::Body {
        error,
        too_large: "too large",
        timeout: Duration::from_secs(10),
    }
}

fn compile(error: CompileError) -> ApiError {
    ApiError::Compile {
        error,
        message: "greeter: it failed".to_owned(),
    }
}

#[test]
fn each_refusal_answers_as_the_protocol_says() {
    let cases: Vec<(ApiError, u16, &str, Option<&str>)> = vec![
        (
            ApiError::BadRequest("x".to_owned()),
            400,
            "bad_request",
            None,
        ),
        (ApiError::NoSuchPath, 404, "not_found", None),
        (ApiError::UnknownTenant, 404, "not_found", None),
        (
            ApiError::Unauthorized { closing: false },
            401,
            "unauthorized",
            None,
        ),
        (ApiError::PayloadTooLarge, 413, "payload_too_large", None),
        (body(BodyError::TooLarge), 413, "payload_too_large", None),
        (body(BodyError::Timeout), 408, "request_timeout", None),
        (body(BodyError::Busy), 503, "unavailable", Some("1")),
        (body(BodyError::Incomplete), 400, "bad_request", None),
        (
            ApiError::MethodNotAllowed("GET"),
            405,
            "method_not_allowed",
            None,
        ),
        (
            ApiError::PluginLimit(PluginLimit::TenantCount(16)),
            409,
            "plugin_limit",
            None,
        ),
        (
            compile(CompileError::TenantBusy(1)),
            429,
            "compile_busy",
            Some("1"),
        ),
        (
            compile(CompileError::NodeBusy(2)),
            503,
            "compile_busy",
            Some("5"),
        ),
        (
            compile(CompileError::WaitTimeout(Duration::from_secs(30))),
            503,
            "compile_busy",
            Some("5"),
        ),
        (
            compile(CompileError::ShuttingDown),
            503,
            "draining",
            Some("5"),
        ),
        (compile(CompileError::Superseded), 409, "superseded", None),
        (
            compile(CompileError::TimeLimit(Duration::from_secs(60))),
            422,
            "compile_time_limit",
            None,
        ),
        (
            compile(CompileError::MemoryLimit(1 << 29)),
            422,
            "compile_memory_limit",
            None,
        ),
        (
            compile(CompileError::Invalid("bad".to_owned())),
            422,
            "invalid_plugin",
            None,
        ),
        (
            ApiError::InvalidPlugin("bad".to_owned()),
            422,
            "invalid_plugin",
            None,
        ),
        (ApiError::Conflict("both".to_owned()), 409, "conflict", None),
        (
            ApiError::Unavailable("down".to_owned()),
            503,
            "unavailable",
            None,
        ),
    ];
    for (error, status, code, retry_after) in cases {
        let response = error.response();
        assert_eq!(response.status().as_u16(), status, "{error:?}");
        assert_eq!(error.status().as_u16(), status, "{error:?}");
        assert_eq!(error.error_code(), code, "{error:?}");
        assert_eq!(
            response
                .headers()
                .get(header::RETRY_AFTER)
                .map(|value| value.to_str().expect("ASCII")),
            retry_after,
            "{error:?}"
        );
    }
}

#[test]
fn a_refusal_that_leaves_the_body_unread_closes_the_connection() {
    let closes = |error: ApiError| {
        error
            .response()
            .headers()
            .get(header::CONNECTION)
            .is_some_and(|value| value == "close")
    };
    assert!(closes(ApiError::Unauthorized { closing: true }));
    assert!(!closes(ApiError::Unauthorized { closing: false }));
    assert!(closes(body(BodyError::TooLarge)));
    assert!(!closes(ApiError::UnknownTenant));
}

#[test]
fn the_compile_message_names_the_plugin() {
    assert_eq!(
        compile(CompileError::Superseded).to_string(),
        "greeter: it failed"
    );
}
