//! The subscription batcher: joins and leaves across many rooms become one `SUBSCRIBE` and
//! one `UNSUBSCRIBE` per batch. An unsubscribe is carried out only if the room is still empty
//! when the batch runs, so a join racing the last leave keeps its subscription.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot, watch};

use super::shared::{Shared, SubRequest, Track};
use crate::backplane::BackplaneError;
use crate::ids::RoomKey;

/// Most channels in one batch.
const BATCH: usize = 512;

/// Tracks a room and, while Redis is healthy, subscribes to its channel, waiting for the
/// confirmation (a failure degrades the backplane; the supervisor subscribes again).
pub(super) async fn subscribe(shared: &Shared, room: &RoomKey) {
    let channel = shared.keys.room_channel(room);
    shared
        .tracks
        .lock()
        .entry(channel.clone())
        .or_insert_with(|| Track::new(room.clone()));
    if !shared.is_healthy() {
        // The supervisor subscribes every tracked room when Redis is back.
        return;
    }
    let (done, confirmed) = oneshot::channel();
    if shared
        .subscriptions
        .send(SubRequest::Subscribe(channel, done))
        .await
        .is_err()
    {
        return;
    }
    match tokio::time::timeout(shared.config.command_timeout * 2, confirmed).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(error))) => shared.degrade("subscribe", &error),
        Ok(Err(_)) | Err(_) => shared.degrade(
            "subscribe",
            &BackplaneError::Unavailable("no subscription confirmation".to_owned()),
        ),
    }
}

/// Asks for a room's channel to be unsubscribed; the batcher drops the subscription only if
/// the room is still empty by then.
pub(super) async fn unsubscribe(shared: &Shared, room: &RoomKey) {
    let channel = shared.keys.room_channel(room);
    let _ = shared
        .subscriptions
        .send(SubRequest::Unsubscribe(channel))
        .await;
}

/// Runs until stopped.
pub(super) async fn run(
    shared: Arc<Shared>,
    mut requests: mpsc::Receiver<SubRequest>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let first = tokio::select! {
            _ = stop.changed() => break,
            request = requests.recv() => match request {
                Some(request) => request,
                None => break,
            },
        };
        let mut batch = vec![first];
        while batch.len() < BATCH {
            match requests.try_recv() {
                Ok(request) => batch.push(request),
                Err(_) => break,
            }
        }
        apply(&shared, batch).await;
    }
}

async fn apply(shared: &Shared, batch: Vec<SubRequest>) {
    let mut subscribe = Vec::new();
    let mut waiters = Vec::new();
    let mut unsubscribe = Vec::new();
    for request in batch {
        match request {
            SubRequest::Subscribe(channel, done) => {
                subscribe.push(channel);
                waiters.push(done);
            }
            SubRequest::Unsubscribe(channel) => unsubscribe.push(channel),
        }
    }
    let local = shared.local();
    {
        let mut tracks = shared.tracks.lock();
        unsubscribe.retain(|channel| {
            let empty = match (tracks.get(channel), &local) {
                (Some(track), Some(local)) => local.local_members(&track.room).is_empty(),
                (Some(_), None) => true,
                (None, _) => false,
            };
            if empty {
                tracks.remove(channel);
            }
            empty
        });
    }
    subscribe.retain(|channel| !unsubscribe.contains(channel));
    subscribe.sort_unstable();
    subscribe.dedup();
    let result = shared.link.subscribe(&subscribe).await;
    for done in waiters {
        let _ = done.send(result.clone());
    }
    if let Err(error) = shared.link.unsubscribe(&unsubscribe).await {
        // A stale subscription only costs traffic: messages for untracked rooms are ignored.
        tracing::debug!(%error, "unsubscribe failed");
    }
}
