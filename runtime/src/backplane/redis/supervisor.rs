//! The supervisor: connects, proves the backplane works with a probe round-tripped through
//! Redis, keeps this node's heartbeat and TTLs fresh, reaps dead nodes, and after an outage
//! reconnects with capped backoff and jitter, resubscribes, re-registers and resynchronises.
//!
//! Reconnection timing: an attempt right after the connection is lost, then attempts after
//! `MIN_RECONNECT_DELAY` doubling up to `redis.reconnect_max_delay` (500 ms by default), each
//! wait jittered in the upper half of its range. So however long the outage, a node tries
//! again within `reconnect_max_delay` of Redis answering. Each attempt is one connection; a
//! node makes at most 7 in the first second of an outage, then at most 2 /
//! `reconnect_max_delay` a second (4 by default).

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::{oneshot, watch};
use tokio::time::Instant;

use super::commands::millis;
use super::entries::presence_user;
use super::keys::{self, split_tenant};
use super::random::random_u64;
use super::scripts;
use super::shared::{Control, Shared};
use super::wire;
use crate::backplane::BackplaneError;
use crate::config::MIN_RECONNECT_DELAY;
use crate::ids::RoomKey;
use crate::protocol::{self, MemberInfo, PresenceChange};

/// Channels per `SUBSCRIBE` when resubscribing everything.
const RESUBSCRIBE_CHUNK: usize = 512;

static PROBE_TOKENS: AtomicU64 = AtomicU64::new(1);

/// Runs until stopped.
pub(super) async fn run(shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let mut failures: u32 = 0;
    let mut recovered_once = false;
    let mut next_heartbeat = Instant::now();
    loop {
        let disconnected = shared.events.disconnected.swap(false, Ordering::AcqRel);
        if disconnected {
            shared.degrade(
                "connection",
                &BackplaneError::Unavailable("connection to Redis dropped".to_owned()),
            );
        }
        if shared.is_healthy() {
            if Instant::now() >= next_heartbeat {
                next_heartbeat = Instant::now() + shared.config.heartbeat_interval;
                if let Err(error) = heartbeat(&shared).await {
                    shared.degrade("heartbeat", &error);
                }
            }
            if shared.is_healthy() {
                match probe(&shared).await {
                    Ok(()) => shared.ready.store(true, Ordering::Release),
                    Err(error) => shared.degrade("probe", &error),
                }
            }
        }
        if !shared.is_healthy() {
            match recover(&shared).await {
                Ok(()) => {
                    if recovered_once {
                        shared.stats.reconnects.fetch_add(1, Ordering::Relaxed);
                        tracing::info!(after_attempts = failures + 1, "Redis backplane recovered");
                    } else {
                        tracing::info!(node = shared.node(), "Redis backplane connected");
                    }
                    recovered_once = true;
                    failures = 0;
                    next_heartbeat = Instant::now() + shared.config.heartbeat_interval;
                }
                Err(error) => {
                    shared.healthy.store(false, Ordering::Release);
                    shared.ready.store(false, Ordering::Release);
                    if failures.is_multiple_of(10) {
                        tracing::warn!(%error, attempt = failures + 1, "Redis backplane unavailable; retrying");
                    }
                    failures = failures.saturating_add(1);
                }
            }
        }
        let delay = if shared.is_healthy() {
            shared.config.probe_interval
        } else {
            backoff(shared.config.reconnect_max_delay, failures)
        };
        tokio::select! {
            _ = stop.changed() => break,
            () = tokio::time::sleep(delay) => {}
            () = shared.events.wake.notified() => {}
        }
    }
}

/// The wait after `failures` failed attempts in a row: `MIN_RECONNECT_DELAY` doubling up to
/// `max`, with jitter in its upper half so that nodes that lost Redis together do not
/// reconnect in lockstep. The cap keeps the wait short however long the outage lasted: Redis
/// is found again within `max` of answering.
pub(super) fn backoff(max: Duration, failures: u32) -> Duration {
    let exponential = MIN_RECONNECT_DELAY
        .saturating_mul(1 << failures.saturating_sub(1).min(16))
        .min(max);
    let jitter = (random_u64() % 1000) as f64 / 1000.0;
    exponential.mul_f64(0.5 + jitter / 2.0)
}

/// Sends a probe to this node's own inbox and waits for it to come back.
async fn probe(shared: &Shared) -> Result<(), BackplaneError> {
    let token = PROBE_TOKENS.fetch_add(1, Ordering::Relaxed);
    let (done, back) = oneshot::channel();
    shared.probes.lock().insert(token, done);
    let started = Instant::now();
    let inbox = shared.keys.node_inbox(shared.node());
    let outcome = match shared.link.publish(&inbox, &wire::probe(token)).await {
        Ok(_) => tokio::time::timeout(shared.config.command_timeout, back)
            .await
            .map_err(|_| BackplaneError::Unavailable("the probe did not come back".to_owned()))
            .and_then(|answer| {
                answer.map_err(|_| BackplaneError::Unavailable("probe abandoned".to_owned()))
            }),
        Err(error) => Err(error),
    };
    shared.probes.lock().remove(&token);
    match outcome {
        Ok(()) => {
            let rtt = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
            shared.stats.probe_rtt_micros.store(rtt, Ordering::Relaxed);
            shared.stats.probes_ok.fetch_add(1, Ordering::Relaxed);
            Ok(())
        }
        Err(error) => {
            shared.stats.probe_failures.fetch_add(1, Ordering::Relaxed);
            Err(error)
        }
    }
}

/// Brings the node back into the cluster: connection, subscriptions, registrations, missed
/// messages, and a probe that proves delivery works. Only then is the node ready.
async fn recover(shared: &Shared) -> Result<(), BackplaneError> {
    // Always a new connection: the old one lost its subscriptions with Redis, or is stuck.
    shared.link.reset();
    shared.link.connect().await?;
    shared.link.query::<String>(&redis::cmd("PING")).await?;
    // Before anything is published again: counters must start above what a lost dataset
    // issued.
    shared.check_dataset().await?;
    shared
        .link
        .subscribe(&[shared.keys.node_inbox(shared.node())])
        .await?;
    // Subscribed before healthy: a message sequenced in Redis for a room with members here
    // must find this node listening, or it would be published past it.
    let channels: HashSet<String> = shared.tracks.lock().keys().cloned().collect();
    subscribe_all(shared, channels.iter().cloned().collect()).await?;
    // Healthy from here on: joins, presence and publishes go to Redis again, so whatever the
    // snapshots below miss is registered by its own operation. Rooms tracked since the first
    // snapshot were joined while unhealthy, which subscribes nothing: they are caught here.
    shared.healthy.store(true, Ordering::Release);
    let joined_meanwhile: Vec<String> = shared
        .tracks
        .lock()
        .keys()
        .filter(|channel| !channels.contains(*channel))
        .cloned()
        .collect();
    subscribe_all(shared, joined_meanwhile).await?;
    shared
        .link
        .invoke::<i64>(
            &scripts::HEARTBEAT,
            &[&shared.keys.nodes()],
            &[shared.node()],
        )
        .await?;
    reregister(shared).await?;
    let (done, resynced) = oneshot::channel();
    if shared.control.send(Control::Resync(done)).await.is_ok() {
        let _ = resynced.await;
    }
    if !shared.is_healthy() {
        return Err(BackplaneError::Unavailable(
            "Redis failed again while resynchronising".to_owned(),
        ));
    }
    probe(shared).await?;
    shared.ready.store(true, Ordering::Release);
    Ok(())
}

/// Subscribes to these channels, a chunk per command.
async fn subscribe_all(shared: &Shared, channels: Vec<String>) -> Result<(), BackplaneError> {
    for chunk in channels.chunks(RESUBSCRIBE_CHUNK) {
        shared.link.subscribe(chunk).await?;
    }
    Ok(())
}

/// Rewrites this node's presence and user entries from what is true locally, announcing the
/// joins and leaves other nodes missed while Redis was unreachable.
async fn reregister(shared: &Shared) -> Result<(), BackplaneError> {
    let Some(local) = shared.local() else {
        return Ok(());
    };
    let node = shared.node();
    let recorded: Vec<String> = shared
        .link
        .query(redis::cmd("SMEMBERS").arg(shared.keys.node_rooms(node)))
        .await?;
    let tracked: Vec<RoomKey> = shared
        .tracks
        .lock()
        .values()
        .filter(|track| track.presence)
        .map(|track| track.room.clone())
        .collect();
    let mut rooms: Vec<RoomKey> = recorded
        .iter()
        .filter_map(|name| split_tenant(name))
        .map(|(tenant, channel)| RoomKey::new(&Arc::from(tenant), channel))
        .collect();
    rooms.extend(tracked);
    rooms.sort();
    rooms.dedup();
    for room in rooms {
        let members = local.local_members(&room);
        let presence = shared.keys.room_presence(&room);
        let removed: Vec<String> = shared
            .link
            .invoke(&scripts::FORGET_NODE, &[&presence], &[node])
            .await?;
        let before: HashSet<(String, String)> = removed
            .chunks(2)
            .filter_map(|pair| match pair {
                [connection, value] => {
                    presence_user(value).map(|user| (connection.clone(), user.to_owned()))
                }
                _ => None,
            })
            .collect();
        let now: HashSet<(String, String)> = members
            .iter()
            .map(|member| (member.connection_id.clone(), member.user_id.clone()))
            .collect();
        for member in &members {
            shared.register_member(&room, member).await?;
        }
        if members.is_empty() {
            shared
                .link
                .query::<()>(
                    redis::cmd("SREM")
                        .arg(shared.keys.node_rooms(node))
                        .arg(keys::room_member_name(&room)),
                )
                .await?;
        }
        for (change, set, other) in [
            (PresenceChange::Leave, &before, &now),
            (PresenceChange::Join, &now, &before),
        ] {
            for (connection, user) in set.difference(other) {
                let frame = protocol::presence(change, &room.channel, user, connection);
                shared.announce(&room, &frame).await?;
            }
        }
    }
    forget_users(shared, node).await?;
    shared
        .link
        .query::<()>(redis::cmd("DEL").arg(shared.keys.node_users(node)))
        .await?;
    for (tenant, user, connection) in local.local_connections() {
        shared
            .register_connection(&tenant, &user, connection.as_str())
            .await?;
    }
    Ok(())
}

/// Refreshes this node's liveness and the TTLs of the rooms it holds, then reaps dead nodes.
async fn heartbeat(shared: &Shared) -> Result<(), BackplaneError> {
    let node = shared.node();
    let added: i64 = shared
        .link
        .invoke(&scripts::HEARTBEAT, &[&shared.keys.nodes()], &[node])
        .await?;
    if added == 1 {
        // Another node took this one for dead and removed its members: register again.
        tracing::warn!(node, "this node was reaped as dead; re-registering");
        return Err(BackplaneError::Unavailable(
            "this node's heartbeat lapsed".to_owned(),
        ));
    }
    if shared.check_dataset().await? {
        // Flushed under a live connection: presence and lookups are gone too.
        return Err(BackplaneError::Unavailable(
            "Redis lost its data; re-registering".to_owned(),
        ));
    }
    let rooms: Vec<(RoomKey, bool)> = shared
        .tracks
        .lock()
        .values()
        .map(|track| (track.room.clone(), track.presence))
        .collect();
    let presence_ttl = i64::try_from(shared.presence_ttl()).unwrap_or(i64::MAX);
    let meta_ttl = i64::try_from(millis(shared.config.node_ttl * 4)).unwrap_or(i64::MAX);
    for (room, presence) in rooms {
        let mut pipe = redis::pipe();
        if presence {
            pipe.pexpire(shared.keys.room_presence(&room), presence_ttl)
                .ignore();
        }
        // Only lengthens: PEXPIRE with GT keeps a longer history TTL.
        pipe.cmd("PEXPIRE")
            .arg(shared.keys.room_meta(&room))
            .arg(meta_ttl)
            .arg("GT")
            .ignore();
        shared.link.query_pipe(&pipe).await?;
    }
    reap(shared).await
}

/// Removes the members and user entries of nodes whose heartbeat lapsed, announcing each
/// member's leave. A lock per dead node keeps the survivors from doing it twice.
async fn reap(shared: &Shared) -> Result<(), BackplaneError> {
    let ttl = millis(shared.config.node_ttl).to_string();
    let dead: Vec<String> = shared
        .link
        .invoke(&scripts::DEAD_NODES, &[&shared.keys.nodes()], &[&ttl])
        .await?;
    for node in dead.iter().filter(|node| node.as_str() != shared.node()) {
        let locked: Option<String> = shared
            .link
            .query(
                redis::cmd("SET")
                    .arg(shared.keys.node_reap_lock(node))
                    .arg(shared.node())
                    .arg("NX")
                    .arg("PX")
                    .arg(&ttl),
            )
            .await?;
        if locked.is_none() {
            continue;
        }
        tracing::info!(dead = %node, "reaping a dead node's members");
        forget_node(shared, node, true).await?;
        shared.stats.reaped_nodes.fetch_add(1, Ordering::Relaxed);
    }
    Ok(())
}

/// Removes a node from presence, user lookups and the node set; announces its members' leave
/// when `announce` (a dead node cannot do it itself).
async fn forget_node(shared: &Shared, node: &str, announce: bool) -> Result<(), BackplaneError> {
    let rooms: Vec<String> = shared
        .link
        .query(redis::cmd("SMEMBERS").arg(shared.keys.node_rooms(node)))
        .await?;
    for name in rooms {
        let Some((tenant, channel)) = split_tenant(&name) else {
            continue;
        };
        let room = RoomKey::new(&Arc::from(tenant), channel);
        let removed: Vec<String> = shared
            .link
            .invoke(
                &scripts::FORGET_NODE,
                &[&shared.keys.room_presence(&room)],
                &[node],
            )
            .await?;
        if !announce {
            continue;
        }
        for pair in removed.chunks(2) {
            if let [connection, value] = pair
                && let Some(user) = presence_user(value)
            {
                let member = MemberInfo {
                    user_id: user.to_owned(),
                    connection_id: connection.clone(),
                };
                let frame = protocol::presence(
                    PresenceChange::Leave,
                    channel,
                    &member.user_id,
                    &member.connection_id,
                );
                shared.announce(&room, &frame).await?;
            }
        }
    }
    forget_users(shared, node).await?;
    // Both sets hash to the node's tag, so one DEL is allowed in a cluster too.
    shared
        .link
        .query::<()>(
            redis::cmd("DEL")
                .arg(shared.keys.node_rooms(node))
                .arg(shared.keys.node_users(node)),
        )
        .await?;
    shared
        .link
        .query::<()>(redis::cmd("ZREM").arg(shared.keys.nodes()).arg(node))
        .await
}

/// Removes a node's entries from the user lookups of every user it recorded.
async fn forget_users(shared: &Shared, node: &str) -> Result<(), BackplaneError> {
    let users: Vec<String> = shared
        .link
        .query(redis::cmd("SMEMBERS").arg(shared.keys.node_users(node)))
        .await?;
    for name in users {
        if let Some((tenant, user)) = split_tenant(&name) {
            shared
                .link
                .invoke::<Vec<String>>(
                    &scripts::FORGET_NODE,
                    &[&shared.keys.user(tenant, user)],
                    &[node],
                )
                .await?;
        }
    }
    Ok(())
}

/// Takes this node out of the cluster after it drained (its members already left).
pub(super) async fn leave_cluster(shared: &Shared) {
    if !shared.is_healthy() {
        return;
    }
    let node = shared.node().to_owned();
    if let Err(error) = forget_node(shared, &node, false).await {
        tracing::warn!(%error, "could not remove this node from Redis; it expires with its TTL");
    }
}
