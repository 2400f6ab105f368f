//! Integration tests: the real server on a loopback port, real WebSocket clients.
//! One module per subsystem; `support` holds the harness.

mod artifacts;
mod client;
mod cluster;
mod compile;
mod external;
mod frames;
mod handshake;
mod heartbeat;
mod http;
mod lifecycle;
mod plugins;
mod rooms;
mod shutdown;
mod support;
mod tidy;
