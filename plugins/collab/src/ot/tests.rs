//! Tests of the text transform: fixed cases for apply, compose and ties, and properties (TP1,
//! compose = apply twice) over seeded random documents and operations, unicode included.

use serde_json::json;

use super::{Component, Operation, OtError, compose, transform};

/// A small deterministic generator (xorshift64*), so failures name a reproducible seed.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number in `0..bound` (0 when `bound` is 0).
    fn below(&mut self, bound: usize) -> usize {
        if bound == 0 {
            0
        } else {
            (self.next() % bound as u64) as usize
        }
    }
}

/// Characters of one, two, three and four UTF-8 bytes, a combining mark and a flag's halves.
const ALPHABET: [char; 12] = [
    'a', 'b', 'z', ' ', '\n', 'é', 'ß', '中', '文', '🙂', '\u{301}', '🇫',
];

fn random_text(rng: &mut Rng, max: usize) -> String {
    (0..rng.below(max + 1))
        .map(|_| ALPHABET[rng.below(ALPHABET.len())])
        .collect()
}

fn random_operation(rng: &mut Rng, doc: &str) -> Operation {
    let mut operation = Operation::new();
    let mut left = doc.chars().count();
    while left > 0 {
        match rng.below(4) {
            0 => {
                operation.insert(&random_text(rng, 4));
            }
            1 => {
                let count = 1 + rng.below(left.min(4));
                operation.delete(count);
                left -= count;
            }
            _ => {
                let count = 1 + rng.below(left.min(6));
                operation.retain(count);
                left -= count;
            }
        }
    }
    if rng.below(2) == 0 {
        operation.insert(&random_text(rng, 3));
    }
    operation
}

fn op(value: serde_json::Value) -> Operation {
    serde_json::from_value(value).expect("an operation")
}

#[test]
fn apply_counts_characters_not_bytes() {
    let doc = "🙂é中";
    let operation = op(json!([{"retain": 1}, {"insert": "x"}, {"delete": 1}, {"retain": 1}]));
    assert_eq!(operation.base_len(), 3);
    assert_eq!(operation.target_len(), 3);
    assert_eq!(operation.apply(doc), Ok("🙂x中".to_owned()));
}

#[test]
fn apply_refuses_a_length_mismatch() {
    let operation = op(json!([{"retain": 2}, {"insert": "!"}]));
    assert_eq!(
        operation.apply("abc"),
        Err(OtError::LengthMismatch {
            expected: 2,
            actual: 3
        })
    );
    // Bytes would say 4 here; characters say 1.
    assert!(operation.apply("🙂").is_err());
    assert_eq!(operation.apply("🙂a"), Ok("🙂a!".to_owned()));
}

#[test]
fn apply_edge_cases() {
    assert_eq!(Operation::new().apply(""), Ok(String::new()));
    assert_eq!(op(json!([{"insert": "hi"}])).apply(""), Ok("hi".to_owned()));
    assert_eq!(op(json!([{"delete": 3}])).apply("a🙂b"), Ok(String::new()));
    assert_eq!(
        op(json!([{"retain": 3}, {"insert": "end"}])).apply("abc"),
        Ok("abcend".to_owned())
    );
}

#[test]
fn building_keeps_operations_canonical() {
    let mut built = Operation::new();
    built
        .retain(0)
        .retain(2)
        .retain(1)
        .delete(1)
        .insert("a")
        .insert("")
        .delete(2)
        .insert("b");
    assert_eq!(
        built.components(),
        [
            Component::Retain(3),
            Component::Insert("ab".into()),
            Component::Delete(3)
        ]
    );
    assert_eq!((built.base_len(), built.target_len()), (6, 5));
    assert!(op(json!([{"retain": 4}])).is_noop());
    assert!(!built.is_noop());
}

#[test]
fn json_round_trips_and_refuses_unknown_steps() {
    let wire = json!([{"retain": 1}, {"insert": "🙂"}, {"delete": 2}]);
    assert_eq!(serde_json::to_value(op(wire.clone())).expect("json"), wire);
    assert!(serde_json::from_value::<Operation>(json!([{"skip": 1}])).is_err());
    assert!(serde_json::from_value::<Operation>(json!([{"retain": -1}])).is_err());
    assert!(serde_json::from_value::<Operation>(json!({"retain": 1})).is_err());
}

#[test]
fn concurrent_inserts_at_one_place_put_the_first_argument_first() {
    let a = op(json!([{"retain": 1}, {"insert": "A"}, {"retain": 1}]));
    let b = op(json!([{"retain": 1}, {"insert": "B"}, {"retain": 1}]));
    let (a_prime, b_prime) = transform(&a, &b).expect("transform");
    let via_a = b_prime
        .apply(&a.apply("xy").expect("a"))
        .expect("b after a");
    let via_b = a_prime
        .apply(&b.apply("xy").expect("b"))
        .expect("a after b");
    assert_eq!(via_a, "xABy");
    assert_eq!(via_b, "xABy");
}

#[test]
fn overlapping_deletes_remove_once() {
    let a = op(json!([{"delete": 3}, {"retain": 1}]));
    let b = op(json!([{"retain": 1}, {"delete": 3}]));
    let (a_prime, b_prime) = transform(&a, &b).expect("transform");
    assert_eq!(a_prime, op(json!([{"delete": 1}])));
    assert_eq!(b_prime, op(json!([{"delete": 1}])));
    assert_eq!(
        b_prime.apply(&a.apply("🙂bcd").expect("a")),
        Ok(String::new())
    );
}

#[test]
fn transform_and_compose_refuse_mismatched_lengths() {
    let two = op(json!([{"retain": 2}]));
    let three = op(json!([{"retain": 3}]));
    assert!(transform(&two, &three).is_err());
    assert!(compose(&two, &three).is_err());
}

#[test]
fn compose_edge_cases() {
    // An insert deleted again leaves nothing.
    let insert = op(json!([{"retain": 1}, {"insert": "🙂🙂"}]));
    let delete = op(json!([{"retain": 1}, {"delete": 2}]));
    assert_eq!(compose(&insert, &delete), Ok(op(json!([{"retain": 1}]))));
    // A retain that splits an insert in the middle of a character run.
    let typed = op(json!([{"insert": "中文字"}]));
    let middle = op(json!([{"retain": 1}, {"insert": "x"}, {"retain": 2}]));
    assert_eq!(
        compose(&typed, &middle),
        Ok(op(json!([{"insert": "中x文字"}])))
    );
    // Deleting everything after an edit.
    let edit = op(json!([{"delete": 1}, {"retain": 1}, {"insert": "ab"}]));
    let clear = op(json!([{"delete": 3}]));
    let composed = compose(&edit, &clear).expect("compose");
    assert_eq!(composed.apply("é🙂"), Ok(String::new()));
}

#[test]
fn transform_satisfies_tp1_on_random_operations() {
    for seed in 0..3000 {
        let mut rng = Rng::new(seed);
        let doc = random_text(&mut rng, 12);
        let a = random_operation(&mut rng, &doc);
        let b = random_operation(&mut rng, &doc);
        let (a_prime, b_prime) = transform(&a, &b).expect("transform");
        let after_a = a.apply(&doc).expect("a");
        let after_b = b.apply(&doc).expect("b");
        assert_eq!(
            b_prime.apply(&after_a),
            a_prime.apply(&after_b),
            "seed {seed}: doc {doc:?}, a {a:?}, b {b:?}"
        );
    }
}

#[test]
fn compose_equals_applying_in_turn_on_random_operations() {
    for seed in 0..3000 {
        let mut rng = Rng::new(seed);
        let doc = random_text(&mut rng, 12);
        let a = random_operation(&mut rng, &doc);
        let middle = a.apply(&doc).expect("a");
        let b = random_operation(&mut rng, &middle);
        let composed = compose(&a, &b).expect("compose");
        assert_eq!(
            composed.apply(&doc),
            b.apply(&middle),
            "seed {seed}: doc {doc:?}, a {a:?}, b {b:?}"
        );
    }
}

#[test]
fn transform_composes_with_sequences() {
    // A client's buffered edits (composed) transform like the edits one by one: what the
    // server applies and what the client ends with agree.
    for seed in 0..1000 {
        let mut rng = Rng::new(seed);
        let doc = random_text(&mut rng, 10);
        let first = random_operation(&mut rng, &doc);
        let second = random_operation(&mut rng, &first.apply(&doc).expect("first"));
        let remote = random_operation(&mut rng, &doc);
        let both = compose(&first, &second).expect("compose");
        let (both_prime, remote_prime) = transform(&both, &remote).expect("transform");
        let client = remote_prime
            .apply(&both.apply(&doc).expect("both"))
            .expect("remote after both");
        let server = both_prime
            .apply(&remote.apply(&doc).expect("remote"))
            .expect("both after remote");
        assert_eq!(client, server, "seed {seed}");
    }
}
