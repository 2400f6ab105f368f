//! Finding hyper's own error heads, and `101` heads, in the bytes written to a socket.

use super::{HeadRefusal, Step, is_automatic, step};

/// What hyper 1 writes for a head it refuses (`Server::on_error`).
const HYPER_431: &[u8] =
    b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\ndate: Thu, 01 Jan 2026 00:00:00 GMT\r\n\r\n";
const OURS_400: &[u8] = b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: 45\r\ndate: Thu, 01 Jan 2026 00:00:00 GMT\r\n\r\n{\"error\":\"bad_request\",\"message\":\"malformed\"}";
const OURS_200: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 15\r\n\r\n{\"status\":\"ok\"}";
const UPGRADE: &[u8] =
    b"HTTP/1.1 101 Switching Protocols\r\nconnection: upgrade\r\nupgrade: websocket\r\n\r\n";

#[test]
fn hyper_error_heads_are_replaced_whole() {
    assert_eq!(
        step(HYPER_431),
        Step::Replace(HYPER_431.len(), HeadRefusal::HeaderTooLarge)
    );
    let uri = b"HTTP/1.1 414 URI Too Long\r\ncontent-length: 0\r\n\r\n";
    assert_eq!(step(uri), Step::Replace(uri.len(), HeadRefusal::UriTooLong));
    // Without a length too (hyper leaves it out after a HEAD request).
    let malformed = b"HTTP/1.1 400 Bad Request\r\ndate: Thu, 01 Jan 2026 00:00:00 GMT\r\n\r\n";
    assert_eq!(
        step(malformed),
        Step::Replace(malformed.len(), HeadRefusal::Malformed)
    );
}

#[test]
fn responses_of_the_routes_pass_through() {
    assert_eq!(step(OURS_200), Step::Forward(OURS_200.len()));
    let head = OURS_400
        .windows(4)
        .position(|window| window == b"\r\n\r\n")
        .expect("a head")
        + 4;
    assert_eq!(step(OURS_400), Step::Forward(head));
    assert_eq!(
        step(&OURS_400[head..]),
        Step::Forward(OURS_400.len() - head)
    );
    assert!(!is_automatic(&OURS_400[..head]));
}

#[test]
fn an_error_head_after_other_responses_is_found_where_it_starts() {
    let mut bytes = OURS_200.to_vec();
    bytes.extend_from_slice(HYPER_431);
    assert_eq!(step(&bytes), Step::Forward(OURS_200.len()));
    assert_eq!(
        step(&bytes[OURS_200.len()..]),
        Step::Replace(HYPER_431.len(), HeadRefusal::HeaderTooLarge)
    );
}

#[test]
fn a_status_line_cut_at_the_end_waits_for_the_rest() {
    let mut bytes = OURS_200.to_vec();
    bytes.extend_from_slice(b"HTTP/1.1 43");
    assert_eq!(step(&bytes), Step::Forward(OURS_200.len()));
    let mut bytes = OURS_200.to_vec();
    bytes.extend_from_slice(b"HTTP/");
    assert_eq!(step(&bytes), Step::Forward(OURS_200.len()));
}

#[test]
fn an_upgrade_head_is_written_then_everything_passes() {
    let mut bytes = UPGRADE.to_vec();
    bytes.extend_from_slice(b"\x81\x05hello");
    assert_eq!(step(&bytes), Step::Upgrade(UPGRADE.len()));
}

#[test]
fn bytes_without_a_head_of_interest_pass_through() {
    assert_eq!(step(b"plain body"), Step::Forward(10));
    assert_eq!(step(b""), Step::Forward(0));
    let others = b"HTTP/1.1 200 OK\r\n\r\nHTTP/1.1 204 x\r\n\r\n";
    assert_eq!(step(others), Step::Forward(others.len()));
    assert_eq!(step(b"HTTP/1.1 4x1 odd\r\n\r\n"), Step::Forward(20));
}
