//! A tenant's share of the node's CPU for plugin calls: a bucket of CPU time that fills at
//! `share x cores` and that every call's running time is taken from. A tenant whose plugins
//! spend faster than that waits, off the worker threads, so the rest of the node (other tenants,
//! the built-in types, health checks) keeps the other cores.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// CPU time a tenant may run ahead of its share (at most one call's worth per tick: this is
/// how far an idle tenant may burst before it is held to its share).
pub const BURST: Duration = Duration::from_millis(50);

/// Plugin CPU accounting and throttling of one tenant.
#[derive(Debug)]
pub struct CpuShare {
    /// Nanoseconds of CPU per nanosecond of wall time (that is, cores).
    rate: f64,
    capacity_ns: f64,
    bucket: Mutex<Bucket>,
}

#[derive(Debug)]
struct Bucket {
    tokens_ns: f64,
    updated: Instant,
}

impl CpuShare {
    /// A full bucket that fills at `cores` seconds of CPU per second.
    pub fn new(cores: f64) -> Self {
        CpuShare {
            rate: cores.max(f64::MIN_POSITIVE),
            capacity_ns: BURST.as_nanos() as f64,
            bucket: Mutex::new(Bucket {
                tokens_ns: BURST.as_nanos() as f64,
                updated: Instant::now(),
            }),
        }
    }

    /// The cores a share of `fraction` of this machine's parallelism comes to.
    pub fn cores_for(fraction: f64) -> f64 {
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        fraction * cores as f64
    }

    /// Takes `reserve` from the bucket for a call about to run, or says how long to wait first
    /// when the tenant has spent its share. The reservation is given back by [`Self::charge`].
    pub fn admit(&self, reserve: Duration, now: Instant) -> Result<(), Duration> {
        let mut bucket = self.bucket.lock();
        self.refill(&mut bucket, now);
        if bucket.tokens_ns < 0.0 {
            return Err(self.wait_for(bucket.tokens_ns));
        }
        bucket.tokens_ns -= reserve.as_nanos() as f64;
        Ok(())
    }

    /// Charges CPU time a call used; how long it should now wait, when the tenant is past its
    /// share. `refund` gives back a reservation of [`Self::admit`].
    pub fn charge(&self, used: Duration, refund: Duration, now: Instant) -> Option<Duration> {
        let mut bucket = self.bucket.lock();
        self.refill(&mut bucket, now);
        bucket.tokens_ns = (bucket.tokens_ns + refund.as_nanos() as f64 - used.as_nanos() as f64)
            .min(self.capacity_ns);
        (bucket.tokens_ns < 0.0).then(|| self.wait_for(bucket.tokens_ns))
    }

    fn refill(&self, bucket: &mut Bucket, now: Instant) {
        let elapsed = now.saturating_duration_since(bucket.updated).as_nanos() as f64;
        bucket.tokens_ns = (bucket.tokens_ns + elapsed * self.rate).min(self.capacity_ns);
        bucket.updated = now;
    }

    fn wait_for(&self, tokens_ns: f64) -> Duration {
        Duration::from_nanos((-tokens_ns / self.rate).ceil() as u64)
    }
}

/// Running time of one call: the time spent inside its polls, not the time it waited (for
/// the async runtime, the network, or its share). Shared between the call's future, which
/// marks its polls, and the store's epoch callback, which charges the tenant as it goes.
#[derive(Debug, Default)]
pub struct RunClock {
    busy_ns: AtomicU64,
    /// When the poll in progress began (0: not in a poll).
    poll_started_ns: AtomicU64,
    charged_ns: AtomicU64,
}

/// Nanoseconds since a fixed point of this process (never 0).
fn now_ns() -> u64 {
    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    let origin = *ORIGIN.get_or_init(|| Instant::now() - Duration::from_nanos(1));
    origin.elapsed().as_nanos() as u64
}

impl RunClock {
    /// Starts a new call.
    pub fn reset(&self) {
        self.busy_ns.store(0, Ordering::Relaxed);
        self.poll_started_ns.store(0, Ordering::Relaxed);
        self.charged_ns.store(0, Ordering::Relaxed);
    }

    /// Runs `future`, counting the time spent inside its polls.
    pub async fn run<F: Future>(&self, future: F) -> F::Output {
        let mut future = std::pin::pin!(future);
        std::future::poll_fn(|cx| {
            self.poll_started_ns.store(now_ns(), Ordering::Relaxed);
            let polled = future.as_mut().poll(cx);
            let started = self.poll_started_ns.swap(0, Ordering::Relaxed);
            self.busy_ns
                .fetch_add(now_ns().saturating_sub(started), Ordering::Relaxed);
            polled
        })
        .await
    }

    /// Running time not charged yet (including the poll in progress), now marked charged.
    pub fn uncharged(&self) -> Duration {
        let started = self.poll_started_ns.load(Ordering::Relaxed);
        let in_poll = if started == 0 {
            0
        } else {
            now_ns().saturating_sub(started)
        };
        let running = self.busy_ns.load(Ordering::Relaxed) + in_poll;
        let charged = self.charged_ns.swap(running, Ordering::Relaxed);
        Duration::from_nanos(running.saturating_sub(charged))
    }
}

#[cfg(test)]
mod tests;
