//! The socket budget derived from the open-files limit and the config.

use super::SocketCapacity;
use crate::config::HttpConfig;

fn http(max_open_sockets: Option<usize>) -> HttpConfig {
    HttpConfig {
        max_open_sockets,
        reserved_files: 64,
        refusal_sockets: 16,
        ..HttpConfig::default()
    }
}

#[test]
fn the_limit_minus_both_reserves() {
    let capacity = SocketCapacity::derive(Some(1024), &http(None));
    assert_eq!(capacity.sockets, 1024 - 64 - 16);
    assert_eq!(capacity.open_files, Some(1024));
}

#[test]
fn a_limit_below_the_reserves_leaves_no_socket() {
    assert_eq!(SocketCapacity::derive(Some(70), &http(None)).sockets, 0);
}

#[test]
fn the_setting_only_lowers_the_budget() {
    assert_eq!(
        SocketCapacity::derive(Some(1024), &http(Some(10))).sockets,
        10
    );
    assert_eq!(
        SocketCapacity::derive(Some(1024), &http(Some(100_000))).sockets,
        1024 - 64 - 16
    );
}

#[test]
fn an_unknown_limit_leaves_the_setting() {
    assert_eq!(SocketCapacity::derive(None, &http(Some(10))).sockets, 10);
    assert_eq!(
        SocketCapacity::derive(None, &http(None)).sockets,
        usize::MAX
    );
}

#[test]
fn an_unlimited_limit_does_not_overflow() {
    assert_eq!(
        SocketCapacity::derive(Some(u64::MAX), &http(None)).sockets,
        usize::MAX - 64 - 16
    );
}
