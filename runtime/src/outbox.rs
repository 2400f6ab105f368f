//! A connection's bounded outbound queue. Producers (rooms, replies, the backplane) push
//! encoded frames without blocking; the connection's task drains every ready frame at once and
//! writes them with one flush. Past its bound in messages or bytes the queue is dropped and the
//! connection closes with 1013: it never grows without limit.

use std::collections::VecDeque;

use parking_lot::Mutex;
use tokio::sync::Notify;

use crate::protocol::{CloseReason, Frame};

/// What the connection task takes from its outbox.
#[derive(Debug)]
pub enum Batch {
    /// Frames to write, in order: they are in the queue passed to [`Outbox::take`].
    Frames,
    /// Close the connection with this reason (after nothing else).
    Close(CloseReason),
}

/// Whether a pushed frame was queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushed {
    /// Queued for writing.
    Queued,
    /// The connection is closing; the frame was discarded.
    Closed,
    /// This push passed the bound: the connection now closes as a slow consumer.
    Overflowed,
}

#[derive(Debug, Default)]
struct State {
    queue: VecDeque<Frame>,
    bytes: usize,
    closing: Option<CloseReason>,
    /// The close reason was handed to the connection task.
    close_taken: bool,
}

/// A bounded queue of frames for one connection.
#[derive(Debug)]
pub struct Outbox {
    state: Mutex<State>,
    ready: Notify,
    max_messages: usize,
    max_bytes: usize,
}

impl Outbox {
    /// An empty queue; it allocates nothing until the first push.
    pub fn new(max_messages: usize, max_bytes: usize) -> Self {
        Outbox {
            state: Mutex::new(State::default()),
            ready: Notify::new(),
            max_messages,
            max_bytes,
        }
    }

    /// Queues a frame unless the connection is closing; overflowing closes it with 1013.
    pub fn push(&self, frame: Frame) -> Pushed {
        let mut state = self.state.lock();
        if state.closing.is_some() {
            return Pushed::Closed;
        }
        if state.queue.len() + 1 > self.max_messages || state.bytes + frame.len() > self.max_bytes {
            // What is queued will never be read in time; free it now.
            state.queue = VecDeque::new();
            state.bytes = 0;
            state.closing = Some(CloseReason::SlowConsumer);
            drop(state);
            self.ready.notify_one();
            return Pushed::Overflowed;
        }
        state.bytes += frame.len();
        let was_empty = state.queue.is_empty();
        state.queue.push_back(frame);
        drop(state);
        if was_empty {
            self.ready.notify_one();
        }
        Pushed::Queued
    }

    /// Asks the connection to close; the first reason wins. Frames already queued are still
    /// written first, except after an overflow.
    pub fn close(&self, reason: CloseReason) {
        let mut state = self.state.lock();
        if state.closing.is_none() {
            state.closing = Some(reason);
            drop(state);
            self.ready.notify_one();
        }
    }

    /// True once a close was requested.
    pub fn is_closing(&self) -> bool {
        self.state.lock().closing.is_some()
    }

    /// True once a push passed the bound: nothing queued will be written any more.
    pub fn has_overflowed(&self) -> bool {
        matches!(self.state.lock().closing, Some(CloseReason::SlowConsumer))
    }

    /// Takes what is ready without waiting: every queued frame, or else the close reason.
    ///
    /// The frames are swapped into `frames`, which must be empty: its allocation becomes the
    /// outbox's next queue, so a connection's two queues take turns instead of a new
    /// allocation per batch.
    pub fn take(&self, frames: &mut VecDeque<Frame>) -> Option<Batch> {
        debug_assert!(frames.is_empty(), "the previous batch was written");
        let mut state = self.state.lock();
        if !state.queue.is_empty() {
            state.bytes = 0;
            std::mem::swap(&mut state.queue, frames);
            return Some(Batch::Frames);
        }
        if !state.close_taken
            && let Some(reason) = state.closing.clone()
        {
            state.close_taken = true;
            return Some(Batch::Close(reason));
        }
        None
    }

    /// Waits until `take` may have something.
    pub async fn ready(&self) {
        self.ready.notified().await;
    }
}

#[cfg(test)]
mod tests;
