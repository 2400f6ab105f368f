//! Recovery rules and history parsing of the Redis backplane (its Redis behaviour is tested
//! against a real server in the integration tests).

use super::history_entry;
use crate::backplane::recovery;
use crate::protocol::Frame;

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
    let (seq, frame) =
        history_entry("12\t1700000000000\t{\"a\":\"x\ty\"}".to_owned()).expect("an entry");
    assert_eq!(seq, 12);
    assert_eq!(frame.as_str(), "{\"a\":\"x\ty\"}");
    assert!(history_entry("x\t1\t{}".to_owned()).is_none());
    assert!(history_entry("12".to_owned()).is_none());
}
