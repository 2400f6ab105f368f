//! A tenant's `presence` table: the channels in which presence lists and events are off.

use serde::Deserialize;

use super::Validator;

/// The raw `[tenants.presence]` table.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPresence {
    #[serde(default)]
    disabled: Vec<String>,
}

impl Validator<'_> {
    /// The channel patterns (`*` wildcards) in which presence is off (default: none).
    pub(super) fn presence_disabled(&mut self, key: &str, raw: RawPresence) -> Vec<String> {
        for (index, pattern) in raw.disabled.iter().enumerate() {
            if pattern.is_empty() {
                self.issue(format!("{key}.disabled[{index}]"), "an empty pattern");
            }
        }
        raw.disabled
    }
}
