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
