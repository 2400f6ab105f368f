//! A tenant's `jwt` table: where its token verification key comes from, the algorithms
//! accepted, the required claims and the clock leeway.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::{RawDuration, RawSecret, Validator};

/// Token verification settings of a tenant.
#[derive(Debug, Clone)]
pub struct JwtConfig {
    /// The key material.
    pub key: JwtKey,
    /// Algorithms accepted, all of the key's family unless narrowed.
    pub algorithms: Vec<String>,
    /// Required `iss`, when set.
    pub issuer: Option<String>,
    /// Required `aud`, when set.
    pub audience: Option<String>,
    /// Clock leeway for `exp` and `nbf`.
    pub leeway: Duration,
}

/// Where a tenant's verification key comes from.
#[derive(Clone)]
pub enum JwtKey {
    /// A shared HMAC secret (HS256/384/512).
    Secret(Vec<u8>),
    /// A public key in PEM, with the algorithm family it is for.
    PublicKeyPem {
        /// The file it was read from, for error messages.
        path: PathBuf,
        /// The PEM text.
        pem: Vec<u8>,
    },
    /// A JWKS document (RFC 7517), read from a file.
    Jwks {
        /// The file it was read from, for error messages.
        path: PathBuf,
        /// The JSON text.
        json: String,
    },
}

impl fmt::Debug for JwtKey {
    // Secrets never reach a log line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JwtKey::Secret(_) => f.write_str("Secret(..)"),
            JwtKey::PublicKeyPem { path, .. } => write!(f, "PublicKeyPem({})", path.display()),
            JwtKey::Jwks { path, .. } => write!(f, "Jwks({})", path.display()),
        }
    }
}

/// The default `jwt.leeway`.
pub const DEFAULT_LEEWAY: Duration = Duration::from_secs(5);

/// The algorithms of a shared secret (`jwt.secret`), accepted by default.
const SECRET_ALGORITHMS: &[&str] = &["HS256", "HS384", "HS512"];
/// The algorithms of a public key (`jwt.public_key_file`, `jwt.jwks_file`), accepted by default.
const PUBLIC_KEY_ALGORITHMS: &[&str] = &["RS256", "RS384", "RS512", "ES256", "ES384", "EdDSA"];

/// The raw `[tenants.jwt]` table.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawJwt {
    secret: Option<RawSecret>,
    public_key_file: Option<String>,
    public_key_pem: Option<String>,
    jwks_file: Option<String>,
    jwks: Option<String>,
    algorithms: Option<Vec<String>>,
    issuer: Option<String>,
    audience: Option<String>,
    leeway: Option<RawDuration>,
}

impl Validator<'_> {
    /// A tenant's `jwt` table (`key` is `tenants[i].jwt`); `None` when no usable key is set.
    pub(super) fn jwt(&mut self, key: &str, raw: RawJwt) -> Option<JwtConfig> {
        let sources = [
            raw.secret.is_some(),
            raw.public_key_file.is_some(),
            raw.public_key_pem.is_some(),
            raw.jwks_file.is_some(),
            raw.jwks.is_some(),
        ]
        .iter()
        .filter(|present| **present)
        .count();
        if sources != 1 {
            self.issue(
                key,
                "set exactly one of `secret`, `public_key_file`, `public_key_pem`, `jwks_file`, `jwks`",
            );
            return None;
        }
        if self.inline_only && (raw.public_key_file.is_some() || raw.jwks_file.is_some()) {
            self.issue(
                key,
                "give the key inline (`public_key_pem`, `jwks`): a file path would name one node's disk",
            );
            return None;
        }
        let leeway = self.duration(&format!("{key}.leeway"), raw.leeway, DEFAULT_LEEWAY);
        let (jwt_key, family): (JwtKey, &[&str]) = if let Some(secret) = raw.secret {
            let secret = self.secret(&format!("{key}.secret"), secret)?;
            if secret.is_empty() {
                self.issue(format!("{key}.secret"), "must not be empty");
                return None;
            }
            (JwtKey::Secret(secret.into_bytes()), SECRET_ALGORITHMS)
        } else if let Some(pem) = raw.public_key_pem {
            let path = PathBuf::from(format!("{key}.public_key_pem").trim_start_matches('.'));
            let pem = pem.into_bytes();
            (JwtKey::PublicKeyPem { path, pem }, PUBLIC_KEY_ALGORITHMS)
        } else if let Some(json) = raw.jwks {
            let path = PathBuf::from(format!("{key}.jwks").trim_start_matches('.'));
            (JwtKey::Jwks { path, json }, PUBLIC_KEY_ALGORITHMS)
        } else if let Some(file) = raw.public_key_file {
            let path = self.base_dir.join(&file);
            let pem = match std::fs::read(&path) {
                Ok(pem) => pem,
                Err(error) => {
                    self.issue(
                        format!("{key}.public_key_file"),
                        format!("cannot read {}: {error}", path.display()),
                    );
                    return None;
                }
            };
            (JwtKey::PublicKeyPem { path, pem }, PUBLIC_KEY_ALGORITHMS)
        } else {
            let file = raw.jwks_file.unwrap_or_default();
            let path = self.base_dir.join(&file);
            let json = match std::fs::read_to_string(&path) {
                Ok(json) => json,
                Err(error) => {
                    self.issue(
                        format!("{key}.jwks_file"),
                        format!("cannot read {}: {error}", path.display()),
                    );
                    return None;
                }
            };
            (JwtKey::Jwks { path, json }, PUBLIC_KEY_ALGORITHMS)
        };
        let algorithms = match raw.algorithms {
            Some(list) => {
                if list.is_empty() {
                    self.issue(format!("{key}.algorithms"), "must not be empty");
                }
                for (index, algorithm) in list.iter().enumerate() {
                    if !family.contains(&algorithm.as_str()) {
                        self.issue(
                            format!("{key}.algorithms[{index}]"),
                            format!(
                                "`{algorithm}` does not fit this key; one of {}",
                                family.join(", ")
                            ),
                        );
                    }
                }
                list
            }
            None => family.iter().map(|name| (*name).to_owned()).collect(),
        };
        Some(JwtConfig {
            key: jwt_key,
            algorithms,
            issuer: raw.issuer,
            audience: raw.audience,
            leeway,
        })
    }
}
