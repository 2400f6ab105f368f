//! The in-memory store's bounds: bytes per namespace, entries, expiry.

use std::sync::Arc;
use std::time::Duration;

use super::{ENTRY_COST, MemoryKv};
use crate::kv::KvError;

fn too_large<T: std::fmt::Debug>(result: Result<T, KvError>) -> bool {
    matches!(result, Err(KvError::TooLarge))
}

fn names() -> (Arc<str>, Arc<str>) {
    (Arc::from("tenant"), Arc::from("plugin"))
}

#[test]
fn a_namespace_holds_at_most_its_byte_budget() {
    let kv = MemoryKv::default();
    let (tenant, plugin) = names();
    let budget = 10 * (1000 + 2 + ENTRY_COST);
    for index in 0..10 {
        kv.set(
            &tenant,
            &plugin,
            &format!("k{index}"),
            vec![0; 1000],
            None,
            budget,
        )
        .expect("within the budget");
    }
    assert_eq!(kv.bytes(&tenant, &plugin), budget);
    assert!(too_large(kv.set(
        &tenant,
        &plugin,
        "k10",
        vec![0; 1000],
        None,
        budget
    )));
    // Replacing a value counts the difference, and a refused write changes nothing.
    kv.set(&tenant, &plugin, "k0", vec![0; 10], None, budget)
        .expect("smaller");
    assert_eq!(kv.bytes(&tenant, &plugin), budget - 990);
    assert!(too_large(kv.set(
        &tenant,
        &plugin,
        "k1",
        vec![0; 2000],
        None,
        budget
    )));
    assert_eq!(
        kv.get(&tenant, &plugin, "k1")
            .expect("read")
            .map(|entry| entry.value),
        Some(vec![0; 1000])
    );
    assert!(too_large(kv.incr(
        &tenant,
        &plugin,
        "counter",
        1,
        budget - 990
    )));
    // Deleting frees what the entry held.
    for index in 0..10 {
        kv.delete(&tenant, &plugin, &format!("k{index}"), None)
            .expect("deleted");
    }
    assert_eq!(kv.bytes(&tenant, &plugin), 0);
    assert_eq!(
        kv.incr(&tenant, &plugin, "counter", 5, budget)
            .expect("fits"),
        5
    );
}

#[tokio::test(start_paused = true)]
async fn expired_entries_make_room() {
    let kv = MemoryKv::default();
    let (tenant, plugin) = names();
    let budget = 2 * (100 + 1 + ENTRY_COST);
    kv.set(&tenant, &plugin, "a", vec![1; 100], Some(1000), budget)
        .expect("fits");
    kv.set(&tenant, &plugin, "b", vec![1; 100], Some(1000), budget)
        .expect("fits");
    assert!(too_large(kv.set(
        &tenant,
        &plugin,
        "c",
        vec![1; 100],
        None,
        budget
    )));
    tokio::time::advance(Duration::from_millis(1001)).await;
    kv.set(&tenant, &plugin, "c", vec![1; 100], None, budget)
        .expect("the expired entries were dropped");
    assert_eq!(kv.bytes(&tenant, &plugin), 100 + 1 + ENTRY_COST);
}

#[test]
fn versions_only_grow_and_guard_writes() {
    let kv = MemoryKv::default();
    let (tenant, plugin) = names();
    let budget = 1 << 20;
    let cas = |expected, value: &[u8]| {
        kv.compare_and_set(
            &tenant,
            &plugin,
            "k",
            expected,
            value.to_vec(),
            None,
            budget,
        )
        .expect("no error")
    };
    let first = cas(None, b"a").expect("absent, so written");
    assert_eq!(cas(None, b"b"), None, "present now");
    assert_eq!(cas(Some(first + 1), b"b"), None, "a version it never had");
    let second = cas(Some(first), b"b").expect("at the version read");
    assert!(second > first);
    assert!(
        !kv.delete(&tenant, &plugin, "k", Some(first))
            .expect("no error"),
        "a stale version deletes nothing"
    );
    assert!(
        kv.delete(&tenant, &plugin, "k", Some(second))
            .expect("no error")
    );
    // A new entry at the same key never reuses a version.
    let third = cas(None, b"c").expect("absent again");
    assert!(third > second);
    assert_eq!(cas(Some(second), b"d"), None);
    let counted = kv
        .incr(&tenant, &plugin, "n", 2, budget)
        .expect("a counter");
    assert_eq!(counted, 2);
    let version = kv
        .get(&tenant, &plugin, "n")
        .expect("read")
        .expect("live")
        .version;
    assert!(version > third, "increments are writes too");
}

#[test]
fn listing_pages_through_a_prefix_in_byte_order() {
    let kv = MemoryKv::default();
    let (tenant, plugin) = names();
    for key in ["poll:2", "poll:10", "poll:1", "pol", "polls", "vote:1"] {
        kv.set(&tenant, &plugin, key, b"x".to_vec(), None, 1 << 20)
            .expect("fits");
    }
    let page = kv.list(&tenant, &plugin, "poll:", None, 2).expect("a page");
    assert_eq!(page.keys, ["poll:1", "poll:10"]);
    assert!(page.more);
    let last = page.keys.last().map(String::as_str);
    let page = kv.list(&tenant, &plugin, "poll:", last, 2).expect("a page");
    assert_eq!(page.keys, ["poll:2"]);
    assert!(!page.more);
    let all = kv.list(&tenant, &plugin, "", None, 100).expect("a page");
    assert_eq!(all.keys.len(), 6);
}

#[tokio::test(start_paused = true)]
async fn expired_entries_are_neither_read_nor_listed() {
    let kv = MemoryKv::default();
    let (tenant, plugin) = names();
    kv.set(&tenant, &plugin, "a", b"1".to_vec(), Some(100), 1 << 20)
        .expect("fits");
    kv.set(&tenant, &plugin, "b", b"1".to_vec(), None, 1 << 20)
        .expect("fits");
    tokio::time::advance(Duration::from_millis(101)).await;
    assert_eq!(kv.get(&tenant, &plugin, "a").expect("read"), None);
    let page = kv.list(&tenant, &plugin, "", None, 10).expect("a page");
    assert_eq!(page.keys, ["b"]);
    assert!(!kv.delete(&tenant, &plugin, "a", None).expect("no error"));
}
