//! The conformance script against the mock host: the answers the real stores must give too
//! (`tests/it/kv.rs` runs the same file against a node's memory and Redis).

use serde_json::Value;
use switchboard_sdk::mock;

use crate::{Op, run_script};

const SCRIPT: &str = include_str!("../conformance.json");

#[test]
fn the_mock_host_gives_the_conformance_answers() {
    mock::reset();
    mock::with(|host| {
        host.limits.max_kv_ops_per_call = 20;
        host.limits.kv_max_bytes = 4096;
    });
    let steps: Vec<Value> = serde_json::from_str(SCRIPT).expect("the script parses");
    for step in steps {
        if let Some(wait) = step["wait_ms"].as_u64() {
            mock::with(|host| host.now_ms += wait);
            continue;
        }
        mock::begin_call();
        let pairs = step["ops"].as_array().expect("ops");
        let ops: Vec<Op> = pairs
            .iter()
            .map(|pair| serde_json::from_value(pair[0].clone()).expect("an op"))
            .collect();
        let expected: Vec<Value> = pairs.iter().map(|pair| pair[1].clone()).collect();
        let got = run_script(&ops);
        for (index, (got, expected)) in got.iter().zip(&expected).enumerate() {
            assert_eq!(
                got, expected,
                "step `{}`, op {index}: {}",
                step["name"], pairs[index][0]
            );
        }
    }
}
