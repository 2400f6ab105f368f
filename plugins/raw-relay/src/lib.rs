//! `raw-relay`: a small binary publish/subscribe protocol for a raw-frame tenant, the kind a
//! game or an IoT fleet speaks (no JSON, no envelopes). Every message is one binary frame:
//!
//! | first byte | rest                                   | effect                                 |
//! |------------|----------------------------------------|----------------------------------------|
//! | `0x01`     | channel (UTF-8)                        | join the channel; answers `0x81 ch`    |
//! | `0x02`     | channel (UTF-8)                        | leave it; answers `0x82 ch`            |
//! | `0x03`     | `len` (1 byte), channel, payload       | payload to the channel's other members |
//! | `0x04`     | `len` (1 byte), connection id, payload | payload to one connection              |
//! | `0x05`     | nothing                                | answers `0x85` and the connection's id |
//!
//! Members receive `0x90 len channel payload` (from a channel) or `0x91 len sender payload`
//! (sent to them). A malformed frame is answered `0xEE` and a reason in UTF-8, and changes
//! nothing; a text frame is answered that way too.

use switchboard_sdk::{
    ConnInfo, Frame, HandlerError, HostError, Manifest, Message, Plugin, RawPlugin,
    export_raw_plugin, frames, realtime,
};

/// The plugin.
pub struct RawRelay;

/// Answers to the sender.
const JOINED: u8 = 0x81;
const LEFT: u8 = 0x82;
const YOU_ARE: u8 = 0x85;
const FROM_CHANNEL: u8 = 0x90;
const FROM_CONNECTION: u8 = 0x91;
const REFUSED: u8 = 0xEE;

impl Plugin for RawRelay {
    fn describe() -> Manifest {
        Manifest::new("raw-relay", env!("CARGO_PKG_VERSION"), &[])
    }

    fn on_message(_conn: ConnInfo, _msg: Message) -> Result<Option<String>, HandlerError> {
        Err(HandlerError::bad_request(
            "raw-relay handles raw frames only",
        ))
    }
}

impl RawPlugin for RawRelay {
    fn on_frame(conn: ConnInfo, frame: Frame) -> Result<Vec<Frame>, HandlerError> {
        let Frame::Binary(data) = frame else {
            return Ok(vec![refused("binary frames only")]);
        };
        Ok(match relay(&conn, &data) {
            Ok(answer) => answer.into_iter().collect(),
            Err(why) => vec![refused(&why)],
        })
    }
}

/// Carries out one frame; `Some` is the answer to the sender.
fn relay(conn: &ConnInfo, data: &[u8]) -> Result<Option<Frame>, String> {
    let (&op, rest) = data.split_first().ok_or("empty frame")?;
    match op {
        0x01 => {
            let channel = utf8(rest)?;
            realtime::join(&conn.id, channel).map_err(host)?;
            Ok(Some(tagged(JOINED, rest)))
        }
        0x02 => {
            let channel = utf8(rest)?;
            realtime::leave(&conn.id, channel).map_err(host)?;
            Ok(Some(tagged(LEFT, rest)))
        }
        0x03 => {
            let (channel, payload) = prefixed(rest)?;
            let out = Frame::Binary(header(FROM_CHANNEL, channel, payload));
            frames::broadcast(channel, &out, Some(&conn.id)).map_err(host)?;
            Ok(None)
        }
        0x04 => {
            let (to, payload) = prefixed(rest)?;
            let out = Frame::Binary(header(FROM_CONNECTION, &conn.id, payload));
            frames::send(to, &out).map_err(host)?;
            Ok(None)
        }
        0x05 => Ok(Some(tagged(YOU_ARE, conn.id.as_bytes()))),
        other => Err(format!("unknown op 0x{other:02x}")),
    }
}

fn utf8(bytes: &[u8]) -> Result<&str, String> {
    let text = std::str::from_utf8(bytes).map_err(|_| "a name must be UTF-8".to_owned())?;
    if text.is_empty() {
        return Err("a name must not be empty".to_owned());
    }
    Ok(text)
}

/// `len name rest`: a one-byte length, a UTF-8 name of that length, the payload.
fn prefixed(bytes: &[u8]) -> Result<(&str, &[u8]), String> {
    let (&len, rest) = bytes.split_first().ok_or("missing length")?;
    let len = usize::from(len);
    if rest.len() < len {
        return Err("the name is shorter than its length".to_owned());
    }
    let (name, payload) = rest.split_at(len);
    Ok((utf8(name)?, payload))
}

fn header(tag: u8, name: &str, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(2 + name.len() + payload.len());
    out.push(tag);
    // Names the host accepts are at most 255 bytes here: `prefixed` read them with one byte,
    // and connection ids are short.
    out.push(u8::try_from(name.len()).unwrap_or(u8::MAX));
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(payload);
    out
}

fn tagged(tag: u8, rest: &[u8]) -> Frame {
    let mut out = Vec::with_capacity(1 + rest.len());
    out.push(tag);
    out.extend_from_slice(rest);
    Frame::Binary(out)
}

fn refused(why: &str) -> Frame {
    tagged(REFUSED, why.as_bytes())
}

fn host(error: HostError) -> String {
    HandlerError::from(error).message
}

export_raw_plugin!(RawRelay);

#[cfg(test)]
mod tests {
    use switchboard_sdk::{Frame, RawPlugin, mock};

    use super::RawRelay;

    fn conn(id: &str) -> switchboard_sdk::ConnInfo {
        mock::conn(id, "u", serde_json::json!({}))
    }

    fn binary(bytes: &[u8]) -> Frame {
        Frame::Binary(bytes.to_vec())
    }

    #[test]
    fn joins_and_publishes_to_the_other_members() {
        mock::reset();
        let answer = RawRelay::on_frame(conn("n-1"), binary(b"\x01lobby")).expect("answers");
        assert_eq!(answer, vec![binary(b"\x81lobby")]);
        assert!(mock::with(|host| host.members["lobby"]
            .iter()
            .any(|(id, _)| id == "n-1")));

        let answer =
            RawRelay::on_frame(conn("n-1"), binary(b"\x03\x05lobby\x00\xff")).expect("answers");
        assert!(answer.is_empty());
        let sent = mock::with(|host| host.frames_broadcast.clone());
        assert_eq!(
            sent,
            vec![(
                "lobby".to_owned(),
                binary(b"\x90\x05lobby\x00\xff"),
                Some("n-1".to_owned())
            )]
        );
    }

    #[test]
    fn sends_to_one_connection_with_the_sender_named() {
        mock::reset();
        RawRelay::on_frame(conn("n-1"), binary(b"\x04\x03n-2hi")).expect("answers");
        let sent = mock::with(|host| host.frames_sent.clone());
        assert_eq!(sent, vec![("n-2".to_owned(), binary(b"\x91\x03n-1hi"))]);
    }

    #[test]
    fn a_malformed_frame_is_refused_and_changes_nothing() {
        mock::reset();
        for bad in [&b""[..], b"\x09", b"\x03\x09lob", b"\x01", b"\x01\xff\xfe"] {
            let answer = RawRelay::on_frame(conn("n-1"), binary(bad)).expect("answers");
            assert!(
                matches!(&answer[..], [Frame::Binary(data)] if data[0] == 0xEE),
                "{bad:?}: {answer:?}"
            );
        }
        let answer =
            RawRelay::on_frame(conn("n-1"), Frame::Text("hi".to_owned())).expect("answers");
        assert!(matches!(&answer[..], [Frame::Binary(data)] if data[0] == 0xEE));
        mock::with(|host| {
            assert!(host.frames_broadcast.is_empty() && host.frames_sent.is_empty());
            assert!(host.members.is_empty());
        });
    }
}
