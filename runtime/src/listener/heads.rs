//! Request heads refused before routing (hyper's own 400, 414 and 431, given a JSON body by
//! `server/io.rs`) and responses cut off at `http.write_timeout`: the reasons and their
//! counters.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::metrics::http::HeadFigures;
use crate::protocol::http_error_body;

/// A request head refused before routing, as a metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeadRefusal {
    /// 431: the head is over `http.max_header_bytes` or has too many fields.
    HeaderTooLarge,
    /// 414: the target is over `http.max_uri_bytes`.
    UriTooLong,
    /// 400: the head does not parse.
    Malformed,
}

impl HeadRefusal {
    pub(crate) const ALL: [HeadRefusal; 3] = [
        HeadRefusal::HeaderTooLarge,
        HeadRefusal::UriTooLong,
        HeadRefusal::Malformed,
    ];

    /// The `reason` label of its metric.
    pub fn label(self) -> &'static str {
        match self {
            HeadRefusal::HeaderTooLarge => "header_too_large",
            HeadRefusal::UriTooLong => "uri_too_long",
            HeadRefusal::Malformed => "malformed",
        }
    }

    /// The refusal hyper's own answer with this status stands for.
    pub fn for_status(status: u16) -> Option<HeadRefusal> {
        match status {
            431 => Some(HeadRefusal::HeaderTooLarge),
            414 => Some(HeadRefusal::UriTooLong),
            400 => Some(HeadRefusal::Malformed),
            _ => None,
        }
    }

    /// The status line and the JSON body of the answer.
    pub fn answer(self, max_header_bytes: usize, max_uri_bytes: usize) -> (&'static str, String) {
        match self {
            HeadRefusal::HeaderTooLarge => (
                "431 Request Header Fields Too Large",
                http_error_body(
                    "header_too_large",
                    &format!(
                        "the request head is over {max_header_bytes} bytes or has too many header fields"
                    ),
                ),
            ),
            HeadRefusal::UriTooLong => (
                "414 URI Too Long",
                http_error_body(
                    "uri_too_long",
                    &format!("the request target is over {max_uri_bytes} bytes"),
                ),
            ),
            HeadRefusal::Malformed => (
                "400 Bad Request",
                http_error_body("bad_request", "the request is not valid HTTP/1.1"),
            ),
        }
    }
}

/// Counters of what the HTTP layer refused or cut off.
#[derive(Debug, Default)]
pub struct HeadCounters {
    refusals: [AtomicU64; HeadRefusal::ALL.len()],
    write_timeouts: AtomicU64,
}

impl HeadCounters {
    /// Counts a refused request head.
    pub fn refused(&self, refusal: HeadRefusal) {
        let index = HeadRefusal::ALL
            .iter()
            .position(|candidate| *candidate == refusal)
            .unwrap_or(0);
        self.refusals[index].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a response given up because the client stopped reading.
    pub fn write_timed_out(&self) {
        self.write_timeouts.fetch_add(1, Ordering::Relaxed);
    }

    /// What these counters report to the metrics now.
    pub fn figures(&self) -> HeadFigures {
        HeadFigures {
            refusals: HeadRefusal::ALL
                .iter()
                .zip(&self.refusals)
                .map(|(refusal, counter)| (refusal.label(), counter.load(Ordering::Relaxed)))
                .collect(),
            write_timeouts: self.write_timeouts.load(Ordering::Relaxed),
        }
    }
}
