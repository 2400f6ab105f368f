//! The pending-to-live hand-over of a joining member, driven over the in-memory backplane:
//! messages published while a join is under way are held for the joiner and queued after its
//! ack and replay, once each.

use std::collections::VecDeque;
use std::sync::{Arc, Weak};

use async_trait::async_trait;
use parking_lot::Mutex;
use serde_json::Value;

use super::Rooms;
use crate::backplane::memory::MemoryBackplane;
use crate::backplane::{Backplane, BackplaneError, ConnCommand, LocalDelivery, Publish, Recovery};

use crate::conn_handle::ConnHandle;
use crate::ids::{ConnId, RoomKey};
use crate::protocol::{Frame, MemberInfo};
use crate::tenant::{Tenant, Tenants};

const CHANNEL: &str = "lobby";

/// Where in a join the interleaving backplane publishes a message of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// While the node subscribes (the room's first local member).
    Subscribe,
    /// While the member is added to presence (a room with presence).
    PresenceAdd,
    /// Just before the history is read for a recovery.
    BeforeHistory,
    /// Just after the history was read, before the join goes on.
    AfterHistory,
}

/// The in-memory backplane, with messages published from inside a join's own backplane calls:
/// the window in which the joiner is a member but not yet live.
#[derive(Debug, Default)]
struct Interleaving {
    inner: MemoryBackplane,
    /// Payloads to publish at a step, each once.
    script: Mutex<Vec<(Step, String)>>,
    /// Makes `history_since` fail, as an unreachable store would.
    history_fails: std::sync::atomic::AtomicBool,
}

impl Interleaving {
    async fn step(&self, step: Step, room: &RoomKey) {
        let due: Vec<String> = {
            let mut script = self.script.lock();
            let (due, rest) = script.drain(..).partition(|(at, _)| *at == step);
            *script = rest;
            due.into_iter().map(|(_, payload)| payload).collect()
        };
        for payload in due {
            publish_on(&self.inner, room, &payload).await;
        }
    }
}

async fn publish_on(backplane: &dyn Backplane, room: &RoomKey, payload: &str) -> u64 {
    let history = tenant().history.clone();
    backplane
        .publish(
            room,
            Publish {
                msg_type: "news",
                payload: Some(payload),
                except: None,
                history: &history,
            },
        )
        .await
        .expect("the memory backplane publishes")
}

#[async_trait]
impl Backplane for Interleaving {
    fn attach(&self, node_id: &str, local: Weak<dyn LocalDelivery>) {
        self.inner.attach(node_id, local);
    }
    async fn publish(&self, room: &RoomKey, message: Publish<'_>) -> Result<u64, BackplaneError> {
        self.inner.publish(room, message).await
    }
    async fn signal(
        &self,
        room: &RoomKey,
        frame: Frame,
        except: Option<&ConnId>,
    ) -> Result<(), BackplaneError> {
        self.inner.signal(room, frame, except).await
    }
    async fn subscribe(&self, room: &RoomKey) -> Result<(), BackplaneError> {
        self.step(Step::Subscribe, room).await;
        self.inner.subscribe(room).await
    }
    async fn unsubscribe(&self, room: &RoomKey) -> Result<(), BackplaneError> {
        self.inner.unsubscribe(room).await
    }
    async fn presence_add(
        &self,
        room: &RoomKey,
        member: &MemberInfo,
    ) -> Result<(), BackplaneError> {
        self.step(Step::PresenceAdd, room).await;
        self.inner.presence_add(room, member).await
    }
    async fn presence_remove(
        &self,
        room: &RoomKey,
        connection: &ConnId,
    ) -> Result<(), BackplaneError> {
        self.inner.presence_remove(room, connection).await
    }
    async fn presence_members(&self, room: &RoomKey) -> Result<Vec<MemberInfo>, BackplaneError> {
        self.inner.presence_members(room).await
    }
    async fn send_to_user(
        &self,
        tenant: &str,
        user_id: &str,
        frame: Frame,
    ) -> Result<usize, BackplaneError> {
        self.inner.send_to_user(tenant, user_id, frame).await
    }
    async fn command(
        &self,
        tenant: &str,
        connection: &ConnId,
        command: ConnCommand,
    ) -> Result<bool, BackplaneError> {
        self.inner.command(tenant, connection, command).await
    }
    async fn history_since(&self, room: &RoomKey, since: u64) -> Result<Recovery, BackplaneError> {
        self.step(Step::BeforeHistory, room).await;
        if self
            .history_fails
            .load(std::sync::atomic::Ordering::Relaxed)
        {
            return Err(BackplaneError::Unavailable("history store down".to_owned()));
        }
        let recovery = self.inner.history_since(room, since).await;
        self.step(Step::AfterHistory, room).await;
        recovery
    }
    fn is_ready(&self) -> bool {
        self.inner.is_ready()
    }
}

/// What the backplane delivers goes to the rooms under test, as the node does.
struct ToRooms(Arc<Rooms>);

impl LocalDelivery for ToRooms {
    fn deliver_to_room(
        &self,
        room: &RoomKey,
        frame: &Frame,
        seq: Option<u64>,
        except: Option<&ConnId>,
    ) {
        self.0.deliver(room, frame, seq, except);
    }
    fn deliver_to_user(&self, _tenant: &str, _user_id: &str, _frame: &Frame) -> usize {
        0
    }
    fn command(&self, _tenant: &str, _connection: &ConnId, _command: ConnCommand) -> bool {
        false
    }
    fn local_members(&self, room: &RoomKey) -> Vec<MemberInfo> {
        self.0.local_members(room)
    }
    fn has_local_members(&self, room: &RoomKey) -> bool {
        self.0.has_local_members(room)
    }
    fn has_user(&self, _tenant: &str, _user_id: &str) -> bool {
        false
    }
    fn local_connections(&self) -> Vec<(Arc<str>, Arc<str>, ConnId)> {
        Vec::new()
    }
}

/// The tenant `default`: history on, presence on except in `quiet-*` channels.
fn tenant() -> Arc<Tenant> {
    let text = "[[tenants]]\nname = \"default\"\n[tenants.jwt]\nsecret = \"unit-test-secret\"\n\
                [tenants.presence]\ndisabled = [\"quiet-*\"]\n";
    let config = crate::config::parse(text, "unit.toml", std::path::Path::new("."))
        .expect("the test config is valid");
    let tenants = Tenants::new(&config).expect("the test tenant builds");
    tenants.get("default").expect("tenant default")
}

struct Fixture {
    backplane: Arc<Interleaving>,
    rooms: Arc<Rooms>,
    tenant: Arc<Tenant>,
    /// Held so the backplane's weak handle stays valid.
    _local: Arc<dyn LocalDelivery>,
}

impl Fixture {
    fn new() -> Fixture {
        let backplane = Arc::new(Interleaving::default());
        let rooms = Arc::new(Rooms::new(backplane.clone()));
        let local: Arc<dyn LocalDelivery> = Arc::new(ToRooms(rooms.clone()));
        backplane.attach("node", Arc::downgrade(&local));
        Fixture {
            backplane,
            rooms,
            tenant: tenant(),
            _local: local,
        }
    }

    fn conn(&self, id: &str, user: &str) -> Arc<ConnHandle> {
        Arc::new(ConnHandle::new(
            ConnId::from(id),
            self.tenant.clone(),
            Arc::from(user),
            "{}".to_owned(),
            0,
        ))
    }

    fn room(&self, channel: &str) -> RoomKey {
        RoomKey::new(&self.tenant.name, channel)
    }

    /// Publishes `payload` on `channel` outside any join; returns its `seq`.
    async fn publish(&self, channel: &str, payload: &str) -> u64 {
        publish_on(&self.backplane.inner, &self.room(channel), payload).await
    }

    /// Publishes `payload` from inside the next join's `step`.
    fn publish_during(&self, step: Step, payload: &str) {
        self.backplane
            .script
            .lock()
            .push((step, payload.to_owned()));
    }
}

/// Everything queued for `conn`, each frame in short: `ack <id>` (with `recovered` when the
/// ack says), `news <seq> <payload>`, or `<type> <userId>` for presence.
fn queued(conn: &ConnHandle) -> Vec<String> {
    let mut frames = VecDeque::new();
    let mut out = Vec::new();
    while let Some(crate::outbox::Batch::Frames) = conn.outbox.take(&mut frames) {
        for frame in frames.drain(..) {
            let value: Value = serde_json::from_str(frame.as_str()).expect("a JSON frame");
            let line = match value["type"].as_str().expect("a type") {
                "ack" => match value["payload"]["recovered"].as_bool() {
                    Some(recovered) => format!(
                        "ack {} recovered={recovered}",
                        value["correlationId"].as_str().expect("correlated")
                    ),
                    None => format!("ack {}", value["correlationId"].as_str().expect("id")),
                },
                "news" => format!("news {} {}", value["seq"], value["payload"]),
                other => format!("{other} {}", value["payload"]["userId"]),
            };
            out.push(line);
        }
    }
    out
}

#[tokio::test]
async fn a_message_published_while_the_first_member_subscribes_comes_after_its_ack() {
    let fixture = Fixture::new();
    let alice = fixture.conn("n-1", "alice");
    // The member is in the room (it receives), but not live: the message waits for the ack.
    fixture.publish_during(Step::Subscribe, "\"during\"");
    fixture
        .rooms
        .join(&alice, "quiet-lobby", None, Some("j1"))
        .await
        .expect("joined");
    fixture.publish("quiet-lobby", "\"after\"").await;
    assert_eq!(
        queued(&alice),
        ["ack j1", "news 1 \"during\"", "news 2 \"after\""]
    );
}

#[tokio::test]
async fn replay_comes_between_the_ack_and_live_messages_and_nothing_twice() {
    let fixture = Fixture::new();
    for payload in ["1", "2", "3"] {
        fixture.publish("quiet-lobby", payload).await;
    }
    let bob = fixture.conn("n-2", "bob");
    // Seq 4 arrives while bob is pending *and* is in the history he is sent: replayed once,
    // its held copy dropped. Seq 5 arrives after the history was read: held, then flushed.
    fixture.publish_during(Step::BeforeHistory, "4");
    fixture.publish_during(Step::AfterHistory, "5");
    fixture
        .rooms
        .join(&bob, "quiet-lobby", Some(1), Some("j1"))
        .await
        .expect("joined");
    fixture.publish("quiet-lobby", "6").await;
    assert_eq!(
        queued(&bob),
        [
            "ack j1 recovered=true",
            "news 2 2",
            "news 3 3",
            "news 4 4",
            "news 5 5",
            "news 6 6",
        ]
    );
}

#[tokio::test]
async fn live_members_get_messages_at_once_while_another_member_joins() {
    let fixture = Fixture::new();
    let alice = fixture.conn("n-1", "alice");
    let bob = fixture.conn("n-2", "bob");
    fixture
        .rooms
        .join(&alice, "quiet-lobby", None, Some("a"))
        .await
        .expect("alice joined");
    assert_eq!(queued(&alice), ["ack a"]);
    fixture.publish_during(Step::AfterHistory, "\"while bob joins\"");
    fixture
        .rooms
        .join(&bob, "quiet-lobby", Some(0), Some("b"))
        .await
        .expect("bob joined");
    assert_eq!(queued(&alice), ["news 1 \"while bob joins\""]);
    assert_eq!(
        queued(&bob),
        ["ack b recovered=true", "news 1 \"while bob joins\""]
    );
}

#[tokio::test]
async fn presence_events_during_a_join_are_held_like_messages() {
    let fixture = Fixture::new();
    let alice = fixture.conn("n-1", "alice");
    let bob = fixture.conn("n-2", "bob");
    fixture
        .rooms
        .join(&alice, CHANNEL, None, Some("a"))
        .await
        .expect("alice joined");
    // A message while bob is added to presence: held behind bob's ack (which lists both).
    fixture.publish_during(Step::PresenceAdd, "\"hello\"");
    fixture
        .rooms
        .join(&bob, CHANNEL, None, Some("b"))
        .await
        .expect("bob joined");
    assert_eq!(
        queued(&alice),
        ["ack a", "news 1 \"hello\"", "presence:join \"bob\""]
    );
    assert_eq!(queued(&bob), ["ack b", "news 1 \"hello\""]);
}

#[tokio::test]
async fn a_join_without_a_correlation_id_still_hands_over_in_order() {
    let fixture = Fixture::new();
    fixture.publish("quiet-lobby", "1").await;
    let carol = fixture.conn("n-3", "carol");
    fixture.publish_during(Step::AfterHistory, "2");
    fixture
        .rooms
        .join(&carol, "quiet-lobby", Some(0), None)
        .await
        .expect("joined");
    assert_eq!(queued(&carol), ["news 1 1", "news 2 2"]);
}

#[tokio::test]
async fn a_failed_join_holds_nothing_and_leaves_no_member() {
    let fixture = Fixture::new();
    let dave = fixture.conn("n-4", "dave");
    fixture
        .backplane
        .history_fails
        .store(true, std::sync::atomic::Ordering::Relaxed);
    fixture.publish_during(Step::BeforeHistory, "\"held then dropped\"");
    let error = fixture
        .rooms
        .join(&dave, "quiet-lobby", Some(0), Some("d"))
        .await
        .expect_err("the history store is down");
    assert_eq!(error.code, crate::protocol::ErrorCode::Overloaded);
    assert!(!dave.rooms.lock().contains("quiet-lobby"));
    assert!(fixture.rooms.is_empty(), "the pending member was removed");
    fixture.publish("quiet-lobby", "\"later\"").await;
    assert!(queued(&dave).is_empty(), "nothing was queued for it");
    // The connection can join again once the store is back.
    fixture
        .backplane
        .history_fails
        .store(false, std::sync::atomic::Ordering::Relaxed);
    fixture
        .rooms
        .join(&dave, "quiet-lobby", Some(1), Some("d2"))
        .await
        .expect("joined");
    assert_eq!(queued(&dave), ["ack d2 recovered=true", "news 2 \"later\""]);
}
