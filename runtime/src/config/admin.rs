//! The `[admin]` section: the operator's credential, which the tenant API requires and which
//! also works on every tenant's plugin API.

use serde::Deserialize;

use super::{RawSecret, Validator};

/// Shortest accepted operator key, in bytes: it opens every tenant.
pub const MIN_ADMIN_KEY_BYTES: usize = 16;

/// The raw `[admin]` table.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAdmin {
    api_key: Option<RawSecret>,
}

impl Validator<'_> {
    /// The validated `admin.api_key`; `None`: the tenant API is off (every call gets 401).
    pub(super) fn admin_key(&mut self, raw: RawAdmin) -> Option<String> {
        let key = self.secret("admin.api_key", raw.api_key?)?;
        if key.len() < MIN_ADMIN_KEY_BYTES {
            self.issue(
                "admin.api_key",
                format!("must be at least {MIN_ADMIN_KEY_BYTES} bytes"),
            );
            return None;
        }
        Some(key)
    }
}
