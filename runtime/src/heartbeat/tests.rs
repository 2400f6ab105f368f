//! Heartbeat schedule under paused tokio time.

use std::time::Duration;

use tokio::time::{Instant, advance, sleep_until};

use super::{Heartbeat, HeartbeatAction};

const INTERVAL: Duration = Duration::from_secs(30);
const TIMEOUT: Duration = Duration::from_secs(10);

async fn wait_for_deadline(heartbeat: &mut Heartbeat) -> HeartbeatAction {
    sleep_until(heartbeat.next_deadline()).await;
    heartbeat.poll(Instant::now())
}

#[tokio::test(start_paused = true)]
async fn pings_every_interval_while_the_peer_answers() {
    let start = Instant::now();
    let mut heartbeat = Heartbeat::new(INTERVAL, TIMEOUT, start);
    for round in 1..=3u32 {
        assert_eq!(
            wait_for_deadline(&mut heartbeat).await,
            HeartbeatAction::SendPing
        );
        assert_eq!(Instant::now() - start, INTERVAL * round);
        advance(Duration::from_secs(1)).await;
        heartbeat.received();
    }
}

#[tokio::test(start_paused = true)]
async fn a_silent_peer_is_dead_one_timeout_after_the_ping() {
    let start = Instant::now();
    let mut heartbeat = Heartbeat::new(INTERVAL, TIMEOUT, start);
    assert_eq!(
        wait_for_deadline(&mut heartbeat).await,
        HeartbeatAction::SendPing
    );
    assert_eq!(
        wait_for_deadline(&mut heartbeat).await,
        HeartbeatAction::Dead
    );
    assert_eq!(Instant::now() - start, INTERVAL + TIMEOUT);
}

#[tokio::test(start_paused = true)]
async fn a_timeout_longer_than_the_interval_keeps_the_first_deadline() {
    let start = Instant::now();
    let mut heartbeat = Heartbeat::new(Duration::from_secs(1), Duration::from_secs(3), start);
    let mut pings = 0;
    loop {
        match wait_for_deadline(&mut heartbeat).await {
            HeartbeatAction::SendPing => pings += 1,
            HeartbeatAction::Dead => break,
            HeartbeatAction::Wait => {}
        }
    }
    assert_eq!(Instant::now() - start, Duration::from_secs(4));
    assert_eq!(pings, 3);
}

#[tokio::test(start_paused = true)]
async fn traffic_before_the_deadline_keeps_the_connection() {
    let start = Instant::now();
    let mut heartbeat = Heartbeat::new(INTERVAL, TIMEOUT, start);
    assert_eq!(
        wait_for_deadline(&mut heartbeat).await,
        HeartbeatAction::SendPing
    );
    advance(TIMEOUT - Duration::from_millis(1)).await;
    heartbeat.received();
    assert_eq!(
        wait_for_deadline(&mut heartbeat).await,
        HeartbeatAction::SendPing
    );
    assert_eq!(Instant::now() - start, INTERVAL * 2);
}
