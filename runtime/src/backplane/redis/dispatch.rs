//! The dispatcher: the one task that hands what arrives from Redis to this node. Room
//! messages are delivered in `seq` order per room; a gap is refilled from history first, a
//! duplicate is dropped, a step back is reported and repaired. Inbox messages act on local
//! connections; probes complete.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use redis::{PushInfo, Value};
use tokio::sync::{mpsc, watch};

use super::shared::{Control, Shared};
use super::wire::{self, Wire};
use crate::backplane::{ConnCommand, recovery};
use crate::ids::{ConnId, RoomKey};
use crate::protocol::{self, Frame};

/// Runs until stopped or the link is gone.
pub(super) async fn run(
    shared: Arc<Shared>,
    mut pushes: mpsc::Receiver<PushInfo>,
    mut control: mpsc::Receiver<Control>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            biased;
            _ = stop.changed() => break,
            Some(request) = control.recv() => handle_control(&shared, request).await,
            Some(push) = pushes.recv() => handle_push(&shared, push).await,
            else => break,
        }
    }
}

fn text(value: &Value) -> Option<&str> {
    match value {
        Value::BulkString(bytes) => std::str::from_utf8(bytes).ok(),
        Value::SimpleString(text) => Some(text),
        _ => None,
    }
}

async fn handle_push(shared: &Shared, push: PushInfo) {
    let (Some(channel), Some(payload)) = (
        push.data.first().and_then(text),
        push.data.get(1).and_then(text),
    ) else {
        shared.stats.malformed.fetch_add(1, Ordering::Relaxed);
        return;
    };
    let message = match Wire::parse(payload) {
        Ok(message) => message,
        Err(error) => {
            shared.stats.malformed.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(%error, channel, "ignored a backplane message");
            return;
        }
    };
    match message {
        Wire::Room {
            epoch,
            seq,
            except,
            head,
        } => room_message(shared, channel, epoch, seq, except, head).await,
        Wire::Signal { except, frame } => {
            let room = shared
                .tracks
                .lock()
                .get(channel)
                .map(|track| track.room.clone());
            if let (Some(room), Some(frame)) = (room, Frame::from_wire(frame)) {
                let except = except.map(ConnId::from);
                shared.deliver(&room, &frame, None, except.as_ref());
            }
        }
        Wire::Probe { token } => {
            if let Some(done) = shared.probes.lock().remove(&token) {
                let _ = done.send(());
            }
        }
        inbox => inbox_message(shared, inbox),
    }
}

fn inbox_message(shared: &Shared, message: Wire<'_>) {
    let Some(local) = shared.local() else {
        return;
    };
    let (tenant, connection, command) = match message {
        Wire::ToUser {
            tenant,
            user,
            frame,
        } => {
            if let Some(frame) = Frame::from_wire(frame) {
                local.deliver_to_user(tenant, user, &frame);
            }
            return;
        }
        Wire::ToConnection {
            tenant,
            connection,
            frame,
        } => match Frame::from_wire(frame) {
            Some(frame) => (tenant, connection, ConnCommand::Deliver(frame)),
            None => return,
        },
        Wire::Close {
            tenant,
            connection,
            code,
            reason,
        } => (
            tenant,
            connection,
            ConnCommand::Close(code, reason.to_owned()),
        ),
        Wire::Attach {
            tenant,
            connection,
            hex,
        } => match wire::unhex(hex) {
            Ok(data) => (tenant, connection, ConnCommand::Attach(data)),
            Err(error) => {
                shared.stats.malformed.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(%error, "ignored an attachment update");
                return;
            }
        },
        Wire::Membership {
            join,
            tenant,
            connection,
            channel,
        } => {
            let channel = channel.to_owned();
            let command = if join {
                ConnCommand::Join(channel)
            } else {
                ConnCommand::Leave(channel)
            };
            (tenant, connection, command)
        }
        Wire::Room { .. } | Wire::Signal { .. } | Wire::Probe { .. } => return,
    };
    local.command(tenant, &ConnId::from(connection), command);
}

/// What to do with a room message, decided under the tracks lock.
enum Verdict {
    Deliver(RoomKey),
    FillFrom(RoomKey, u64),
    Drop,
}

async fn room_message(
    shared: &Shared,
    channel: &str,
    epoch: &str,
    seq: u64,
    except: Option<&str>,
    head: &str,
) {
    let verdict = {
        let mut tracks = shared.tracks.lock();
        let Some(track) = tracks.get_mut(channel) else {
            // Unsubscribed since it was published: no member here any more.
            return;
        };
        let same_epoch = track.epoch.as_deref().is_none_or(|known| known == epoch);
        if track.last_seq == 0 || seq == track.last_seq + 1 {
            Verdict::Deliver(track.room.clone())
        } else if seq <= track.last_seq {
            if !same_epoch {
                // The counter went back under a new epoch: Redis lost the channel's state.
                shared.stats.regressions.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    channel,
                    seq,
                    last = track.last_seq,
                    "seq went back; raising it"
                );
                let _ = shared.control.try_send(Control::Raise(channel.to_owned()));
            }
            Verdict::Drop
        } else {
            Verdict::FillFrom(track.room.clone(), track.last_seq)
        }
    };
    let room = match verdict {
        Verdict::Drop => return,
        Verdict::Deliver(room) => room,
        Verdict::FillFrom(room, last) => {
            fill_gap(shared, &room, last, seq).await;
            room
        }
    };
    let frame = protocol::channel_message_from_head(head, seq);
    let except = except.map(ConnId::from);
    {
        let mut tracks = shared.tracks.lock();
        if let Some(track) = tracks.get_mut(channel) {
            if seq <= track.last_seq {
                return;
            }
            track.last_seq = seq;
            track.epoch = Some(Arc::from(epoch));
        }
    }
    shared.deliver(&room, &frame, Some(seq), except.as_ref());
}

/// Delivers the retained messages after `last` and before `next`, counting the outcome.
async fn fill_gap(shared: &Shared, room: &RoomKey, last: u64, next: u64) {
    match shared.history(room).await {
        Ok(history) => {
            let filled = recovery(history.last, last, history.retained.clone());
            let frames = if filled.recovered {
                shared.stats.gaps_filled.fetch_add(1, Ordering::Relaxed);
                filled.frames
            } else {
                shared.stats.gaps_lost.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(channel = %room.channel, last, next, "messages lost: history no longer reaches back");
                // What history still holds after `last` is newer than anything the members
                // saw: it is delivered, and what is missing before it stays missing, which a
                // client sees as a jump in `seq` and as `recovered: false` on a join with
                // `since`. (After Redis lost its data, these are the messages published
                // before this node was listening again.)
                history
                    .retained
                    .into_iter()
                    .filter(|(seq, _)| *seq > last)
                    .collect()
            };
            for (seq, frame) in frames.into_iter().filter(|(seq, _)| *seq < next) {
                advance(shared, room, seq, &frame, history.epoch.as_ref());
            }
        }
        Err(error) => {
            shared.stats.gaps_lost.fetch_add(1, Ordering::Relaxed);
            shared.degrade("history", &error);
        }
    }
}

/// Delivers one refilled message if it is newer than what the room has seen.
fn advance(shared: &Shared, room: &RoomKey, seq: u64, frame: &Frame, epoch: Option<&Arc<str>>) {
    let channel = shared.keys.room_channel(room);
    {
        let mut tracks = shared.tracks.lock();
        let Some(track) = tracks.get_mut(&channel) else {
            return;
        };
        if seq <= track.last_seq {
            return;
        }
        track.last_seq = seq;
        // Its live copy, still queued, is then a duplicate of the same epoch, not a regression.
        if let Some(epoch) = epoch {
            track.epoch = Some(epoch.clone());
        }
    }
    // A refilled message goes to every member: `except` is not kept in history.
    shared.deliver(room, frame, Some(seq), None);
}

async fn handle_control(shared: &Shared, request: Control) {
    match request {
        Control::Resync(done) => {
            resync(shared).await;
            let _ = done.send(());
        }
        Control::Raise(channel) => {
            let found = shared
                .tracks
                .lock()
                .get(&channel)
                .map(|track| (track.room.clone(), track.last_seq));
            if let Some((room, last)) = found
                && let Err(error) = shared.raise(&room, last + 1).await
            {
                shared.degrade("raise seq", &error);
            }
        }
    }
}

/// After an outage: rooms sequenced locally get their counter raised past what their members
/// saw; the others get what was published elsewhere meanwhile, from history.
async fn resync(shared: &Shared) {
    let rooms: Vec<(RoomKey, u64, bool)> = shared
        .tracks
        .lock()
        .values()
        .map(|track| (track.room.clone(), track.last_seq, track.diverged))
        .collect();
    for (room, last, diverged) in rooms {
        if diverged {
            // Leave one number unused so a client that saw the local messages cannot
            // recover across the divergence as if nothing was missed.
            let raised = match shared.raise(&room, last + 1).await {
                Ok(raised) => raised,
                Err(error) => {
                    shared.degrade("resync", &error);
                    return;
                }
            };
            let channel = shared.keys.room_channel(&room);
            if let Some(track) = shared.tracks.lock().get_mut(&channel) {
                track.diverged = false;
                if raised.raised {
                    track.last_seq = track.last_seq.max(raised.counter);
                    track.epoch = Some(raised.epoch);
                }
            }
            if !raised.raised {
                // Publishes reached Redis since it came back, numbered on from this node's
                // count: what the subscription did not carry yet is in the history.
                fill_gap(shared, &room, last, u64::MAX).await;
            }
        } else if last > 0 {
            fill_gap(shared, &room, last, u64::MAX).await;
        }
    }
}
