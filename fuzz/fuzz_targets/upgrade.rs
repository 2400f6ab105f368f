//! The upgrade request's own checks (`server::upgrade`: an upgrade, version 13, the key), the
//! offered subprotocols and token discovery, on request heads read from the input by httparse
//! (what hyper reads them with). Each answer is checked against docs/protocol.md, "Handshake".

#![no_main]

use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, header};
use libfuzzer_sys::fuzz_target;
use switchboard::fuzzing::{check_handshake, find_token, offered_subprotocols};
use switchboard::server::refusal::Refusal;

fuzz_target!(|data: &[u8]| {
    let Some(request) = request(data) else {
        return;
    };
    let headers = request.headers();

    // Checks 2 to 4, in their order.
    let result = check_handshake(&request);
    let expect = if !(request.method() == Method::GET
        && has_token(headers, &header::CONNECTION, "upgrade")
        && has_token(headers, &header::UPGRADE, "websocket"))
    {
        Err(Refusal::NotUpgrade)
    } else if headers
        .get(header::SEC_WEBSOCKET_VERSION)
        .map(HeaderValue::as_bytes)
        != Some(b"13")
    {
        Err(Refusal::BadVersion)
    } else {
        match headers.get(header::SEC_WEBSOCKET_KEY) {
            None => Err(Refusal::MissingKey),
            Some(key) if is_key(key.as_bytes()) => Ok(key.clone()),
            Some(_) => Err(Refusal::BadKey),
        }
    };
    assert_eq!(result, expect);

    // Every offered entry is trimmed and non-empty, and the entries are the headers' items.
    let offered = offered_subprotocols(headers);
    let items: Vec<&str> = headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(|item| item.trim_matches([' ', '\t']))
        .filter(|item| !item.is_empty())
        .collect();
    assert_eq!(offered, items);

    let token = find_token(headers, request.uri().query(), &offered);
    assert_eq!(
        token,
        expected_token(headers, request.uri().query(), &offered)
    );
});

/// The request head at the start of `data`, as hyper would hand it over; `None` when hyper would
/// refuse it itself (a 400) or it is incomplete.
fn request(data: &[u8]) -> Option<Request<()>> {
    let mut parsed_headers = [httparse::EMPTY_HEADER; 32];
    let mut parsed = httparse::Request::new(&mut parsed_headers);
    if !parsed.parse(data).ok()?.is_complete() {
        return None;
    }
    let mut request = Request::builder()
        .method(Method::from_bytes(parsed.method?.as_bytes()).ok()?)
        .uri(parsed.path?)
        .body(())
        .ok()?;
    let headers = request.headers_mut();
    for parsed in parsed.headers.iter() {
        headers.append(
            HeaderName::from_bytes(parsed.name.as_bytes()).ok()?,
            HeaderValue::from_bytes(parsed.value).ok()?,
        );
    }
    Some(request)
}

/// Whether a comma-separated header lists `token` (any case), in any of its values.
fn has_token(headers: &HeaderMap, name: &HeaderName, token: &str) -> bool {
    headers.get_all(name).iter().any(|value| {
        value.to_str().is_ok_and(|value| {
            value
                .split(',')
                .any(|item| item.trim_matches([' ', '\t']).to_ascii_lowercase() == token)
        })
    })
}

/// The base64 of 16 bytes: 22 characters of the alphabet, then `==`.
fn is_key(key: &[u8]) -> bool {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    key.len() == 24 && key[22..] == *b"==" && key[..22].iter().all(|byte| ALPHABET.contains(byte))
}

/// docs/protocol.md, "Token": the first source present decides; empty values are absent.
fn expected_token(headers: &HeaderMap, query: Option<&str>, offered: &[String]) -> Option<String> {
    // 1. `Authorization: Bearer <jwt>`, the scheme in any case (the first such header).
    if let Some(value) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        let value = value.trim_matches([' ', '\t']);
        if let Some(space) = value.find(' ') {
            let token = value[space + 1..].trim_matches([' ', '\t']);
            if value[..space].to_ascii_lowercase() == "bearer" && !token.is_empty() {
                return Some(token.to_owned());
            }
        }
    }
    // 2. `?token=<jwt>`, the first non-empty one.
    for (name, value) in form_pairs(query.unwrap_or("")) {
        if name == "token" && !value.is_empty() {
            return Some(value);
        }
    }
    // 3. A `bearer.<jwt>` subprotocol entry.
    offered
        .iter()
        .filter_map(|entry| entry.strip_prefix("bearer."))
        .find(|token| !token.is_empty())
        .map(str::to_owned)
}

/// `application/x-www-form-urlencoded` pairs, decoded (`+` is a space, `%XX` a byte, invalid
/// UTF-8 replaced).
fn form_pairs(query: &str) -> Vec<(String, String)> {
    fn decode(text: &str) -> String {
        let bytes = text.as_bytes();
        let mut out = Vec::with_capacity(bytes.len());
        let mut at = 0;
        while at < bytes.len() {
            match bytes[at] {
                b'+' => out.push(b' '),
                b'%' if at + 2 < bytes.len()
                    && hex(bytes[at + 1]).is_some()
                    && hex(bytes[at + 2]).is_some() =>
                {
                    out.push(
                        hex(bytes[at + 1]).unwrap_or(0) * 16 + hex(bytes[at + 2]).unwrap_or(0),
                    );
                    at += 2;
                }
                byte => out.push(byte),
            }
            at += 1;
        }
        String::from_utf8_lossy(&out).into_owned()
    }
    fn hex(byte: u8) -> Option<u8> {
        (byte as char).to_digit(16).map(|digit| digit as u8)
    }
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| match pair.split_once('=') {
            Some((name, value)) => (decode(name), decode(value)),
            None => (decode(pair), String::new()),
        })
        .collect()
}
