//! Token verification: algorithms, claims, keys, and the origin policy.

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

use super::{AuthError, OriginPolicy, TokenVerifier};
use crate::config::{JwtConfig, JwtKey};

const SECRET: &[u8] = b"unit-secret";

fn fixture(name: &str) -> (PathBuf, Vec<u8>) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/keys")
        .join(name);
    let bytes = std::fs::read(&path).expect("fixture readable");
    (path, bytes)
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64
}

fn jwt_config(key: JwtKey, algorithms: &[&str]) -> JwtConfig {
    JwtConfig {
        key,
        algorithms: algorithms.iter().map(|a| (*a).to_owned()).collect(),
        issuer: None,
        audience: None,
        leeway: Duration::from_secs(5),
    }
}

fn hs_verifier() -> TokenVerifier {
    TokenVerifier::new(&jwt_config(
        JwtKey::Secret(SECRET.to_vec()),
        &["HS256", "HS384", "HS512"],
    ))
    .expect("valid")
}

fn sign(claims: Value, algorithm: Algorithm, key: &EncodingKey) -> String {
    jsonwebtoken::encode(&Header::new(algorithm), &claims, key).expect("signs")
}

fn hs(claims: Value) -> String {
    sign(claims, Algorithm::HS256, &EncodingKey::from_secret(SECRET))
}

/// Verifies `token` and compares the user id or the error.
fn check(verifier: &TokenVerifier, token: &str, expect: Result<&str, AuthError>) {
    let got = verifier.verify(token).map(|claims| claims.user_id);
    assert_eq!(got, expect.map(str::to_owned), "token {token}");
}

#[test]
fn hs_tokens_and_their_claims() {
    let verifier = hs_verifier();
    let exp = now() + 60;
    check(&verifier, &hs(json!({"sub": "u1", "exp": exp})), Ok("u1"));
    for algorithm in [Algorithm::HS384, Algorithm::HS512] {
        let token = sign(
            json!({"sub": "u2", "exp": exp}),
            algorithm,
            &EncodingKey::from_secret(SECRET),
        );
        check(&verifier, &token, Ok("u2"));
    }
    check(
        &verifier,
        &hs(json!({"sub": "u", "exp": now() - 60})),
        Err(AuthError::Expired),
    );
    check(
        &verifier,
        &hs(json!({"sub": "u", "exp": now() - 2})),
        Ok("u"),
    );
    check(
        &verifier,
        &hs(json!({"sub": "u", "exp": exp, "nbf": now() + 60})),
        Err(AuthError::NotYetValid),
    );
    check(
        &verifier,
        &hs(json!({"exp": exp})),
        Err(AuthError::BadClaim("sub".into())),
    );
    check(
        &verifier,
        &hs(json!({"sub": "", "exp": exp})),
        Err(AuthError::BadClaim("sub".into())),
    );
    check(
        &verifier,
        &hs(json!({"sub": 5, "exp": exp})),
        Err(AuthError::BadClaim("sub".into())),
    );
    check(
        &verifier,
        &hs(json!({"sub": "u"})),
        Err(AuthError::BadClaim("exp".into())),
    );
    let other = sign(
        json!({"sub": "u", "exp": exp}),
        Algorithm::HS256,
        &EncodingKey::from_secret(b"other"),
    );
    check(&verifier, &other, Err(AuthError::BadSignature));
    check(&verifier, "not.a.token", Err(AuthError::Malformed));
    check(&verifier, "garbage", Err(AuthError::Malformed));
}

#[test]
fn alg_none_is_always_rejected() {
    use base64_like::encode;
    let header = encode(br#"{"alg":"none","typ":"JWT"}"#);
    let claims = encode(format!(r#"{{"sub":"u","exp":{}}}"#, now() + 60).as_bytes());
    check(
        &hs_verifier(),
        &format!("{header}.{claims}."),
        Err(AuthError::Malformed),
    );
}

#[test]
fn narrowed_algorithms() {
    let verifier =
        TokenVerifier::new(&jwt_config(JwtKey::Secret(SECRET.to_vec()), &["HS256"])).expect("ok");
    let token = sign(
        json!({"sub": "u", "exp": now() + 60}),
        Algorithm::HS512,
        &EncodingKey::from_secret(SECRET),
    );
    check(&verifier, &token, Err(AuthError::WrongAlgorithm));
}

#[test]
fn issuer_and_audience_are_required_when_configured() {
    let mut config = jwt_config(JwtKey::Secret(SECRET.to_vec()), &["HS256"]);
    config.issuer = Some("https://issuer".into());
    config.audience = Some("switchboard".into());
    let verifier = TokenVerifier::new(&config).expect("ok");
    let exp = now() + 60;
    check(
        &verifier,
        &hs(json!({"sub": "u", "exp": exp, "iss": "https://issuer", "aud": "switchboard"})),
        Ok("u"),
    );
    check(
        &verifier,
        &hs(json!({"sub": "u", "exp": exp, "iss": "https://other", "aud": "switchboard"})),
        Err(AuthError::WrongIssuer),
    );
    check(
        &verifier,
        &hs(json!({"sub": "u", "exp": exp, "iss": "https://issuer", "aud": "other"})),
        Err(AuthError::WrongAudience),
    );
    check(
        &verifier,
        &hs(json!({"sub": "u", "exp": exp, "aud": "switchboard"})),
        Err(AuthError::BadClaim("iss".into())),
    );
    check(
        &verifier,
        &hs(json!({"sub": "u", "exp": exp, "iss": "https://issuer"})),
        Err(AuthError::BadClaim("aud".into())),
    );
    // Without a configured audience, a token's `aud` is not checked.
    check(
        &hs_verifier(),
        &hs(json!({"sub": "u", "exp": exp, "aud": "anything"})),
        Ok("u"),
    );
}

#[test]
fn public_keys_of_each_family() {
    let exp = now() + 60;
    let cases = [
        ("rsa_public.pem", "rsa_private.pem", Algorithm::RS256),
        ("ec_public.pem", "ec_private.pem", Algorithm::ES256),
        ("ed_public.pem", "ed_private.pem", Algorithm::EdDSA),
    ];
    for (public, private, algorithm) in cases {
        let (path, pem) = fixture(public);
        let verifier = TokenVerifier::new(&jwt_config(
            JwtKey::PublicKeyPem { path, pem },
            &["RS256", "RS384", "RS512", "ES256", "ES384", "EdDSA"],
        ))
        .expect("key loads");
        let (_, private_pem) = fixture(private);
        let key = match algorithm {
            Algorithm::RS256 => EncodingKey::from_rsa_pem(&private_pem),
            Algorithm::ES256 => EncodingKey::from_ec_pem(&private_pem),
            _ => EncodingKey::from_ed_pem(&private_pem),
        }
        .expect("private key");
        check(
            &verifier,
            &sign(json!({"sub": "k", "exp": exp}), algorithm, &key),
            Ok("k"),
        );
        // An HS token is never checked against a public key.
        check(
            &verifier,
            &hs(json!({"sub": "k", "exp": exp})),
            Err(AuthError::WrongAlgorithm),
        );
    }
}

#[test]
fn algorithm_confusion_with_the_public_key_as_hmac_secret() {
    let (path, pem) = fixture("rsa_public.pem");
    let verifier = TokenVerifier::new(&jwt_config(
        JwtKey::PublicKeyPem {
            path,
            pem: pem.clone(),
        },
        &["RS256"],
    ))
    .expect("ok");
    let forged = sign(
        json!({"sub": "evil", "exp": now() + 60}),
        Algorithm::HS256,
        &EncodingKey::from_secret(&pem),
    );
    check(&verifier, &forged, Err(AuthError::WrongAlgorithm));
}

#[test]
fn jwks_selects_by_kid() {
    let (path, json) = fixture("jwks.json");
    let verifier = TokenVerifier::new(&jwt_config(
        JwtKey::Jwks {
            path,
            json: String::from_utf8(json).expect("utf8"),
        },
        &["RS256", "ES256"],
    ))
    .expect("ok");
    let (_, rsa_private) = fixture("rsa_private.pem");
    let key = EncodingKey::from_rsa_pem(&rsa_private).expect("key");
    let claims = json!({"sub": "j", "exp": now() + 60});
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some("rsa-1".into());
    let token = jsonwebtoken::encode(&header, &claims, &key).expect("signs");
    check(&verifier, &token, Ok("j"));
    header.kid = Some("unknown".into());
    let token = jsonwebtoken::encode(&header, &claims, &key).expect("signs");
    check(&verifier, &token, Err(AuthError::UnknownKey));
    // A token naming the RSA key but claiming ES256 is refused before any signature check.
    let mut header = Header::new(Algorithm::ES256);
    header.kid = Some("rsa-1".into());
    let (_, ec_private) = fixture("ec_private.pem");
    let token = jsonwebtoken::encode(
        &header,
        &claims,
        &EncodingKey::from_ec_pem(&ec_private).expect("key"),
    )
    .expect("signs");
    check(&verifier, &token, Err(AuthError::WrongAlgorithm));
}

#[test]
fn bad_key_material_is_reported() {
    let error = TokenVerifier::new(&jwt_config(
        JwtKey::PublicKeyPem {
            path: "k.pem".into(),
            pem: b"not a key".to_vec(),
        },
        &["RS256"],
    ))
    .expect_err("invalid");
    assert!(
        error.to_string().starts_with("k.pem: not an RSA"),
        "{error}"
    );
    let error = TokenVerifier::new(&jwt_config(
        JwtKey::Jwks {
            path: "k.json".into(),
            json: r#"{"keys":[]}"#.into(),
        },
        &["RS256"],
    ))
    .expect_err("invalid");
    assert_eq!(error.to_string(), "k.json: the JWKS has no keys");
}

#[test]
fn origin_policy() {
    let open = OriginPolicy::new(&[]);
    assert!(open.check(Some("https://any.example")).is_ok());
    assert!(open.check(Some("null")).is_ok());
    let strict = OriginPolicy::new(&["https://App.example".to_owned()]);
    assert!(strict.check(None).is_ok());
    assert!(strict.check(Some("https://app.example")).is_ok());
    assert_eq!(
        strict.check(Some("https://evil.example")),
        Err(AuthError::OriginNotAllowed)
    );
    assert_eq!(strict.check(Some("null")), Err(AuthError::OriginNotAllowed));
}

/// Unpadded base64url, enough to hand-craft a token.
mod base64_like {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

    pub fn encode(input: &[u8]) -> String {
        let mut out = String::new();
        for chunk in input.chunks(3) {
            let bytes = [
                chunk[0],
                *chunk.get(1).unwrap_or(&0),
                *chunk.get(2).unwrap_or(&0),
            ];
            let n = (u32::from(bytes[0]) << 16) | (u32::from(bytes[1]) << 8) | u32::from(bytes[2]);
            let chars = chunk.len() + 1;
            for i in 0..chars {
                out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
            }
        }
        out
    }
}

#[test]
fn claims_reach_plugins_as_one_json_object() {
    let all = json!({"sub": "alice", "roles": ["a", "b\"c"], "exp": 1_700_000_000_u64, "n": null});
    let Value::Object(all) = all else {
        panic!("an object");
    };
    let claims = super::Claims {
        user_id: "alice".to_owned(),
        all,
    };
    assert_eq!(
        claims.to_json(),
        r#"{"exp":1700000000,"n":null,"roles":["a","b\"c"],"sub":"alice"}"#
    );
    let none = super::Claims {
        user_id: "bob".to_owned(),
        all: serde_json::Map::new(),
    };
    assert_eq!(none.to_json(), "{}");
}
