//! Tests of the collab plugin against the SDK's mock host: revisions, transformation of stale
//! operations, resends, history bounds and the errors a client can meet.

use serde_json::{Value, json};
use switchboard_sdk::{ConnInfo, HandlerError, Plugin, mock};

use super::Collab;

fn setup() {
    mock::reset();
    mock::with(|host| {
        host.members.insert(
            "doc".into(),
            vec![("n-1".into(), "alice".into()), ("n-2".into(), "bob".into())],
        );
    });
}

fn alice() -> ConnInfo {
    mock::conn("n-1", "alice", json!({}))
}

fn bob() -> ConnInfo {
    mock::conn("n-2", "bob", json!({}))
}

fn call(conn: &ConnInfo, msg_type: &str, payload: Value) -> Result<Value, HandlerError> {
    let reply = Collab::on_message(conn.clone(), mock::message(msg_type, Some("doc"), payload))?;
    Ok(serde_json::from_str(&reply.expect("an ack payload")).expect("json"))
}

fn submit(conn: &ConnInfo, rev: u64, op: Value, client: &str, op_id: u64) -> Result<Value, String> {
    call(
        conn,
        "collab:op",
        json!({"rev": rev, "op": op, "clientId": client, "opId": op_id}),
    )
    .map_err(|error| error.code)
}

fn snapshot() -> Value {
    call(&alice(), "collab:snapshot", json!(null)).expect("snapshot")
}

#[test]
fn a_new_document_is_empty_at_revision_zero() {
    setup();
    assert_eq!(snapshot(), json!({"rev": 0, "text": ""}));
}

#[test]
fn concurrent_operations_are_transformed_and_broadcast_in_revision_order() {
    setup();
    let first = submit(&alice(), 0, json!([{"insert": "héllo"}]), "a", 1);
    assert_eq!(first, Ok(json!({"rev": 1})));
    // Both edit revision 1 without having seen each other.
    let world = submit(
        &alice(),
        1,
        json!([{"retain": 5}, {"insert": " 🌍"}]),
        "a",
        2,
    );
    let shout = submit(&bob(), 1, json!([{"insert": "¡"}, {"retain": 5}]), "b", 1);
    assert_eq!(
        (world, shout),
        (Ok(json!({"rev": 2})), Ok(json!({"rev": 3})))
    );
    assert_eq!(snapshot(), json!({"rev": 3, "text": "¡héllo 🌍"}));
    mock::with(|host| {
        let sent: Vec<Value> = host
            .broadcasts
            .iter()
            .map(|broadcast| {
                assert_eq!(
                    (broadcast.channel.as_str(), broadcast.msg_type.as_str()),
                    ("doc", "collab:op")
                );
                assert_eq!(broadcast.except, None);
                serde_json::from_str(&broadcast.payload_json).expect("json")
            })
            .collect();
        assert_eq!(
            sent[2],
            json!({"rev": 3, "op": [{"insert": "¡"}, {"retain": 7}], "clientId": "b", "opId": 1, "userId": "bob"})
        );
    });
}

#[test]
fn inserts_at_one_place_keep_server_order() {
    setup();
    submit(&alice(), 0, json!([{"insert": "ab"}]), "a", 1).expect("base");
    submit(
        &alice(),
        1,
        json!([{"retain": 1}, {"insert": "1"}, {"retain": 1}]),
        "a",
        2,
    )
    .expect("first");
    submit(
        &bob(),
        1,
        json!([{"retain": 1}, {"insert": "2"}, {"retain": 1}]),
        "b",
        1,
    )
    .expect("second");
    assert_eq!(snapshot()["text"], "a21b");
}

#[test]
fn a_resent_operation_is_answered_but_not_applied_twice() {
    setup();
    submit(&alice(), 0, json!([{"insert": "x"}]), "a", 7).expect("first");
    submit(&bob(), 1, json!([{"retain": 1}, {"insert": "y"}]), "b", 1).expect("other");
    let again = submit(&alice(), 0, json!([{"insert": "x"}]), "a", 7);
    assert_eq!(again, Ok(json!({"rev": 1, "duplicate": true})));
    assert_eq!(snapshot(), json!({"rev": 2, "text": "xy"}));
    mock::with(|host| assert_eq!(host.broadcasts.len(), 2));
}

#[test]
fn a_client_behind_the_kept_history_must_resync() {
    setup();
    mock::with(|host| {
        host.config.insert("history".into(), "2".into());
    });
    for rev in 0..4 {
        submit(
            &alice(),
            rev,
            json!([{"retain": rev}, {"insert": "."}]),
            "a",
            rev,
        )
        .expect("op");
    }
    mock::with(|host| {
        assert!(!host.kv.contains_key(&format!("op:doc:{:020}", 2)));
        assert!(host.kv.contains_key(&format!("op:doc:{:020}", 3)));
    });
    // Revision 2 needs 3 and 4 only: kept.
    assert_eq!(
        submit(&bob(), 2, json!([{"insert": "b"}, {"retain": 2}]), "b", 1),
        Ok(json!({"rev": 5}))
    );
    assert_eq!(
        submit(&bob(), 1, json!([{"insert": "c"}, {"retain": 1}]), "b", 2),
        Err("resync".to_owned())
    );
    let ops = call(&bob(), "collab:ops", json!({"since": 1})).map_err(|error| error.code);
    assert_eq!(ops.err().as_deref(), Some("resync"));
}

#[test]
fn catching_up_returns_the_operations_after_a_revision() {
    setup();
    submit(&alice(), 0, json!([{"insert": "a"}]), "a", 1).expect("one");
    submit(&alice(), 1, json!([{"retain": 1}, {"insert": "b"}]), "a", 2).expect("two");
    let ops = call(&bob(), "collab:ops", json!({"since": 1})).expect("ops");
    assert_eq!(ops["rev"], 2);
    assert_eq!(ops["ops"].as_array().map(Vec::len), Some(1));
    assert_eq!(ops["ops"][0]["op"], json!([{"retain": 1}, {"insert": "b"}]));
    let none = call(&bob(), "collab:ops", json!({"since": 2})).expect("ops");
    assert_eq!(none["ops"], json!([]));
    let ahead = call(&bob(), "collab:ops", json!({"since": 3}));
    assert_eq!(ahead.err().map(|e| e.code).as_deref(), Some("bad_request"));
}

#[test]
fn bad_operations_are_refused_and_change_nothing() {
    setup();
    submit(&alice(), 0, json!([{"insert": "ab"}]), "a", 1).expect("base");
    let cases = [
        // Spans 3 characters of a 2-character document.
        json!({"rev": 1, "op": [{"retain": 3}], "clientId": "a", "opId": 2}),
        // A revision the document has not reached.
        json!({"rev": 5, "op": [{"retain": 2}], "clientId": "a", "opId": 2}),
        json!({"rev": 1, "op": [{"retain": 2}], "clientId": "", "opId": 2}),
        json!({"rev": 1, "op": [{"move": 2}], "clientId": "a", "opId": 2}),
        json!({"rev": 1, "op": [{"retain": 2}]}),
    ];
    for payload in cases {
        let refused = call(&alice(), "collab:op", payload.clone()).map_err(|error| error.code);
        assert_eq!(refused.err().as_deref(), Some("bad_request"), "{payload}");
    }
    mock::with(|host| {
        host.config.insert("max_chars".into(), "3".into());
    });
    let long = submit(
        &alice(),
        1,
        json!([{"retain": 2}, {"insert": "🙂🙂"}]),
        "a",
        3,
    );
    assert_eq!(long, Err("bad_request".to_owned()));
    assert_eq!(snapshot(), json!({"rev": 1, "text": "ab"}));
}

#[test]
fn only_members_read_or_edit() {
    setup();
    let stranger = mock::conn("n-9", "eve", json!({}));
    let edit = submit(&stranger, 0, json!([{"insert": "x"}]), "e", 1);
    assert_eq!(edit, Err("not_member".to_owned()));
    let read = call(&stranger, "collab:snapshot", json!(null)).map_err(|error| error.code);
    assert_eq!(read.err().as_deref(), Some("not_member"));
    let no_channel =
        Collab::on_message(alice(), mock::message("collab:snapshot", None, json!(null)));
    assert_eq!(
        no_channel.err().map(|e| e.code).as_deref(),
        Some("bad_request")
    );
}

/// Clients that edit whatever revision they last saw: every stale operation is transformed
/// into one that applies, and the stored text is the committed operations applied in order.
#[test]
fn stale_operations_from_many_clients_always_apply() {
    let alphabet = ['a', 'é', '中', '🙂', ' '];
    for seed in 1..40_u64 {
        setup();
        let mut state = seed;
        let mut next = move |bound: u64| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state % bound.max(1)
        };
        let mut texts = vec![String::new()];
        for op_id in 0..30 {
            let base = texts.len() as u64 - 1 - next(3).min(texts.len() as u64 - 1);
            let seen = &texts[base as usize];
            let len = seen.chars().count() as u64;
            let op = if len > 0 && next(3) == 0 {
                let at = next(len);
                let count = 1 + next(len - at);
                json!([{"retain": at}, {"delete": count}, {"retain": len - at - count}])
            } else {
                let at = next(len + 1);
                let ch = alphabet[next(alphabet.len() as u64) as usize].to_string();
                json!([{"retain": at}, {"insert": ch}, {"retain": len - at}])
            };
            let conn = if op_id % 2 == 0 { alice() } else { bob() };
            let reply = submit(&conn, base, op, "c", op_id).unwrap_or_else(|code| {
                panic!("seed {seed}: op {op_id} on revision {base} refused: {code}")
            });
            assert_eq!(reply["rev"], texts.len() as u64, "seed {seed}");
            let committed: Value = mock::with(|host| {
                serde_json::from_str(&host.broadcasts.last().expect("broadcast").payload_json)
                    .expect("json")
            });
            let op: super::ot::Operation =
                serde_json::from_value(committed["op"].clone()).expect("op");
            let after = op.apply(texts.last().expect("text")).expect("applies");
            texts.push(after);
        }
        assert_eq!(
            snapshot()["text"],
            texts.last().expect("text").as_str(),
            "seed {seed}"
        );
    }
}

#[test]
fn an_operation_committed_elsewhere_is_read_from_the_log_before_the_snapshot_moves() {
    setup();
    submit(&alice(), 0, json!([{"insert": "a"}]), "a", 1).expect("one");
    // Another call (on another node) committed revision 2 and has not moved the snapshot yet.
    let elsewhere = json!({"rev": 2, "op": [{"retain": 1}, {"insert": "b"}], "clientId": "z",
        "opId": 1, "userId": "zed"});
    mock::with(|host| {
        host.kv.insert(
            format!("op:doc:{:020}", 2),
            elsewhere.to_string().into_bytes(),
        )
    });
    assert_eq!(snapshot(), json!({"rev": 2, "text": "ab"}));
    // An edit of revision 1 is transformed against it and takes revision 3, not 2.
    assert_eq!(
        submit(&bob(), 1, json!([{"insert": "c"}, {"retain": 1}]), "b", 1),
        Ok(json!({"rev": 3}))
    );
    assert_eq!(snapshot(), json!({"rev": 3, "text": "cab"}));
    let stored: Value = mock::with(|host| {
        serde_json::from_slice(&host.kv["doc:doc"]).expect("the snapshot is JSON")
    });
    assert_eq!(
        stored,
        json!({"rev": 3, "text": "cab"}),
        "the snapshot moved"
    );
}

#[test]
fn a_snapshot_that_does_not_decode_is_an_error_not_an_empty_document() {
    setup();
    mock::with(|host| {
        host.kv
            .insert("doc:doc".into(), b"{\"revision\": 1}".to_vec())
    });
    let error = call(&alice(), "collab:snapshot", json!(null)).expect_err("not a document");
    assert_eq!(error.code, "invalid");
}
