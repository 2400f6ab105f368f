//! Bodies read under their size, time and node-wide bounds.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_util::FutureExt as _;
use http::{HeaderMap, HeaderValue, header};
use hyper::body::{Body, Frame};
use tokio::sync::mpsc;

use super::{BodyBudget, BodyError, BodyLimit, read};
use crate::config::HttpConfig;

/// A body fed piece by piece from the test; `Err` items end it with an error.
struct Fed(mpsc::UnboundedReceiver<Result<Bytes, ()>>);

impl Body for Fed {
    type Data = Bytes;
    type Error = &'static str;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        self.0
            .poll_recv(cx)
            .map(|item| item.map(|piece| piece.map(Frame::data).map_err(|()| "connection reset")))
    }
}

fn fed() -> (mpsc::UnboundedSender<Result<Bytes, ()>>, Fed) {
    let (sender, receiver) = mpsc::unbounded_channel();
    (sender, Fed(receiver))
}

fn budget(bodies: usize, bytes: usize) -> BodyBudget {
    BodyBudget::new(&HttpConfig {
        max_bodies_in_flight: bodies,
        max_body_bytes_in_flight: bytes,
        ..HttpConfig::default()
    })
}

fn limit(max_bytes: usize) -> BodyLimit {
    BodyLimit {
        max_bytes,
        timeout: Duration::from_secs(30),
        unauthenticated: false,
    }
}

fn rendered(budget: &BodyBudget) -> String {
    let mut text = String::new();
    crate::metrics::http::render_bodies(&mut text, &budget.figures());
    text
}

#[tokio::test]
async fn a_body_sent_a_byte_at_a_time_arrives_whole_and_releases_its_budget() {
    let budget = budget(4, 1 << 20);
    let (sender, body) = fed();
    let text = b"{\"tenant\":\"default\"}";
    for byte in text {
        sender
            .send(Ok(Bytes::copy_from_slice(&[*byte])))
            .expect("open");
    }
    drop(sender);
    let read = read(&budget, &HeaderMap::new(), body, limit(1024)).await;
    assert_eq!(read.as_deref(), Ok(&text[..]));
    assert_eq!((budget.bodies(), budget.bytes()), (0, 0));
}

#[tokio::test]
async fn a_body_of_exactly_the_limit_is_read() {
    let budget = budget(4, 1 << 20);
    let (sender, body) = fed();
    sender.send(Ok(Bytes::from(vec![b'x'; 100]))).expect("open");
    drop(sender);
    let read = read(&budget, &HeaderMap::new(), body, limit(100)).await;
    assert_eq!(read.map(|body| body.len()), Ok(100));
}

#[tokio::test]
async fn an_announced_length_over_the_limit_is_refused_before_reading() {
    let budget = budget(4, 1 << 20);
    // Nothing is ever sent: the refusal cannot have waited for the body.
    let (_sender, body) = fed();
    let mut headers = HeaderMap::new();
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from_static("101"));
    assert_eq!(
        read(&budget, &headers, body, limit(100)).await,
        Err(BodyError::TooLarge)
    );
    assert!(
        rendered(&budget).contains("switchboard_http_body_refusals_total{reason=\"too_large\"} 1"),
        "{}",
        rendered(&budget)
    );
}

#[tokio::test]
async fn a_body_growing_past_the_limit_is_refused_and_releases_its_budget() {
    let budget = budget(4, 1 << 20);
    let (sender, body) = fed();
    sender.send(Ok(Bytes::from(vec![b'x'; 60]))).expect("open");
    sender.send(Ok(Bytes::from(vec![b'x'; 60]))).expect("open");
    assert_eq!(
        read(&budget, &HeaderMap::new(), body, limit(100)).await,
        Err(BodyError::TooLarge)
    );
    assert_eq!((budget.bodies(), budget.bytes()), (0, 0));
}

#[tokio::test(start_paused = true)]
async fn a_body_that_stalls_times_out_at_its_deadline() {
    let budget = budget(4, 1 << 20);
    let (sender, body) = fed();
    sender.send(Ok(Bytes::from_static(b"{"))).expect("open");
    let started = tokio::time::Instant::now();
    let bounds = BodyLimit {
        timeout: Duration::from_secs(3),
        ..limit(100)
    };
    assert_eq!(
        read(&budget, &HeaderMap::new(), body, bounds).await,
        Err(BodyError::Timeout)
    );
    assert_eq!(started.elapsed(), Duration::from_secs(3));
    assert_eq!((budget.bodies(), budget.bytes()), (0, 0));
    drop(sender);
}

#[tokio::test(start_paused = true)]
async fn a_body_trickling_in_is_cut_at_its_total_deadline() {
    let budget = budget(4, 1 << 20);
    let (sender, body) = fed();
    // One byte a second keeps every read short; the deadline counts the whole body.
    let feeder = tokio::spawn(async move {
        for _ in 0..100 {
            if sender.send(Ok(Bytes::from_static(b"x"))).is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    });
    let bounds = BodyLimit {
        timeout: Duration::from_millis(4500),
        ..limit(1000)
    };
    assert_eq!(
        read(&budget, &HeaderMap::new(), body, bounds).await,
        Err(BodyError::Timeout)
    );
    feeder.abort();
}

#[tokio::test]
async fn a_body_cut_short_is_incomplete_and_not_counted_as_a_bound() {
    let budget = budget(4, 1 << 20);
    let (sender, body) = fed();
    sender.send(Ok(Bytes::from_static(b"{"))).expect("open");
    sender.send(Err(())).expect("open");
    assert_eq!(
        read(&budget, &HeaderMap::new(), body, limit(100)).await,
        Err(BodyError::Incomplete)
    );
    assert!(!rendered(&budget).contains("} 1"), "{}", rendered(&budget));
}

#[tokio::test]
async fn bodies_past_the_node_wide_count_are_busy() {
    let budget = budget(2, 1 << 20);
    let (first_sender, first) = fed();
    let (second_sender, second) = fed();
    let (third_sender, third) = fed();
    let headers = HeaderMap::new();
    let first = read(&budget, &headers, first, limit(100));
    let second = read(&budget, &headers, second, limit(100));
    tokio::pin!(first, second);
    // Both take their slots and wait for data.
    assert!(first.as_mut().now_or_never().is_none());
    assert!(second.as_mut().now_or_never().is_none());
    assert_eq!(budget.bodies(), 2);
    drop(third_sender);
    assert_eq!(
        read(&budget, &headers, third, limit(100)).await,
        Err(BodyError::Busy)
    );
    drop(first_sender);
    assert_eq!(first.await, Ok(Vec::new()));
    // The freed slot is taken again.
    let (fourth_sender, fourth) = fed();
    drop(fourth_sender);
    assert_eq!(
        read(&budget, &headers, fourth, limit(100)).await,
        Ok(Vec::new())
    );
    drop(second_sender);
    assert_eq!(second.await, Ok(Vec::new()));
    assert!(
        rendered(&budget).contains("switchboard_http_body_refusals_total{reason=\"busy\"} 1"),
        "{}",
        rendered(&budget)
    );
}

#[tokio::test]
async fn unauthenticated_bodies_take_at_most_half_the_slots() {
    let budget = budget(4, 1 << 20);
    let headers = HeaderMap::new();
    let unauthenticated = BodyLimit {
        unauthenticated: true,
        ..limit(100)
    };
    let (senders, bodies): (Vec<_>, Vec<_>) = (0..2).map(|_| fed()).unzip();
    let mut pending: Vec<_> = bodies
        .into_iter()
        .map(|body| Box::pin(read(&budget, &headers, body, unauthenticated)))
        .collect();
    for read in &mut pending {
        assert!(read.as_mut().now_or_never().is_none());
    }
    let (_third_sender, third) = fed();
    assert_eq!(
        read(&budget, &headers, third, unauthenticated).await,
        Err(BodyError::Busy)
    );
    // A request with a key still gets one of the other half.
    let (keyed_sender, keyed) = fed();
    drop(keyed_sender);
    assert_eq!(
        read(&budget, &headers, keyed, limit(100)).await,
        Ok(Vec::new())
    );
    assert!(
        rendered(&budget)
            .contains("switchboard_http_body_refusals_total{reason=\"unauthenticated_busy\"} 1"),
        "{}",
        rendered(&budget)
    );
    drop(senders);
}

#[tokio::test]
async fn bodies_past_the_node_wide_bytes_are_busy() {
    let budget = budget(8, 1000);
    let headers = HeaderMap::new();
    let (first_sender, first) = fed();
    first_sender
        .send(Ok(Bytes::from(vec![b'x'; 700])))
        .expect("open");
    let first = read(&budget, &headers, first, limit(10_000));
    tokio::pin!(first);
    assert!(first.as_mut().now_or_never().is_none());
    assert!(budget.bytes() >= 700, "charged {}", budget.bytes());
    let (second_sender, second) = fed();
    second_sender
        .send(Ok(Bytes::from(vec![b'x'; 400])))
        .expect("open");
    assert_eq!(
        read(&budget, &headers, second, limit(10_000)).await,
        Err(BodyError::Busy)
    );
    drop(first_sender);
    assert_eq!(first.await.map(|body| body.len()), Ok(700));
    assert_eq!((budget.bodies(), budget.bytes()), (0, 0));
}

#[test]
fn every_refusal_closes_the_connection_with_the_json_body() {
    for (error, status) in [
        (BodyError::TooLarge, 413),
        (BodyError::Timeout, 408),
        (BodyError::Busy, 503),
        (BodyError::Incomplete, 400),
    ] {
        let response = error.response("too big", Duration::from_secs(30));
        assert_eq!(response.status().as_u16(), status, "{error:?}");
        assert_eq!(
            response
                .headers()
                .get(header::CONNECTION)
                .map(HeaderValue::as_bytes),
            Some(&b"close"[..]),
            "{error:?}"
        );
        assert_eq!(
            response
                .headers()
                .get(header::CONTENT_TYPE)
                .map(HeaderValue::as_bytes),
            Some(&b"application/json"[..]),
            "{error:?}"
        );
    }
    let busy = BodyError::Busy.response("", Duration::from_secs(1));
    assert!(busy.headers().contains_key(header::RETRY_AFTER));
}
