//! The publish API's body (`protocol::api::PublishRequest`: the tenant, then the message) on
//! any bytes, checked against docs/protocol.md, "Publish API", read from the object's members;
//! an accepted message is published as a channel message that parses back to the same fields,
//! and a body rebuilt from it reads the same.

#![no_main]

mod common;

use common::{Members, quoted, string};
use libfuzzer_sys::fuzz_target;
use switchboard::protocol::api::{PublishError, PublishMessage, PublishRequest, publish_answer};
use switchboard::protocol::{Envelope, channel_message};

fuzz_target!(|data: &[u8]| {
    let result = PublishRequest::parse(data).and_then(PublishRequest::message);
    assert_eq!(result, expected(data));
    let Ok(message) = result else {
        return;
    };

    let seq = data.len() as u64;
    let frame = channel_message(&message.msg_type, &message.channel, message.payload, seq);
    let envelope = Envelope::parse(frame.as_str()).expect("a channel message is an envelope");
    assert_eq!(envelope.msg_type, message.msg_type);
    assert_eq!(envelope.channel.as_deref(), Some(&*message.channel));
    assert_eq!(envelope.payload.map(|raw| raw.get()), message.payload);

    let tenant = PublishRequest::parse(data).expect("parsed once").tenant;
    let body = format!(
        r#"{{"payload":{},"type":{},"channel":{},"tenant":{}}}"#,
        message.payload.unwrap_or("null"),
        quoted(&message.msg_type),
        quoted(&message.channel),
        quoted(&tenant),
    );
    let again = PublishRequest::parse(body.as_bytes()).expect("rebuilt body");
    assert_eq!(again.tenant, tenant);
    assert_eq!(again.message(), Ok(message));

    let answer: serde_json::Value = serde_json::from_str(&publish_answer(seq)).expect("JSON");
    assert_eq!(answer["seq"].as_u64(), Some(seq));
});

/// What the body must read as: refusals in the documented order (not an object, tenant given
/// twice, tenant, a message field given twice, channel, type). Members the server does not read
/// may repeat.
fn expected(data: &[u8]) -> Result<PublishMessage<'_>, PublishError> {
    let members = Members::parse_slice(data).ok_or(PublishError::NotAnObject)?;
    if members.count("tenant") > 1 {
        return Err(PublishError::Duplicate("tenant"));
    }
    let text = |name| members.last(name).and_then(string);
    text("tenant").ok_or(PublishError::MissingTenant)?;
    for field in ["channel", "type", "payload"] {
        if members.count(field) > 1 {
            return Err(PublishError::Duplicate(field));
        }
    }
    let channel = text("channel").ok_or(PublishError::MissingChannel)?;
    if !(1..=256).contains(&channel.len()) {
        return Err(PublishError::Field(
            switchboard::protocol::check_channel("").expect_err("empty"),
        ));
    }
    let msg_type = text("type").ok_or(PublishError::MissingType)?;
    if !(1..=128).contains(&msg_type.len()) {
        return Err(PublishError::Field(
            switchboard::protocol::check_type("").expect_err("empty"),
        ));
    }
    let payload = members
        .last("payload")
        .map(|raw| raw.get())
        .filter(|raw| *raw != "null");
    Ok(PublishMessage {
        channel,
        msg_type,
        payload,
    })
}
