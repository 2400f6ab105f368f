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

/// The `since` of a `room:join` envelope with this payload.
fn since_of(payload: &str) -> Result<Option<u64>, SinceError> {
    let text = format!(r#"{{"type":"room:join","channel":"lobby","payload":{payload}}}"#);
    let envelope = Envelope::parse(&text).expect("a valid envelope");
    envelope.recovery_since()
}

#[test]
fn since_is_read_from_the_join_payload() {
    assert_eq!(since_of(r#"{"since":7}"#), Ok(Some(7)));
    assert_eq!(since_of(r#"{"since":0,"other":[1,2]}"#), Ok(Some(0)));
    assert_eq!(
        since_of(r#"{"since":18446744073709551615}"#),
        Ok(Some(u64::MAX))
    );
    assert_eq!(since_of(r#"{"since":null}"#), Ok(None));
    assert_eq!(since_of(r#"{"other":1}"#), Ok(None));
    assert_eq!(since_of(r#"[1,2]"#), Ok(None));
    assert_eq!(since_of(r#""7""#), Ok(None));
    assert_eq!(since_of("null"), Ok(None));
    for bad in [
        r#""7""#,
        "-1",
        "1.5",
        "18446744073709551616",
        "[7]",
        r#"{"n":7}"#,
    ] {
        let got = since_of(&format!(r#"{{"since":{bad}}}"#));
        assert_eq!(got, Err(SinceError::NotASeq), "{bad}");
    }
    assert_eq!(
        SinceError::NotASeq.to_string(),
        "`since` must be a non-negative integer"
    );
}

#[test]
fn a_deeply_nested_since_is_a_bad_request_not_ignored() {
    // As deep as the envelope parser lets through: the payload's own parse must not give up
    // silently and treat the join as one without recovery.
    let mut depth = 200;
    let text = loop {
        let since = format!("{}7{}", "[".repeat(depth), "]".repeat(depth));
        let text =
            format!(r#"{{"type":"room:join","channel":"lobby","payload":{{"since":{since}}}}}"#);
        if Envelope::parse(&text).is_ok() {
            break text;
        }
        depth -= 1;
    };
    let envelope = Envelope::parse(&text).expect("a valid envelope");
    assert!(envelope.recovery_since().is_err(), "depth {depth}");
    assert_eq!(
        SinceError::TooDeep.to_string(),
        "the `room:join` payload nests too deeply"
    );
}

#[test]
fn payloads_must_be_one_json_value() {
    for good in [
        "null",
        "1",
        r#""s""#,
        r#"{"a":[1,{"b":null}]}"#,
        " [1] ",
        "123456789012345678901234567890",
    ] {
        assert_eq!(validate_payload(good), Ok(()), "{good}");
    }
    // The parser's own words, position included (a plugin author reads them in its error).
    let cases = [
        ("", "EOF while parsing a value at line 1 column 0"),
        ("{", "EOF while parsing an object at line 1 column 1"),
        ("1 2", "trailing characters at line 1 column 3"),
        ("{'a':1}", "key must be a string at line 1 column 2"),
        ("nul", "EOF while parsing a value at line 1 column 3"),
    ];
    for (bad, message) in cases {
        let error = validate_payload(bad).expect_err(bad);
        assert_eq!(error.to_string(), message, "{bad:?}");
    }
}

#[test]
fn a_head_and_its_seq_make_the_channel_message() {
    let cases: [(&str, &str, Option<&str>, u64); 4] = [
        ("news", "lo\"bby", Some(r#"{"a":1}"#), 9),
        ("news", "c", None, 1),
        ("t", "tab\there", Some(r#""x\ty""#), 0),
        ("t", "c", Some("[]"), u64::MAX),
    ];
    for (msg_type, channel, payload, seq) in cases {
        let head = channel_message_head(msg_type, channel, payload);
        assert!(head.ends_with(r#","seq":"#), "{head}");
        let frame = channel_message_from_head(&head, seq);
        assert_eq!(frame, channel_message(msg_type, channel, payload, seq));
        let parsed: serde_json::Value = serde_json::from_str(frame.as_str()).expect("json");
        assert_eq!(parsed["seq"], seq, "{}", frame.as_str());
    }
}

#[test]
fn a_complete_frame_of_an_older_build_is_taken_as_it_is() {
    let frame = r#"{"type":"news","channel":"c","payload":{"seq":1},"seq":12}"#;
    assert_eq!(channel_message_from_head(frame, 12).as_str(), frame);
    // The seq given alongside does not rewrite what the frame says.
    assert_eq!(channel_message_from_head(frame, 13).as_str(), frame);
}

mod api {
    //! The HTTP API bodies.

    use super::super::api::*;
    use super::super::http_error_body;

    /// Parses a publish body in both steps; `Ok` is `(tenant, channel, type, payload)`, `Err`
    /// the 400's message.
    fn publish(body: &str) -> Result<(String, String, String, Option<String>), String> {
        let request = PublishRequest::parse(body.as_bytes()).map_err(|error| error.to_string())?;
        let tenant = request.tenant.clone();
        let message = request.message().map_err(|error| error.to_string())?;
        Ok((
            tenant,
            message.channel,
            message.msg_type,
            message.payload.map(str::to_owned),
        ))
    }

    fn ok(
        tenant: &str,
        channel: &str,
        msg_type: &str,
        payload: Option<&str>,
    ) -> Result<(String, String, String, Option<String>), String> {
        Ok((
            tenant.to_owned(),
            channel.to_owned(),
            msg_type.to_owned(),
            payload.map(str::to_owned),
        ))
    }

    /// Found by the `publish_body` fuzz target: a field given twice used to count by its last
    /// occurrence (the envelope refuses it), so a proxy reading the first one would disagree.
    #[test]
    fn a_field_given_twice_is_refused_in_checking_order() {
        let twice = |field: &str| Err(format!("`{field}` is given twice"));
        assert_eq!(
            publish(r#"{"tenant":"a","tenant":"b","channel":"c","type":"t"}"#),
            twice("tenant")
        );
        // The tenant is read first, so its own refusals come before a message field's.
        assert_eq!(
            PublishRequest::parse(br#"{"channel":"c","channel":"d","type":"t"}"#)
                .map(|request| request.tenant)
                .map_err(|error| error.to_string()),
            Err("`tenant` (a string) is required".to_owned())
        );
        assert_eq!(
            publish(r#"{"tenant":"a","channel":"c","type":"t","channel":"d"}"#),
            twice("channel")
        );
        assert_eq!(
            publish(r#"{"tenant":"a","type":"t","type":"u","channel":"c","channel":"d"}"#),
            twice("channel")
        );
        assert_eq!(
            publish(r#"{"tenant":"a","channel":"c","type":"t","payload":1,"payload":2}"#),
            twice("payload")
        );
        // Fields the server does not read may repeat, as before.
        assert_eq!(
            publish(r#"{"tenant":"a","channel":"c","type":"t","x":1,"x":2}"#),
            ok("a", "c", "t", None)
        );
    }

    #[test]
    fn publish_bodies_parse_with_the_payload_byte_for_byte() {
        let cases = [
            (
                r#"{"tenant":"t","channel":"c","type":"news","payload":{"b":1,"a":2}}"#,
                ok("t", "c", "news", Some(r#"{"b":1,"a":2}"#)),
            ),
            (
                r#"{"payload":123456789012345678901234567890,"type":"n","channel":"c","tenant":"t"}"#,
                ok("t", "c", "n", Some("123456789012345678901234567890")),
            ),
            (
                r#"{"tenant":"t","channel":"c","type":"n","payload":[ 1 , 2 ]}"#,
                ok("t", "c", "n", Some("[ 1 , 2 ]")),
            ),
            (
                r#"{"tenant":"t","channel":"c","type":"n","payload":null}"#,
                ok("t", "c", "n", None),
            ),
            (
                r#"{"tenant":"t","channel":"c","type":"n"}"#,
                ok("t", "c", "n", None),
            ),
            (
                r#"{"tenant":"t","channel":"caf\u00e9","type":"n","extra":{"x":1}}"#,
                ok("t", "café", "n", None),
            ),
        ];
        for (body, expect) in cases {
            assert_eq!(publish(body), expect, "{body}");
        }
    }

    #[test]
    fn publish_bodies_are_refused_with_the_api_messages_in_order() {
        let not_an_object = Err("the body must be a JSON object".to_owned());
        let tenant = Err("`tenant` (a string) is required".to_owned());
        let channel = Err("`channel` (a string) is required".to_owned());
        let msg_type = Err("`type` (a string) is required".to_owned());
        let channel_length = Err("`channel` must be 1..256 bytes".to_owned());
        let type_length = Err("`type` must be 1..128 bytes".to_owned());
        let long_channel = format!(
            r#"{{"tenant":"t","channel":"{}","type":"n"}}"#,
            "c".repeat(257)
        );
        let long_type = format!(
            r#"{{"tenant":"t","channel":"c","type":"{}"}}"#,
            "t".repeat(129)
        );
        let cases = [
            ("", not_an_object.clone()),
            ("{", not_an_object.clone()),
            ("[]", not_an_object.clone()),
            (r#""text""#, not_an_object.clone()),
            (r#"{"tenant":"t"} x"#, not_an_object.clone()),
            ("{}", tenant.clone()),
            (r#"{"tenant":5,"channel":"c","type":"n"}"#, tenant.clone()),
            (r#"{"tenant":null}"#, tenant.clone()),
            // The tenant is read first: every other field may be wrong as well.
            (r#"{"channel":"","type":5}"#, tenant),
            (r#"{"tenant":"t"}"#, channel.clone()),
            (r#"{"tenant":"t","channel":["c"],"type":"n"}"#, channel),
            (
                r#"{"tenant":"t","channel":"","type":"n"}"#,
                channel_length.clone(),
            ),
            (&long_channel, channel_length.clone()),
            // The channel is checked before the type.
            (r#"{"tenant":"t","channel":""}"#, channel_length),
            (r#"{"tenant":"t","channel":"c"}"#, msg_type.clone()),
            (r#"{"tenant":"t","channel":"c","type":{}}"#, msg_type),
            (
                r#"{"tenant":"t","channel":"c","type":""}"#,
                type_length.clone(),
            ),
            (&long_type, type_length),
        ];
        for (body, expect) in cases {
            assert_eq!(publish(body), expect, "{body}");
        }
        // The bytes of a body that is not UTF-8 are not an object either.
        assert_eq!(
            PublishRequest::parse(b"{\"tenant\":\"\xff\"}").map(|request| request.tenant),
            Err(PublishError::NotAnObject)
        );
    }

    #[test]
    fn a_publish_is_answered_with_its_seq() {
        assert_eq!(publish_answer(1), r#"{"seq":1}"#);
        assert_eq!(publish_answer(u64::MAX), r#"{"seq":18446744073709551615}"#);
    }

    fn plugin<'a>(types: &'a [String]) -> PluginInfo<'a> {
        PluginInfo {
            calls: 3,
            compile_ms: 12.5,
            errors: 1,
            load_ms: 20.0,
            loaded_at_ms: 1_700_000_000_000,
            name: "chat",
            path: "upload:chat".to_owned(),
            sha256: "ab12",
            source: "api",
            tier: "baseline",
            types,
            version: "1.2.0",
            yields: 0,
        }
    }

    #[test]
    fn plugins_are_described_as_the_api_always_did() {
        let types = ["chat:send".to_owned(), "chat:\"typing\"".to_owned()];
        let info = plugin(&types);
        // What the API answered before this type existed: a `serde_json` map, keys sorted.
        let before = serde_json::json!({
            "name": "chat",
            "version": "1.2.0",
            "types": types,
            "sha256": "ab12",
            "source": "api",
            "path": "upload:chat",
            "loadedAtMs": 1_700_000_000_000_u64,
            "compileMs": 12.5,
            "loadMs": 20.0,
            "tier": "baseline",
            "calls": 3,
            "errors": 1,
            "yields": 0,
        });
        assert_eq!(info.to_json(), before.to_string());
        assert_eq!(
            info.to_json(),
            r#"{"calls":3,"compileMs":12.5,"errors":1,"loadMs":20.0,"loadedAtMs":1700000000000,"name":"chat","path":"upload:chat","sha256":"ab12","source":"api","tier":"baseline","types":["chat:send","chat:\"typing\""],"version":"1.2.0","yields":0}"#
        );
        let serving = NodeServing {
            node: "n1",
            version: Some("1.2.0"),
            sha256: Some("ab12"),
            tier: Some("optimized"),
            error: None,
        };
        let list = [
            ListedPlugin {
                info: info.clone(),
                nodes: vec![serving],
            },
            ListedPlugin {
                info,
                nodes: Vec::new(),
            },
        ];
        let mut with_nodes = before.clone();
        with_nodes["nodes"] = serde_json::json!([
            {"node": "n1", "version": "1.2.0", "sha256": "ab12", "tier": "optimized", "error": null}
        ]);
        let mut without = before;
        without["nodes"] = serde_json::json!([]);
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&plugin_list(&list)).expect("json"),
            serde_json::Value::from(vec![with_nodes, without])
        );
        assert_eq!(plugin_list(&[]), "[]");
    }

    #[test]
    fn health_and_refusal_bodies() {
        assert_eq!(status_body("ok"), r#"{"status":"ok"}"#);
        assert_eq!(status_body("ready"), r#"{"status":"ready"}"#);
        // The body the listener sheds with when even its refusal reserve is spent.
        assert_eq!(
            http_error_body("unavailable", "node at its open socket capacity"),
            r#"{"error":"unavailable","message":"node at its open socket capacity"}"#
        );
    }
}

#[test]
fn frames_cross_the_backplane_as_wire_text_and_come_back_the_same() {
    let frames = [
        message("chat", Some("lobby"), "{\"a\":1}"),
        Frame::raw_text("plain text".to_owned()),
        Frame::raw_text(String::new()),
        // Text that starts with the escape character itself stays text.
        Frame::raw_text("\u{1}b not base64".to_owned()),
        Frame::raw_text("\u{1}t".to_owned()),
        Frame::binary((0..=255u8).collect::<Vec<u8>>()),
        Frame::binary(Vec::new()),
    ];
    for frame in frames {
        let wire = frame.wire_text();
        assert_eq!(Frame::from_wire(&wire).as_ref(), Some(&frame), "{wire:?}");
    }
    // An envelope frame is carried as itself, as older nodes carried it.
    let envelope = message("chat", None, "{}");
    assert_eq!(envelope.wire_text(), envelope.as_str());
    assert!(!Frame::binary(vec![1u8]).wire_text().starts_with('{'));
    // Bad wire text is refused, not turned into something else.
    assert_eq!(Frame::from_wire("\u{1}b!!not base64!!"), None);
    assert_eq!(Frame::from_wire("\u{1}x"), None);
    assert_eq!(Frame::from_wire("\u{1}"), None);
}

#[test]
fn a_binary_frame_goes_on_the_socket_as_binary() {
    assert_eq!(
        Frame::binary(vec![1u8, 2]).into_message(),
        Message::binary(vec![1u8, 2])
    );
    assert_eq!(
        Frame::raw_text("hi".to_owned()).into_message(),
        Message::text("hi")
    );
    assert!(Frame::binary(vec![1u8]).is_binary());
    assert_eq!(Frame::binary(vec![1u8, 2, 3]).len(), 3);
    assert_eq!(Frame::binary(vec![1u8]).as_str(), "");
}

#[test]
fn a_string_is_quoted_exactly_as_serde_json_quotes_it() {
    let cases = [
        "",
        "c-17",
        "a/b é ✓ \u{7f}",
        "say \"hi\"",
        "back\\slash",
        "tab\tnew\nline\u{1}",
        "\u{1f}",
        " ",
    ];
    for value in cases {
        let mut out = String::new();
        json_string(&mut out, value);
        let expected = serde_json::to_string(value).expect("a string serialises");
        assert_eq!(out, expected, "{value:?}");
    }
}

#[test]
fn an_ack_carries_its_payload_as_is() {
    let frame = ack("c\"1", Some(r#"{"n":[1,2]}"#));
    let value: serde_json::Value = serde_json::from_str(frame.as_str()).expect("JSON");
    assert_eq!(
        value,
        serde_json::json!({"type": "ack", "correlationId": "c\"1", "payload": {"n": [1, 2]}})
    );
}
