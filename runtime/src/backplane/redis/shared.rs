//! The state shared by the Redis backplane's handle and its tasks: the rooms this node tracks
//! (with the last `seq` delivered and its epoch), health and readiness, the dataset it works
//! with, and the counters behind its metrics.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, Weak};

use parking_lot::Mutex;
use tokio::sync::{mpsc, oneshot};

use super::keys::Keys;
use super::link::{Link, LinkEvents};
use crate::backplane::{BackplaneError, LocalDelivery, Publish};
use crate::config::RedisConfig;
use crate::ids::{ConnId, RoomKey};
use crate::metrics::backplane::RedisFigures;
use crate::protocol::{self, Frame};

/// A change of this node's interest in a channel.
#[derive(Debug)]
pub enum SubRequest {
    /// Subscribe, answering once Redis confirmed.
    Subscribe(String, oneshot::Sender<Result<(), BackplaneError>>),
    /// Unsubscribe if the room has no local member by then.
    Unsubscribe(String),
}

/// What this node knows of a room it is subscribed to.
#[derive(Debug)]
pub(super) struct Track {
    pub(super) room: RoomKey,
    /// The last `seq` delivered to this node's members (0: none yet).
    pub(super) last_seq: u64,
    /// The epoch that `seq` belongs to.
    pub(super) epoch: Option<Arc<str>>,
    /// Messages were sequenced locally while Redis was unreachable.
    pub(super) diverged: bool,
    /// Members of this room are listed in Redis presence.
    pub(super) presence: bool,
}

impl Track {
    pub(super) fn new(room: RoomKey) -> Self {
        Track {
            room,
            last_seq: 0,
            epoch: None,
            diverged: false,
            presence: false,
        }
    }
}

/// Counters behind the backplane's metrics.
#[derive(Debug, Default)]
pub(super) struct Stats {
    pub(super) probes_ok: AtomicU64,
    pub(super) probe_failures: AtomicU64,
    pub(super) probe_rtt_micros: AtomicU64,
    pub(super) reconnects: AtomicU64,
    pub(super) gaps_filled: AtomicU64,
    pub(super) gaps_lost: AtomicU64,
    pub(super) regressions: AtomicU64,
    pub(super) local_fallbacks: AtomicU64,
    pub(super) reaped_nodes: AtomicU64,
    pub(super) malformed: AtomicU64,
    pub(super) data_losses: AtomicU64,
}

/// Requests for the dispatcher, which alone delivers room messages.
#[derive(Debug)]
pub(super) enum Control {
    /// Refill every room from history after an outage; answers when done.
    Resync(oneshot::Sender<()>),
    /// Raise a room's counter above what this node delivered (Redis went back).
    Raise(String),
}

/// State shared by the backplane's handle and its tasks.
pub(super) struct Shared {
    pub(super) config: RedisConfig,
    pub(super) keys: Keys,
    pub(super) link: Link,
    pub(super) events: Arc<LinkEvents>,
    pub(super) node: OnceLock<String>,
    pub(super) local: OnceLock<Weak<dyn LocalDelivery>>,
    /// Subscribed rooms by channel name. Locked briefly; never held across an await, and
    /// `LocalDelivery` may be called under it (it never calls back into the backplane).
    pub(super) tracks: Mutex<HashMap<String, Track>>,
    /// Commands are expected to work.
    pub(super) healthy: AtomicBool,
    /// Healthy, resubscribed, resynchronised, and the last probe came back.
    pub(super) ready: AtomicBool,
    pub(super) subscriptions: mpsc::Sender<SubRequest>,
    pub(super) control: mpsc::Sender<Control>,
    pub(super) probes: Mutex<HashMap<u64, oneshot::Sender<()>>>,
    /// The id of the Redis dataset this node works with (`scripts::STATE`); `None` before the
    /// first connection.
    pub(super) dataset: Mutex<Option<String>>,
    /// Where a channel's counter starts when Redis has none for it: 0, or above every `seq`
    /// issued before Redis lost its data.
    pub(super) seq_base: AtomicU64,
    pub(super) stats: Stats,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("node", &self.node())
            .finish_non_exhaustive()
    }
}

impl Shared {
    /// The state for `config`, not connected yet: pushes from Redis go to `pushes`,
    /// subscription changes to `subscriptions`, dispatcher requests to `control`.
    pub(super) fn new(
        config: RedisConfig,
        pushes: mpsc::Sender<redis::PushInfo>,
        subscriptions: mpsc::Sender<SubRequest>,
        control: mpsc::Sender<Control>,
    ) -> Self {
        let events = Arc::new(LinkEvents::default());
        Shared {
            keys: Keys::new(&config.key_prefix),
            link: Link::new(config.clone(), pushes, events.clone()),
            events,
            config,
            node: OnceLock::new(),
            local: OnceLock::new(),
            tracks: Mutex::new(HashMap::new()),
            healthy: AtomicBool::new(false),
            ready: AtomicBool::new(false),
            subscriptions,
            control,
            probes: Mutex::new(HashMap::new()),
            dataset: Mutex::new(None),
            seq_base: AtomicU64::new(0),
            stats: Stats::default(),
        }
    }

    pub(super) fn node(&self) -> &str {
        self.node.get().map_or("", String::as_str)
    }

    pub(super) fn local(&self) -> Option<Arc<dyn LocalDelivery>> {
        self.local.get().and_then(Weak::upgrade)
    }

    pub(super) fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Acquire)
    }

    pub(super) fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// Redis failed a command: stop trusting it until the supervisor recovered.
    pub(super) fn degrade(&self, what: &str, error: &BackplaneError) {
        self.ready.store(false, Ordering::Release);
        if self.healthy.swap(false, Ordering::AcqRel) {
            tracing::warn!(%error, what, "Redis unreachable: delivering locally until it is back");
        }
        self.events.wake.notify_one();
    }

    /// Delivers a room frame to this node's members.
    pub(super) fn deliver(
        &self,
        room: &RoomKey,
        frame: &Frame,
        seq: Option<u64>,
        except: Option<&ConnId>,
    ) {
        if let Some(local) = self.local() {
            local.deliver_to_room(room, frame, seq, except);
        }
    }

    /// Sequences a message locally while Redis is unreachable, continuing this node's count.
    pub(super) fn publish_locally(
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

    /// The figures behind the backplane's metrics, read now.
    pub(super) fn figures(&self) -> RedisFigures {
        let stats = &self.stats;
        let read = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        RedisFigures {
            ready: self.ready.load(Ordering::Relaxed),
            subscriptions: self.tracks.lock().len(),
            probe_rtt_micros: read(&stats.probe_rtt_micros),
            probes: read(&stats.probes_ok),
            probe_failures: read(&stats.probe_failures),
            reconnects: read(&stats.reconnects),
            gaps_filled: read(&stats.gaps_filled),
            gaps_lost: read(&stats.gaps_lost),
            seq_regressions: read(&stats.regressions),
            local_fallbacks: read(&stats.local_fallbacks),
            dropped: read(&self.events.dropped),
            malformed: read(&stats.malformed),
            reaped_nodes: read(&stats.reaped_nodes),
            data_losses: read(&stats.data_losses),
        }
    }
}
