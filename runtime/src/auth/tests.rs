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
    for origin in [
        None,
        Some("https://anything.example.org"),
        Some("null"),
        Some("http://127.0.0.1:9"),
    ] {
        assert_eq!(
            open.check(origin),
            Ok(()),
            "{origin:?} without an allow-list"
        );
    }
    let strict = OriginPolicy::new(&[
        "https://App.example.com".to_owned(),
        "http://localhost:3000".to_owned(),
    ]);
    let refused = Err(AuthError::OriginNotAllowed);
    for (origin, expect) in [
        (None, Ok(())),
        (Some("https://app.example.com"), Ok(())),
        (Some("https://APP.Example.COM"), Ok(())),
        (Some("http://localhost:3000"), Ok(())),
        (Some("null"), refused.clone()),
        (Some("https://evil.example.com"), refused.clone()),
        // Scheme, port and host are each part of the origin.
        (Some("http://app.example.com"), refused.clone()),
        (Some("https://app.example.com:8443"), refused.clone()),
        (Some("https://app.example.com.evil.com"), refused.clone()),
        (Some("http://localhost:3001"), refused.clone()),
        // What the upgrade passes for a header that is not text.
        (Some("\u{0}"), refused),
    ] {
        assert_eq!(strict.check(origin), expect, "{origin:?}");
    }
}

/// A verifier built as a tenant's is: from `[tenants.jwt]` lines of a config (key paths
/// relative to the test fixtures), with the configured defaults.
fn configured(jwt_lines: &str) -> TokenVerifier {
    let text = format!("[[tenants]]\nname = \"t\"\n[tenants.jwt]\n{jwt_lines}\n");
    let base = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures");
    let config = crate::config::parse(&text, "unit.toml", &base)
        .unwrap_or_else(|error| panic!("{jwt_lines}: {error}"));
    let tenant = config.tenants.into_iter().next().expect("one tenant");
    TokenVerifier::new(&tenant.jwt).expect("the key loads")
}

fn private_key(file: &str) -> EncodingKey {
    let (_, pem) = fixture(file);
    match file {
        "rsa_private.pem" => EncodingKey::from_rsa_pem(&pem),
        "ec_private.pem" => EncodingKey::from_ec_pem(&pem),
        _ => EncodingKey::from_ed_pem(&pem),
    }
    .expect("private key")
}

fn with_kid(claims: Value, algorithm: Algorithm, key: &EncodingKey, kid: &str) -> String {
    let mut header = Header::new(algorithm);
    header.kid = Some(kid.to_owned());
    jsonwebtoken::encode(&header, &claims, key).expect("signs")
}

fn unsigned(header: &str, claims: &Value) -> String {
    use base64_like::encode;
    format!(
        "{}.{}.",
        encode(header.as_bytes()),
        encode(claims.to_string().as_bytes())
    )
}

/// The tokens a handshake meets, against tenants configured as operators write them: each
/// case is a tenant's `[tenants.jwt]` lines, a token, and the user or the refusal.
#[test]
fn tokens_against_configured_tenants() {
    let secret = format!(
        "secret = \"{}\"",
        std::str::from_utf8(SECRET).expect("ASCII")
    );
    let hs_with = |extra: &str| format!("{secret}\n{extra}");
    let rsa_tenant = "public_key_file = \"keys/rsa_public.pem\"";
    let ec_tenant = "public_key_file = \"keys/ec_public.pem\"";
    let jwks_tenant = "jwks_file = \"keys/jwks.json\"";
    let leeway_60s = hs_with("leeway = \"60s\"");
    let leeway_1 = hs_with("leeway = 1");
    let hs256_only = hs_with("algorithms = [\"HS256\"]");
    let iss_aud = hs_with("issuer = \"https://issuer.example\"\naudience = \"switchboard\"");
    let exp = now() + 3600;
    let alice = |extra: Value| {
        let mut claims = json!({"sub": "alice", "exp": exp});
        if let (Some(target), Value::Object(extra)) = (claims.as_object_mut(), extra) {
            target.extend(extra);
        }
        claims
    };
    let valid = hs(alice(json!({})));
    let (valid_head, _) = valid.rsplit_once('.').expect("three parts");
    let other = hs(json!({"sub": "mallory", "exp": exp + 60}));
    let (_, other_signature) = other.rsplit_once('.').expect("three parts");
    let (_, rsa_pem) = fixture("rsa_public.pem");
    let rsa = private_key("rsa_private.pem");
    let ec = private_key("ec_private.pem");
    let hs_sized = |algorithm| {
        sign(
            alice(json!({})),
            algorithm,
            &EncodingKey::from_secret(SECRET),
        )
    };

    let cases: Vec<(&str, String, Result<&str, AuthError>, &str)> = vec![
        // Not a JWT, or one whose parts do not decode.
        (&secret, "a.b.c".into(), Err(AuthError::Malformed), "a.b.c"),
        (
            &secret,
            "eyJhbGciOiJIUzI1NiJ9.!!!.###".into(),
            Err(AuthError::Malformed),
            "bad base64",
        ),
        (
            &secret,
            valid_head.to_owned(),
            Err(AuthError::Malformed),
            "two parts",
        ),
        (
            &secret,
            format!("{valid_head}.{other_signature}"),
            Err(AuthError::BadSignature),
            "the signature of another token",
        ),
        // `alg: none` in any spelling, on a secret and on a public-key tenant.
        (
            &secret,
            unsigned(r#"{"alg":"None","typ":"JWT"}"#, &alice(json!({}))),
            Err(AuthError::Malformed),
            "alg None",
        ),
        (
            &secret,
            unsigned(r#"{"alg":"NONE"}"#, &alice(json!({}))),
            Err(AuthError::Malformed),
            "alg NONE",
        ),
        (
            rsa_tenant,
            unsigned(r#"{"alg":"none","typ":"JWT"}"#, &alice(json!({}))),
            Err(AuthError::Malformed),
            "alg none, RSA tenant",
        ),
        // Time claims against the default 5 s leeway.
        (
            &secret,
            hs(json!({"sub": "alice", "exp": now() - 10})),
            Err(AuthError::Expired),
            "exp 10 s ago",
        ),
        (
            &secret,
            hs(alice(json!({"nbf": now() - 60}))),
            Ok("alice"),
            "nbf 60 s ago",
        ),
        (
            &secret,
            hs(alice(json!({"nbf": now() + 2}))),
            Ok("alice"),
            "nbf in 2 s",
        ),
        (
            &secret,
            hs(alice(json!({"nbf": now() + 15}))),
            Err(AuthError::NotYetValid),
            "nbf in 15 s",
        ),
        // A configured leeway replaces the default, as a duration or as seconds.
        (
            &leeway_60s,
            hs(json!({"sub": "alice", "exp": now() - 30})),
            Ok("alice"),
            "exp 30 s ago, leeway 60 s",
        ),
        (
            &leeway_1,
            hs(json!({"sub": "alice", "exp": now() - 3})),
            Err(AuthError::Expired),
            "exp 3 s ago, leeway 1 s",
        ),
        // An `aud` array must contain the tenant's audience.
        (
            &iss_aud,
            hs(alice(
                json!({"iss": "https://issuer.example", "aud": ["other", "switchboard"]}),
            )),
            Ok("alice"),
            "aud array with ours",
        ),
        (
            &iss_aud,
            hs(alice(
                json!({"iss": "https://issuer.example", "aud": ["other", "more"]}),
            )),
            Err(AuthError::WrongAudience),
            "aud array without ours",
        ),
        // Algorithms: all HS sizes by default, only the configured ones when narrowed.
        (&secret, hs_sized(Algorithm::HS384), Ok("alice"), "HS384"),
        (
            &hs256_only,
            hs_sized(Algorithm::HS256),
            Ok("alice"),
            "HS256 on an HS256-only tenant",
        ),
        (
            &hs256_only,
            hs_sized(Algorithm::HS384),
            Err(AuthError::WrongAlgorithm),
            "HS384 on an HS256-only tenant",
        ),
        // HMAC keyed with the RSA public key (algorithm confusion), in every size.
        (
            rsa_tenant,
            sign(
                alice(json!({})),
                Algorithm::HS384,
                &EncodingKey::from_secret(&rsa_pem),
            ),
            Err(AuthError::WrongAlgorithm),
            "HS384 keyed with the RSA PEM",
        ),
        (
            rsa_tenant,
            sign(
                alice(json!({})),
                Algorithm::HS512,
                &EncodingKey::from_secret(&rsa_pem),
            ),
            Err(AuthError::WrongAlgorithm),
            "HS512 keyed with the RSA PEM",
        ),
        // Key files named in the config, each family.
        (
            rsa_tenant,
            sign(alice(json!({})), Algorithm::RS256, &rsa),
            Ok("alice"),
            "RS256 on an RSA tenant",
        ),
        (
            ec_tenant,
            sign(alice(json!({})), Algorithm::ES256, &ec),
            Ok("alice"),
            "ES256 on an EC tenant",
        ),
        (
            "public_key_file = \"keys/ed_public.pem\"",
            sign(
                alice(json!({})),
                Algorithm::EdDSA,
                &private_key("ed_private.pem"),
            ),
            Ok("alice"),
            "EdDSA on an Ed25519 tenant",
        ),
        (
            jwks_tenant,
            with_kid(alice(json!({})), Algorithm::RS256, &rsa, "rsa-1"),
            Ok("alice"),
            "RS256 with kid rsa-1",
        ),
        // A token of another key family.
        (
            ec_tenant,
            sign(alice(json!({})), Algorithm::RS256, &rsa),
            Err(AuthError::WrongAlgorithm),
            "RS256 on an EC tenant",
        ),
        (
            rsa_tenant,
            sign(alice(json!({})), Algorithm::ES256, &ec),
            Err(AuthError::WrongAlgorithm),
            "ES256 on an RSA tenant",
        ),
        // A JWKS picks the key by `kid`; a `kid` naming the other family's key is refused.
        (
            jwks_tenant,
            with_kid(alice(json!({})), Algorithm::ES256, &ec, "ec-1"),
            Ok("alice"),
            "ES256 with kid ec-1",
        ),
        (
            jwks_tenant,
            with_kid(alice(json!({})), Algorithm::RS256, &rsa, "ec-1"),
            Err(AuthError::WrongAlgorithm),
            "RS256 with kid ec-1",
        ),
    ];
    for (jwt_lines, token, expect, context) in cases {
        let got = configured(jwt_lines)
            .verify(&token)
            .map(|claims| claims.user_id);
        assert_eq!(got, expect.map(str::to_owned), "{context}");
    }
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
