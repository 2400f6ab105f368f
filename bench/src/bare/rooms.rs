//! Rooms: channel name to its `seq` counter and its members' outboxes, behind one mutex.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::mpsc::UnboundedSender;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

/// Frames to one connection's writer task.
pub type Outbox = UnboundedSender<Message>;

/// One member of a room.
#[derive(Debug, Clone)]
pub struct Member {
    pub user_id: Arc<str>,
    pub connection_id: Arc<str>,
    pub outbox: Outbox,
}

#[derive(Debug, Default)]
struct Room {
    seq: u64,
    members: HashMap<u64, Member>,
}

/// Every room of the server.
#[derive(Debug, Default)]
pub struct Rooms {
    rooms: Mutex<HashMap<String, Room>>,
}

/// JSON text of a string (escaped and quoted).
pub fn json_string(value: &str) -> String {
    serde_json::to_string(value).unwrap_or_else(|_| "\"\"".to_owned())
}

impl Rooms {
    /// Adds connection `id` to `channel`; returns the members (joiner included) as a JSON array.
    pub fn join(&self, channel: &str, id: u64, member: Member, list: bool) -> Option<String> {
        let mut rooms = self.rooms.lock().unwrap_or_else(PoisonError::into_inner);
        let room = rooms.entry(channel.to_owned()).or_default();
        room.members.insert(id, member);
        list.then(|| {
            let entries: Vec<String> = room
                .members
                .values()
                .map(|member| {
                    format!(
                        r#"{{"userId":{},"connectionId":{}}}"#,
                        json_string(&member.user_id),
                        json_string(&member.connection_id)
                    )
                })
                .collect();
            format!("[{}]", entries.join(","))
        })
    }

    /// Removes connection `id` from `channel`; false if it was not a member.
    pub fn leave(&self, channel: &str, id: u64) -> bool {
        let mut rooms = self.rooms.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(room) = rooms.get_mut(channel) else {
            return false;
        };
        let was_member = room.members.remove(&id).is_some();
        if room.members.is_empty() {
            rooms.remove(channel);
        }
        was_member
    }

    /// Sends `{"type":"broadcast","channel","payload","seq"}` to every member of `channel`,
    /// serialised once; returns the `seq`.
    pub fn broadcast(&self, channel: &str, payload: &str) -> u64 {
        let mut rooms = self.rooms.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(room) = rooms.get_mut(channel) else {
            // Nobody to deliver to: a channel without members starts over at 1.
            return 1;
        };
        room.seq += 1;
        let frame = Utf8Bytes::from(format!(
            r#"{{"type":"broadcast","channel":{},"payload":{payload},"seq":{}}}"#,
            json_string(channel),
            room.seq
        ));
        for member in room.members.values() {
            let _ = member.outbox.send(Message::Text(frame.clone()));
        }
        room.seq
    }
}
