//! The one-node backplane: sequencing and bounded history in memory, delivery straight to the
//! local node. The default; it needs nothing but the process.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use async_trait::async_trait;
use dashmap::DashMap;
use parking_lot::Mutex;
use tokio::time::Instant;

use super::{
    Backplane, BackplaneError, ConnCommand, LocalDelivery, Publish, Recovery, RoomKey, recovery,
};
use crate::ids::ConnId;
use crate::protocol::{self, Frame, MemberInfo};

/// What one retained message costs beside its frame: its history entry and its place in the
/// tenant's order (both `VecDeque` slots, counted at twice their size for the deques' spare
/// capacity).
const ENTRY_COST: usize = 128;
const ORDER_COST: usize = 48;

/// A tenant's history across all its channels on this node: the bytes it holds and the order
/// its messages came in, so that the oldest go first once it passes `history.max_bytes`.
#[derive(Debug, Default)]
struct TenantHistory {
    /// Frames and entries retained, plus the order's records (live or already gone from
    /// their channel), so the order itself stays within the budget.
    bytes: AtomicUsize,
    order: Mutex<VecDeque<(Arc<str>, u64)>>,
    evicted: AtomicU64,
}

impl TenantHistory {
    fn released(&self, frame: &Frame) {
        self.bytes
            .fetch_sub(frame.len() + ENTRY_COST, Ordering::Relaxed);
    }
}

#[derive(Debug)]
struct ChannelLog {
    last_seq: u64,
    history: VecDeque<(u64, Instant, Frame)>,
    ttl: Duration,
    touched: Instant,
    budget: Arc<TenantHistory>,
}

impl ChannelLog {
    fn expire(&mut self, now: Instant) {
        while let Some((_, at, _)) = self.history.front() {
            if now.saturating_duration_since(*at) <= self.ttl {
                break;
            }
            self.pop_oldest();
        }
    }

    fn pop_oldest(&mut self) {
        if let Some((_, _, frame)) = self.history.pop_front() {
            self.budget.released(&frame);
        }
    }
}

impl Drop for ChannelLog {
    fn drop(&mut self) {
        for (_, _, frame) in &self.history {
            self.budget.released(frame);
        }
    }
}

/// Sequencing, history and presence for a single node.
#[derive(Default)]
pub struct MemoryBackplane {
    channels: DashMap<RoomKey, ChannelLog>,
    tenants: DashMap<Arc<str>, Arc<TenantHistory>>,
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
        for entry in &self.tenants {
            self.forget_released(entry.key(), entry.value());
        }
    }

    /// Drops the records at the front of a tenant's order whose messages already left their
    /// channel, so an idle tenant's history comes back to zero bytes.
    fn forget_released(&self, tenant: &Arc<str>, budget: &TenantHistory) {
        loop {
            let Some((channel, seq)) = budget.order.lock().front().cloned() else {
                return;
            };
            let room = RoomKey {
                tenant: tenant.clone(),
                channel,
            };
            let still_held = self.channels.get(&room).is_some_and(|log| {
                log.history
                    .front()
                    .is_some_and(|(front, _, _)| *front <= seq)
            });
            if still_held {
                return;
            }
            let mut order = budget.order.lock();
            if order.front().is_some_and(|(front_channel, front_seq)| {
                *front_seq == seq && *front_channel == room.channel
            }) {
                order.pop_front();
                budget.bytes.fetch_sub(ORDER_COST, Ordering::Relaxed);
            }
        }
    }

    /// Channels with a sequence or history in memory.
    pub fn channel_count(&self) -> usize {
        self.channels.len()
    }

    /// Bytes of history a tenant holds on this node (frames and bookkeeping).
    pub fn history_bytes(&self, tenant: &str) -> usize {
        self.tenants
            .get(tenant)
            .map_or(0, |budget| budget.bytes.load(Ordering::Relaxed))
    }

    fn budget(&self, tenant: &Arc<str>) -> Arc<TenantHistory> {
        if let Some(budget) = self.tenants.get(tenant) {
            return budget.clone();
        }
        self.tenants.entry(tenant.clone()).or_default().clone()
    }

    /// Drops the tenant's oldest messages, whatever their channel, until its history fits in
    /// `max_bytes`. Never called with a channel entry held: it takes them one at a time.
    fn evict(&self, tenant: &Arc<str>, budget: &TenantHistory, max_bytes: usize) {
        while budget.bytes.load(Ordering::Relaxed) > max_bytes {
            let Some((channel, seq)) = budget.order.lock().pop_front() else {
                break;
            };
            budget.bytes.fetch_sub(ORDER_COST, Ordering::Relaxed);
            let room = RoomKey {
                tenant: tenant.clone(),
                channel,
            };
            // A record whose message already left (per-channel cap, TTL) frees only itself.
            if let Some(mut log) = self.channels.get_mut(&room) {
                while log
                    .history
                    .front()
                    .is_some_and(|(front, _, _)| *front <= seq)
                {
                    log.pop_oldest();
                    budget.evicted.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }
}

#[async_trait]
impl Backplane for MemoryBackplane {
    fn attach(&self, _node_id: &str, local: Weak<dyn LocalDelivery>) {
        let _ = self.local.set(local);
    }

    async fn publish(&self, room: &RoomKey, message: Publish<'_>) -> Result<u64, BackplaneError> {
        let now = Instant::now();
        let budget = self.budget(&room.tenant);
        let retained;
        let seq = {
            let mut log = self
                .channels
                .entry(room.clone())
                .or_insert_with(|| ChannelLog {
                    last_seq: 0,
                    history: VecDeque::new(),
                    ttl: message.history.ttl,
                    touched: now,
                    budget: budget.clone(),
                });
            log.last_seq += 1;
            log.touched = now;
            log.ttl = message.history.ttl;
            let seq = log.last_seq;
            let frame =
                protocol::channel_message(message.msg_type, &room.channel, message.payload, seq);
            retained = message.history.size > 0;
            if retained {
                log.expire(now);
                while log.history.len() >= message.history.size {
                    log.pop_oldest();
                }
                budget
                    .bytes
                    .fetch_add(frame.len() + ENTRY_COST + ORDER_COST, Ordering::Relaxed);
                budget.order.lock().push_back((room.channel.clone(), seq));
                log.history.push_back((seq, now, frame.clone()));
            }
            // Delivered while the channel entry is held, so deliveries happen in `seq` order.
            if let Some(local) = self.local() {
                local.deliver_to_room(room, &frame, Some(seq), message.except);
            }
            seq
        };
        if retained {
            self.evict(&room.tenant, &budget, message.history.max_bytes);
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

    async fn forget_tenant(&self, tenant: &str) -> Result<usize, BackplaneError> {
        let before = self.channels.len();
        self.channels.retain(|room, _| &*room.tenant != tenant);
        self.tenants.remove(tenant);
        Ok(before - self.channels.len())
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

    fn render_metrics(&self, out: &mut String) {
        let mut rows: Vec<(Arc<str>, usize, u64)> = self
            .tenants
            .iter()
            .map(|entry| {
                (
                    entry.key().clone(),
                    entry.bytes.load(Ordering::Relaxed),
                    entry.evicted.load(Ordering::Relaxed),
                )
            })
            .collect();
        rows.sort();
        crate::metrics::backplane::render_history(out, &rows);
    }
}

#[cfg(test)]
mod tests;
