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
