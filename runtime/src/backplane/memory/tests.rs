//! Sequencing, history and recovery of the in-memory backplane.

use std::sync::{Arc, Weak};
use std::time::Duration;

use parking_lot::Mutex;

use super::MemoryBackplane;
use crate::backplane::{Backplane, ConnCommand, LocalDelivery, Publish};
use crate::config::HistoryConfig;
use crate::ids::{ConnId, RoomKey};
use crate::protocol::{Frame, MemberInfo, pong};

/// A room delivery: room, frame text, seq, except.
type RoomDelivery = (RoomKey, String, Option<u64>, Option<ConnId>);

/// Records what the backplane delivers.
#[derive(Default)]
struct Recorder {
    rooms: Mutex<Vec<RoomDelivery>>,
    users: Mutex<Vec<(String, String, String)>>,
}

impl LocalDelivery for Recorder {
    fn deliver_to_room(
        &self,
        room: &RoomKey,
        frame: &Frame,
        seq: Option<u64>,
        except: Option<&ConnId>,
    ) {
        self.rooms.lock().push((
            room.clone(),
            frame.as_str().to_owned(),
            seq,
            except.cloned(),
        ));
    }
    fn deliver_to_user(&self, tenant: &str, user_id: &str, frame: &Frame) -> usize {
        self.users.lock().push((
            tenant.to_owned(),
            user_id.to_owned(),
            frame.as_str().to_owned(),
        ));
        1
    }
    fn command(&self, tenant: &str, connection: &ConnId, _command: ConnCommand) -> bool {
        tenant == "a" && connection.as_str() == "here"
    }
    fn local_members(&self, _room: &RoomKey) -> Vec<MemberInfo> {
        Vec::new()
    }
    fn has_local_members(&self, _room: &RoomKey) -> bool {
        false
    }
    fn has_user(&self, _tenant: &str, _user_id: &str) -> bool {
        false
    }
    fn local_connections(&self) -> Vec<(Arc<str>, Arc<str>, ConnId)> {
        Vec::new()
    }
}

fn setup() -> (MemoryBackplane, Arc<Recorder>) {
    let backplane = MemoryBackplane::new();
    let recorder = Arc::new(Recorder::default());
    let local: Arc<dyn LocalDelivery> = recorder.clone();
    // The weak handle shares the recorder's allocation, so it lives as long as `recorder`.
    backplane.attach("node", Arc::downgrade(&local) as Weak<dyn LocalDelivery>);
    (backplane, recorder)
}

fn room(tenant: &str, channel: &str) -> RoomKey {
    RoomKey::new(&Arc::from(tenant), channel)
}

fn history(size: usize) -> HistoryConfig {
    HistoryConfig {
        size,
        ttl: Duration::from_secs(60),
        max_bytes: crate::config::DEFAULT_HISTORY_MAX_BYTES,
    }
}

async fn publish(backplane: &MemoryBackplane, room: &RoomKey, text: &str, size: usize) -> u64 {
    publish_within(backplane, room, text, &history(size)).await
}

async fn publish_within(
    backplane: &MemoryBackplane,
    room: &RoomKey,
    text: &str,
    history: &HistoryConfig,
) -> u64 {
    let payload = format!("\"{text}\"");
    backplane
        .publish(
            room,
            Publish {
                msg_type: "m",
                payload: Some(&payload),
                except: None,
                history,
            },
        )
        .await
        .expect("memory publish never fails")
}

#[tokio::test]
async fn sequences_per_channel_and_per_tenant() {
    let (backplane, recorder) = setup();
    let lobby_a = room("a", "lobby");
    let lobby_b = room("b", "lobby");
    assert_eq!(publish(&backplane, &lobby_a, "1", 10).await, 1);
    assert_eq!(publish(&backplane, &lobby_a, "2", 10).await, 2);
    assert_eq!(publish(&backplane, &lobby_b, "x", 10).await, 1);
    let delivered = recorder.rooms.lock();
    assert_eq!(delivered.len(), 3);
    assert_eq!(
        delivered[1].1,
        r#"{"type":"m","channel":"lobby","payload":"2","seq":2}"#
    );
    assert_eq!(delivered[1].2, Some(2));
    assert_eq!(delivered[2].0, lobby_b);
}

#[tokio::test]
async fn recovery_answers_honestly() {
    let (backplane, _) = setup();
    let channel = room("a", "c");
    let empty = backplane.history_since(&channel, 0).await.expect("ok");
    assert!(empty.recovered && empty.frames.is_empty());
    assert!(
        !backplane
            .history_since(&channel, 3)
            .await
            .expect("ok")
            .recovered
    );
    for text in ["1", "2", "3", "4", "5"] {
        publish(&backplane, &channel, text, 3).await;
    }
    // History keeps 3..=5.
    let recent = backplane.history_since(&channel, 2).await.expect("ok");
    assert!(recent.recovered);
    assert_eq!(
        recent
            .frames
            .iter()
            .map(|(seq, _)| *seq)
            .collect::<Vec<_>>(),
        [3, 4, 5]
    );
    let tail = backplane.history_since(&channel, 4).await.expect("ok");
    assert_eq!(tail.frames.len(), 1);
    let current = backplane.history_since(&channel, 5).await.expect("ok");
    assert!(current.recovered && current.frames.is_empty());
    assert!(
        !backplane
            .history_since(&channel, 1)
            .await
            .expect("ok")
            .recovered
    );
    assert!(
        !backplane
            .history_since(&channel, 6)
            .await
            .expect("ok")
            .recovered
    );
}

#[tokio::test]
async fn no_history_means_no_recovery_but_sequencing_goes_on() {
    let (backplane, _) = setup();
    let channel = room("a", "c");
    publish(&backplane, &channel, "1", 0).await;
    assert_eq!(publish(&backplane, &channel, "2", 0).await, 2);
    assert!(
        !backplane
            .history_since(&channel, 1)
            .await
            .expect("ok")
            .recovered
    );
    assert!(
        backplane
            .history_since(&channel, 2)
            .await
            .expect("ok")
            .recovered
    );
}

#[tokio::test(start_paused = true)]
async fn sweep_expires_history_and_idle_channels() {
    let (backplane, _) = setup();
    let channel = room("a", "c");
    publish(&backplane, &channel, "1", 10).await;
    tokio::time::advance(Duration::from_secs(30)).await;
    backplane.sweep();
    assert_eq!(backplane.channel_count(), 1);
    tokio::time::advance(Duration::from_secs(31)).await;
    backplane.sweep();
    assert_eq!(backplane.channel_count(), 0);
}

#[tokio::test]
async fn user_and_connection_delivery_reach_the_local_node() {
    let (backplane, recorder) = setup();
    let count = backplane
        .send_to_user("a", "alice", pong(None))
        .await
        .expect("ok");
    assert_eq!(count, 1);
    assert_eq!(recorder.users.lock()[0].1, "alice");
    assert!(
        backplane
            .command("a", &ConnId::from("here"), ConnCommand::Deliver(pong(None)))
            .await
            .expect("ok")
    );
    for (tenant, connection) in [("a", "elsewhere"), ("b", "here")] {
        assert!(
            !backplane
                .command(
                    tenant,
                    &ConnId::from(connection),
                    ConnCommand::Deliver(pong(None))
                )
                .await
                .expect("ok")
        );
    }
}

#[tokio::test(start_paused = true)]
async fn a_tenant_keeps_at_most_its_history_budget_across_all_its_channels() {
    let (backplane, _) = setup();
    let budget = HistoryConfig {
        size: 100,
        ttl: Duration::from_secs(60),
        max_bytes: 64 * 1024,
    };
    let text = "x".repeat(1000);
    // 40 channels of 100 messages: far more than the budget holds.
    for channel in 0..40 {
        let room = room("noisy", &format!("c{channel}"));
        for _ in 0..100 {
            publish_within(&backplane, &room, &text, &budget).await;
        }
        assert!(backplane.history_bytes("noisy") <= budget.max_bytes);
    }
    assert!(backplane.history_bytes("noisy") > budget.max_bytes / 2);
    // The oldest went first: the first channel lost its history and says so, the last one
    // still recovers its recent messages.
    let first = backplane
        .history_since(&room("noisy", "c0"), 50)
        .await
        .expect("ok");
    assert!(!first.recovered && first.frames.is_empty());
    let last = backplane
        .history_since(&room("noisy", "c39"), 95)
        .await
        .expect("ok");
    assert!(last.recovered);
    assert_eq!(last.frames.len(), 5);

    // Another tenant's history is its own.
    let quiet = room("quiet", "lobby");
    publish(&backplane, &quiet, "hello", 10).await;
    for _ in 0..100 {
        publish_within(&backplane, &room("noisy", "c0"), &text, &budget).await;
    }
    assert!(
        backplane
            .history_since(&quiet, 0)
            .await
            .expect("ok")
            .recovered
    );

    let mut metrics = String::new();
    backplane.render_metrics(&mut metrics);
    assert!(metrics.contains("switchboard_history_evicted_total{tenant=\"noisy\"}"));
    assert!(!metrics.contains("switchboard_history_evicted_total{tenant=\"quiet\"} 1"));

    // Once the history has expired, nothing is held, bookkeeping included.
    tokio::time::advance(Duration::from_secs(61)).await;
    backplane.sweep();
    assert_eq!(backplane.history_bytes("noisy"), 0);
    assert_eq!(backplane.history_bytes("quiet"), 0);
    assert_eq!(backplane.channel_count(), 0);
}
