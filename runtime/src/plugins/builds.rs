//! The node's finished builds, by the SHA-256 of the `.wasm` they were built from and their
//! tier: a version that comes back (a rollback, the same build deployed for another tenant or
//! by another node, a file's bytes deployed through the API) loads without compiling again.
//! Held in memory up to [`MAX_BYTES`], the least recently used going first.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;

use super::artifact::Verified;
use super::engine::Tier;

/// Bytes of builds a node keeps (their serialized code).
pub const MAX_BYTES: usize = 128 << 20;

/// A source's hex SHA-256.
pub type SourceHash = String;

/// The kept builds.
#[derive(Debug, Default)]
pub struct Builds {
    held: Mutex<Held>,
    hits: AtomicU64,
    misses: AtomicU64,
}

#[derive(Debug, Default)]
struct Held {
    /// Least recently used first.
    entries: VecDeque<(Tier, SourceHash, Verified)>,
    bytes: usize,
}

/// What the kept builds report at a scrape.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BuildFigures {
    /// Loads that found a build.
    pub hits: u64,
    /// Loads that compiled.
    pub misses: u64,
    /// Bytes held.
    pub bytes: usize,
}

impl Builds {
    /// A kept build of `source` for a load that asked for `wanted`: with `upgrade`, the
    /// optimized one if there is one (what a baseline build would be replaced by), else one
    /// of `wanted`'s tier. Counts a hit or a miss.
    pub fn best(&self, wanted: Tier, source: &str, upgrade: bool) -> Option<(Tier, Verified)> {
        let mut held = self.held.lock();
        let first = if upgrade { Tier::Optimized } else { wanted };
        let found = [first, wanted].into_iter().find_map(|tier| {
            held.entries
                .iter()
                .position(|(kept, hash, _)| *kept == tier && hash == source)
        });
        let Some(at) = found else {
            self.misses.fetch_add(1, Ordering::Relaxed);
            return None;
        };
        self.hits.fetch_add(1, Ordering::Relaxed);
        let entry = held.entries.remove(at)?;
        let answer = (entry.0, entry.2.clone());
        held.entries.push_back(entry);
        Some(answer)
    }

    /// Keeps a build of `source`, dropping the least recently used past [`MAX_BYTES`]. A build
    /// larger than that is not kept.
    pub fn insert(&self, tier: Tier, source: &str, build: &Verified) {
        let size = build.size();
        if size > MAX_BYTES {
            return;
        }
        let mut held = self.held.lock();
        if let Some(at) = held
            .entries
            .iter()
            .position(|(kept, hash, _)| *kept == tier && hash == source)
            && let Some((_, _, old)) = held.entries.remove(at)
        {
            held.bytes -= old.size();
        }
        while held.bytes + size > MAX_BYTES {
            let Some((_, _, oldest)) = held.entries.pop_front() else {
                break;
            };
            held.bytes -= oldest.size();
        }
        held.bytes += size;
        held.entries
            .push_back((tier, source.to_owned(), build.clone()));
    }

    /// Hits, misses and bytes held.
    pub fn figures(&self) -> BuildFigures {
        BuildFigures {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            bytes: self.held.lock().bytes,
        }
    }
}
