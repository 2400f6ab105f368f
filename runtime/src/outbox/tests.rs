//! Outbox bounds and ordering.

use std::collections::VecDeque;

use super::{Batch, Outbox, Pushed};
use crate::protocol::{CloseReason, Frame, pong};

fn frame(id: &str) -> Frame {
    pong(Some(id))
}

fn frames(outbox: &Outbox) -> Vec<String> {
    let mut frames = VecDeque::new();
    match outbox.take(&mut frames) {
        Some(Batch::Frames) => frames.iter().map(|f| f.as_str().to_owned()).collect(),
        other => panic!("expected frames, got {other:?}"),
    }
}

#[test]
fn drains_every_ready_frame_in_order() {
    let outbox = Outbox::new(10, 1 << 20);
    for id in ["a", "b", "c"] {
        assert_eq!(outbox.push(frame(id)), Pushed::Queued);
    }
    let texts = frames(&outbox);
    assert_eq!(texts.len(), 3);
    assert!(texts[0].contains("\"a\"") && texts[2].contains("\"c\""));
    assert!(outbox.take(&mut VecDeque::new()).is_none());
}

#[test]
fn passing_the_message_bound_closes_as_slow_consumer() {
    let outbox = Outbox::new(2, 1 << 20);
    assert_eq!(outbox.push(frame("a")), Pushed::Queued);
    assert_eq!(outbox.push(frame("b")), Pushed::Queued);
    assert_eq!(outbox.push(frame("c")), Pushed::Overflowed);
    assert_eq!(outbox.push(frame("d")), Pushed::Closed);
    match outbox.take(&mut VecDeque::new()) {
        Some(Batch::Close(reason)) => assert_eq!(reason, CloseReason::SlowConsumer),
        other => panic!("expected close, got {other:?}"),
    }
    assert!(
        outbox.take(&mut VecDeque::new()).is_none(),
        "the close is handed out once"
    );
}

#[test]
fn passing_the_byte_bound_closes_as_slow_consumer() {
    let one = frame("a").len();
    let outbox = Outbox::new(100, one * 2);
    assert_eq!(outbox.push(frame("a")), Pushed::Queued);
    assert_eq!(outbox.push(frame("b")), Pushed::Queued);
    assert_eq!(outbox.push(frame("c")), Pushed::Overflowed);
}

#[test]
fn draining_frees_room_under_the_bound() {
    let outbox = Outbox::new(2, 1 << 20);
    outbox.push(frame("a"));
    outbox.push(frame("b"));
    frames(&outbox);
    assert_eq!(outbox.push(frame("c")), Pushed::Queued);
    assert_eq!(outbox.push(frame("d")), Pushed::Queued);
}

#[test]
fn a_requested_close_comes_after_queued_frames_and_first_reason_wins() {
    let outbox = Outbox::new(10, 1 << 20);
    outbox.push(frame("a"));
    outbox.close(CloseReason::ShuttingDown);
    outbox.close(CloseReason::Internal);
    assert_eq!(outbox.push(frame("b")), Pushed::Closed);
    assert_eq!(frames(&outbox).len(), 1);
    match outbox.take(&mut VecDeque::new()) {
        Some(Batch::Close(reason)) => assert_eq!(reason, CloseReason::ShuttingDown),
        other => panic!("expected close, got {other:?}"),
    }
}

/// Over random pushes, drains and closes, against a model: the queue never holds more than its
/// bounds, frames come out once each in the order pushed, the push that would pass a bound is
/// the one answered `Overflowed` (and the queue is dropped), and after any close nothing more
/// is queued and the reason is handed out once.
#[test]
fn random_pushes_drains_and_closes_keep_the_bounds_order_and_close_rules() {
    for seed in 0..200 {
        let mut random = crate::test_random::Random::new(seed);
        let max_messages = 1 + random.below(20) as usize;
        let max_bytes = 50 + random.below(2_000) as usize;
        let outbox = Outbox::new(max_messages, max_bytes);
        let mut model: VecDeque<String> = VecDeque::new();
        let mut closing: Option<CloseReason> = None;
        let mut close_taken = false;
        let mut next = 0u64;
        for step in 0..300 {
            let context = format!("seed {seed}, step {step}");
            match random.below(10) {
                0..=5 => {
                    let text = format!("{next:0width$}", width = 1 + random.below(200) as usize);
                    next += 1;
                    let bytes: usize = model.iter().map(String::len).sum();
                    let expected = if closing.is_some() {
                        Pushed::Closed
                    } else if model.len() + 1 > max_messages || bytes + text.len() > max_bytes {
                        model.clear();
                        closing = Some(CloseReason::SlowConsumer);
                        Pushed::Overflowed
                    } else {
                        model.push_back(text.clone());
                        Pushed::Queued
                    };
                    assert_eq!(outbox.push(Frame::encoded(text)), expected, "{context}");
                }
                6..=8 => {
                    let mut frames = VecDeque::new();
                    match outbox.take(&mut frames) {
                        Some(Batch::Frames) => {
                            let got: Vec<String> =
                                frames.iter().map(|f| f.as_str().to_owned()).collect();
                            assert_eq!(got, Vec::from(std::mem::take(&mut model)), "{context}");
                        }
                        Some(Batch::Close(reason)) => {
                            assert!(model.is_empty() && !close_taken, "{context}");
                            assert_eq!(Some(reason), closing.clone(), "{context}");
                            close_taken = true;
                        }
                        None => assert!(
                            model.is_empty() && (closing.is_none() || close_taken),
                            "{context}"
                        ),
                    }
                }
                _ => {
                    outbox.close(CloseReason::ShuttingDown);
                    closing.get_or_insert(CloseReason::ShuttingDown);
                }
            }
            let held: usize = model.iter().map(String::len).sum();
            assert!(
                model.len() <= max_messages && held <= max_bytes,
                "{context}"
            );
            assert_eq!(
                outbox.has_overflowed(),
                closing == Some(CloseReason::SlowConsumer)
            );
        }
    }
}
