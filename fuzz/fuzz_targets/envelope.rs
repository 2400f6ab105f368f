//! The client envelope (`protocol::Envelope::parse`, `recovery_since`) and payload validation
//! (`protocol::validate_payload`) on any text, checked against docs/protocol.md's table read
//! from the object's members; then every accepted envelope's fields go through the frame
//! encoders and must parse back unchanged.

#![no_main]

mod common;

use common::{Members, string};
use libfuzzer_sys::fuzz_target;
use switchboard::protocol::{self, Envelope, ErrorCode, PresenceChange, SinceError};

fuzz_target!(|data: &[u8]| {
    // tungstenite refuses a text frame that is not UTF-8 (1007) before the envelope is read.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // Anything one JSON value is accepted as a payload, and nothing else.
    let is_value = serde_json::from_str::<&serde_json::value::RawValue>(text).is_ok();
    assert_eq!(protocol::validate_payload(text).is_ok(), is_value);

    let parsed = Envelope::parse(text);
    match (expected(text), parsed) {
        (None, Ok(envelope)) => panic!("accepted an envelope the protocol refuses: {envelope:?}"),
        (None, Err(_)) => {}
        (Some(expect), Err(error)) => panic!("refused a valid envelope ({error}): {expect:?}"),
        (Some(expect), Ok(envelope)) => {
            assert_eq!(envelope.msg_type, expect.msg_type);
            assert_eq!(envelope.channel.as_deref(), expect.channel.as_deref());
            assert_eq!(envelope.payload.map(|raw| raw.get()), expect.payload);
            assert_eq!(
                envelope.correlation_id.as_deref(),
                expect.correlation_id.as_deref()
            );
            check_since(&envelope);
            round_trips(&envelope);
        }
    }
});

/// An envelope as docs/protocol.md, "Frames", describes it.
#[derive(Debug)]
struct Expected<'a> {
    msg_type: String,
    channel: Option<String>,
    payload: Option<&'a str>,
    correlation_id: Option<String>,
}

/// What the table says `text` is: `None` when the server must close with 1008.
fn expected(text: &str) -> Option<Expected<'_>> {
    let members = Members::parse(text)?;
    // A field given twice is refused.
    for field in ["type", "channel", "payload", "correlationId"] {
        if members.count(field) > 1 {
            return None;
        }
    }
    // An optional string field: absent or `null` is absent; otherwise a string within bounds.
    let optional = |field: &str, max: usize| -> Result<Option<String>, ()> {
        match members.first(field) {
            None => Ok(None),
            Some(raw) if raw.get() == "null" => Ok(None),
            Some(raw) => match string(raw) {
                Some(value) if (1..=max).contains(&value.len()) => Ok(Some(value)),
                _ => Err(()),
            },
        }
    };
    let msg_type = optional("type", 128).ok()??;
    let channel = optional("channel", 256).ok()?;
    let correlation_id = optional("correlationId", 128).ok()?;
    let payload = members
        .first("payload")
        .map(|raw| raw.get())
        .filter(|raw| *raw != "null");
    Some(Expected {
        msg_type,
        channel,
        payload,
        correlation_id,
    })
}

/// `payload.since`: absent (or a payload that is not an object), or a non-negative integer.
fn check_since(envelope: &Envelope<'_>) {
    let since = envelope.recovery_since();
    let Some(payload) = envelope.payload else {
        assert_eq!(since, Ok(None));
        return;
    };
    let Some(members) = Members::parse(payload.get()) else {
        // Not an object: no `since`.
        assert!(
            matches!(since, Ok(None) | Err(SinceError::TooDeep)),
            "{since:?}"
        );
        return;
    };
    // A map keeps the last of a repeated key.
    let expect = match members.last("since") {
        None => Ok(None),
        Some(raw) if raw.get() == "null" => Ok(None),
        Some(raw) => serde_json::from_str::<u64>(raw.get())
            .map(Some)
            .map_err(|_| SinceError::NotASeq),
    };
    assert_eq!(since, expect, "payload {}", payload.get());
}

/// The frames the server builds from these fields parse back to the same fields.
fn round_trips(envelope: &Envelope<'_>) {
    let msg_type = &*envelope.msg_type;
    let payload = envelope.payload.map(|raw| raw.get());
    let seq = u64::MAX - msg_type.len() as u64;

    if let Some(channel) = envelope.channel.as_deref() {
        let frame = protocol::channel_message(msg_type, channel, payload, seq);
        let head = protocol::channel_message_head(msg_type, channel, payload);
        assert_eq!(protocol::channel_message_from_head(&head, seq), frame);
        // A complete frame (stored by an older build) is taken as it is.
        assert_eq!(
            protocol::channel_message_from_head(frame.as_str(), seq + 1),
            frame
        );
        let back = reparse(frame.as_str());
        assert_eq!(back.msg_type, msg_type);
        assert_eq!(back.channel.as_deref(), Some(channel));
        assert_eq!(back.payload.map(|raw| raw.get()), payload);
        assert_eq!(back.correlation_id, None);
        let members = Members::parse(frame.as_str()).expect("an object");
        let frame_seq = members.last("seq").expect("a seq").get();
        assert_eq!(frame_seq.parse(), Ok(seq));

        let frame = protocol::presence(PresenceChange::Join, channel, msg_type, channel);
        let back = reparse(frame.as_str());
        assert_eq!(back.channel.as_deref(), Some(channel));
    }

    let frame = protocol::message(
        msg_type,
        envelope.channel.as_deref(),
        payload.unwrap_or("null"),
    );
    let back = reparse(frame.as_str());
    assert_eq!(back.msg_type, msg_type);
    assert_eq!(back.channel, envelope.channel);
    assert_eq!(back.payload.map(|raw| raw.get()), payload);

    let correlation_id = envelope.correlation_id.as_deref();
    if let Some(id) = correlation_id {
        let back_ack = protocol::ack(id, payload);
        let back = reparse(back_ack.as_str());
        assert_eq!(back.msg_type, "ack");
        assert_eq!(back.correlation_id.as_deref(), Some(id));
        assert_eq!(back.payload.map(|raw| raw.get()), payload);
    }
    let pong = protocol::pong(correlation_id);
    assert_eq!(
        reparse(pong.as_str()).correlation_id.as_deref(),
        correlation_id
    );

    // An error reply carries any text as its message, and any code a plugin chose.
    let error = protocol::error_with_code(correlation_id, msg_type, text_of(envelope));
    let back = reparse(error.as_str());
    assert_eq!(back.correlation_id.as_deref(), correlation_id);
    let body: serde_json::Value =
        serde_json::from_str(back.payload.expect("an error has a payload").get()).expect("JSON");
    assert_eq!(body["code"].as_str(), Some(msg_type));
    assert_eq!(body["message"].as_str(), Some(text_of(envelope)));
    let error = protocol::error(correlation_id, ErrorCode::BadRequest, msg_type);
    assert_eq!(reparse(error.as_str()).msg_type, "error");

    let http = protocol::http_error_body(msg_type, text_of(envelope));
    let body: serde_json::Value = serde_json::from_str(&http).expect("JSON");
    assert_eq!(body["error"].as_str(), Some(msg_type));
}

/// Some text of the envelope, for the encoders' free-text fields.
fn text_of<'a>(envelope: &'a Envelope<'_>) -> &'a str {
    envelope
        .channel
        .as_deref()
        .or(envelope.correlation_id.as_deref())
        .unwrap_or(&envelope.msg_type)
}

fn reparse(frame: &str) -> Envelope<'_> {
    Envelope::parse(frame).unwrap_or_else(|error| panic!("a frame we built ({frame}): {error}"))
}
