//! Compile slots: at most `capacity` compiles run at once, the rest wait in two first-come
//! queues. Swaps (uploads, reloads, startup) go before background builds (the optimized build
//! of a version already serving), and only swaps are bounded in number: background builds are
//! one per loaded plugin at most, and they wait as long as it takes.

use std::collections::VecDeque;
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::oneshot;

/// Which queue a compile waits in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Priority {
    /// A new version to swap in: someone (a `PUT`, a reload, the start) waits for it.
    Swap,
    /// A version's optimized build, made while its baseline build serves.
    Background,
}

/// Compile slots of one scope (the node, or one tenant).
#[derive(Debug)]
pub struct Gate {
    capacity: usize,
    queue: usize,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    running: usize,
    next_id: u64,
    swaps: VecDeque<(u64, oneshot::Sender<()>)>,
    background: VecDeque<(u64, oneshot::Sender<()>)>,
}

/// A swap found the queue full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueFull;

/// A running compile's slot, given back on drop.
#[derive(Debug)]
pub struct Permit(Arc<Gate>);

impl Drop for Permit {
    fn drop(&mut self) {
        self.0.release();
    }
}

/// A place in a queue; dropping it leaves the queue (or gives back a slot granted meanwhile).
#[derive(Debug)]
struct Waiting {
    gate: Arc<Gate>,
    id: u64,
    granted: oneshot::Receiver<()>,
}

impl Drop for Waiting {
    fn drop(&mut self) {
        let mut state = self.gate.state.lock();
        let before = state.swaps.len() + state.background.len();
        state.swaps.retain(|(id, _)| *id != self.id);
        state.background.retain(|(id, _)| *id != self.id);
        let removed = before != state.swaps.len() + state.background.len();
        drop(state);
        if !removed && self.granted.try_recv().is_ok() {
            // Granted between the wake-up and this drop: the slot was never used.
            self.gate.release();
        }
    }
}

impl Gate {
    /// `capacity` compiles at once; at most `queue` swaps waiting.
    pub fn new(capacity: usize, queue: usize) -> Arc<Gate> {
        Arc::new(Gate {
            capacity: capacity.max(1),
            queue,
            state: Mutex::new(State::default()),
        })
    }

    /// The `(capacity, queue)` it was made with.
    pub fn capacity(&self) -> (usize, usize) {
        (self.capacity, self.queue)
    }

    /// Compiles running and waiting.
    pub fn load(&self) -> (usize, usize) {
        let state = self.state.lock();
        (state.running, state.swaps.len() + state.background.len())
    }

    /// Takes a slot, waiting for one in `priority`'s queue. Refused at once when a swap finds
    /// the queue full. Cancel by dropping the future.
    pub async fn acquire(self: &Arc<Self>, priority: Priority) -> Result<Permit, QueueFull> {
        let mut waiting = {
            let mut state = self.state.lock();
            let ahead = match priority {
                Priority::Swap => state.swaps.len(),
                Priority::Background => state.swaps.len() + state.background.len(),
            };
            if state.running < self.capacity && ahead == 0 {
                state.running += 1;
                return Ok(Permit(self.clone()));
            }
            if priority == Priority::Swap && state.swaps.len() >= self.queue {
                return Err(QueueFull);
            }
            let (grant, granted) = oneshot::channel();
            let id = state.next_id;
            state.next_id += 1;
            match priority {
                Priority::Swap => state.swaps.push_back((id, grant)),
                Priority::Background => state.background.push_back((id, grant)),
            }
            Waiting {
                gate: self.clone(),
                id,
                granted,
            }
        };
        // The sender stays in the queue until it grants, so this ends with a grant; the grant
        // is consumed here, so dropping `waiting` then gives nothing back.
        match (&mut waiting.granted).await {
            Ok(()) => Ok(Permit(self.clone())),
            Err(_) => Err(QueueFull),
        }
    }

    /// Hands a finished compile's slot to the next waiter, swaps first.
    fn release(&self) {
        let mut state = self.state.lock();
        loop {
            let next = match state.swaps.pop_front() {
                Some(next) => Some(next),
                None => state.background.pop_front(),
            };
            match next {
                // The slot passes on: `running` stays.
                Some((_, grant)) => {
                    if grant.send(()).is_ok() {
                        return;
                    }
                }
                None => {
                    state.running -= 1;
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn runs_up_to_capacity_and_hands_slots_to_swaps_first() {
        let gate = Gate::new(1, 4);
        let first = gate.acquire(Priority::Swap).await.expect("a free slot");
        let background = tokio::spawn({
            let gate = gate.clone();
            async move {
                gate.acquire(Priority::Background)
                    .await
                    .map(|_| "background")
            }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        let swap = tokio::spawn({
            let gate = gate.clone();
            async move {
                let permit = gate.acquire(Priority::Swap).await;
                tokio::time::sleep(Duration::from_millis(20)).await;
                permit.map(|_| "swap")
            }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(gate.load(), (1, 2));
        drop(first);
        assert_eq!(swap.await.expect("joined"), Ok("swap"));
        assert_eq!(background.await.expect("joined"), Ok("background"));
        assert_eq!(gate.load(), (0, 0));
    }

    #[tokio::test]
    async fn a_full_queue_refuses_swaps_but_not_background_builds() {
        let gate = Gate::new(1, 1);
        let _running = gate.acquire(Priority::Swap).await.expect("a free slot");
        let queued = tokio::spawn({
            let gate = gate.clone();
            async move { gate.acquire(Priority::Swap).await.is_ok() }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(gate.acquire(Priority::Swap).await.err(), Some(QueueFull));
        let background = tokio::time::timeout(
            Duration::from_millis(20),
            gate.acquire(Priority::Background),
        )
        .await;
        assert!(background.is_err(), "a background build waits instead");
        assert_eq!(gate.load(), (1, 1));
        queued.abort();
    }

    #[tokio::test]
    async fn a_waiter_that_gives_up_leaves_no_trace() {
        let gate = Gate::new(1, 4);
        let running = gate.acquire(Priority::Swap).await.expect("a free slot");
        let gave_up =
            tokio::time::timeout(Duration::from_millis(20), gate.acquire(Priority::Swap)).await;
        assert!(gave_up.is_err());
        assert_eq!(gate.load(), (1, 0));
        drop(running);
        assert_eq!(gate.load(), (0, 0));
        let again = gate
            .acquire(Priority::Swap)
            .await
            .expect("the slot is free");
        assert_eq!(gate.load(), (1, 0));
        drop(again);
        assert_eq!(gate.load(), (0, 0));
    }
}
