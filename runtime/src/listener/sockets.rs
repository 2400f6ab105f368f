//! The node's socket budget: how many TCP connections (plain HTTP and WebSocket alike) it keeps
//! open at once, derived from the open-files limit, and the small reserve that still answers
//! connections arriving while the budget is spent.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use crate::config::HttpConfig;
use crate::metrics::http::SocketFigures;

/// What the socket budget was derived from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SocketCapacity {
    /// Connections served normally at once.
    pub sockets: usize,
    /// The process's soft open-files limit, when it could be read.
    pub open_files: Option<u64>,
}

impl SocketCapacity {
    /// The budget for an open-files soft limit (`None`: unknown): the limit minus
    /// `http.reserved_files` and `http.refusal_sockets`, lowered to `http.max_open_sockets`.
    pub fn derive(open_files: Option<u64>, http: &HttpConfig) -> SocketCapacity {
        let from_limit = open_files.map(|limit| {
            usize::try_from(limit)
                .unwrap_or(usize::MAX)
                .saturating_sub(http.reserved_files)
                .saturating_sub(http.refusal_sockets)
        });
        let sockets = match (from_limit, http.max_open_sockets) {
            (Some(derived), Some(configured)) => derived.min(configured),
            (Some(derived), None) => derived,
            (None, Some(configured)) => configured,
            (None, None) => usize::MAX,
        };
        SocketCapacity {
            sockets,
            open_files,
        }
    }

    /// The budget for this process's current open-files limit.
    pub fn of_process(http: &HttpConfig) -> SocketCapacity {
        let open_files = rlimit::getrlimit(rlimit::Resource::NOFILE)
            .ok()
            .map(|(soft, _)| soft);
        SocketCapacity::derive(open_files, http)
    }
}

/// Open sockets against the budget, and what happened at its edge.
#[derive(Debug)]
pub struct SocketBudget {
    capacity: SocketCapacity,
    refusal_capacity: usize,
    open: AtomicUsize,
    refusing: AtomicUsize,
    answered: AtomicU64,
    shed: AtomicU64,
    accept_errors: AtomicU64,
}

impl SocketBudget {
    /// A budget of `capacity`, with `refusal_sockets` more kept to answer refusals.
    pub fn new(capacity: SocketCapacity, refusal_sockets: usize) -> SocketBudget {
        SocketBudget {
            capacity,
            refusal_capacity: refusal_sockets,
            open: AtomicUsize::new(0),
            refusing: AtomicUsize::new(0),
            answered: AtomicU64::new(0),
            shed: AtomicU64::new(0),
            accept_errors: AtomicU64::new(0),
        }
    }

    /// What the budget was derived from.
    pub fn capacity(&self) -> SocketCapacity {
        self.capacity
    }

    /// Sockets served normally now.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }

    /// Counts a failed `accept` (out of descriptors, or a connection reset before it).
    pub fn accept_failed(&self) {
        self.accept_errors.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a connection closed at once because the refusal reserve was spent too.
    pub fn shed(&self) {
        self.shed.fetch_add(1, Ordering::Relaxed);
    }

    /// Takes a place in the budget unless it is spent.
    pub fn try_open(&self) -> bool {
        take(&self.open, self.capacity.sockets)
    }

    /// Takes a place in the refusal reserve unless it is spent too (counted as answered).
    pub fn try_refusal(&self) -> bool {
        let taken = take(&self.refusing, self.refusal_capacity);
        if taken {
            self.answered.fetch_add(1, Ordering::Relaxed);
        }
        taken
    }

    /// Gives back a place taken by `try_open` (or, `refusal`, by `try_refusal`).
    pub fn release(&self, refusal: bool) {
        let count = if refusal { &self.refusing } else { &self.open };
        count.fetch_sub(1, Ordering::AcqRel);
    }

    /// What the budget reports to the metrics now.
    pub fn figures(&self) -> SocketFigures {
        SocketFigures {
            open: self.open(),
            capacity: self.capacity.sockets,
            answered: self.answered.load(Ordering::Relaxed),
            shed: self.shed.load(Ordering::Relaxed),
            accept_errors: self.accept_errors.load(Ordering::Relaxed),
        }
    }
}

fn take(count: &AtomicUsize, limit: usize) -> bool {
    count
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |open| {
            (open < limit).then_some(open + 1)
        })
        .is_ok()
}

#[cfg(test)]
mod tests;
