//! The cluster backplane on Redis (one server, or a Redis Cluster with sharded pub/sub).
//!
//! - Fan-out is interest based: a node subscribes to a room's channel only while it has local
//!   members, and every room message reaches it through that subscription, its own included,
//!   so each node delivers a channel in the one order Redis published it.
//! - One script per publish assigns the channel's next `seq`, appends to its bounded history
//!   and publishes, atomically (`scripts::PUBLISH`). Each node remembers the last `seq` it
//!   delivered per room: a gap is refilled from history, a step back means Redis lost state
//!   and the counter is raised past it under a new epoch. A node that finds Redis emptied of
//!   the data it knew (`scripts::STATE`) starts every counter above any `seq` issued before,
//!   so no `seq` is issued twice and what was lost stays visible to clients.
//! - Presence, user and connection lookups live in Redis hashes tagged with the owning node;
//!   a node heartbeat lets the survivors reap a dead node's members and announce their leave.
//! - When Redis is unreachable the node keeps delivering locally, `/readyz` says 503, and the
//!   supervisor reconnects with capped backoff, resubscribes, re-registers and resynchronises.

mod dispatch;
mod keys;
mod kv;
mod link;
mod scripts;
mod subscriptions;
mod supervisor;
mod wire;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use async_trait::async_trait;
use parking_lot::Mutex;
use tokio::sync::{mpsc, oneshot, watch};

use self::keys::Keys;
use self::link::{Link, LinkEvents};
use self::subscriptions::SubRequest;
use super::{
    Backplane, BackplaneError, ConnCommand, LocalDelivery, Publish, Recovery, RoomKey, recovery,
    unrecovered,
};
use crate::config::RedisConfig;
use crate::metrics::{self, backplane::RedisFigures};
use crate::plugins::kv::SharedKv;
use crate::protocol::{self, Frame, MemberInfo};
use crate::registry::{ConnHandle, ConnId};

/// What this node knows of a room it is subscribed to.
#[derive(Debug)]
struct Track {
    room: RoomKey,
    /// The last `seq` delivered to this node's members (0: none yet).
    last_seq: u64,
    /// The epoch that `seq` belongs to.
    epoch: Option<Arc<str>>,
    /// Messages were sequenced locally while Redis was unreachable.
    diverged: bool,
    /// Members of this room are listed in Redis presence.
    presence: bool,
}

impl Track {
    fn new(room: RoomKey) -> Self {
        Track {
            room,
            last_seq: 0,
            epoch: None,
            diverged: false,
            presence: false,
        }
    }
}

/// A channel's counter after [`Shared::raise`].
#[derive(Debug)]
struct Raised {
    /// The counter: the floor when it was raised, else the higher count Redis had.
    counter: u64,
    /// The epoch the counter belongs to.
    epoch: Arc<str>,
    /// The counter was below the floor and is now at it, with `epoch` new.
    raised: bool,
}

/// A channel's state in Redis, as [`Shared::history`] reads it.
#[derive(Debug)]
struct History {
    /// The channel's counter: its last `seq`.
    last: u64,
    /// The retained messages, oldest first.
    retained: Vec<(u64, Frame)>,
    /// The epoch they belong to; `None` for a channel never published to.
    epoch: Option<Arc<str>>,
}

/// Counters behind the backplane's metrics.
#[derive(Debug, Default)]
struct Stats {
    probes_ok: AtomicU64,
    probe_failures: AtomicU64,
    probe_rtt_micros: AtomicU64,
    reconnects: AtomicU64,
    gaps_filled: AtomicU64,
    gaps_lost: AtomicU64,
    regressions: AtomicU64,
    local_fallbacks: AtomicU64,
    reaped_nodes: AtomicU64,
    malformed: AtomicU64,
    data_losses: AtomicU64,
}

/// Requests for the dispatcher, which alone delivers room messages.
#[derive(Debug)]
enum Control {
    /// Refill every room from history after an outage; answers when done.
    Resync(oneshot::Sender<()>),
    /// Raise a room's counter above what this node delivered (Redis went back).
    Raise(String),
}

/// State shared by the backplane's handle and its tasks.
struct Shared {
    config: RedisConfig,
    keys: Keys,
    link: Link,
    events: Arc<LinkEvents>,
    node: OnceLock<String>,
    local: OnceLock<Weak<dyn LocalDelivery>>,
    /// Subscribed rooms by channel name. Locked briefly; never held across an await, and
    /// `LocalDelivery` may be called under it (it never calls back into the backplane).
    tracks: Mutex<HashMap<String, Track>>,
    /// Commands are expected to work.
    healthy: AtomicBool,
    /// Healthy, resubscribed, resynchronised, and the last probe came back.
    ready: AtomicBool,
    subscriptions: mpsc::Sender<SubRequest>,
    control: mpsc::Sender<Control>,
    probes: Mutex<HashMap<u64, oneshot::Sender<()>>>,
    /// The id of the Redis dataset this node works with (`scripts::STATE`); `None` before the
    /// first connection.
    dataset: Mutex<Option<String>>,
    /// Where a channel's counter starts when Redis has none for it: 0, or above every `seq`
    /// issued before Redis lost its data.
    seq_base: AtomicU64,
    stats: Stats,
}

/// Receivers handed to the tasks when the backplane is attached.
struct TaskInputs {
    pushes: mpsc::Receiver<redis::PushInfo>,
    subscriptions: mpsc::Receiver<SubRequest>,
    control: mpsc::Receiver<Control>,
}

/// The Redis backplane. Dropping it stops its tasks.
pub struct RedisBackplane {
    shared: Arc<Shared>,
    inputs: Mutex<Option<TaskInputs>>,
    stop: watch::Sender<bool>,
}

impl std::fmt::Debug for RedisBackplane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBackplane")
            .field("link", &self.shared.link)
            .field("ready", &self.shared.ready.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl Drop for RedisBackplane {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

impl RedisBackplane {
    /// A backplane for `config`; it connects in the background once attached to a node.
    pub fn new(config: RedisConfig) -> Self {
        let (push_tx, pushes) = mpsc::channel(link::PUSH_QUEUE);
        let (sub_tx, subscriptions) = mpsc::channel(4096);
        let (control_tx, control) = mpsc::channel(64);
        let events = Arc::new(LinkEvents::default());
        let shared = Arc::new(Shared {
            keys: Keys::new(&config.key_prefix),
            link: Link::new(config.clone(), push_tx, events.clone()),
            events,
            config,
            node: OnceLock::new(),
            local: OnceLock::new(),
            tracks: Mutex::new(HashMap::new()),
            healthy: AtomicBool::new(false),
            ready: AtomicBool::new(false),
            subscriptions: sub_tx,
            control: control_tx,
            probes: Mutex::new(HashMap::new()),
            dataset: Mutex::new(None),
            seq_base: AtomicU64::new(0),
            stats: Stats::default(),
        });
        RedisBackplane {
            shared,
            inputs: Mutex::new(Some(TaskInputs {
                pushes,
                subscriptions,
                control,
            })),
            stop: watch::channel(false).0,
        }
    }
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// A fresh epoch: random enough to tell apart every reset of a channel.
fn fresh_epoch() -> String {
    format!("{:016x}", random_u64())
}

/// A random number from the standard library's randomly keyed hasher.
fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_nanos()),
    );
    hasher.finish()
}

/// A history entry: `seq<TAB>millis<TAB>frame`.
fn history_entry(entry: String) -> Option<(u64, Frame)> {
    let mut fields = entry.splitn(3, '\t');
    let seq = fields.next()?.parse().ok()?;
    fields.next()?;
    let frame = fields.next()?.to_owned();
    Some((seq, Frame::encoded(frame)))
}

impl Shared {
    fn node(&self) -> &str {
        self.node.get().map_or("", String::as_str)
    }

    fn local(&self) -> Option<Arc<dyn LocalDelivery>> {
        self.local.get().and_then(Weak::upgrade)
    }

    fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Acquire)
    }

    /// Redis failed a command: stop trusting it until the supervisor recovered.
    fn degrade(&self, what: &str, error: &BackplaneError) {
        self.ready.store(false, Ordering::Release);
        if self.healthy.swap(false, Ordering::AcqRel) {
            tracing::warn!(%error, what, "Redis unreachable: delivering locally until it is back");
        }
        self.events.wake.notify_one();
    }

    /// Keys a room's meta hash lives at least as long as its history and well past any
    /// heartbeat, so a quiet room keeps its counter while it has members.
    fn meta_ttl(&self, history_ttl: Duration) -> u64 {
        millis(history_ttl.max(self.config.node_ttl * 4))
    }

    fn presence_ttl(&self) -> u64 {
        millis(self.config.node_ttl * 3)
    }

    /// The channel's last `seq`, its retained messages (oldest first) and the epoch they
    /// belong to (`None` for a channel never published to).
    async fn history(&self, room: &RoomKey) -> Result<History, BackplaneError> {
        let meta = self.keys.room_meta(room);
        let history = self.keys.room_history(room);
        let (last, entries, epoch): (String, Vec<String>, String) = self
            .link
            .invoke(&scripts::HISTORY, &[&meta, &history], &[])
            .await?;
        Ok(History {
            last: last.parse().unwrap_or(0),
            retained: entries.into_iter().filter_map(history_entry).collect(),
            epoch: (!epoch.is_empty()).then(|| Arc::from(epoch)),
        })
    }

    /// Raises a room's counter to at least `floor` (and the base) under a new epoch, unless
    /// it is there.
    async fn raise(&self, room: &RoomKey, floor: u64) -> Result<Raised, BackplaneError> {
        let meta = self.keys.room_meta(room);
        let history = self.keys.room_history(room);
        let ttl = millis(self.config.node_ttl * 4).to_string();
        let base = self.seq_base.load(Ordering::Acquire).to_string();
        let (counter, epoch, raised): (u64, String, u8) = self
            .link
            .invoke(
                &scripts::RAISE,
                &[&meta, &history],
                &[&floor.to_string(), &fresh_epoch(), &ttl, &base],
            )
            .await?;
        Ok(Raised {
            counter,
            epoch: Arc::from(epoch),
            raised: raised == 1,
        })
    }

    /// Checks that Redis still holds the dataset this node knew and learns where counters
    /// start. Returns true when the dataset this node knew is gone (Redis lost its data).
    async fn check_dataset(&self) -> Result<bool, BackplaneError> {
        let known = self.dataset.lock().clone();
        let fresh = fresh_epoch();
        let (id, base): (String, u64) = self
            .link
            .invoke(
                &scripts::STATE,
                &[&self.keys.dataset()],
                &[known.as_deref().unwrap_or(""), &fresh],
            )
            .await?;
        self.seq_base.store(base, Ordering::Release);
        let lost = known.as_deref().is_some_and(|known| known != id);
        *self.dataset.lock() = Some(id);
        if lost {
            self.stats.data_losses.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                base,
                "Redis lost its data (restarted without persistence, flushed or evicted): \
                 messages in flight are lost, counters start above every seq issued before"
            );
        }
        Ok(lost)
    }

    /// Records a member in the room's presence hash and the node's room set.
    async fn register_member(
        &self,
        room: &RoomKey,
        member: &MemberInfo,
    ) -> Result<(), BackplaneError> {
        let presence = self.keys.room_presence(room);
        let value = format!("{}\t{}", self.node(), member.user_id);
        let mut pipe = redis::pipe();
        pipe.hset(&presence, &member.connection_id, value)
            .ignore()
            .pexpire(
                &presence,
                i64::try_from(self.presence_ttl()).unwrap_or(i64::MAX),
            )
            .ignore();
        self.link.query_pipe(&pipe).await?;
        self.link
            .query::<()>(
                redis::cmd("SADD")
                    .arg(self.keys.node_rooms(self.node()))
                    .arg(keys::room_member_name(room)),
            )
            .await
    }

    /// Records a connection under its user and the user in the node's user set.
    async fn register_connection(
        &self,
        tenant: &str,
        user: &str,
        connection: &str,
    ) -> Result<(), BackplaneError> {
        self.link
            .query::<()>(
                redis::cmd("HSET")
                    .arg(self.keys.user(tenant, user))
                    .arg(connection)
                    .arg(self.node()),
            )
            .await?;
        self.link
            .query::<()>(
                redis::cmd("SADD")
                    .arg(self.keys.node_users(self.node()))
                    .arg(format!("{tenant}:{user}")),
            )
            .await
    }

    /// Delivers a room frame to this node's members.
    fn deliver(&self, room: &RoomKey, frame: &Frame, seq: Option<u64>, except: Option<&ConnId>) {
        if let Some(local) = self.local() {
            local.deliver_to_room(room, frame, seq, except);
        }
    }

    /// Publishes a presence event for a room to every node.
    async fn announce(&self, room: &RoomKey, frame: &Frame) -> Result<(), BackplaneError> {
        let channel = self.keys.room_channel(room);
        self.link
            .publish(&channel, &wire::signal(None, frame.as_str()))
            .await
            .map(|_| ())
    }

    /// Sequences a message locally while Redis is unreachable, continuing this node's count.
    fn publish_locally(
        &self,
        room: &RoomKey,
        channel: &str,
        message: &Publish<'_>,
    ) -> Result<u64, BackplaneError> {
        let mut tracks = self.tracks.lock();
        let Some(track) = tracks.get_mut(channel) else {
            // No member here: nobody this node can reach would receive it.
            return Err(BackplaneError::Unavailable(
                "Redis is unreachable and no member of the channel is on this node".to_owned(),
            ));
        };
        track.last_seq += 1;
        track.diverged = true;
        let seq = track.last_seq;
        self.stats.local_fallbacks.fetch_add(1, Ordering::Relaxed);
        let frame =
            protocol::channel_message(message.msg_type, &room.channel, message.payload, seq);
        // Delivered under the lock so concurrent local publishes keep their order.
        self.deliver(room, &frame, Some(seq), message.except);
        Ok(seq)
    }
}

#[async_trait]
impl Backplane for RedisBackplane {
    fn attach(&self, node_id: &str, local: Weak<dyn LocalDelivery>) {
        let shared = &self.shared;
        let _ = shared.node.set(node_id.to_owned());
        let _ = shared.local.set(local);
        let Some(inputs) = self.inputs.lock().take() else {
            return;
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::error!("the Redis backplane needs a tokio runtime; it stays unready");
            return;
        };
        runtime.spawn(dispatch::run(
            shared.clone(),
            inputs.pushes,
            inputs.control,
            self.stop.subscribe(),
        ));
        runtime.spawn(subscriptions::run(
            shared.clone(),
            inputs.subscriptions,
            self.stop.subscribe(),
        ));
        runtime.spawn(supervisor::run(shared.clone(), self.stop.subscribe()));
    }

    async fn publish(&self, room: &RoomKey, message: Publish<'_>) -> Result<u64, BackplaneError> {
        let shared = &self.shared;
        let channel = shared.keys.room_channel(room);
        if shared.is_healthy() {
            let floor = shared
                .tracks
                .lock()
                .get(&channel)
                .map_or(0, |track| track.last_seq);
            let meta = shared.keys.room_meta(room);
            let history = shared.keys.room_history(room);
            let head =
                protocol::channel_message_head(message.msg_type, &room.channel, message.payload);
            let except = message.except.map_or("", ConnId::as_str);
            let result: Result<(u64, String), _> = shared
                .link
                .invoke(
                    &scripts::PUBLISH,
                    &[&meta, &history, &channel],
                    &[
                        &head,
                        except,
                        &message.history.size.to_string(),
                        &millis(message.history.ttl).to_string(),
                        &shared.meta_ttl(message.history.ttl).to_string(),
                        &floor.to_string(),
                        &fresh_epoch(),
                        shared.link.publish_command(),
                        &shared.seq_base.load(Ordering::Acquire).to_string(),
                    ],
                )
                .await;
            match result {
                Ok((seq, _epoch)) => return Ok(seq),
                Err(error) => shared.degrade("publish", &error),
            }
        }
        shared.publish_locally(room, &channel, &message)
    }

    async fn signal(
        &self,
        room: &RoomKey,
        frame: Frame,
        except: Option<&ConnId>,
    ) -> Result<(), BackplaneError> {
        let shared = &self.shared;
        if shared.is_healthy() {
            let channel = shared.keys.room_channel(room);
            let message = wire::signal(except.map(ConnId::as_str), frame.as_str());
            match shared.link.publish(&channel, &message).await {
                Ok(_) => return Ok(()),
                Err(error) => shared.degrade("signal", &error),
            }
        }
        shared.deliver(room, &frame, None, except);
        Ok(())
    }

    async fn subscribe(&self, room: &RoomKey) -> Result<(), BackplaneError> {
        let shared = &self.shared;
        let channel = shared.keys.room_channel(room);
        shared
            .tracks
            .lock()
            .entry(channel.clone())
            .or_insert_with(|| Track::new(room.clone()));
        if !shared.is_healthy() {
            // The supervisor subscribes every tracked room when Redis is back.
            return Ok(());
        }
        let (done, confirmed) = oneshot::channel();
        if shared
            .subscriptions
            .send(SubRequest::Subscribe(channel, done))
            .await
            .is_err()
        {
            return Ok(());
        }
        match tokio::time::timeout(shared.config.command_timeout * 2, confirmed).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(error))) => shared.degrade("subscribe", &error),
            Ok(Err(_)) | Err(_) => shared.degrade(
                "subscribe",
                &BackplaneError::Unavailable("no subscription confirmation".to_owned()),
            ),
        }
        Ok(())
    }

    async fn unsubscribe(&self, room: &RoomKey) -> Result<(), BackplaneError> {
        let shared = &self.shared;
        let channel = shared.keys.room_channel(room);
        // The batcher drops the subscription only if the room is still empty by then.
        let _ = shared
            .subscriptions
            .send(SubRequest::Unsubscribe(channel))
            .await;
        Ok(())
    }

    async fn presence_add(
        &self,
        room: &RoomKey,
        member: &MemberInfo,
    ) -> Result<(), BackplaneError> {
        let shared = &self.shared;
        if let Some(track) = shared
            .tracks
            .lock()
            .get_mut(&shared.keys.room_channel(room))
        {
            track.presence = true;
        }
        if shared.is_healthy()
            && let Err(error) = shared.register_member(room, member).await
        {
            shared.degrade("presence", &error);
        }
        Ok(())
    }

    async fn presence_remove(
        &self,
        room: &RoomKey,
        connection: &ConnId,
    ) -> Result<(), BackplaneError> {
        let shared = &self.shared;
        if !shared.is_healthy() {
            return Ok(());
        }
        // The node's room set indexes where it has members (for the reaper, if it dies): a room
        // leaves it with its last local member, or the set grows with every room ever joined.
        // A join racing this removal adds the room back only after its own subscribe and
        // presence round trips, so after this SREM.
        let last_here = !shared
            .local()
            .is_some_and(|local| local.has_local_members(room));
        let forget = redis::cmd("HDEL")
            .arg(shared.keys.room_presence(room))
            .arg(connection.as_str())
            .clone();
        // Two commands, not a pipeline: the keys hash to different Redis Cluster slots.
        let unindex = redis::cmd("SREM")
            .arg(shared.keys.node_rooms(shared.node()))
            .arg(keys::room_member_name(room))
            .clone();
        let (forgot, unindexed) = tokio::join!(shared.link.query::<()>(&forget), async {
            if last_here {
                shared.link.query::<()>(&unindex).await
            } else {
                Ok(())
            }
        });
        if let Err(error) = forgot.and(unindexed) {
            shared.degrade("presence", &error);
        }
        Ok(())
    }

    async fn presence_members(&self, room: &RoomKey) -> Result<Vec<MemberInfo>, BackplaneError> {
        let shared = &self.shared;
        let local = shared
            .local()
            .map(|local| local.local_members(room))
            .unwrap_or_default();
        if !shared.is_healthy() {
            return Ok(local);
        }
        let entries: Vec<(String, String)> = match shared
            .link
            .query(redis::cmd("HGETALL").arg(shared.keys.room_presence(room)))
            .await
        {
            Ok(entries) => entries,
            Err(error) => {
                shared.degrade("presence", &error);
                return Ok(local);
            }
        };
        let mut seen = HashSet::with_capacity(entries.len());
        let mut members: Vec<MemberInfo> = entries
            .into_iter()
            .filter_map(|(connection_id, value)| {
                let (_, user_id) = value.split_once('\t')?;
                seen.insert(connection_id.clone());
                Some(MemberInfo {
                    user_id: user_id.to_owned(),
                    connection_id,
                })
            })
            .collect();
        // A local member whose registration has not reached Redis yet is still a member.
        members.extend(
            local
                .into_iter()
                .filter(|member| !seen.contains(&member.connection_id)),
        );
        Ok(members)
    }

    async fn send_to_user(
        &self,
        tenant: &str,
        user_id: &str,
        frame: Frame,
    ) -> Result<usize, BackplaneError> {
        let shared = &self.shared;
        let here = shared
            .local()
            .map_or(0, |local| local.deliver_to_user(tenant, user_id, &frame));
        if !shared.is_healthy() {
            return Ok(here);
        }
        let entries: Vec<(String, String)> = match shared
            .link
            .query(redis::cmd("HGETALL").arg(shared.keys.user(tenant, user_id)))
            .await
        {
            Ok(entries) => entries,
            Err(error) => {
                shared.degrade("send to user", &error);
                return Ok(here);
            }
        };
        let mut per_node: HashMap<String, usize> = HashMap::new();
        for (_, node) in entries {
            if node != shared.node() {
                *per_node.entry(node).or_default() += 1;
            }
        }
        let message = wire::to_user(tenant, user_id, frame.as_str());
        let mut reached = here;
        for (node, connections) in per_node {
            match shared
                .link
                .publish(&shared.keys.node_inbox(&node), &message)
                .await
            {
                Ok(receivers) if receivers > 0 => reached += connections,
                Ok(_) => {}
                Err(error) => {
                    shared.degrade("send to user", &error);
                    break;
                }
            }
        }
        Ok(reached)
    }

    async fn command(
        &self,
        tenant: &str,
        connection: &ConnId,
        command: ConnCommand,
    ) -> Result<bool, BackplaneError> {
        let shared = &self.shared;
        let node = keys::node_of(connection.as_str()).unwrap_or_default();
        if node == shared.node() {
            return Ok(shared
                .local()
                .is_some_and(|local| local.command(tenant, connection, command)));
        }
        if !shared.is_healthy() {
            return Err(BackplaneError::Unavailable(
                "Redis is unreachable: connections of other nodes cannot be reached".to_owned(),
            ));
        }
        let id = connection.as_str();
        let message = match &command {
            ConnCommand::Deliver(frame) => wire::to_connection(tenant, id, frame.as_str()),
            ConnCommand::Close(code, reason) => wire::close(tenant, id, *code, reason),
            ConnCommand::Attach(data) => wire::attach(tenant, id, data),
            ConnCommand::Join(channel) => wire::membership(true, tenant, id, channel),
            ConnCommand::Leave(channel) => wire::membership(false, tenant, id, channel),
        };
        match shared
            .link
            .publish(&shared.keys.node_inbox(node), &message)
            .await
        {
            // The owning node is alive and listening; it checks the tenant and the id.
            Ok(receivers) => Ok(receivers > 0),
            Err(error) => {
                shared.degrade("command", &error);
                Err(error)
            }
        }
    }

    async fn connected(&self, conn: &ConnHandle) {
        let shared = &self.shared;
        if shared.is_healthy()
            && let Err(error) = shared
                .register_connection(&conn.tenant.name, &conn.user_id, conn.id.as_str())
                .await
        {
            shared.degrade("register connection", &error);
        }
    }

    async fn disconnected(&self, conn: &ConnHandle) {
        let shared = &self.shared;
        if !shared.is_healthy() {
            return;
        }
        let (tenant, user) = (&*conn.tenant.name, &*conn.user_id);
        // Like rooms in `presence_remove`: the user leaves the node's user set with its last
        // connection here.
        let last_here = !shared
            .local()
            .is_some_and(|local| local.has_user(tenant, user));
        let forget = redis::cmd("HDEL")
            .arg(shared.keys.user(tenant, user))
            .arg(conn.id.as_str())
            .clone();
        let unindex = redis::cmd("SREM")
            .arg(shared.keys.node_users(shared.node()))
            .arg(format!("{tenant}:{user}"))
            .clone();
        let (forgot, unindexed) = tokio::join!(shared.link.query::<()>(&forget), async {
            if last_here {
                shared.link.query::<()>(&unindex).await
            } else {
                Ok(())
            }
        });
        if let Err(error) = forgot.and(unindexed) {
            shared.degrade("unregister connection", &error);
        }
    }

    async fn history_since(&self, room: &RoomKey, since: u64) -> Result<Recovery, BackplaneError> {
        let shared = &self.shared;
        if !shared.is_healthy() {
            // Without the shared history nothing can be promised.
            return Ok(unrecovered());
        }
        match shared.history(room).await {
            Ok(history) => Ok(recovery(history.last, since, history.retained)),
            Err(error) => {
                shared.degrade("history", &error);
                Ok(unrecovered())
            }
        }
    }

    fn is_ready(&self) -> bool {
        self.shared.ready.load(Ordering::Acquire)
    }

    fn shared_kv(&self) -> Option<Arc<dyn SharedKv>> {
        Some(Arc::new(kv::RedisKv::new(self.shared.clone())))
    }

    fn render_metrics(&self, out: &mut String) {
        let shared = &self.shared;
        let stats = &shared.stats;
        let read = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        let figures = RedisFigures {
            ready: shared.ready.load(Ordering::Relaxed),
            subscriptions: shared.tracks.lock().len(),
            probe_rtt_micros: read(&stats.probe_rtt_micros),
            probes: read(&stats.probes_ok),
            probe_failures: read(&stats.probe_failures),
            reconnects: read(&stats.reconnects),
            gaps_filled: read(&stats.gaps_filled),
            gaps_lost: read(&stats.gaps_lost),
            seq_regressions: read(&stats.regressions),
            local_fallbacks: read(&stats.local_fallbacks),
            dropped: read(&shared.events.dropped),
            malformed: read(&stats.malformed),
            reaped_nodes: read(&stats.reaped_nodes),
            data_losses: read(&stats.data_losses),
        };
        metrics::backplane::render_redis(out, &figures);
    }

    async fn close(&self) {
        let _ = self.stop.send(true);
        supervisor::leave_cluster(&self.shared).await;
    }
}

#[cfg(test)]
mod tests;
