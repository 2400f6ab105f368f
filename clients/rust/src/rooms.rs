//! The rooms a client has joined: the last `seq` seen on each (for `since` recovery and for
//! dropping repeats) and each room's presence list. Plain data, no I/O.

use std::collections::BTreeMap;

use crate::event::Member;

/// Joined rooms by channel name.
#[derive(Debug, Default)]
pub(crate) struct Rooms {
    rooms: BTreeMap<String, Room>,
}

#[derive(Debug, Default)]
struct Room {
    last_seq: Option<u64>,
    members: Vec<Member>,
}

impl Rooms {
    /// Records a join ack. `rejoin` marks a join made after a reconnect: when it did not
    /// recover, the last `seq` is forgotten, since the channel's numbering may have started
    /// over (a restarted server) and older numbers must not hide new messages.
    pub(crate) fn joined(
        &mut self,
        channel: &str,
        members: Vec<Member>,
        recovered: bool,
        rejoin: bool,
    ) {
        let room = self.rooms.entry(channel.to_owned()).or_default();
        room.members = sorted(members);
        if rejoin && !recovered {
            room.last_seq = None;
        }
    }

    /// Forgets a room (left, or a rejoin was refused).
    pub(crate) fn forget(&mut self, channel: &str) {
        self.rooms.remove(channel);
    }

    /// Whether a channel message with `seq` is new: `false` for a repeat on a joined room.
    /// Messages of channels the client did not join are always new (and not tracked).
    pub(crate) fn accept(&mut self, channel: &str, seq: u64) -> bool {
        let Some(room) = self.rooms.get_mut(channel) else {
            return true;
        };
        if room.last_seq.is_some_and(|last| seq <= last) {
            return false;
        }
        room.last_seq = Some(seq);
        true
    }

    /// Adds a member; returns the members after, or `None` for a room not joined.
    pub(crate) fn member_joined(&mut self, channel: &str, member: Member) -> Option<Vec<Member>> {
        let room = self.rooms.get_mut(channel)?;
        if let Err(position) = room.members.binary_search(&member) {
            room.members.insert(position, member);
        }
        Some(room.members.clone())
    }

    /// Removes a member; returns the members after, or `None` for a room not joined.
    pub(crate) fn member_left(&mut self, channel: &str, member: &Member) -> Option<Vec<Member>> {
        let room = self.rooms.get_mut(channel)?;
        room.members
            .retain(|present| present.connection_id != member.connection_id);
        Some(room.members.clone())
    }

    /// A room's members, sorted; empty for a room not joined.
    pub(crate) fn members(&self, channel: &str) -> Vec<Member> {
        self.rooms
            .get(channel)
            .map(|room| room.members.clone())
            .unwrap_or_default()
    }

    /// The joined rooms' names, sorted.
    pub(crate) fn names(&self) -> Vec<String> {
        self.rooms.keys().cloned().collect()
    }

    /// What to join after a reconnect: each room with the last `seq` seen, if any.
    pub(crate) fn rejoin_plan(&self) -> Vec<(String, Option<u64>)> {
        self.rooms
            .iter()
            .map(|(channel, room)| (channel.clone(), room.last_seq))
            .collect()
    }
}

fn sorted(mut members: Vec<Member>) -> Vec<Member> {
    members.sort();
    members.dedup();
    members
}

#[cfg(test)]
mod tests {
    use super::Rooms;
    use crate::event::Member;

    fn member(user: &str, connection: &str) -> Member {
        Member {
            user_id: user.to_owned(),
            connection_id: connection.to_owned(),
        }
    }

    #[test]
    fn repeats_on_joined_rooms_are_dropped_and_others_pass() {
        let mut rooms = Rooms::default();
        rooms.joined("a", vec![], false, false);
        let seen: Vec<bool> = [1, 2, 2, 1, 5, 3, 6]
            .iter()
            .map(|seq| rooms.accept("a", *seq))
            .collect();
        assert_eq!(seen, [true, true, false, false, true, false, true]);
        // Not joined: nothing is tracked, nothing dropped.
        assert!(rooms.accept("b", 1));
        assert!(rooms.accept("b", 1));
        assert_eq!(rooms.rejoin_plan(), [("a".to_owned(), Some(6))]);
    }

    #[test]
    fn the_rejoin_plan_carries_the_last_seq_and_an_unrecovered_rejoin_forgets_it() {
        let mut rooms = Rooms::default();
        rooms.joined("quiet", vec![], false, false);
        rooms.joined("busy", vec![], false, false);
        assert!(rooms.accept("busy", 4));
        assert_eq!(
            rooms.rejoin_plan(),
            [("busy".to_owned(), Some(4)), ("quiet".to_owned(), None)]
        );
        // Recovered: the numbering continues.
        rooms.joined("busy", vec![], true, true);
        assert!(!rooms.accept("busy", 4));
        // Not recovered (e.g. a restarted server): numbering may start over.
        rooms.joined("busy", vec![], false, true);
        assert!(rooms.accept("busy", 1));
        // A repeated join of one's own (not a rejoin) keeps the numbering.
        rooms.joined("busy", vec![], false, false);
        assert!(!rooms.accept("busy", 1));
        rooms.forget("busy");
        assert_eq!(rooms.names(), ["quiet"]);
    }

    #[test]
    fn presence_follows_joins_and_leaves_of_joined_rooms() {
        let mut rooms = Rooms::default();
        rooms.joined(
            "lobby",
            vec![member("b", "2"), member("a", "1"), member("a", "1")],
            false,
            false,
        );
        assert_eq!(rooms.members("lobby"), [member("a", "1"), member("b", "2")]);
        assert_eq!(
            rooms.member_joined("lobby", member("c", "3")),
            Some(vec![member("a", "1"), member("b", "2"), member("c", "3")])
        );
        // A join seen twice is one member.
        assert_eq!(
            rooms
                .member_joined("lobby", member("c", "3"))
                .map(|m| m.len()),
            Some(3)
        );
        assert_eq!(
            rooms.member_left("lobby", &member("b", "2")),
            Some(vec![member("a", "1"), member("c", "3")])
        );
        assert_eq!(rooms.member_joined("elsewhere", member("x", "9")), None);
        assert_eq!(rooms.member_left("elsewhere", &member("x", "9")), None);
        assert!(rooms.members("elsewhere").is_empty());
    }
}
