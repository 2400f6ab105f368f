//! Raw frames to other connections, for a raw-frame tenant's plugin (see [`crate::RawPlugin`]).
//! Frames for the sender are what `on_frame` returns; these reach anyone else of the tenant.

#[cfg(target_arch = "wasm32")]
use crate::__bindings::switchboard::plugin::raw_frames as host;
#[cfg(not(target_arch = "wasm32"))]
use crate::mock::raw_frames as host;
use crate::{Frame, HostError};

/// Sends a frame to one connection of the tenant, on whichever node holds it. `not_found` when
/// it is gone; `too_large` past the tenant's message size limit; `rate_limited` past the
/// call's send quota.
pub fn send(to: &str, frame: &Frame) -> Result<(), HostError> {
    host::send_frame(to, frame)
}

/// Sends a frame to every member of a channel on every node, except `except`. Not sequenced
/// and not kept in history, unlike [`crate::realtime::broadcast`]. Members join with
/// [`crate::realtime::join`].
pub fn broadcast(channel: &str, frame: &Frame, except: Option<&str>) -> Result<(), HostError> {
    host::broadcast_frame(channel, frame, except)
}
