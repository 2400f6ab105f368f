//! Integration tests: the real server on a loopback port, real WebSocket clients.
//! One module per subsystem; `support` holds the harness.

mod artifacts;
mod batches;
mod certs;
mod client;
mod closes;
mod cluster;
mod compile;
mod deployments;
mod dev_loop;
mod diagnostics;
mod exhaustion;
mod external;
mod frames;
mod handshake;
mod heartbeat;
mod http;
mod isolation;
mod kv;
mod lifecycle;
mod ops_cli;
mod pipelining;
mod plugins;
mod raw;
mod redis_recovery;
mod rooms;
mod shutdown;
mod support;
mod tenants;
mod tidy;
mod tls;
