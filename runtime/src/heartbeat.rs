//! Heartbeat: when to send the next ping and when a silent peer is presumed dead. Pure state,
//! driven by the connection loop with tokio time, so tests run with paused time.

use std::time::Duration;

use tokio::time::Instant;

/// What the connection should do at a given moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeartbeatAction {
    /// Send a ping frame now.
    SendPing,
    /// Nothing arrived within the timeout after a ping: drop without a close handshake.
    Dead,
    /// Nothing to do until `next_deadline`.
    Wait,
}

/// Ping schedule and liveness of one connection.
#[derive(Debug, Clone)]
pub struct Heartbeat {
    interval: Duration,
    timeout: Duration,
    next_ping: Instant,
    /// Set after a ping until any frame arrives.
    dead_at: Option<Instant>,
}

impl Heartbeat {
    /// The first ping goes out one interval after `now`.
    pub fn new(interval: Duration, timeout: Duration, now: Instant) -> Self {
        Heartbeat {
            interval,
            timeout,
            next_ping: now + interval,
            dead_at: None,
        }
    }

    /// Any frame from the client proves it alive.
    pub fn received(&mut self) {
        self.dead_at = None;
    }

    /// The next moment at which `poll` has something to do.
    pub fn next_deadline(&self) -> Instant {
        match self.dead_at {
            Some(dead_at) => dead_at.min(self.next_ping),
            None => self.next_ping,
        }
    }

    /// Decides what to do at `now`; call when `next_deadline` has passed.
    pub fn poll(&mut self, now: Instant) -> HeartbeatAction {
        if self.dead_at.is_some_and(|dead_at| now >= dead_at) {
            return HeartbeatAction::Dead;
        }
        if now >= self.next_ping {
            self.next_ping = now + self.interval;
            // A ping while one is outstanding keeps the earlier deadline.
            if self.dead_at.is_none() {
                self.dead_at = Some(now + self.timeout);
            }
            return HeartbeatAction::SendPing;
        }
        HeartbeatAction::Wait
    }
}

#[cfg(test)]
mod tests;
