//! The upgrade check: path `/ws`, the token from `Authorization: Bearer`, `?token=` or a
//! `bearer.<jwt>` subprotocol entry (the first present source decides), an HS256 signature and
//! `exp`; `switchboard.v1` is selected when offered. Anything else is a JSON HTTP error.

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::{HeaderValue, StatusCode};

/// Checks HS256 tokens against one secret.
pub struct Verifier {
    key: DecodingKey,
    validation: Validation,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier").finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
struct Claims {
    sub: String,
}

impl Verifier {
    /// A verifier for tokens signed with `secret`; 5 s of leeway on `exp` and `nbf`.
    pub fn new(secret: &str) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 5;
        validation.validate_nbf = true;
        validation.set_required_spec_claims(&["exp", "sub"]);
        Verifier {
            key: DecodingKey::from_secret(secret.as_bytes()),
            validation,
        }
    }

    /// The token's `sub`, if the token is valid.
    fn user(&self, token: &str) -> Option<String> {
        let data = jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation).ok()?;
        Some(data.claims.sub).filter(|sub| !sub.is_empty())
    }
}

/// The first present token source.
fn token(request: &Request) -> Option<String> {
    let headers = request.headers();
    if let Some(value) = headers.get("authorization").and_then(|v| v.to_str().ok())
        && let Some((scheme, token)) = value.split_once(' ')
        && scheme.eq_ignore_ascii_case("bearer")
        && !token.trim().is_empty()
    {
        return Some(token.trim().to_owned());
    }
    let query = request.uri().query().unwrap_or("");
    if let Some((_, token)) = form_urlencoded::parse(query.as_bytes())
        .find(|(key, value)| key == "token" && !value.is_empty())
    {
        return Some(token.into_owned());
    }
    headers
        .get_all("sec-websocket-protocol")
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .filter_map(|entry| entry.trim().strip_prefix("bearer."))
        .find(|token| !token.is_empty())
        .map(str::to_owned)
}

fn offers_v1(request: &Request) -> bool {
    request
        .headers()
        .get_all("sec-websocket-protocol")
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|entry| entry.trim() == "switchboard.v1")
}

fn refuse(status: StatusCode, error: &str, message: &str) -> ErrorResponse {
    let body = serde_json::json!({"error": error, "message": message}).to_string();
    let mut response = ErrorResponse::new(Some(body));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert("content-type", HeaderValue::from_static("application/json"));
    response
}

/// The handshake callback: accepts the upgrade and stores the user id in `user`, or refuses.
#[allow(
    clippy::result_large_err,
    reason = "tungstenite's handshake callback fixes the error type"
)]
pub fn check(
    verifier: &Verifier,
    request: &Request,
    mut response: Response,
    user: &mut Option<String>,
) -> Result<Response, ErrorResponse> {
    if request.uri().path() != "/ws" {
        return Err(refuse(StatusCode::NOT_FOUND, "not_found", "no such path"));
    }
    let Some(token) = token(request) else {
        return Err(refuse(StatusCode::UNAUTHORIZED, "unauthorized", "no token"));
    };
    let Some(sub) = verifier.user(&token) else {
        return Err(refuse(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "invalid token",
        ));
    };
    if offers_v1(request) {
        response.headers_mut().insert(
            "sec-websocket-protocol",
            HeaderValue::from_static("switchboard.v1"),
        );
    }
    *user = Some(sub);
    Ok(response)
}
