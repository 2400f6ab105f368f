//! shutdown tests.
