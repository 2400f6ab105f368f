//! What travels over Redis pub/sub: a one-letter kind, tab-separated header fields, and the
//! frame's JSON text last (it may contain tabs; header fields never do, or are length-prefixed).
//! A sequenced room message carries the frame's head (all but the `seq`) and the `seq` as
//! separate fields, so the publish script never builds JSON: the receiver completes the frame
//! with `protocol::channel_message_from_head`.

use std::fmt::Write as _;

/// A message received on a room channel or a node inbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Wire<'a> {
    /// A sequenced channel message (written by the publish script):
    /// `m<TAB>epoch<TAB>seq<TAB>except<TAB>head`.
    Room {
        /// The channel's epoch when it was sequenced.
        epoch: &'a str,
        /// Its sequence number.
        seq: u64,
        /// A connection that should not receive it.
        except: Option<&'a str>,
        /// The frame without its `seq` (`protocol::channel_message_head`); from a node of an
        /// older build, the complete frame.
        head: &'a str,
    },
    /// An unsequenced room frame (presence events).
    Signal {
        /// A connection that should not receive it.
        except: Option<&'a str>,
        /// The encoded frame.
        frame: &'a str,
    },
    /// A frame for one connection of this node.
    ToConnection {
        /// The tenant the sender acts for; the connection must belong to it.
        tenant: &'a str,
        /// The connection.
        connection: &'a str,
        /// The encoded frame.
        frame: &'a str,
    },
    /// A frame for every connection of a user on this node.
    ToUser {
        /// The user's tenant.
        tenant: &'a str,
        /// The user id.
        user: &'a str,
        /// The encoded frame.
        frame: &'a str,
    },
    /// Close a connection of this node.
    Close {
        /// The tenant the sender acts for.
        tenant: &'a str,
        /// The connection.
        connection: &'a str,
        /// The close code.
        code: u16,
        /// The close reason.
        reason: &'a str,
    },
    /// Replace a connection's attachment (hex-encoded bytes).
    Attach {
        /// The tenant the sender acts for.
        tenant: &'a str,
        /// The connection.
        connection: &'a str,
        /// The attachment, hex-encoded.
        hex: &'a str,
    },
    /// Join or leave a room on a connection's behalf.
    Membership {
        /// True to join, false to leave.
        join: bool,
        /// The tenant the sender acts for.
        tenant: &'a str,
        /// The connection.
        connection: &'a str,
        /// The channel.
        channel: &'a str,
    },
    /// A node's own probe coming back.
    Probe {
        /// The probe's token.
        token: u64,
    },
}

/// Why a pub/sub message could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed backplane message: {0}")]
pub struct WireError(&'static str);

/// An encoded room signal.
pub fn signal(except: Option<&str>, frame: &str) -> String {
    format!("s\t{}\t{frame}", except.unwrap_or(""))
}

/// An encoded frame for one connection.
pub fn to_connection(tenant: &str, connection: &str, frame: &str) -> String {
    format!("c\t{tenant}\t{connection}\t{frame}")
}

/// An encoded frame for a user (the user id is length-prefixed: it may contain anything).
pub fn to_user(tenant: &str, user: &str, frame: &str) -> String {
    format!("u\t{tenant}\t{}\t{user}{frame}", user.len())
}

/// An encoded close request.
pub fn close(tenant: &str, connection: &str, code: u16, reason: &str) -> String {
    format!("x\t{tenant}\t{connection}\t{code}\t{reason}")
}

/// An encoded attachment update.
pub fn attach(tenant: &str, connection: &str, data: &[u8]) -> String {
    let mut out = format!("a\t{tenant}\t{connection}\t");
    for byte in data {
        // Writing to a String cannot fail.
        let _ = write!(out, "{byte:02x}");
    }
    out
}

/// An encoded join or leave request.
pub fn membership(join: bool, tenant: &str, connection: &str, channel: &str) -> String {
    let kind = if join { 'j' } else { 'l' };
    format!("{kind}\t{tenant}\t{connection}\t{channel}")
}

/// An encoded probe.
pub fn probe(token: u64) -> String {
    format!("p\t{token}")
}

/// Decodes hex (two digits a byte, either case, nothing else) back into bytes.
pub fn unhex(hex: &str) -> Result<Vec<u8>, WireError> {
    if !hex.len().is_multiple_of(2) {
        return Err(WireError("odd hex length"));
    }
    // Digit by digit: `u8::from_str_radix` would also take a sign (`+f`).
    let digit = |byte: u8| {
        char::from(byte)
            .to_digit(16)
            .and_then(|digit| u8::try_from(digit).ok())
            .ok_or(WireError("bad hex"))
    };
    hex.as_bytes()
        .chunks_exact(2)
        .map(|pair| Ok((digit(pair[0])? << 4) | digit(pair[1])?))
        .collect()
}

fn optional(text: &str) -> Option<&str> {
    (!text.is_empty()).then_some(text)
}

impl<'a> Wire<'a> {
    /// Reads one pub/sub payload.
    pub fn parse(text: &'a str) -> Result<Wire<'a>, WireError> {
        let (kind, rest) = text.split_once('\t').ok_or(WireError("no kind"))?;
        let missing = WireError("missing field");
        match kind {
            "m" => {
                let mut fields = rest.splitn(4, '\t');
                let epoch = fields.next().ok_or(missing.clone())?;
                let seq = fields
                    .next()
                    .and_then(|seq| seq.parse().ok())
                    .ok_or(WireError("bad seq"))?;
                let except = optional(fields.next().ok_or(missing.clone())?);
                let head = fields.next().ok_or(missing)?;
                Ok(Wire::Room {
                    epoch,
                    seq,
                    except,
                    head,
                })
            }
            "s" => {
                let (except, frame) = rest.split_once('\t').ok_or(missing)?;
                Ok(Wire::Signal {
                    except: optional(except),
                    frame,
                })
            }
            "c" => {
                let mut fields = rest.splitn(3, '\t');
                let tenant = fields.next().ok_or(missing.clone())?;
                let connection = fields.next().ok_or(missing.clone())?;
                let frame = fields.next().ok_or(missing)?;
                Ok(Wire::ToConnection {
                    tenant,
                    connection,
                    frame,
                })
            }
            "u" => {
                let mut fields = rest.splitn(3, '\t');
                let tenant = fields.next().ok_or(missing.clone())?;
                let length: usize = fields
                    .next()
                    .and_then(|length| length.parse().ok())
                    .ok_or(WireError("bad user length"))?;
                let tail = fields.next().ok_or(missing)?;
                if !tail.is_char_boundary(length) || tail.len() < length {
                    return Err(WireError("user length out of range"));
                }
                let (user, frame) = tail.split_at(length);
                Ok(Wire::ToUser {
                    tenant,
                    user,
                    frame,
                })
            }
            "x" => {
                let mut fields = rest.splitn(4, '\t');
                let tenant = fields.next().ok_or(missing.clone())?;
                let connection = fields.next().ok_or(missing.clone())?;
                let code = fields
                    .next()
                    .and_then(|code| code.parse().ok())
                    .ok_or(WireError("bad close code"))?;
                let reason = fields.next().ok_or(missing)?;
                Ok(Wire::Close {
                    tenant,
                    connection,
                    code,
                    reason,
                })
            }
            "a" => {
                let mut fields = rest.splitn(3, '\t');
                let tenant = fields.next().ok_or(missing.clone())?;
                let connection = fields.next().ok_or(missing.clone())?;
                let hex = fields.next().ok_or(missing)?;
                Ok(Wire::Attach {
                    tenant,
                    connection,
                    hex,
                })
            }
            "j" | "l" => {
                let mut fields = rest.splitn(3, '\t');
                let tenant = fields.next().ok_or(missing.clone())?;
                let connection = fields.next().ok_or(missing.clone())?;
                let channel = fields.next().ok_or(missing)?;
                Ok(Wire::Membership {
                    join: kind == "j",
                    tenant,
                    connection,
                    channel,
                })
            }
            "p" => Ok(Wire::Probe {
                token: rest.parse().map_err(|_| WireError("bad probe token"))?,
            }),
            _ => Err(WireError("unknown kind")),
        }
    }
}

#[cfg(test)]
mod tests;
