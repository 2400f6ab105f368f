//! The socket of one accepted connection, as hyper (and after an upgrade, the WebSocket) sees it.
//! It holds the connection's place in the socket budget, bounds how long a response may stall
//! on a client that does not read, gives hyper's own error answers the JSON body, and on a
//! close lingers briefly so that an answer to a request not read to its end is not lost.
//!
//! hyper answers a request it cannot parse (400), a head over `max_header_size` or with too
//! many fields (431) and a target over its URI limit (414) by itself, with an empty body. Those
//! answers are the only responses of this server without a `Content-Type` (every route sets
//! one), and they are the last bytes of their connection, so they are found in the written
//! bytes and replaced whole. Response bodies are JSON or Prometheus text, which
//! never hold a raw CR, so a response head cannot be mistaken inside a body. After a `101` the
//! socket carries WebSocket frames and is passed through untouched.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Sleep;

use super::permit::SocketPermit;
use crate::listener::heads::HeadRefusal;

/// The start of every response line hyper writes for an HTTP/1.1 exchange.
const STATUS_PREFIX: &[u8] = b"HTTP/1.1 ";
/// How long a closing HTTP connection keeps reading (and discarding) what the client still
/// sends, so that the close does not reset the connection before the client read the answer.
const LINGER_TIME: Duration = Duration::from_secs(2);
/// How much a closing HTTP connection discards before it closes anyway.
const LINGER_BYTES: usize = 1024 * 1024;

/// What to do with the start of the bytes hyper writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// Write this many bytes as they are.
    Forward(usize),
    /// The bytes start with a complete `101` head of this length: write it, then pass
    /// everything through.
    Upgrade(usize),
    /// The bytes start with one of hyper's own error heads, of this length: write ours instead.
    Replace(usize, HeadRefusal),
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

/// The three-digit status of a status line at the start of `bytes`, `None` while incomplete.
fn status_at(bytes: &[u8]) -> Option<u16> {
    let digits = bytes.get(STATUS_PREFIX.len()..STATUS_PREFIX.len() + 3)?;
    // Not digits: not a status line, which no status of interest matches.
    let status = digits.iter().try_fold(0u16, |status, digit| {
        digit
            .is_ascii_digit()
            .then(|| status * 10 + u16::from(digit - b'0'))
    });
    Some(status.unwrap_or(0))
}

/// True for a head hyper wrote itself: every route sets a `Content-Type`, hyper's own error
/// answers have none (and no body).
fn is_automatic(head: &[u8]) -> bool {
    !head.split(|byte| *byte == b'\n').skip(1).any(|line| {
        line.len() >= "content-type:".len()
            && line[.."content-type:".len()].eq_ignore_ascii_case(b"content-type:")
    })
}

/// Decides what to do with `bytes`, the start of what hyper wants written.
fn step(bytes: &[u8]) -> Step {
    let mut from = 0;
    while let Some(found) = find(&bytes[from..], STATUS_PREFIX) {
        let at = from + found;
        let Some(status) = status_at(&bytes[at..]) else {
            // A status line cut short: write what precedes it, decide once it is whole.
            return Step::Forward(if at > 0 { at } else { bytes.len() });
        };
        let refusal = HeadRefusal::for_status(status);
        if status != 101 && refusal.is_none() {
            from = at + 1;
            continue;
        }
        if at > 0 {
            return Step::Forward(at);
        }
        // hyper writes a head whole, so one cut short here is not a head to judge.
        let Some(end) = find(bytes, b"\r\n\r\n") else {
            return Step::Forward(bytes.len());
        };
        let length = end + 4;
        return match refusal {
            None => Step::Upgrade(length),
            Some(refusal) if is_automatic(&bytes[..length]) => Step::Replace(length, refusal),
            Some(_) => Step::Forward(length),
        };
    }
    // The bytes may end inside a status line's prefix; keep it for the next write.
    let tail = (1..STATUS_PREFIX.len())
        .rev()
        .find(|&length| bytes.len() > length && bytes.ends_with(&STATUS_PREFIX[..length]))
        .unwrap_or(0);
    Step::Forward(bytes.len() - tail)
}

/// Where the written bytes are.
#[derive(Debug)]
enum Mode {
    /// HTTP responses: watched for hyper's own error heads.
    Http,
    /// This many bytes of a `101` head are still to be written; then `Raw`.
    Upgrading(usize),
    /// WebSocket frames: passed through.
    Raw,
    /// hyper's error head was swallowed; these bytes replace it (from the offset), and
    /// whatever hyper writes after it is dropped.
    Replacing(Vec<u8>, usize),
}

/// A closing HTTP connection draining what the client still sends.
#[derive(Debug)]
struct Linger {
    deadline: Pin<Box<Sleep>>,
    discarded: usize,
}

/// An accepted TCP connection under the node's bounds.
#[derive(Debug)]
pub struct NodeIo {
    stream: TcpStream,
    permit: SocketPermit,
    mode: Mode,
    write_timeout: Duration,
    stall: Option<Pin<Box<Sleep>>>,
    linger: Option<Box<Linger>>,
}

impl NodeIo {
    /// Wraps an accepted stream that holds `permit`.
    pub fn new(stream: TcpStream, permit: SocketPermit) -> NodeIo {
        let write_timeout = permit.node().config.http.write_timeout;
        NodeIo {
            stream,
            permit,
            mode: Mode::Http,
            write_timeout,
            stall: None,
            linger: None,
        }
    }

    /// After the write side is shut: reads and discards until the client closes too, for at
    /// most `LINGER_TIME` and `LINGER_BYTES`. A request the server answered without reading it
    /// all (a 431, a refused body) would otherwise make the close a reset, which can destroy
    /// the answer before the client reads it.
    fn poll_linger(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let linger = self.linger.get_or_insert_with(|| {
            Box::new(Linger {
                deadline: Box::pin(tokio::time::sleep(LINGER_TIME)),
                discarded: 0,
            })
        });
        let mut scratch = [0u8; 4096];
        while linger.discarded < LINGER_BYTES {
            let mut buf = ReadBuf::new(&mut scratch);
            match Pin::new(&mut self.stream).poll_read(cx, &mut buf) {
                Poll::Ready(Ok(())) if !buf.filled().is_empty() => {
                    linger.discarded += buf.filled().len();
                }
                // The client closed, or the connection broke: nothing left to protect.
                Poll::Ready(_) => return Poll::Ready(Ok(())),
                Poll::Pending => {
                    return match linger.deadline.as_mut().poll(cx) {
                        Poll::Ready(()) => Poll::Ready(Ok(())),
                        Poll::Pending => Poll::Pending,
                    };
                }
            }
        }
        Poll::Ready(Ok(()))
    }

    /// Writes what is left of a replacement answer.
    fn poll_replacement(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while let Mode::Replacing(bytes, offset) = &mut self.mode {
            if *offset == bytes.len() {
                break;
            }
            let written = ready!(Pin::new(&mut self.stream).poll_write(cx, &bytes[*offset..]))?;
            if written == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            *offset += written;
        }
        Poll::Ready(Ok(()))
    }

    /// Fails a write that made no progress for `write_timeout`, so a client that never reads
    /// cannot hold its socket; after an upgrade the WebSocket's own bounds apply instead.
    fn bounded<T>(
        &mut self,
        cx: &mut Context<'_>,
        poll: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        if matches!(self.mode, Mode::Raw) {
            return poll;
        }
        if poll.is_ready() {
            self.stall = None;
            return poll;
        }
        let timeout = self.write_timeout;
        let stall = self
            .stall
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        if stall.as_mut().poll(cx).is_ready() {
            self.stall = None;
            self.permit.node().http.heads.write_timed_out();
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the response made no progress within http.write_timeout",
            )));
        }
        Poll::Pending
    }

    fn poll_write_inner(&mut self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match &mut self.mode {
            Mode::Raw => return Pin::new(&mut self.stream).poll_write(cx, buf),
            Mode::Replacing(..) => {
                ready!(self.poll_replacement(cx))?;
                return Poll::Ready(Ok(buf.len()));
            }
            Mode::Upgrading(left) => {
                let length = buf.len().min(*left);
                let written = ready!(Pin::new(&mut self.stream).poll_write(cx, &buf[..length]))?;
                *left -= written;
                if *left == 0 {
                    self.mode = Mode::Raw;
                }
                return Poll::Ready(Ok(written));
            }
            Mode::Http => {}
        }
        match step(buf) {
            Step::Forward(length) => Pin::new(&mut self.stream).poll_write(cx, &buf[..length]),
            Step::Upgrade(length) => {
                self.mode = Mode::Upgrading(length);
                self.poll_write_inner(cx, buf)
            }
            Step::Replace(length, refusal) => {
                let node = self.permit.node();
                node.http.heads.refused(refusal);
                let http = &node.config.http;
                let (status, body) = refusal.answer(http.max_header_bytes, http.max_uri_bytes);
                let answer = format!(
                    "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                self.mode = Mode::Replacing(answer.into_bytes(), 0);
                // The head counts as written; the answer goes out on the next write or flush.
                Poll::Ready(Ok(length))
            }
        }
    }
}

impl AsyncRead for NodeIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for NodeIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let poll = this.poll_write_inner(cx, buf);
        this.bounded(cx, poll)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let poll = match this.poll_replacement(cx) {
            Poll::Ready(Ok(())) => Pin::new(&mut this.stream).poll_flush(cx),
            other => other,
        };
        this.bounded(cx, poll)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if matches!(this.mode, Mode::Raw) {
            return Pin::new(&mut this.stream).poll_shutdown(cx);
        }
        if this.linger.is_none() {
            let poll = match this.poll_replacement(cx) {
                Poll::Ready(Ok(())) => Pin::new(&mut this.stream).poll_shutdown(cx),
                other => other,
            };
            ready!(this.bounded(cx, poll))?;
        }
        this.poll_linger(cx)
    }

    fn is_write_vectored(&self) -> bool {
        // hyper then flattens each response into one buffer, so a head is never split.
        false
    }
}

#[cfg(test)]
mod tests;
