//! The text formats of the values the backplane stores in Redis (what travels over pub/sub is
//! in `wire`): history entries `seq<TAB>millis<TAB>head`, written by `scripts::PUBLISH`, and
//! presence values `node<TAB>user`.

use crate::protocol::{self, Frame};

/// A history entry, `seq<TAB>millis<TAB>head`, as its frame. The head is the message without
/// its `seq` (`protocol::channel_message_head`); an entry written by an older build holds the
/// complete frame instead, which is taken as it is.
pub fn history_entry(entry: &str) -> Option<(u64, Frame)> {
    let mut fields = entry.splitn(3, '\t');
    let seq = fields.next()?.parse().ok()?;
    fields.next()?;
    let head = fields.next()?;
    Some((seq, protocol::channel_message_from_head(head, seq)))
}

/// The presence value of a member of `node`: `node<TAB>user`.
pub fn presence_value(node: &str, user: &str) -> String {
    format!("{node}\t{user}")
}

/// The user of a presence value, `None` when it is not one.
pub fn presence_user(value: &str) -> Option<&str> {
    value.split_once('\t').map(|(_, user)| user)
}
