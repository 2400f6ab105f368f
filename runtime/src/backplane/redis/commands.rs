//! The backplane's Redis commands on a room, a user or a node: sequenced publishes, history,
//! counters, presence and user registrations, and messages to another node's inbox. Each is
//! one round trip (or two independent ones); what to do when Redis fails is the caller's.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::entries::{history_entry, presence_user, presence_value};
use super::keys;
use super::random::fresh_epoch;
use super::scripts;
use super::shared::Shared;
use super::wire;
use crate::backplane::{BackplaneError, ConnCommand, Publish};
use crate::ids::{ConnId, RoomKey};
use crate::protocol::{self, Frame, MemberInfo};

/// A duration as the milliseconds of a Redis TTL argument.
pub(super) fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// A channel's counter after [`Shared::raise`].
#[derive(Debug)]
pub(super) struct Raised {
    /// The counter: the floor when it was raised, else the higher count Redis had.
    pub(super) counter: u64,
    /// The epoch the counter belongs to.
    pub(super) epoch: Arc<str>,
    /// The counter was below the floor and is now at it, with `epoch` new.
    pub(super) raised: bool,
}

/// A channel's state in Redis, as [`Shared::history`] reads it.
#[derive(Debug)]
pub(super) struct History {
    /// The channel's counter: its last `seq`.
    pub(super) last: u64,
    /// The retained messages, oldest first.
    pub(super) retained: Vec<(u64, Frame)>,
    /// The epoch they belong to; `None` for a channel never published to.
    pub(super) epoch: Option<Arc<str>>,
}

impl Shared {
    /// Keys a room's meta hash lives at least as long as its history and well past any
    /// heartbeat, so a quiet room keeps its counter while it has members.
    pub(super) fn meta_ttl(&self, history_ttl: Duration) -> u64 {
        millis(history_ttl.max(self.config.node_ttl * 4))
    }

    pub(super) fn presence_ttl(&self) -> u64 {
        millis(self.config.node_ttl * 3)
    }

    /// Sequences, records and publishes a channel message in one script; its `seq`.
    pub(super) async fn publish_sequenced(
        &self,
        room: &RoomKey,
        channel: &str,
        message: &Publish<'_>,
    ) -> Result<u64, BackplaneError> {
        let floor = self
            .tracks
            .lock()
            .get(channel)
            .map_or(0, |track| track.last_seq);
        let meta = self.keys.room_meta(room);
        let history = self.keys.room_history(room);
        let head = protocol::channel_message_head(message.msg_type, &room.channel, message.payload);
        let except = message.except.map_or("", ConnId::as_str);
        let (seq, _epoch): (u64, String) = self
            .link
            .invoke(
                &scripts::PUBLISH,
                &[&meta, &history, channel],
                &[
                    &head,
                    except,
                    &message.history.size.to_string(),
                    &millis(message.history.ttl).to_string(),
                    &self.meta_ttl(message.history.ttl).to_string(),
                    &floor.to_string(),
                    &fresh_epoch(),
                    self.link.publish_command(),
                    &self.seq_base.load(Ordering::Acquire).to_string(),
                ],
            )
            .await?;
        Ok(seq)
    }

    /// The channel's last `seq`, its retained messages (oldest first) and the epoch they
    /// belong to (`None` for a channel never published to).
    pub(super) async fn history(&self, room: &RoomKey) -> Result<History, BackplaneError> {
        let meta = self.keys.room_meta(room);
        let history = self.keys.room_history(room);
        let (last, entries, epoch): (String, Vec<String>, String) = self
            .link
            .invoke(&scripts::HISTORY, &[&meta, &history], &[])
            .await?;
        Ok(History {
            last: last.parse().unwrap_or(0),
            retained: entries
                .iter()
                .filter_map(|entry| history_entry(entry))
                .collect(),
            epoch: (!epoch.is_empty()).then(|| Arc::from(epoch)),
        })
    }

    /// Raises a room's counter to at least `floor` (and the base) under a new epoch, unless
    /// it is there.
    pub(super) async fn raise(&self, room: &RoomKey, floor: u64) -> Result<Raised, BackplaneError> {
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
    pub(super) async fn check_dataset(&self) -> Result<bool, BackplaneError> {
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
    pub(super) async fn register_member(
        &self,
        room: &RoomKey,
        member: &MemberInfo,
    ) -> Result<(), BackplaneError> {
        let presence = self.keys.room_presence(room);
        let value = presence_value(self.node(), &member.user_id);
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

    /// Removes a member from the room's presence hash and, when it was the room's last member
    /// here (`last_here`), the room from the node's room set.
    pub(super) async fn forget_member(
        &self,
        room: &RoomKey,
        connection: &ConnId,
        last_here: bool,
    ) -> Result<(), BackplaneError> {
        let forget = redis::cmd("HDEL")
            .arg(self.keys.room_presence(room))
            .arg(connection.as_str())
            .clone();
        // Two commands, not a pipeline: the keys hash to different Redis Cluster slots.
        let unindex = redis::cmd("SREM")
            .arg(self.keys.node_rooms(self.node()))
            .arg(keys::room_member_name(room))
            .clone();
        let (forgot, unindexed) = tokio::join!(self.link.query::<()>(&forget), async {
            if last_here {
                self.link.query::<()>(&unindex).await
            } else {
                Ok(())
            }
        });
        forgot.and(unindexed)
    }

    /// The members Redis lists for a room, on every node, in the order Redis gives them.
    pub(super) async fn presence(&self, room: &RoomKey) -> Result<Vec<MemberInfo>, BackplaneError> {
        let entries: Vec<(String, String)> = self
            .link
            .query(redis::cmd("HGETALL").arg(self.keys.room_presence(room)))
            .await?;
        Ok(entries
            .into_iter()
            .filter_map(|(connection_id, value)| {
                let user_id = presence_user(&value)?;
                Some(MemberInfo {
                    user_id: user_id.to_owned(),
                    connection_id,
                })
            })
            .collect())
    }

    /// Records a connection under its user and the user in the node's user set.
    pub(super) async fn register_connection(
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

    /// Removes a connection from its user's entry and, when it was the user's last connection
    /// here (`last_here`), the user from the node's user set.
    pub(super) async fn forget_connection(
        &self,
        tenant: &str,
        user: &str,
        connection: &ConnId,
        last_here: bool,
    ) -> Result<(), BackplaneError> {
        let forget = redis::cmd("HDEL")
            .arg(self.keys.user(tenant, user))
            .arg(connection.as_str())
            .clone();
        let unindex = redis::cmd("SREM")
            .arg(self.keys.node_users(self.node()))
            .arg(format!("{tenant}:{user}"))
            .clone();
        let (forgot, unindexed) = tokio::join!(self.link.query::<()>(&forget), async {
            if last_here {
                self.link.query::<()>(&unindex).await
            } else {
                Ok(())
            }
        });
        forgot.and(unindexed)
    }

    /// Sends a frame to a user's connections on the other nodes: how many connections it
    /// reached (those of nodes that were listening), and the error that stopped it, if one did.
    pub(super) async fn send_to_user_elsewhere(
        &self,
        tenant: &str,
        user: &str,
        frame: &Frame,
    ) -> (usize, Result<(), BackplaneError>) {
        let entries: Vec<(String, String)> = match self
            .link
            .query(redis::cmd("HGETALL").arg(self.keys.user(tenant, user)))
            .await
        {
            Ok(entries) => entries,
            Err(error) => return (0, Err(error)),
        };
        let mut per_node: HashMap<String, usize> = HashMap::new();
        for (_, node) in entries {
            if node != self.node() {
                *per_node.entry(node).or_default() += 1;
            }
        }
        let message = wire::to_user(tenant, user, &frame.wire_text());
        let mut reached = 0;
        for (node, connections) in per_node {
            match self
                .link
                .publish(&self.keys.node_inbox(&node), &message)
                .await
            {
                Ok(receivers) if receivers > 0 => reached += connections,
                Ok(_) => {}
                Err(error) => return (reached, Err(error)),
            }
        }
        (reached, Ok(()))
    }

    /// Sends a command for one of its connections to `node`'s inbox; whether that node is
    /// listening (it checks the tenant and the id).
    pub(super) async fn send_command(
        &self,
        node: &str,
        tenant: &str,
        connection: &ConnId,
        command: &ConnCommand,
    ) -> Result<bool, BackplaneError> {
        let id = connection.as_str();
        let message = match command {
            ConnCommand::Deliver(frame) => wire::to_connection(tenant, id, &frame.wire_text()),
            ConnCommand::Close(code, reason) => wire::close(tenant, id, *code, reason),
            ConnCommand::Attach(data) => wire::attach(tenant, id, data),
            ConnCommand::Join(channel) => wire::membership(true, tenant, id, channel),
            ConnCommand::Leave(channel) => wire::membership(false, tenant, id, channel),
        };
        self.link
            .publish(&self.keys.node_inbox(node), &message)
            .await
            .map(|receivers| receivers > 0)
    }

    /// Publishes an unsequenced room frame (a presence event) to every node, `except` one
    /// connection.
    pub(super) async fn signal(
        &self,
        room: &RoomKey,
        frame: &Frame,
        except: Option<&ConnId>,
    ) -> Result<(), BackplaneError> {
        let channel = self.keys.room_channel(room);
        let message = wire::signal(except.map(ConnId::as_str), &frame.wire_text());
        self.link.publish(&channel, &message).await.map(|_| ())
    }

    /// Publishes a presence event for a room to every node.
    pub(super) async fn announce(
        &self,
        room: &RoomKey,
        frame: &Frame,
    ) -> Result<(), BackplaneError> {
        self.signal(room, frame, None).await
    }
}
