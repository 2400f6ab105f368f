//! Token discovery, subprotocol parsing and the `Sec-WebSocket-Key` check.

use http::{HeaderMap, HeaderValue, header};

use super::{find_token, is_valid_key, offered_subprotocols};

fn headers(pairs: &[(header::HeaderName, &str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in pairs {
        map.append(
            name.clone(),
            HeaderValue::from_str(value).expect("test header"),
        );
    }
    map
}

fn check(pairs: &[(header::HeaderName, &str)], query: Option<&str>, expect: Option<&str>) {
    let map = headers(pairs);
    let offered = offered_subprotocols(&map);
    assert_eq!(
        find_token(&map, query, &offered).as_deref(),
        expect,
        "{pairs:?} {query:?}"
    );
}

#[test]
fn the_first_present_source_decides() {
    let auth = header::AUTHORIZATION;
    let proto = header::SEC_WEBSOCKET_PROTOCOL;
    check(
        &[(auth.clone(), "Bearer aaa")],
        Some("token=bbb"),
        Some("aaa"),
    );
    check(&[(auth.clone(), "bearer aaa")], None, Some("aaa"));
    check(&[(auth.clone(), "BEARER aaa")], None, Some("aaa"));
    check(
        &[(auth.clone(), "Basic dXNlcg==")],
        Some("token=bbb"),
        Some("bbb"),
    );
    check(&[(auth.clone(), "Bearer ")], Some("token=bbb"), Some("bbb"));
    check(&[], Some("a=1&token=b%2Bb"), Some("b+b"));
    check(&[], Some("token="), None);
    check(
        &[(proto.clone(), "switchboard.v1, bearer.ccc")],
        Some("token="),
        Some("ccc"),
    );
    check(&[(proto.clone(), "bearer.")], None, None);
    check(
        &[
            (proto.clone(), "switchboard.v1"),
            (proto.clone(), "bearer.ddd"),
        ],
        None,
        Some("ddd"),
    );
    check(&[], None, None);
    // A present source wins even when its token is bad and a later one is good: the bad one
    // is verified (and refused), never skipped.
    check(
        &[(auth.clone(), "Bearer garbage.not.jwt")],
        Some("token=good"),
        Some("garbage.not.jwt"),
    );
    check(
        &[(proto.clone(), "switchboard.v1, bearer.good")],
        Some("token=garbage.not.jwt"),
        Some("garbage.not.jwt"),
    );
    check(
        &[(proto.clone(), "switchboard.v1, bearer.garbage")],
        Some("token=good"),
        Some("good"),
    );
    // Absent or empty sources are skipped.
    check(&[(auth.clone(), "Bearer")], Some("token=bbb"), Some("bbb"));
    check(&[(auth.clone(), "Basic dXNlcg==")], None, None);
    check(&[], Some("x=1&token=bbb&y=2"), Some("bbb"));
    check(
        &[
            (auth.clone(), "Bearer "),
            (proto.clone(), "switchboard.v1, bearer."),
        ],
        Some("token="),
        None,
    );
    check(
        &[(proto.clone(), "switchboard.v1, bearer., bearer.eee")],
        None,
        Some("eee"),
    );
    check(
        &[(proto.clone(), "bearer.fff, switchboard.v1")],
        None,
        Some("fff"),
    );
}

#[test]
fn offered_subprotocols_are_every_entry_of_every_header_in_order() {
    let proto = header::SEC_WEBSOCKET_PROTOCOL;
    for (pairs, expect) in [
        (vec![], vec![]),
        (
            vec![(proto.clone(), "bearer.x, switchboard.v1")],
            vec!["bearer.x", "switchboard.v1"],
        ),
        (
            vec![
                (proto.clone(), "switchboard.v1"),
                (proto.clone(), " bearer.x ,, "),
            ],
            vec!["switchboard.v1", "bearer.x"],
        ),
    ] {
        assert_eq!(offered_subprotocols(&headers(&pairs)), expect, "{pairs:?}");
    }
}

#[test]
fn a_key_must_be_the_base64_of_sixteen_bytes() {
    for valid in [
        "dGhlIHNhbXBsZSBub25jZQ==",
        "AAAAAAAAAAAAAAAAAAAAAA==",
        "+/+/+/+/+/+/+/+/+/+/+w==",
    ] {
        assert!(is_valid_key(valid.as_bytes()), "{valid}");
    }
    for invalid in [
        "",
        "x",
        "c2hvcnQ=",
        "not a key at all",
        "not base64 at all!!!!!==",
        // 15 and 17 bytes.
        "dGhlIHNhbXBsZSBub25j",
        "dGhlIHNhbXBsZSBub25jZXM=",
        "dGhlIHNhbXBsZSBub25jZXNz",
        // Padding missing, or in the wrong place.
        "dGhlIHNhbXBsZSBub25jZQ",
        "dGhlIHNhbXBsZSBub25jZQ=A",
        "dGhlIHNhbXBsZSBub25j=Q==",
        // URL-safe alphabet, spaces.
        "dGhlIHNhbXBsZSBub25jZ-==",
        "dGhlIHNhbXBsZSBub25jZ_==",
        "dGhlIHNhbXBsZSBub25jZ ==",
    ] {
        assert!(!is_valid_key(invalid.as_bytes()), "{invalid:?}");
    }
}
