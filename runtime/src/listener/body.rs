//! Request bodies (publish, plugin upload) read under bounds: a size, a deadline, and a node-wide
//! budget of bodies and bytes in flight. A body is copied into one buffer as it arrives, so
//! the read buffers of the connection are not kept alive by it (hyper hands out each read as
//! a `Bytes` that shares its whole read buffer: a body collected as chunks sent one byte at a
//! time held several kilobytes per byte).

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::{Buf, Bytes};
use http::{HeaderMap, HeaderValue, Response, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper::body::Body;
use tokio::time::Instant;

use super::response::{json_error, unavailable};
use crate::config::HttpConfig;
use crate::metrics::http::BodyFigures;

/// The bounds of one body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyLimit {
    /// Largest body in bytes.
    pub max_bytes: usize,
    /// How long the whole body may take to arrive.
    pub timeout: Duration,
    /// The request presents no key of any tenant: it can only be refused, so it may use at most
    /// half of the node's body slots.
    pub unauthenticated: bool,
}

impl BodyLimit {
    /// An authenticated (or not yet checkable) body of at most `max_bytes`.
    pub fn new(max_bytes: usize, http: &HttpConfig) -> BodyLimit {
        BodyLimit {
            max_bytes,
            timeout: http.body_timeout,
            unauthenticated: false,
        }
    }

    /// A body whose key matches no tenant: the tighter bounds of `http.unauthenticated_*`.
    pub fn unauthenticated(http: &HttpConfig) -> BodyLimit {
        BodyLimit {
            max_bytes: http.max_unauthenticated_body_bytes,
            timeout: http.unauthenticated_body_timeout,
            unauthenticated: true,
        }
    }
}

/// Why a body was not read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    /// It is (or announces itself as) larger than its limit.
    #[error("the body is over its size limit")]
    TooLarge,
    /// It did not arrive within its time.
    #[error("the body did not arrive in time")]
    Timeout,
    /// The node is receiving as many bodies (or body bytes) as it allows.
    #[error("too many request bodies in flight")]
    Busy,
    /// The client stopped sending before the end of it.
    #[error("the body was cut short")]
    Incomplete,
}

impl BodyError {
    /// The answer: 413 (with `too_large`), 408, 503 with `Retry-After`, or 400; each closes
    /// the connection, whose unread body cannot be skipped.
    pub fn response(self, too_large: &str, timeout: Duration) -> Response<Full<Bytes>> {
        let response = match self {
            BodyError::TooLarge => json_error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                too_large,
            ),
            BodyError::Timeout => json_error(
                StatusCode::REQUEST_TIMEOUT,
                "request_timeout",
                &format!(
                    "the body did not arrive within {}",
                    humantime::format_duration(timeout)
                ),
            ),
            BodyError::Busy => unavailable("too many request bodies in flight", 1),
            BodyError::Incomplete => json_error(
                StatusCode::BAD_REQUEST,
                "bad_request",
                "the body was cut short",
            ),
        };
        closing(response)
    }
}

/// Marks a response as the connection's last.
pub fn closing(mut response: Response<Full<Bytes>>) -> Response<Full<Bytes>> {
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

/// Why a body was refused, as a metric label; `unauthenticated_` ones had no tenant's key.
const REASONS: [&str; 6] = [
    "too_large",
    "timeout",
    "busy",
    "unauthenticated_too_large",
    "unauthenticated_timeout",
    "unauthenticated_busy",
];

/// The node-wide budget of request bodies being received.
#[derive(Debug)]
pub struct BodyBudget {
    max_bodies: usize,
    max_bytes: usize,
    bodies: AtomicUsize,
    bytes: AtomicUsize,
    refusals: [AtomicU64; REASONS.len()],
}

impl BodyBudget {
    /// The budget `http.max_bodies_in_flight` and `http.max_body_bytes_in_flight` describe.
    pub fn new(http: &HttpConfig) -> BodyBudget {
        BodyBudget {
            max_bodies: http.max_bodies_in_flight,
            max_bytes: http.max_body_bytes_in_flight,
            bodies: AtomicUsize::new(0),
            bytes: AtomicUsize::new(0),
            refusals: Default::default(),
        }
    }

    /// Bodies being received now.
    pub fn bodies(&self) -> usize {
        self.bodies.load(Ordering::Acquire)
    }

    /// Buffer bytes held by bodies being received now.
    pub fn bytes(&self) -> usize {
        self.bytes.load(Ordering::Acquire)
    }

    fn refused(&self, error: BodyError, unauthenticated: bool) {
        let base = match error {
            BodyError::TooLarge => 0,
            BodyError::Timeout => 1,
            BodyError::Busy => 2,
            BodyError::Incomplete => return,
        };
        let index = base + if unauthenticated { 3 } else { 0 };
        self.refusals[index].fetch_add(1, Ordering::Relaxed);
    }

    /// Takes a body slot; an unauthenticated body only while fewer than half are taken, so
    /// requests that can only be refused never crowd out the ones with a key.
    fn admit(&self, unauthenticated: bool) -> Result<BodySlot<'_>, BodyError> {
        let limit = if unauthenticated {
            (self.max_bodies / 2).max(1)
        } else {
            self.max_bodies
        };
        self.bodies
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |count| {
                (count < limit).then_some(count + 1)
            })
            .map_err(|_| BodyError::Busy)?;
        Ok(BodySlot {
            budget: self,
            charged: 0,
        })
    }

    /// What the budget reports to the metrics now.
    pub fn figures(&self) -> BodyFigures {
        BodyFigures {
            in_flight: self.bodies(),
            bytes_in_flight: self.bytes(),
            refusals: REASONS
                .iter()
                .zip(&self.refusals)
                .map(|(reason, counter)| (*reason, counter.load(Ordering::Relaxed)))
                .collect(),
        }
    }
}

/// A body slot, and the buffer bytes charged to the budget; both released on drop.
struct BodySlot<'a> {
    budget: &'a BodyBudget,
    charged: usize,
}

impl BodySlot<'_> {
    /// Makes room in `buffer` for `more` bytes, charging the growth to the budget. The buffer
    /// doubles (up to `max`), so a body sent in small pieces is copied a logarithmic number of
    /// times.
    fn grow(&mut self, buffer: &mut Vec<u8>, more: usize, max: usize) -> Result<(), BodyError> {
        let needed = buffer.len() + more;
        if needed <= buffer.capacity() {
            return Ok(());
        }
        let target = needed.max(buffer.capacity().saturating_mul(2).min(max));
        let extra = target - self.charged;
        self.budget
            .bytes
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |bytes| {
                (bytes + extra <= self.budget.max_bytes).then_some(bytes + extra)
            })
            .map_err(|_| BodyError::Busy)?;
        self.charged = target;
        buffer.reserve_exact(target - buffer.len());
        Ok(())
    }
}

impl Drop for BodySlot<'_> {
    fn drop(&mut self) {
        self.budget.bodies.fetch_sub(1, Ordering::AcqRel);
        self.budget.bytes.fetch_sub(self.charged, Ordering::AcqRel);
    }
}

/// The announced `Content-Length`, when there is a readable one.
fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Reads a whole body within `limit`, into one buffer. A body that announces more than the
/// limit is refused before anything is read; refusals are counted by reason.
pub async fn read<B>(
    budget: &BodyBudget,
    headers: &HeaderMap,
    body: B,
    limit: BodyLimit,
) -> Result<Vec<u8>, BodyError>
where
    B: Body + Unpin,
{
    let result = read_within(budget, headers, body, limit).await;
    if let Err(error) = result {
        budget.refused(error, limit.unauthenticated);
    }
    result
}

async fn read_within<B>(
    budget: &BodyBudget,
    headers: &HeaderMap,
    mut body: B,
    limit: BodyLimit,
) -> Result<Vec<u8>, BodyError>
where
    B: Body + Unpin,
{
    if content_length(headers).is_some_and(|length| length > limit.max_bytes as u64) {
        return Err(BodyError::TooLarge);
    }
    let deadline = Instant::now() + limit.timeout;
    let mut slot = budget.admit(limit.unauthenticated)?;
    let mut buffer = Vec::new();
    loop {
        let frame = match tokio::time::timeout_at(deadline, body.frame()).await {
            Err(_) => return Err(BodyError::Timeout),
            Ok(None) => break,
            Ok(Some(Err(_))) => return Err(BodyError::Incomplete),
            Ok(Some(Ok(frame))) => frame,
        };
        // Trailers carry nothing the API reads.
        let Ok(mut data) = frame.into_data() else {
            continue;
        };
        let more = data.remaining();
        if buffer.len() + more > limit.max_bytes {
            return Err(BodyError::TooLarge);
        }
        slot.grow(&mut buffer, more, limit.max_bytes)?;
        while data.has_remaining() {
            let chunk = data.chunk();
            let taken = chunk.len();
            buffer.extend_from_slice(chunk);
            data.advance(taken);
        }
    }
    Ok(buffer)
}

#[cfg(test)]
mod tests;
