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
        kv.get(&tenant, &plugin, "k1").expect("read"),
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
        kv.delete(&tenant, &plugin, &format!("k{index}"))
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
