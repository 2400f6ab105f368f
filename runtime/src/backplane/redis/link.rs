//! The connection to Redis: one multiplexed connection (a single server) or one cluster
//! connection, speaking RESP3 so commands and pub/sub pushes share it. Every command is
//! bounded by the configured timeout; the link never blocks a caller for longer.
//!
//! The link never reconnects on its own: a broken connection fails every command until the
//! supervisor replaces it (`reset`, then `connect`), so that nothing runs on a new connection
//! before the supervisor resubscribed it, and each attempt is one fresh connection whose timing
//! the supervisor alone decides.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::{
    AsyncConnectionConfig, Cmd, FromRedisValue, IntoConnectionInfo, Pipeline, ProtocolVersion,
    PushInfo, PushKind, RedisFuture, Value,
};
use tokio::sync::{Notify, mpsc};

use crate::backplane::BackplaneError;
use crate::config::RedisConfig;

/// Pushes (pub/sub messages) waiting for the dispatcher. Past this, pushes are dropped and
/// counted; dropped room messages are found as `seq` gaps and refilled from history.
pub const PUSH_QUEUE: usize = 65_536;

/// A live connection of either kind.
#[derive(Clone)]
pub enum Conn {
    /// A single Redis server.
    Single(MultiplexedConnection),
    /// A Redis Cluster.
    Cluster(ClusterConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(conn) => conn.req_packed_command(cmd),
            Conn::Cluster(conn) => conn.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(conn) => conn.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(conn) => conn.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(conn) => conn.get_db(),
            Conn::Cluster(conn) => conn.get_db(),
        }
    }
}

/// Signals from the connection to the backplane's tasks.
#[derive(Debug, Default)]
pub struct LinkEvents {
    /// Set when the library reports that the current connection dropped; cleared by the
    /// supervisor.
    pub disconnected: AtomicBool,
    /// Which connection is current: a connection that was replaced may still report its end,
    /// which must not take down its successor.
    generation: AtomicU64,
    /// Wakes the supervisor on a disconnection.
    pub wake: Notify,
    /// Pushes dropped because the dispatcher's queue was full.
    pub dropped: AtomicU64,
}

/// The Redis connection shared by the backplane's parts.
pub struct Link {
    config: RedisConfig,
    conn: ArcSwapOption<Conn>,
    pushes: mpsc::Sender<PushInfo>,
    events: Arc<LinkEvents>,
}

impl std::fmt::Debug for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Link")
            .field("cluster", &self.is_cluster())
            .field("connected", &self.conn.load().is_some())
            .finish_non_exhaustive()
    }
}

fn unavailable(error: impl std::fmt::Display) -> BackplaneError {
    BackplaneError::Unavailable(error.to_string())
}

impl Link {
    /// A link that is not connected yet; pushes go to `pushes`.
    pub fn new(
        config: RedisConfig,
        pushes: mpsc::Sender<PushInfo>,
        events: Arc<LinkEvents>,
    ) -> Self {
        Link {
            config,
            conn: ArcSwapOption::empty(),
            pushes,
            events,
        }
    }

    /// True when talking to a Redis Cluster (sharded pub/sub).
    pub fn is_cluster(&self) -> bool {
        !self.config.cluster_nodes.is_empty()
    }

    /// The command that publishes on a channel: sharded in a cluster.
    pub fn publish_command(&self) -> &'static str {
        if self.is_cluster() {
            "SPUBLISH"
        } else {
            "PUBLISH"
        }
    }

    fn push_sender(
        &self,
        generation: u64,
    ) -> impl Fn(PushInfo) -> Result<(), ()> + Send + Sync + 'static {
        let pushes = self.pushes.clone();
        let events = self.events.clone();
        move |push: PushInfo| {
            if push.kind == PushKind::Disconnection {
                if events.generation.load(Ordering::Acquire) == generation {
                    events.disconnected.store(true, Ordering::Release);
                    events.wake.notify_one();
                }
                return Ok(());
            }
            if !matches!(push.kind, PushKind::Message | PushKind::SMessage) {
                return Ok(());
            }
            match pushes.try_send(push) {
                Ok(()) => Ok(()),
                Err(mpsc::error::TrySendError::Full(_)) => {
                    events.dropped.fetch_add(1, Ordering::Relaxed);
                    Ok(())
                }
                Err(mpsc::error::TrySendError::Closed(_)) => Err(()),
            }
        }
    }

    /// Drops the connection: commands fail until `connect` opened a new one, and the old
    /// connection's end is no longer reported.
    pub fn reset(&self) {
        self.events.generation.fetch_add(1, Ordering::AcqRel);
        self.conn.store(None);
    }

    /// Opens a connection unless one is open: one attempt, bounded by the command timeout.
    pub async fn connect(&self) -> Result<(), BackplaneError> {
        if self.conn.load().is_some() {
            return Ok(());
        }
        let timeout = self.config.command_timeout;
        let generation = self.events.generation.load(Ordering::Acquire);
        let conn = tokio::time::timeout(timeout, self.open(timeout, generation))
            .await
            .map_err(|_| unavailable("connecting to Redis timed out"))??;
        self.conn.store(Some(Arc::new(conn)));
        Ok(())
    }

    async fn open(&self, timeout: Duration, generation: u64) -> Result<Conn, BackplaneError> {
        if self.is_cluster() {
            let client = ClusterClientBuilder::new(self.config.cluster_nodes.clone())
                .use_protocol(ProtocolVersion::RESP3)
                .push_sender(self.push_sender(generation))
                .connection_timeout(timeout)
                .response_timeout(timeout)
                .retries(1)
                .build()
                .map_err(unavailable)?;
            let conn = client.get_async_connection().await.map_err(unavailable)?;
            Ok(Conn::Cluster(conn))
        } else {
            let info = self
                .config
                .url
                .as_str()
                .into_connection_info()
                .map_err(unavailable)?;
            let settings = info
                .redis_settings()
                .clone()
                .set_protocol(ProtocolVersion::RESP3);
            let client =
                redis::Client::open(info.set_redis_settings(settings)).map_err(unavailable)?;
            let config = AsyncConnectionConfig::new()
                .set_push_sender(self.push_sender(generation))
                .set_connection_timeout(Some(timeout))
                .set_response_timeout(Some(timeout));
            let conn = client
                .get_multiplexed_async_connection_with_config(&config)
                .await
                .map_err(unavailable)?;
            Ok(Conn::Single(conn))
        }
    }

    fn current(&self) -> Result<Conn, BackplaneError> {
        self.conn
            .load()
            .as_deref()
            .cloned()
            .ok_or_else(|| unavailable("not connected to Redis"))
    }

    /// Runs one command.
    pub async fn query<T: FromRedisValue>(&self, cmd: &Cmd) -> Result<T, BackplaneError> {
        let mut conn = self.current()?;
        tokio::time::timeout(self.config.command_timeout, cmd.query_async(&mut conn))
            .await
            .map_err(|_| unavailable("Redis command timed out"))?
            .map_err(unavailable)
    }

    /// Runs a pipeline (its commands must share a slot in a cluster).
    pub async fn query_pipe(&self, pipe: &Pipeline) -> Result<(), BackplaneError> {
        let mut conn = self.current()?;
        tokio::time::timeout(
            self.config.command_timeout,
            pipe.query_async::<()>(&mut conn),
        )
        .await
        .map_err(|_| unavailable("Redis pipeline timed out"))?
        .map_err(unavailable)
    }

    /// Runs a pipeline and returns its replies (its commands must share a slot in a cluster).
    pub async fn query_pipe_values<T: FromRedisValue>(
        &self,
        pipe: &Pipeline,
    ) -> Result<T, BackplaneError> {
        let mut conn = self.current()?;
        tokio::time::timeout(
            self.config.command_timeout,
            pipe.query_async::<T>(&mut conn),
        )
        .await
        .map_err(|_| unavailable("Redis pipeline timed out"))?
        .map_err(unavailable)
    }

    /// Runs a script with its keys and text arguments.
    pub async fn invoke<T: FromRedisValue>(
        &self,
        script: &redis::Script,
        keys: &[&str],
        args: &[&str],
    ) -> Result<T, BackplaneError> {
        let args: Vec<&[u8]> = args.iter().map(|arg| arg.as_bytes()).collect();
        self.invoke_bytes(script, keys, &args).await
    }

    /// Runs a script with its keys and binary arguments.
    pub async fn invoke_bytes<T: FromRedisValue>(
        &self,
        script: &redis::Script,
        keys: &[&str],
        args: &[&[u8]],
    ) -> Result<T, BackplaneError> {
        let mut conn = self.current()?;
        let mut invocation = script.prepare_invoke();
        for key in keys {
            invocation.key(*key);
        }
        for arg in args {
            invocation.arg(*arg);
        }
        tokio::time::timeout(
            self.config.command_timeout,
            invocation.invoke_async(&mut conn),
        )
        .await
        .map_err(|_| unavailable("Redis script timed out"))?
        .map_err(unavailable)
    }

    /// Subscribes to channels (sharded in a cluster); returns once Redis confirmed them.
    pub async fn subscribe(&self, channels: &[String]) -> Result<(), BackplaneError> {
        if channels.is_empty() {
            return Ok(());
        }
        let conn = self.current()?;
        let timeout = self.config.command_timeout;
        let subscribed = match conn {
            Conn::Single(mut conn) => {
                tokio::time::timeout(timeout, async move { conn.subscribe(channels).await }).await
            }
            Conn::Cluster(mut conn) => {
                tokio::time::timeout(timeout, async move { conn.ssubscribe(channels).await }).await
            }
        };
        subscribed
            .map_err(|_| unavailable("subscribing timed out"))?
            .map_err(unavailable)
    }

    /// Unsubscribes from channels.
    pub async fn unsubscribe(&self, channels: &[String]) -> Result<(), BackplaneError> {
        if channels.is_empty() {
            return Ok(());
        }
        let conn = self.current()?;
        let timeout = self.config.command_timeout;
        let done = match conn {
            Conn::Single(mut conn) => {
                tokio::time::timeout(timeout, async move { conn.unsubscribe(channels).await }).await
            }
            Conn::Cluster(mut conn) => {
                tokio::time::timeout(timeout, async move { conn.sunsubscribe(channels).await })
                    .await
            }
        };
        done.map_err(|_| unavailable("unsubscribing timed out"))?
            .map_err(unavailable)
    }

    /// Publishes on a channel; returns how many subscribers (nodes) received it.
    pub async fn publish(&self, channel: &str, message: &str) -> Result<u64, BackplaneError> {
        self.query(redis::cmd(self.publish_command()).arg(channel).arg(message))
            .await
    }
}
