//! rooms tests.
