//! Per-tenant token verification and origin policy. Pure: no sockets, no HTTP types; it runs
//! before the 101 is sent.

use std::time::Duration;

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation, errors::ErrorKind};
use serde_json::{Map, Value};

use crate::config::{JwtConfig, JwtKey};

/// The verified identity of a connection.
#[derive(Debug, Clone, PartialEq)]
pub struct Claims {
    /// The JWT `sub`.
    pub user_id: String,
    /// Every claim of the token, for plugins.
    pub all: Map<String, Value>,
}

impl Claims {
    /// Every claim as one JSON object, as plugins receive it (`conn-info.claims-json`): the
    /// token's own payload, not a frame of the wire protocol.
    pub fn to_json(&self) -> String {
        // A map of JSON values always serialises.
        serde_json::to_string(&self.all).unwrap_or_else(|_| "{}".to_owned())
    }
}

/// Why a token or an origin was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No token in any of the three places.
    #[error(
        "no token: send `Authorization: Bearer <jwt>`, `?token=` or a `bearer.<jwt>` subprotocol"
    )]
    MissingToken,
    /// Not a JWT, or a header that does not parse (including `alg: none`).
    #[error("malformed token")]
    Malformed,
    /// The signature does not verify.
    #[error("bad signature")]
    BadSignature,
    /// The token's algorithm is not accepted for this tenant's key.
    #[error("algorithm not accepted")]
    WrongAlgorithm,
    /// No key in the JWKS matches the token's `kid`.
    #[error("no key matches the token")]
    UnknownKey,
    /// `exp` has passed.
    #[error("token expired")]
    Expired,
    /// `nbf` is in the future.
    #[error("token not yet valid")]
    NotYetValid,
    /// `iss` differs from the tenant's.
    #[error("wrong issuer")]
    WrongIssuer,
    /// `aud` differs from the tenant's.
    #[error("wrong audience")]
    WrongAudience,
    /// A required claim is missing or has the wrong type.
    #[error("claim `{0}` missing or invalid")]
    BadClaim(String),
    /// The `Origin` header is not in the tenant's allow-list.
    #[error("origin not allowed")]
    OriginNotAllowed,
}

impl AuthError {
    /// The reason label used in metrics and logs.
    pub fn label(&self) -> &'static str {
        match self {
            AuthError::MissingToken => "token_missing",
            AuthError::Malformed => "token_malformed",
            AuthError::BadSignature => "token_bad_signature",
            AuthError::WrongAlgorithm => "token_wrong_algorithm",
            AuthError::UnknownKey => "token_unknown_key",
            AuthError::Expired => "token_expired",
            AuthError::NotYetValid => "token_not_yet_valid",
            AuthError::WrongIssuer => "token_wrong_issuer",
            AuthError::WrongAudience => "token_wrong_audience",
            AuthError::BadClaim(_) => "token_bad_claim",
            AuthError::OriginNotAllowed => "origin",
        }
    }
}

/// A problem with a tenant's key material, found at startup.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct KeyError(String);

enum Keys {
    /// One key for every token.
    Single(DecodingKey),
    /// A JWKS: the token's `kid` picks the key; a set of one needs no `kid`.
    Set(Vec<(Option<String>, DecodingKey, Option<Algorithm>)>),
}

/// Verifies tokens for one tenant.
pub struct TokenVerifier {
    keys: Keys,
    validation: Validation,
}

impl std::fmt::Debug for TokenVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenVerifier")
            .field("algorithms", &self.validation.algorithms)
            .finish_non_exhaustive()
    }
}

fn parse_algorithm(name: &str) -> Result<Algorithm, KeyError> {
    name.parse()
        .map_err(|_| KeyError(format!("unknown algorithm `{name}`")))
}

fn seconds_rounded_up(duration: Duration) -> u64 {
    duration.as_secs() + u64::from(duration.subsec_nanos() > 0)
}

impl TokenVerifier {
    /// Builds a verifier from a tenant's JWT settings; the error says what is wrong with the key.
    pub fn new(config: &JwtConfig) -> Result<Self, KeyError> {
        let configured = config
            .algorithms
            .iter()
            .map(|name| parse_algorithm(name))
            .collect::<Result<Vec<_>, _>>()?;
        let (keys, family_algorithms) = match &config.key {
            JwtKey::Secret(secret) => (
                Keys::Single(DecodingKey::from_secret(secret)),
                vec![Algorithm::HS256, Algorithm::HS384, Algorithm::HS512],
            ),
            JwtKey::PublicKeyPem { path, pem } => {
                let (key, family) = decoding_key_from_pem(pem).ok_or_else(|| {
                    KeyError(format!(
                        "{}: not an RSA, EC (P-256/P-384) or Ed25519 public key in PEM",
                        path.display()
                    ))
                })?;
                (Keys::Single(key), family)
            }
            JwtKey::Jwks { path, json } => {
                let set: JwkSet = serde_json::from_str(json).map_err(|error| {
                    KeyError(format!("{}: not a JWKS: {error}", path.display()))
                })?;
                if set.keys.is_empty() {
                    return Err(KeyError(format!(
                        "{}: the JWKS has no keys",
                        path.display()
                    )));
                }
                let mut keys = Vec::with_capacity(set.keys.len());
                for (index, jwk) in set.keys.iter().enumerate() {
                    let key = DecodingKey::from_jwk(jwk).map_err(|error| {
                        KeyError(format!("{}: keys[{index}]: {error}", path.display()))
                    })?;
                    let algorithm = jwk
                        .common
                        .key_algorithm
                        .and_then(|algorithm| algorithm.to_string().parse().ok());
                    keys.push((jwk.common.key_id.clone(), key, algorithm));
                }
                (
                    Keys::Set(keys),
                    vec![
                        Algorithm::RS256,
                        Algorithm::RS384,
                        Algorithm::RS512,
                        Algorithm::ES256,
                        Algorithm::ES384,
                        Algorithm::EdDSA,
                    ],
                )
            }
        };
        let algorithms: Vec<Algorithm> = configured
            .into_iter()
            .filter(|algorithm| family_algorithms.contains(algorithm))
            .collect();
        if algorithms.is_empty() {
            return Err(KeyError(
                "none of the configured algorithms fits the key".to_owned(),
            ));
        }
        let mut validation = Validation::new(algorithms[0]);
        validation.algorithms = algorithms;
        validation.leeway = seconds_rounded_up(config.leeway);
        validation.validate_exp = true;
        validation.validate_nbf = true;
        let mut required = vec!["exp", "sub"];
        match &config.issuer {
            Some(issuer) => {
                validation.set_issuer(&[issuer]);
                required.push("iss");
            }
            None => validation.iss = None,
        }
        match &config.audience {
            Some(audience) => {
                validation.set_audience(&[audience]);
                required.push("aud");
            }
            // Without a configured audience a token's `aud` is not checked.
            None => validation.validate_aud = false,
        }
        validation.set_required_spec_claims(&required);
        Ok(TokenVerifier { keys, validation })
    }

    /// Verifies a token and returns its claims.
    pub fn verify(&self, token: &str) -> Result<Claims, AuthError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| AuthError::Malformed)?;
        if !self.validation.algorithms.contains(&header.alg) {
            return Err(AuthError::WrongAlgorithm);
        }
        let key = match &self.keys {
            Keys::Single(key) => key,
            Keys::Set(keys) => select_jwk(keys, header.kid.as_deref(), header.alg)?,
        };
        // Only the algorithms of the chosen key's family may be passed to `decode`.
        let mut validation = self.validation.clone();
        validation
            .algorithms
            .retain(|algorithm| algorithm.family() == key.family());
        if !validation.algorithms.contains(&header.alg) {
            return Err(AuthError::WrongAlgorithm);
        }
        let data = jsonwebtoken::decode::<Map<String, Value>>(token, key, &validation)
            .map_err(|error| map_error(error.kind()))?;
        let user_id = match data.claims.get("sub") {
            Some(Value::String(sub)) if !sub.is_empty() => sub.clone(),
            _ => return Err(AuthError::BadClaim("sub".to_owned())),
        };
        Ok(Claims {
            user_id,
            all: data.claims,
        })
    }
}

fn select_jwk<'k>(
    keys: &'k [(Option<String>, DecodingKey, Option<Algorithm>)],
    kid: Option<&str>,
    algorithm: Algorithm,
) -> Result<&'k DecodingKey, AuthError> {
    let found = match kid {
        Some(kid) => keys
            .iter()
            .find(|(key_id, _, _)| key_id.as_deref() == Some(kid)),
        None if keys.len() == 1 => keys.first(),
        None => None,
    };
    let (_, key, key_algorithm) = found.ok_or(AuthError::UnknownKey)?;
    if key_algorithm.is_some_and(|expected| expected != algorithm) {
        return Err(AuthError::WrongAlgorithm);
    }
    Ok(key)
}

fn decoding_key_from_pem(pem: &[u8]) -> Option<(DecodingKey, Vec<Algorithm>)> {
    if let Ok(key) = DecodingKey::from_rsa_pem(pem) {
        return Some((
            key,
            vec![Algorithm::RS256, Algorithm::RS384, Algorithm::RS512],
        ));
    }
    if let Ok(key) = DecodingKey::from_ec_pem(pem) {
        return Some((key, vec![Algorithm::ES256, Algorithm::ES384]));
    }
    if let Ok(key) = DecodingKey::from_ed_pem(pem) {
        return Some((key, vec![Algorithm::EdDSA]));
    }
    None
}

fn map_error(kind: &ErrorKind) -> AuthError {
    match kind {
        ErrorKind::InvalidSignature => AuthError::BadSignature,
        ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => AuthError::WrongAlgorithm,
        ErrorKind::ExpiredSignature => AuthError::Expired,
        ErrorKind::ImmatureSignature => AuthError::NotYetValid,
        ErrorKind::InvalidIssuer => AuthError::WrongIssuer,
        ErrorKind::InvalidAudience => AuthError::WrongAudience,
        ErrorKind::MissingRequiredClaim(claim) | ErrorKind::InvalidClaimFormat(claim) => {
            AuthError::BadClaim(claim.clone())
        }
        _ => AuthError::Malformed,
    }
}

/// Which `Origin` values a tenant accepts.
#[derive(Debug, Clone)]
pub struct OriginPolicy {
    allowed: Vec<String>,
}

impl OriginPolicy {
    /// An empty list accepts any origin.
    pub fn new(allowed: &[String]) -> Self {
        OriginPolicy {
            allowed: allowed
                .iter()
                .map(|origin| origin.to_ascii_lowercase())
                .collect(),
        }
    }

    /// A request without `Origin` (not a browser) is accepted; with an allow-list, `null` never is.
    pub fn check(&self, origin: Option<&str>) -> Result<(), AuthError> {
        let Some(origin) = origin else {
            return Ok(());
        };
        if self.allowed.is_empty()
            || (origin != "null"
                && self
                    .allowed
                    .iter()
                    .any(|allowed| allowed.eq_ignore_ascii_case(origin)))
        {
            Ok(())
        } else {
            Err(AuthError::OriginNotAllowed)
        }
    }
}

#[cfg(test)]
mod tests;
