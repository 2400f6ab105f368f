//! frames tests.
