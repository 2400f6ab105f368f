//! Envelope parsing and frame encoding.

use super::*;

/// `(type, channel, payload, correlationId)` of a parsed envelope.
type Fields<'a> = (&'a str, Option<&'a str>, Option<&'a str>, Option<&'a str>);

/// Parses `input`; `expect` is the envelope's fields or the error text.
fn check(input: &str, expect: Result<Fields<'_>, &str>) {
    let parsed = Envelope::parse(input).map(|envelope| {
        (
            envelope.msg_type.into_owned(),
            envelope.channel.map(Cow::into_owned),
            envelope.payload.map(|raw| raw.get().to_owned()),
            envelope.correlation_id.map(Cow::into_owned),
        )
    });
    let parsed = parsed.map_err(|error| error.to_string());
    let expect = expect
        .map(|(t, c, p, id)| {
            (
                t.to_owned(),
                c.map(str::to_owned),
                p.map(str::to_owned),
                id.map(str::to_owned),
            )
        })
        .map_err(str::to_owned);
    assert_eq!(parsed, expect, "input: {input}");
}

#[test]
fn valid_envelopes() {
    check(r#"{"type":"ping"}"#, Ok(("ping", None, None, None)));
    check(
        r#"{"type":"chat:send","channel":"lobby","payload":{"text":"hi"},"correlationId":"42"}"#,
        Ok((
            "chat:send",
            Some("lobby"),
            Some(r#"{"text":"hi"}"#),
            Some("42"),
        )),
    );
    check(
        r#" {"type":"a","payload":[1,2]} "#,
        Ok(("a", None, Some("[1,2]"), None)),
    );
    check(
        r#"{"type":"a","payload":"s"}"#,
        Ok(("a", None, Some(r#""s""#), None)),
    );
    check(
        r#"{"type":"a\u00e9","channel":"caf\u00e9"}"#,
        Ok(("aé", Some("café"), None, None)),
    );
}

#[test]
fn null_means_absent_and_unknown_fields_are_ignored() {
    check(
        r#"{"type":"a","channel":null,"payload":null,"correlationId":null}"#,
        Ok(("a", None, None, None)),
    );
    check(
        r#"{"type":"a","extra":{"x":1}}"#,
        Ok(("a", None, None, None)),
    );
}

#[test]
fn refuses_what_is_not_an_object() {
    check("", Err("not a JSON object"));
    check("[]", Err("not a JSON object"));
    check(r#"["ping"]"#, Err("not a JSON object"));
    check(r#""ping""#, Err("not a JSON object"));
    check("42", Err("not a JSON object"));
    check("{", Err("EOF while parsing an object"));
    check(r#"{"type":"a"} x"#, Err("trailing characters"));
}

#[test]
fn refuses_wrong_types_and_missing_type() {
    check("{}", Err("missing `type`"));
    check(r#"{"type":null}"#, Err("missing `type`"));
    check(
        r#"{"type":1}"#,
        Err("invalid type: integer `1`, expected a string"),
    );
    check(
        r#"{"type":"a","channel":5}"#,
        Err("invalid type: integer `5`, expected a string"),
    );
    check(
        r#"{"type":"a","correlationId":{}}"#,
        Err("invalid type: map, expected a string"),
    );
}

#[test]
fn enforces_lengths_in_bytes() {
    let at_limit = format!(r#"{{"type":"{}"}}"#, "t".repeat(128));
    assert!(Envelope::parse(&at_limit).is_ok());
    let over = format!(r#"{{"type":"{}"}}"#, "t".repeat(129));
    check(&over, Err("`type` must be 1..128 bytes"));
    check(r#"{"type":""}"#, Err("`type` must be 1..128 bytes"));
    // 86 three-byte characters are 258 bytes: over the channel limit though only 86 chars.
    let wide = format!(r#"{{"type":"a","channel":"{}"}}"#, "€".repeat(86));
    check(&wide, Err("`channel` must be 1..256 bytes"));
    let channel = format!(r#"{{"type":"a","channel":"{}"}}"#, "c".repeat(256));
    assert!(Envelope::parse(&channel).is_ok());
    let id = format!(r#"{{"type":"a","correlationId":"{}"}}"#, "i".repeat(129));
    check(&id, Err("`correlationId` must be 1..128 bytes"));
}

#[test]
fn encodes_replies() {
    assert_eq!(
        ack("7", Some(r#"{"ok":true}"#)).as_str(),
        r#"{"type":"ack","correlationId":"7","payload":{"ok":true}}"#
    );
    assert_eq!(
        ack("7", None).as_str(),
        r#"{"type":"ack","correlationId":"7"}"#
    );
    assert_eq!(
        error(Some("x\"y"), ErrorCode::NotMember, "not a member of `a`").as_str(),
        r#"{"type":"error","correlationId":"x\"y","payload":{"code":"not_member","message":"not a member of `a`"}}"#
    );
    assert_eq!(
        error(None, ErrorCode::UnknownType, "m").as_str(),
        r#"{"type":"error","payload":{"code":"unknown_type","message":"m"}}"#
    );
    assert_eq!(pong(None).as_str(), r#"{"type":"pong"}"#);
    assert_eq!(
        pong(Some("1")).as_str(),
        r#"{"type":"pong","correlationId":"1"}"#
    );
}

#[test]
fn encodes_channel_and_presence_frames() {
    assert_eq!(
        channel_message("news", "lo\"bby", Some(r#"{"a":1}"#), 9).as_str(),
        r#"{"type":"news","channel":"lo\"bby","payload":{"a":1},"seq":9}"#
    );
    assert_eq!(
        channel_message("news", "c", None, 1).as_str(),
        r#"{"type":"news","channel":"c","payload":null,"seq":1}"#
    );
    assert_eq!(
        presence(PresenceChange::Leave, "c", "u", "n-1").as_str(),
        r#"{"type":"presence:leave","channel":"c","payload":{"userId":"u","connectionId":"n-1"}}"#
    );
    let welcome = welcome("n-1", "u", "default", 0.2, 10.0);
    let parsed: serde_json::Value = serde_json::from_str(welcome.as_str()).expect("json");
    assert_eq!(
        parsed,
        serde_json::json!({"type":"welcome","payload":{"connectionId":"n-1","userId":"u",
            "tenant":"default","heartbeatSec":0.2,"heartbeatTimeoutSec":10.0}})
    );
}

#[test]
fn encodes_join_acks() {
    let members = [MemberInfo {
        user_id: "u".into(),
        connection_id: "n-1".into(),
    }];
    let with_members = JoinAck {
        channel: "c",
        members: Some(&members),
        recovered: None,
    };
    assert_eq!(
        with_members.to_json(),
        r#"{"channel":"c","members":[{"userId":"u","connectionId":"n-1"}]}"#
    );
    let recovered = JoinAck {
        channel: "c",
        members: None,
        recovered: Some(false),
    };
    assert_eq!(recovered.to_json(), r#"{"channel":"c","recovered":false}"#);
}

#[test]
fn close_reasons_map_to_codes_and_fit_a_close_frame() {
    let cases = [
        (CloseReason::Normal, 1000),
        (CloseReason::ShuttingDown, 1001),
        (CloseReason::ProtocolError("x".into()), 1002),
        (CloseReason::BinaryFrame, 1003),
        (CloseReason::InvalidUtf8, 1007),
        (CloseReason::InvalidEnvelope("x".into()), 1008),
        (CloseReason::RateLimited, 1008),
        (CloseReason::TooBig, 1009),
        (CloseReason::Internal, 1011),
        (CloseReason::SlowConsumer, 1013),
    ];
    for (reason, code) in cases {
        assert_eq!(reason.code(), code, "{reason:?}");
    }
    assert_eq!(CloseReason::ShuttingDown.reason(), "server shutting down");
    assert_eq!(CloseReason::RateLimited.reason(), "rate limit exceeded");
    assert_eq!(CloseReason::SlowConsumer.reason(), "slow consumer");
    assert!(
        CloseReason::InvalidEnvelope("x".into())
            .reason()
            .starts_with("invalid envelope")
    );
    let long = CloseReason::InvalidEnvelope("é".repeat(100)).reason();
    assert!(long.len() <= 123 && long.starts_with("invalid envelope: "));
}
