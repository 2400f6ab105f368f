//! The one-node backplane: sequencing and bounded history in memory, delivery straight to the
//! local node. The default; it needs nothing but the process.

use std::collections::VecDeque;
use std::sync::{OnceLock, Weak};
use std::time::Duration;

use async_trait::async_trait;
use dashmap::DashMap;
use tokio::time::Instant;

use super::{
    Backplane, BackplaneError, ConnCommand, LocalDelivery, Publish, Recovery, RoomKey, recovery,
};
use crate::protocol::{self, Frame, MemberInfo};
use crate::registry::ConnId;

#[derive(Debug)]
struct ChannelLog {
    last_seq: u64,
    history: VecDeque<(u64, Instant, Frame)>,
    ttl: Duration,
    touched: Instant,
}

impl ChannelLog {
    fn expire(&mut self, now: Instant) {
        while let Some((_, at, _)) = self.history.front() {
            if now.saturating_duration_since(*at) <= self.ttl {
                break;
            }
            self.history.pop_front();
        }
    }
}

/// Sequencing, history and presence for a single node.
#[derive(Default)]
pub struct MemoryBackplane {
    channels: DashMap<RoomKey, ChannelLog>,
    local: OnceLock<Weak<dyn LocalDelivery>>,
}

impl std::fmt::Debug for MemoryBackplane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryBackplane")
            .field("channels", &self.channels.len())
            .finish_non_exhaustive()
    }
}

impl MemoryBackplane {
    /// An empty backplane; `attach` it to a node before use.
    pub fn new() -> Self {
        MemoryBackplane::default()
    }

    fn local(&self) -> Option<std::sync::Arc<dyn LocalDelivery>> {
        self.local.get().and_then(Weak::upgrade)
    }

    /// Drops expired history, and the logs of channels idle past their TTL with no members.
    /// A channel with members keeps its sequence so `seq` never goes back for them.
    pub fn sweep(&self) {
        let now = Instant::now();
        let local = self.local();
        self.channels.retain(|room, log| {
            log.expire(now);
            let idle = now.saturating_duration_since(log.touched) > log.ttl;
            let has_members = local
                .as_ref()
                .is_some_and(|local| !local.local_members(room).is_empty());
            !(idle && log.history.is_empty() && !has_members)
        });
    }

    /// Channels with a sequence or history in memory.
    pub fn channel_count(&self) -> usize {
        self.channels.len()
    }
}

#[async_trait]
impl Backplane for MemoryBackplane {
    fn attach(&self, _node_id: &str, local: Weak<dyn LocalDelivery>) {
        let _ = self.local.set(local);
    }

    async fn publish(&self, room: &RoomKey, message: Publish<'_>) -> Result<u64, BackplaneError> {
        let now = Instant::now();
        let mut log = self
            .channels
            .entry(room.clone())
            .or_insert_with(|| ChannelLog {
                last_seq: 0,
                history: VecDeque::new(),
                ttl: message.history.ttl,
                touched: now,
            });
        log.last_seq += 1;
        log.touched = now;
        log.ttl = message.history.ttl;
        let seq = log.last_seq;
        let frame =
            protocol::channel_message(message.msg_type, &room.channel, message.payload, seq);
        if message.history.size > 0 {
            log.expire(now);
            while log.history.len() >= message.history.size {
                log.history.pop_front();
            }
            log.history.push_back((seq, now, frame.clone()));
        }
        // Delivered while the channel entry is held, so deliveries happen in `seq` order.
        if let Some(local) = self.local() {
            local.deliver_to_room(room, &frame, Some(seq), message.except);
        }
        Ok(seq)
    }

    async fn signal(
        &self,
        room: &RoomKey,
        frame: Frame,
        except: Option<&ConnId>,
    ) -> Result<(), BackplaneError> {
        if let Some(local) = self.local() {
            local.deliver_to_room(room, &frame, None, except);
        }
        Ok(())
    }

    async fn subscribe(&self, _room: &RoomKey) -> Result<(), BackplaneError> {
        Ok(())
    }

    async fn unsubscribe(&self, _room: &RoomKey) -> Result<(), BackplaneError> {
        Ok(())
    }

    // On one node the local room is the whole room: presence is read from it.
    async fn presence_add(
        &self,
        _room: &RoomKey,
        _member: &MemberInfo,
    ) -> Result<(), BackplaneError> {
        Ok(())
    }

    async fn presence_remove(
        &self,
        _room: &RoomKey,
        _connection: &ConnId,
    ) -> Result<(), BackplaneError> {
        Ok(())
    }

    async fn presence_members(&self, room: &RoomKey) -> Result<Vec<MemberInfo>, BackplaneError> {
        Ok(self
            .local()
            .map(|local| local.local_members(room))
            .unwrap_or_default())
    }

    async fn send_to_user(
        &self,
        tenant: &str,
        user_id: &str,
        frame: Frame,
    ) -> Result<usize, BackplaneError> {
        Ok(self
            .local()
            .map_or(0, |local| local.deliver_to_user(tenant, user_id, &frame)))
    }

    async fn command(
        &self,
        tenant: &str,
        connection: &ConnId,
        command: ConnCommand,
    ) -> Result<bool, BackplaneError> {
        Ok(self
            .local()
            .is_some_and(|local| local.command(tenant, connection, command)))
    }

    async fn history_since(&self, room: &RoomKey, since: u64) -> Result<Recovery, BackplaneError> {
        // Nothing published here (or it expired) is a channel whose last `seq` is 0.
        let Some(mut log) = self.channels.get_mut(room) else {
            return Ok(recovery(0, since, Vec::new()));
        };
        log.expire(Instant::now());
        let retained = log
            .history
            .iter()
            .map(|(seq, _, frame)| (*seq, frame.clone()))
            .collect();
        Ok(recovery(log.last_seq, since, retained))
    }

    fn is_ready(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests;
