//! Random numbers for the backplane: channel epochs and reconnection jitter.

use std::hash::{BuildHasher, Hasher};

/// A fresh epoch: random enough to tell apart every reset of a channel.
pub(super) fn fresh_epoch() -> String {
    format!("{:016x}", random_u64())
}

/// A random number from the standard library's randomly keyed hasher.
pub(super) fn random_u64() -> u64 {
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_nanos()),
    );
    hasher.finish()
}
