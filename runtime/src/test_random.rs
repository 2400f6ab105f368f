//! A seeded generator for the property tests (splitmix64): every run of a test sees the same
//! sequence, and a failure names its seed and step.

/// A deterministic stream of pseudo-random numbers.
pub(crate) struct Random(u64);

impl Random {
    /// The stream for `seed`.
    pub(crate) fn new(seed: u64) -> Self {
        Random(seed)
    }

    /// The next 64 random bits.
    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..bound` (`bound` > 0).
    pub(crate) fn below(&mut self, bound: u64) -> u64 {
        self.next_u64() % bound
    }
}
