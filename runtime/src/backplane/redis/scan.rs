//! Deleting every key that matches a pattern, by `SCAN` and `UNLINK`, bounded in calls and
//! time: what a deleted tenant's rooms and key-value entries are cleared with.

use std::time::Duration;

use super::shared::Shared;
use crate::backplane::BackplaneError;

/// `SCAN` calls one clear makes at most (about 1000 keys looked at each).
const MAX_SCANS: usize = 10_000;
/// How long one clear may take.
const MAX_TIME: Duration = Duration::from_secs(30);

/// Unlinks the keys matching `pattern`; how many went. Past its bounds it stops and says so
/// in the log (what is left expires by its own TTL or goes with the next clear).
pub async fn unlink_matching(shared: &Shared, pattern: &str) -> Result<usize, BackplaneError> {
    let deadline = tokio::time::Instant::now() + MAX_TIME;
    let mut cursor: u64 = 0;
    let mut removed = 0;
    for _ in 0..MAX_SCANS {
        let (next, found): (u64, Vec<String>) = shared
            .link
            .query(
                redis::cmd("SCAN")
                    .arg(cursor)
                    .arg("MATCH")
                    .arg(pattern)
                    .arg("COUNT")
                    .arg(1000),
            )
            .await?;
        if !found.is_empty() {
            let unlinked: usize = shared.link.query(redis::cmd("UNLINK").arg(&found)).await?;
            removed += unlinked;
        }
        cursor = next;
        if cursor == 0 || tokio::time::Instant::now() >= deadline {
            break;
        }
    }
    if cursor != 0 {
        tracing::warn!(
            pattern,
            removed,
            "keys only partly deleted (the clear's bound was reached)"
        );
    }
    Ok(removed)
}
