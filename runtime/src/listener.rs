//! What the HTTP listener's routes share below the routes themselves: the socket budget, the
//! bounded reading of request bodies, the JSON error responses, and the counters of refused
//! request heads. The node holds one `HttpState`; `server` and `admin` use it.
//!
//! - `sockets`: the socket budget derived from the open-files limit, and the refusal reserve;
//! - `body`: request bodies read under a size, a deadline and a node-wide budget;
//! - `response`: JSON responses (every error has the `{"error", "message"}` body);
//! - `heads`: refused request heads and stalled responses, counted.

pub mod body;
pub mod heads;
pub mod response;
pub mod sockets;

use crate::config::Config;
use crate::metrics;
use body::BodyBudget;
use heads::HeadCounters;
use sockets::{SocketBudget, SocketCapacity};

/// The HTTP listener's bounds and what they counted: the socket budget, the request bodies in
/// flight, and refused heads.
#[derive(Debug)]
pub struct HttpState {
    /// Open sockets against the budget.
    pub sockets: SocketBudget,
    /// Request bodies being received.
    pub bodies: BodyBudget,
    /// Refused request heads and stalled responses.
    pub heads: HeadCounters,
}

impl HttpState {
    /// The state for a config, with the socket budget the process's open-files limit allows.
    pub fn new(config: &Config) -> HttpState {
        let http = &config.http;
        HttpState {
            sockets: SocketBudget::new(SocketCapacity::of_process(http), http.refusal_sockets),
            bodies: BodyBudget::new(http),
            heads: HeadCounters::default(),
        }
    }

    /// Appends every series of the HTTP listener to a Prometheus text.
    pub fn render(&self, out: &mut String, max_connections: usize) {
        metrics::http::render_sockets(out, &self.sockets.figures(), max_connections);
        metrics::http::render_bodies(out, &self.bodies.figures());
        metrics::http::render_heads(out, &self.heads.figures());
    }
}
