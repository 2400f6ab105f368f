//! Rooms: local membership, local fan-out, and the join/leave flows with presence and
//! recovery. Other nodes are reached only through the `Backplane`.
//!
//! A joining connection is a *pending* member: messages for the room are buffered for it until
//! its ack and any recovered history are queued, then flushed without duplicates. That is what
//! keeps the promised order: ack, then replayed messages, then live ones.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use dashmap::DashMap;
use parking_lot::Mutex;

use crate::backplane::{Backplane, BackplaneError};
use crate::conn_handle::ConnHandle;
use crate::ids::{ConnId, RoomKey};
use crate::protocol::{self, ErrorCode, Frame, JoinAck, MemberInfo, PresenceChange};

#[derive(Debug)]
struct Member {
    conn: Arc<ConnHandle>,
    live: AtomicBool,
}

/// A frame held for a pending member, with its `seq` when sequenced.
type Held = (Option<u64>, Frame);

#[derive(Debug, Default)]
struct Room {
    members: HashMap<ConnId, Member>,
    /// Frames held for pending members, with their `seq` when sequenced.
    pending: Mutex<HashMap<ConnId, Vec<Held>>>,
}

impl Room {
    fn deliver(&self, frame: &Frame, seq: Option<u64>, except: Option<&ConnId>) {
        for (id, member) in &self.members {
            if except == Some(id) {
                continue;
            }
            if member.live.load(Ordering::Acquire) {
                member.conn.outbox.push(frame.clone());
                continue;
            }
            // Re-checked under the lock: `go_live` flips `live` while holding it.
            let mut pending = self.pending.lock();
            if member.live.load(Ordering::Acquire) {
                member.conn.outbox.push(frame.clone());
            } else {
                pending
                    .entry(id.clone())
                    .or_default()
                    .push((seq, frame.clone()));
            }
        }
    }
}

/// A refused room operation, answered with an `error` envelope.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct RoomError {
    /// The protocol error code.
    pub code: ErrorCode,
    /// Human-readable detail.
    pub message: String,
}

impl RoomError {
    fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        RoomError {
            code,
            message: message.into(),
        }
    }
}

impl From<BackplaneError> for RoomError {
    fn from(error: BackplaneError) -> Self {
        RoomError::new(ErrorCode::Overloaded, error.to_string())
    }
}

/// Room membership of this node's connections.
#[derive(Debug)]
pub struct Rooms {
    map: DashMap<RoomKey, Room>,
    backplane: Arc<dyn Backplane>,
}

impl Rooms {
    /// No rooms yet.
    pub fn new(backplane: Arc<dyn Backplane>) -> Self {
        Rooms {
            map: DashMap::new(),
            backplane,
        }
    }

    /// Rooms with at least one local member.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// True when no room has a local member.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Queues a frame for the room's local members.
    pub fn deliver(
        &self,
        room: &RoomKey,
        frame: &Frame,
        seq: Option<u64>,
        except: Option<&ConnId>,
    ) {
        if let Some(entry) = self.map.get(room) {
            entry.deliver(frame, seq, except);
        }
    }

    /// Whether the room has a member (live or joining) on this node.
    pub fn has_local_members(&self, room: &RoomKey) -> bool {
        self.map.contains_key(room)
    }

    /// The room's local members.
    pub fn local_members(&self, room: &RoomKey) -> Vec<MemberInfo> {
        self.map
            .get(room)
            .map(|entry| {
                entry
                    .members
                    .values()
                    .map(|member| MemberInfo {
                        user_id: member.conn.user_id.to_string(),
                        connection_id: member.conn.id.to_string(),
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Joins `conn` to `channel`, queues the ack (when correlated) and recovered history, and
    /// announces the join. `since` asks for recovery.
    pub async fn join(
        &self,
        conn: &Arc<ConnHandle>,
        channel: &str,
        since: Option<u64>,
        correlation_id: Option<&str>,
    ) -> Result<(), RoomError> {
        let room = RoomKey::new(&conn.tenant.name, channel);
        let presence = conn.tenant.presence_enabled(channel);
        let already_member = conn.rooms.lock().contains(channel);
        if already_member {
            // Acknowledged again, with no second presence event and nothing replayed.
            let members = if presence {
                Some(self.backplane.presence_members(&room).await?)
            } else {
                None
            };
            if let Some(correlation_id) = correlation_id {
                let payload = JoinAck {
                    channel,
                    members: members.as_deref(),
                    recovered: since.map(|_| false),
                };
                conn.outbox
                    .push(protocol::ack(correlation_id, Some(&payload.to_json())));
            }
            return Ok(());
        }
        let limit = conn.tenant.limits.max_rooms_per_connection;
        if conn.rooms.lock().len() >= limit {
            return Err(RoomError::new(
                ErrorCode::Forbidden,
                format!("a connection may be in at most {limit} rooms"),
            ));
        }

        let first_local = self.insert_pending(&room, conn);
        conn.rooms.lock().insert(room.channel.clone());
        let me = MemberInfo {
            user_id: conn.user_id.to_string(),
            connection_id: conn.id.to_string(),
        };
        let prepared = self
            .prepare_join(&room, first_local, presence, &me, since)
            .await;
        let (members, recovery) = match prepared {
            Ok(prepared) => prepared,
            Err(error) => {
                self.remove_member(&room, &conn.id).await;
                conn.rooms.lock().remove(channel);
                return Err(error.into());
            }
        };
        if let Some(correlation_id) = correlation_id {
            let payload = JoinAck {
                channel,
                members: members.as_deref(),
                recovered: recovery.as_ref().map(|recovery| recovery.recovered),
            };
            conn.outbox
                .push(protocol::ack(correlation_id, Some(&payload.to_json())));
        }
        let mut last_replayed = None;
        for (seq, frame) in recovery.map(|recovery| recovery.frames).unwrap_or_default() {
            conn.outbox.push(frame);
            last_replayed = Some(seq);
        }
        self.go_live(&room, &conn.id, last_replayed);
        if conn.tenant.announces_presence(channel) {
            let event = protocol::presence(
                PresenceChange::Join,
                channel,
                &me.user_id,
                &me.connection_id,
            );
            // Presence is best effort: a failed announcement does not undo the join.
            if let Err(error) = self.backplane.signal(&room, event, Some(&conn.id)).await {
                tracing::warn!(%error, channel, "presence:join not announced");
            }
        }
        Ok(())
    }

    async fn prepare_join(
        &self,
        room: &RoomKey,
        first_local: bool,
        presence: bool,
        me: &MemberInfo,
        since: Option<u64>,
    ) -> Result<(Option<Vec<MemberInfo>>, Option<crate::backplane::Recovery>), BackplaneError> {
        if first_local {
            self.backplane.subscribe(room).await?;
        }
        let members = if presence {
            self.backplane.presence_add(room, me).await?;
            Some(self.backplane.presence_members(room).await?)
        } else {
            None
        };
        let recovery = match since {
            Some(since) => Some(self.backplane.history_since(room, since).await?),
            None => None,
        };
        Ok((members, recovery))
    }

    /// Removes `conn` from `channel`, queues the ack (when correlated) and announces the leave.
    pub async fn leave(
        &self,
        conn: &Arc<ConnHandle>,
        channel: &str,
        correlation_id: Option<&str>,
    ) -> Result<(), RoomError> {
        if !conn.rooms.lock().remove(channel) {
            return Err(RoomError::new(
                ErrorCode::NotMember,
                format!("not a member of `{channel}`"),
            ));
        }
        let room = RoomKey::new(&conn.tenant.name, channel);
        self.depart(conn, &room).await;
        if let Some(correlation_id) = correlation_id {
            conn.outbox.push(protocol::ack(
                correlation_id,
                Some(&protocol::leave_ack_payload(channel)),
            ));
        }
        Ok(())
    }

    /// Removes a closed connection from every room it was in, telling the members.
    pub async fn leave_all(&self, conn: &Arc<ConnHandle>) {
        let channels: Vec<Arc<str>> = conn.rooms.lock().drain().collect();
        for channel in channels {
            let room = RoomKey {
                tenant: conn.tenant.name.clone(),
                channel,
            };
            self.depart(conn, &room).await;
        }
    }

    async fn depart(&self, conn: &Arc<ConnHandle>, room: &RoomKey) {
        self.remove_member(room, &conn.id).await;
        if conn.tenant.presence_enabled(&room.channel) {
            if let Err(error) = self.backplane.presence_remove(room, &conn.id).await {
                tracing::warn!(%error, channel = %room.channel, "presence not removed");
            }
            if !conn.tenant.announces_presence(&room.channel) {
                return;
            }
            let event = protocol::presence(
                PresenceChange::Leave,
                &room.channel,
                &conn.user_id,
                conn.id.as_str(),
            );
            if let Err(error) = self.backplane.signal(room, event, None).await {
                tracing::warn!(%error, channel = %room.channel, "presence:leave not announced");
            }
        }
    }

    fn insert_pending(&self, room: &RoomKey, conn: &Arc<ConnHandle>) -> bool {
        let mut entry = self.map.entry(room.clone()).or_default();
        let first_local = entry.members.is_empty();
        entry.members.insert(
            conn.id.clone(),
            Member {
                conn: conn.clone(),
                live: AtomicBool::new(false),
            },
        );
        first_local
    }

    fn go_live(&self, room: &RoomKey, id: &ConnId, last_replayed: Option<u64>) {
        let Some(entry) = self.map.get(room) else {
            return;
        };
        let Some(member) = entry.members.get(id) else {
            return;
        };
        let mut pending = entry.pending.lock();
        for (seq, frame) in pending.remove(id).unwrap_or_default() {
            let duplicate = matches!((seq, last_replayed), (Some(seq), Some(last)) if seq <= last);
            if !duplicate {
                member.conn.outbox.push(frame);
            }
        }
        member.live.store(true, Ordering::Release);
    }

    async fn remove_member(&self, room: &RoomKey, id: &ConnId) {
        let now_empty = {
            let Some(mut entry) = self.map.get_mut(room) else {
                return;
            };
            entry.members.remove(id);
            entry.pending.lock().remove(id);
            entry.members.is_empty()
        };
        if now_empty
            && self
                .map
                .remove_if(room, |_, entry| entry.members.is_empty())
                .is_some()
            && let Err(error) = self.backplane.unsubscribe(room).await
        {
            tracing::warn!(%error, channel = %room.channel, "unsubscribe failed");
        }
    }
}

#[cfg(test)]
mod tests;
