//! Every refusal's status, error code, metric label, `Retry-After` and extra header.

use http::{StatusCode, header};

use super::Refusal;
use crate::auth::AuthError;

#[test]
fn each_refusal_answers_as_the_protocol_says() {
    let cases: [(Refusal, u16, &str, &str, Option<&str>); 11] = [
        (
            Refusal::UnknownTenant,
            404,
            "not_found",
            "unknown_tenant",
            None,
        ),
        (
            Refusal::NotUpgrade,
            426,
            "upgrade_required",
            "not_upgrade",
            None,
        ),
        (
            Refusal::BadVersion,
            426,
            "upgrade_required",
            "bad_version",
            None,
        ),
        (Refusal::MissingKey, 400, "bad_request", "bad_key", None),
        (Refusal::BadKey, 400, "bad_request", "bad_key", None),
        (Refusal::Draining, 503, "unavailable", "draining", Some("5")),
        (
            Refusal::SocketsFull,
            503,
            "unavailable",
            "socket_capacity",
            Some("1"),
        ),
        (
            Refusal::NodeFull,
            503,
            "unavailable",
            "node_full",
            Some("1"),
        ),
        (
            Refusal::Auth(AuthError::OriginNotAllowed),
            403,
            "forbidden",
            "origin",
            None,
        ),
        (
            Refusal::Auth(AuthError::Expired),
            401,
            "unauthorized",
            "token_expired",
            None,
        ),
        (
            Refusal::TenantFull,
            503,
            "unavailable",
            "tenant_full",
            Some("1"),
        ),
    ];
    for (refusal, status, code, label, retry_after) in cases {
        let response = refusal.response();
        assert_eq!(
            response.status(),
            StatusCode::from_u16(status).expect("a status"),
            "{refusal:?}"
        );
        assert_eq!(refusal.error_code(), code, "{refusal:?}");
        assert_eq!(refusal.metric_label(), label, "{refusal:?}");
        assert_eq!(
            response
                .headers()
                .get(header::RETRY_AFTER)
                .map(|value| value.to_str().expect("ASCII")),
            retry_after,
            "{refusal:?}"
        );
        assert_eq!(
            response.headers()[header::CONTENT_TYPE],
            "application/json",
            "{refusal:?}"
        );
    }
}

#[test]
fn upgrade_refusals_say_what_the_upgrade_needs() {
    assert_eq!(
        Refusal::NotUpgrade.response().headers()[header::UPGRADE],
        "websocket"
    );
    assert_eq!(
        Refusal::BadVersion.response().headers()[header::SEC_WEBSOCKET_VERSION],
        "13"
    );
    assert!(
        !Refusal::BadKey
            .response()
            .headers()
            .contains_key(header::SEC_WEBSOCKET_VERSION)
    );
}

#[test]
fn the_message_is_the_auth_errors_own() {
    assert_eq!(
        Refusal::Auth(AuthError::BadClaim("sub".to_owned())).to_string(),
        "claim `sub` missing or invalid"
    );
    assert_eq!(
        Refusal::TenantFull.to_string(),
        "tenant at its connection limit"
    );
}
