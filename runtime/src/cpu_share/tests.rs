//! The CPU share's bucket and the running-time clock.

use std::time::{Duration, Instant};

use super::{BURST, CpuShare, RunClock};

const TICK: Duration = Duration::from_millis(5);

#[test]
fn a_tenant_within_its_share_never_waits() {
    // One core: a call that runs 5 ms every 5 ms uses exactly the share.
    let share = CpuShare::new(1.0);
    let mut now = Instant::now();
    for _ in 0..1000 {
        assert_eq!(share.admit(TICK, now), Ok(()));
        now += TICK;
        assert_eq!(share.charge(TICK, TICK, now), None);
    }
}

#[test]
fn a_tenant_past_its_share_waits_for_what_it_overspent() {
    // Half a core. The bucket starts at BURST (50 ms); the call reserves a tick (45 left),
    // the bucket refills to its cap in the next 50 ms, the reservation comes back, and 100 ms
    // of CPU leaves it 45 ms short: 90 ms of waiting at half a core.
    let share = CpuShare::new(0.5);
    let start = Instant::now();
    assert_eq!(share.admit(TICK, start), Ok(()));
    let wait = share
        .charge(
            Duration::from_millis(100),
            TICK,
            start + Duration::from_millis(50),
        )
        .expect("past its share");
    assert_eq!(wait, Duration::from_millis(90));
    // Admission refuses until then, and says how long is left.
    let early = start + Duration::from_millis(80);
    assert_eq!(share.admit(TICK, early), Err(Duration::from_millis(60)));
    assert_eq!(
        share.admit(TICK, start + Duration::from_millis(140)),
        Ok(())
    );
}

#[test]
fn admission_reserves_a_tick_so_a_crowd_of_waiters_is_let_in_a_few_at_a_time() {
    let share = CpuShare::new(1.0);
    let now = Instant::now();
    let admitted = (0..100).filter(|_| share.admit(TICK, now).is_ok()).count();
    // The bucket holds BURST: one reservation per tick of it, and one more that takes it
    // below zero.
    assert_eq!(admitted as u128, BURST.as_nanos() / TICK.as_nanos() + 1);
    // Giving the reservations back without running lets the next ones in at once.
    for _ in 0..admitted {
        share.charge(Duration::ZERO, TICK, now);
    }
    assert_eq!(share.admit(TICK, now), Ok(()));
}

#[test]
fn an_idle_tenant_bursts_no_further_than_the_bucket() {
    let share = CpuShare::new(1.0);
    let later = Instant::now() + Duration::from_secs(3600);
    // An hour of idleness still fills the bucket only to BURST.
    assert_eq!(share.charge(BURST, Duration::ZERO, later), None);
    assert!(share.charge(TICK, Duration::ZERO, later).is_some());
}

#[tokio::test]
async fn the_run_clock_counts_time_inside_polls_not_waits() {
    let clock = RunClock::default();
    clock
        .run(async {
            let spin_until = Instant::now() + Duration::from_millis(20);
            while Instant::now() < spin_until {
                std::hint::spin_loop();
            }
            // Waiting inside the call is not running.
            tokio::time::sleep(Duration::from_millis(200)).await;
        })
        .await;
    let used = clock.uncharged();
    assert!(used >= Duration::from_millis(20), "{used:?}");
    assert!(used < Duration::from_millis(150), "{used:?}");
    // Charged once only.
    assert_eq!(clock.uncharged(), Duration::ZERO);
    clock.reset();
    assert_eq!(clock.uncharged(), Duration::ZERO);
}
