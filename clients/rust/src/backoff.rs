//! The reconnect policy: exponential backoff with full jitter, and the small random source
//! behind the jitter.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// When to reconnect after a connection is lost or an attempt fails.
///
/// Attempt `n` (counting from 1) waits a uniformly random time between zero and
/// `min(cap, base * 2^(n-1))` ("full jitter"), so many clients cut off together do not come
/// back together. The count restarts after every successful connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reconnect {
    /// The ceiling of the first attempt's delay.
    pub base: Duration,
    /// The largest ceiling any attempt's delay may have.
    pub cap: Duration,
    /// Consecutive failed attempts after which the client gives up for good; `None` never does.
    pub max_attempts: Option<u32>,
}

impl Default for Reconnect {
    fn default() -> Self {
        Reconnect {
            base: Duration::from_millis(250),
            cap: Duration::from_secs(10),
            max_attempts: None,
        }
    }
}

impl Reconnect {
    /// The longest delay attempt `attempt` (from 1) may wait: `min(cap, base * 2^(attempt-1))`.
    pub fn ceiling(&self, attempt: u32) -> Duration {
        let doublings = attempt.saturating_sub(1);
        let factor = 1u32.checked_shl(doublings).unwrap_or(u32::MAX);
        self.base.saturating_mul(factor).min(self.cap)
    }

    /// A delay for attempt `attempt`, uniform in `0..=ceiling(attempt)`.
    pub(crate) fn delay(&self, attempt: u32, jitter: &mut Jitter) -> Duration {
        let ceiling = u64::try_from(self.ceiling(attempt).as_nanos()).unwrap_or(u64::MAX);
        Duration::from_nanos(jitter.up_to(ceiling))
    }

    /// Whether attempt `attempt` (from 1) is past `max_attempts`.
    pub(crate) fn exhausted(&self, attempt: u32) -> bool {
        self.max_attempts.is_some_and(|max| attempt > max)
    }
}

/// A xorshift64* generator: plenty for jitter, not for anything secret.
#[derive(Debug, Clone)]
pub(crate) struct Jitter(u64);

impl Jitter {
    /// A generator with a fixed seed (zero is replaced, as xorshift would stay at zero).
    pub(crate) fn with_seed(seed: u64) -> Jitter {
        Jitter(if seed == 0 {
            0x9E37_79B9_7F4A_7C15
        } else {
            seed
        })
    }

    /// A generator seeded from the clock and the address of a local, so clients started in the
    /// same instant still differ.
    pub(crate) fn from_clock() -> Jitter {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|since| since.as_nanos() as u64)
            .unwrap_or(0);
        let local = 0u8;
        let address = std::ptr::addr_of!(local) as usize as u64;
        Jitter::with_seed(nanos ^ address.rotate_left(32))
    }

    fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number in `0..=bound`.
    pub(crate) fn up_to(&mut self, bound: u64) -> u64 {
        match bound.checked_add(1) {
            Some(span) => self.next_u64() % span,
            None => self.next_u64(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::{Jitter, Reconnect};

    fn policy(base_ms: u64, cap_ms: u64) -> Reconnect {
        Reconnect {
            base: Duration::from_millis(base_ms),
            cap: Duration::from_millis(cap_ms),
            max_attempts: None,
        }
    }

    #[test]
    fn the_ceiling_doubles_from_base_until_the_cap() {
        let reconnect = policy(100, 1_000);
        let ceilings: Vec<u128> = (1..=7)
            .map(|attempt| reconnect.ceiling(attempt).as_millis())
            .collect();
        assert_eq!(ceilings, [100, 200, 400, 800, 1_000, 1_000, 1_000]);
    }

    #[test]
    fn the_ceiling_never_overflows() {
        let reconnect = policy(250, 10_000);
        for attempt in [0, 1, 31, 32, 33, 64, u32::MAX] {
            assert!(reconnect.ceiling(attempt) <= Duration::from_millis(10_000));
        }
        assert_eq!(reconnect.ceiling(0), Duration::from_millis(250));
        assert_eq!(reconnect.ceiling(u32::MAX), Duration::from_millis(10_000));
    }

    #[test]
    fn every_delay_is_within_zero_and_the_ceiling() {
        let reconnect = policy(50, 2_000);
        let mut jitter = Jitter::with_seed(7);
        for attempt in 1..=12 {
            for _ in 0..500 {
                let delay = reconnect.delay(attempt, &mut jitter);
                assert!(
                    delay <= reconnect.ceiling(attempt),
                    "attempt {attempt}: {delay:?} over {:?}",
                    reconnect.ceiling(attempt)
                );
            }
        }
    }

    #[test]
    fn delays_spread_over_the_whole_range_and_grow_with_attempts() {
        let reconnect = policy(100, 100_000);
        let mut jitter = Jitter::with_seed(42);
        let mut previous_mean = 0.0;
        for attempt in 1..=8 {
            let samples: Vec<f64> = (0..2_000)
                .map(|_| reconnect.delay(attempt, &mut jitter).as_secs_f64())
                .collect();
            let ceiling = reconnect.ceiling(attempt).as_secs_f64();
            let low = samples.iter().cloned().fold(f64::MAX, f64::min);
            let high = samples.iter().cloned().fold(0.0, f64::max);
            let mean = samples.iter().sum::<f64>() / samples.len() as f64;
            // Full jitter: uniform over [0, ceiling], so the extremes come close to both ends
            // and the mean is near the middle.
            assert!(low < ceiling * 0.02, "attempt {attempt}: lowest {low}");
            assert!(high > ceiling * 0.98, "attempt {attempt}: highest {high}");
            assert!(
                (mean / ceiling - 0.5).abs() < 0.05,
                "attempt {attempt}: mean {mean} of ceiling {ceiling}"
            );
            assert!(mean > previous_mean * 1.6, "attempt {attempt}: no growth");
            previous_mean = mean;
        }
    }

    #[test]
    fn max_attempts_bounds_the_retries() {
        let mut reconnect = policy(1, 1);
        assert!(!reconnect.exhausted(1_000_000));
        reconnect.max_attempts = Some(3);
        assert!(!reconnect.exhausted(3));
        assert!(reconnect.exhausted(4));
    }

    #[test]
    fn differently_seeded_generators_differ_and_zero_is_a_usable_seed() {
        let mut zero = Jitter::with_seed(0);
        let first = zero.up_to(u64::MAX);
        assert_ne!(first, zero.up_to(u64::MAX));
        let mut a = Jitter::with_seed(1);
        let mut b = Jitter::with_seed(2);
        assert_ne!(a.up_to(1 << 40), b.up_to(1 << 40));
        assert_eq!(Jitter::with_seed(5).up_to(0), 0);
    }
}
