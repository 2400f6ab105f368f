//! Recovery rules, history parsing and reconnection timing of the Redis backplane (its Redis
//! behaviour is tested against a real server in the integration tests).

use std::time::Duration;

use super::entries::history_entry;
use super::supervisor::backoff;
use crate::backplane::recovery;
use crate::config::MIN_RECONNECT_DELAY;
use crate::protocol::{self, Frame};

fn retained(seqs: &[u64]) -> Vec<(u64, Frame)> {
    seqs.iter()
        .map(|seq| (*seq, Frame::encoded(format!("{{\"seq\":{seq}}}"))))
        .collect()
}

#[test]
fn recovery_replays_what_history_still_covers() {
    let got = recovery(5, 2, retained(&[2, 3, 4, 5]));
    assert!(got.recovered);
    assert_eq!(
        got.frames.iter().map(|(seq, _)| *seq).collect::<Vec<_>>(),
        vec![3, 4, 5]
    );
}

#[test]
fn recovery_is_honest_about_what_it_cannot_cover() {
    // History starts after the client's next message.
    assert!(!recovery(9, 2, retained(&[5, 6, 7, 8, 9])).recovered);
    // The client claims a seq the channel never reached (Redis lost it, or a bad client).
    assert!(!recovery(3, 7, retained(&[1, 2, 3])).recovered);
    // Nothing missed.
    let current = recovery(4, 4, Vec::new());
    assert!(current.recovered && current.frames.is_empty());
    // A channel that never had a message: only `since: 0` missed nothing.
    assert!(recovery(0, 0, Vec::new()).recovered);
    assert!(!recovery(0, 1, Vec::new()).recovered);
}

#[test]
fn history_entries_parse_and_malformed_ones_are_skipped() {
    // As `scripts::PUBLISH` stores it: the head, and the `seq` as the first field.
    let head = protocol::channel_message_head("news", "c", Some("{\"a\":\"x\ty\"}"));
    let (seq, frame) = history_entry(&format!("12\t1700000000000\t{head}")).expect("an entry");
    assert_eq!(seq, 12);
    assert_eq!(
        frame.as_str(),
        "{\"type\":\"news\",\"channel\":\"c\",\"payload\":{\"a\":\"x\ty\"},\"seq\":12}"
    );
    assert!(history_entry("x\t1\t{}").is_none());
    assert!(history_entry("12").is_none());
    assert!(history_entry("12\t1").is_none());
}

#[test]
fn history_entries_of_an_older_build_hold_complete_frames() {
    let old = "{\"type\":\"news\",\"channel\":\"c\",\"payload\":{\"a\":\"x\ty\"},\"seq\":12}";
    let (seq, frame) = history_entry(&format!("12\t1700000000000\t{old}")).expect("an entry");
    assert_eq!(seq, 12);
    assert_eq!(frame.as_str(), old);
}

#[test]
fn reconnection_starts_fast_and_never_waits_longer_than_the_maximum() {
    let max = Duration::from_millis(500);
    for _ in 0..100 {
        let first = backoff(max, 1);
        assert!(
            first >= MIN_RECONNECT_DELAY / 2 && first <= MIN_RECONNECT_DELAY,
            "{first:?}"
        );
        for failures in 1..200 {
            let wait = backoff(max, failures);
            assert!(wait <= max, "attempt {failures} waits {wait:?}");
            // Never more often than twice per maximum wait, once the waits reached it.
            if failures >= 5 {
                assert!(wait >= max / 2, "attempt {failures} waits {wait:?}");
            }
        }
    }
    // Jitter spreads the nodes that lost Redis together.
    let waits: std::collections::HashSet<Duration> = (0..50).map(|_| backoff(max, 9)).collect();
    assert!(waits.len() > 1, "{waits:?}");
    // A large maximum is reached by doubling, not at once.
    assert!(backoff(Duration::from_secs(60), 3) <= MIN_RECONNECT_DELAY * 4);
}

/// Over random channels and `since` values: a recovery either replays exactly the messages
/// after `since`, each once and in `seq` order, or says honestly that it cannot (and replays
/// nothing). It can exactly when the retained window reaches back to `since + 1`.
#[test]
fn recovery_replays_exactly_what_was_missed_in_order_or_nothing() {
    let mut random = crate::test_random::Random::new(7);
    for case in 0..5_000 {
        let last = random.below(60);
        let first = if last == 0 { 1 } else { 1 + random.below(last) };
        let seqs: Vec<u64> = (first..=last).collect();
        let since = random.below(last + 4);
        let got = recovery(last, since, retained(&seqs));
        let context = format!("case {case}: last {last}, retained from {first}, since {since}");
        let can = since == last || (since < last && first <= since + 1);
        assert_eq!(got.recovered, can, "{context}");
        let replayed: Vec<u64> = got.frames.iter().map(|(seq, _)| *seq).collect();
        let expected: Vec<u64> = if can {
            (since + 1..=last).collect()
        } else {
            Vec::new()
        };
        assert_eq!(replayed, expected, "{context}");
    }
}
