//! The text formats of the values the backplane stores in Redis (what travels over pub/sub is
//! in `wire`): history entries `seq<TAB>millis<TAB>frame`, written by `scripts::PUBLISH`, and
//! presence values `node<TAB>user`.

use crate::protocol::Frame;

/// A history entry: `seq<TAB>millis<TAB>frame`.
pub(super) fn history_entry(entry: String) -> Option<(u64, Frame)> {
    let mut fields = entry.splitn(3, '\t');
    let seq = fields.next()?.parse().ok()?;
    fields.next()?;
    let frame = fields.next()?.to_owned();
    Some((seq, Frame::encoded(frame)))
}

/// The presence value of a member of `node`: `node<TAB>user`.
pub(super) fn presence_value(node: &str, user: &str) -> String {
    format!("{node}\t{user}")
}

/// The user of a presence value, `None` when it is not one.
pub(super) fn presence_user(value: &str) -> Option<&str> {
    value.split_once('\t').map(|(_, user)| user)
}
