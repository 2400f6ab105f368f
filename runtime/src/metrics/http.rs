//! The HTTP listener's series: the socket budget and its refusals, failed accepts, request
//! bodies in flight and refused, refused request heads and stalled responses.

use std::fmt::Write as _;

use super::header;

/// What the socket budget reports at a scrape.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SocketFigures {
    /// Sockets served normally now.
    pub open: usize,
    /// The budget: sockets served normally at once.
    pub capacity: usize,
    /// Connections answered 503 from the refusal reserve.
    pub answered: u64,
    /// Connections closed at once, the refusal reserve spent too.
    pub shed: u64,
    /// Failed accepts.
    pub accept_errors: u64,
}

/// What the body budget reports at a scrape.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BodyFigures {
    /// Bodies being received now.
    pub in_flight: usize,
    /// Buffer bytes held by bodies being received now.
    pub bytes_in_flight: usize,
    /// Refused bodies by `reason` label, in the order they are rendered.
    pub refusals: Vec<(&'static str, u64)>,
}

/// What the HTTP layer reports of request heads and responses at a scrape.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HeadFigures {
    /// Refused heads by `reason` label, in the order they are rendered.
    pub refusals: Vec<(&'static str, u64)>,
    /// Connections closed because a response made no progress for `http.write_timeout`.
    pub write_timeouts: u64,
}

/// Renders the socket budget's series; `max_connections` is the node's WebSocket limit.
pub fn render_sockets(out: &mut String, figures: &SocketFigures, max_connections: usize) {
    let gauges = [
        (
            "switchboard_open_sockets",
            "TCP connections open on the listener (HTTP and WebSocket), refusals excluded.",
            figures.open as u64,
        ),
        (
            "switchboard_socket_capacity",
            "TCP connections the node keeps open at once (open-files limit minus reserves, or http.max_open_sockets).",
            figures.capacity as u64,
        ),
        (
            "switchboard_connection_capacity",
            "WebSocket connections the node can hold: the lower of max_connections and the socket capacity.",
            figures.capacity.min(max_connections) as u64,
        ),
    ];
    for (name, help, value) in gauges {
        header(out, name, "gauge", help);
        let _ = writeln!(out, "{name} {value}");
    }
    let name = "switchboard_socket_refusals_total";
    header(
        out,
        name,
        "counter",
        "Connections that arrived while the socket budget was spent: answered 503 from the reserve, or shed (closed at once, the reserve spent too).",
    );
    for (outcome, count) in [("answered", figures.answered), ("shed", figures.shed)] {
        let _ = writeln!(out, "{name}{{outcome=\"{outcome}\"}} {count}");
    }
    let name = "switchboard_accept_errors_total";
    header(
        out,
        name,
        "counter",
        "Failed accepts of the listener (each backs off before the next).",
    );
    let _ = writeln!(out, "{name} {}", figures.accept_errors);
}

/// Renders the request bodies' series.
pub fn render_bodies(out: &mut String, figures: &BodyFigures) {
    for (name, help, value) in [
        (
            "switchboard_http_bodies_in_flight",
            "Request bodies being received (bound: http.max_bodies_in_flight).",
            figures.in_flight,
        ),
        (
            "switchboard_http_body_bytes_in_flight",
            "Buffer bytes of request bodies being received (bound: http.max_body_bytes_in_flight).",
            figures.bytes_in_flight,
        ),
    ] {
        header(out, name, "gauge", help);
        let _ = writeln!(out, "{name} {value}");
    }
    let name = "switchboard_http_body_refusals_total";
    header(
        out,
        name,
        "counter",
        "Request bodies refused at a bound: size (413, or 401 without a tenant's key), time (408, or 401) or node-wide budget (503).",
    );
    for (reason, count) in &figures.refusals {
        let _ = writeln!(out, "{name}{{reason=\"{reason}\"}} {count}");
    }
}

/// Renders the series of refused request heads and stalled responses.
pub fn render_heads(out: &mut String, figures: &HeadFigures) {
    let name = "switchboard_http_head_refusals_total";
    header(
        out,
        name,
        "counter",
        "Request heads refused: over http.max_header_bytes (431), http.max_uri_bytes (414), or malformed (400).",
    );
    for (reason, count) in &figures.refusals {
        let _ = writeln!(out, "{name}{{reason=\"{reason}\"}} {count}");
    }
    let name = "switchboard_http_write_timeouts_total";
    header(
        out,
        name,
        "counter",
        "HTTP connections closed because a response made no progress for http.write_timeout.",
    );
    let _ = writeln!(out, "{name} {}", figures.write_timeouts);
}
