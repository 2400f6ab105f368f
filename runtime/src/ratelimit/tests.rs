//! Token bucket arithmetic.

use std::time::Duration;

use tokio::time::Instant;

use super::TokenBucket;

fn take_many(bucket: &mut TokenBucket, now: Instant, count: usize) -> usize {
    (0..count).filter(|_| bucket.try_take(now)).count()
}

#[test]
fn starts_full_and_allows_exactly_the_burst() {
    let now = Instant::now();
    let mut bucket = TokenBucket::new(10.0, 20.0, now);
    assert_eq!(take_many(&mut bucket, now, 50), 20);
}

#[test]
fn refills_at_the_rate() {
    let start = Instant::now();
    let mut bucket = TokenBucket::new(10.0, 5.0, start);
    assert_eq!(take_many(&mut bucket, start, 5), 5);
    assert!(!bucket.try_take(start));
    let later = start + Duration::from_millis(300);
    assert_eq!(take_many(&mut bucket, later, 10), 3);
}

#[test]
fn never_exceeds_capacity_after_a_long_idle() {
    let start = Instant::now();
    let mut bucket = TokenBucket::new(100.0, 3.0, start);
    let later = start + Duration::from_secs(3600);
    assert_eq!(take_many(&mut bucket, later, 10), 3);
}

#[test]
fn fractional_rates_accumulate() {
    let start = Instant::now();
    let mut bucket = TokenBucket::new(0.5, 1.0, start);
    assert!(bucket.try_take(start));
    assert!(!bucket.try_take(start + Duration::from_millis(1900)));
    assert!(bucket.try_take(start + Duration::from_millis(2000)));
}

/// Over random schedules of attempts: in every prefix of a run, the bucket has granted at most
/// its capacity plus what its rate earned, and after an idle spell of capacity / rate it grants
/// a full burst again.
#[test]
fn never_grants_more_than_burst_plus_rate_and_refills_to_a_full_burst() {
    for seed in 0..200 {
        let mut random = crate::test_random::Random::new(seed);
        let rate = 1.0 + random.below(1000) as f64;
        let capacity = 1.0 + random.below(50) as f64;
        let start = Instant::now();
        let mut bucket = TokenBucket::new(rate, capacity, start);
        let mut now = start;
        let mut granted = 0u64;
        for step in 0..500 {
            now += Duration::from_micros(random.below(5_000));
            granted += take_many(&mut bucket, now, random.below(20) as usize) as u64;
            let earned = capacity + rate * (now - start).as_secs_f64();
            assert!(
                granted as f64 <= earned + 1e-6,
                "seed {seed}, step {step}: {granted} granted, {earned} earned"
            );
        }
        now += Duration::from_secs_f64(capacity / rate + 0.001);
        let burst = capacity.floor() as usize;
        assert_eq!(
            take_many(&mut bucket, now, burst + 1),
            burst,
            "seed {seed}: a full burst after idling"
        );
    }
}
