//! handshake tests.
