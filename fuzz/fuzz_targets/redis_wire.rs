//! What the Redis backplane reads from other nodes and from Redis: pub/sub messages
//! (`backplane::redis::wire`), history entries and presence values (`entries`), on any text.
//! A message that decodes encodes back (with the node's encoders, or the publish script's
//! format for a room message) to text that decodes to the same message.

#![no_main]

use libfuzzer_sys::fuzz_target;
use switchboard::fuzzing::{
    Wire, attach, close, history_entry, membership, presence_user, presence_value, probe, signal,
    to_connection, to_user, unhex,
};
use switchboard::protocol::channel_message_from_head;

fuzz_target!(|data: &[u8]| {
    // A payload that is not UTF-8 is dropped before it is parsed (`dispatch::text`).
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };

    if let Ok(message) = Wire::parse(text) {
        let encoded = encode(&message);
        let again = Wire::parse(&encoded).unwrap_or_else(|error| panic!("{encoded:?}: {error}"));
        match (&message, &again) {
            // An attachment's hex comes back in lower case.
            (
                Wire::Attach {
                    tenant,
                    connection,
                    hex,
                },
                Wire::Attach {
                    tenant: tenant_again,
                    connection: connection_again,
                    hex: hex_again,
                },
            ) => {
                assert_eq!((tenant, connection), (tenant_again, connection_again));
                assert!(
                    hex.eq_ignore_ascii_case(hex_again),
                    "{hex:?} came back as {hex_again:?}"
                );
            }
            _ => assert_eq!(again, message, "{encoded:?}"),
        }
        if let Wire::Attach { hex, .. } = message
            && let Ok(bytes) = unhex(hex)
        {
            // Hex is two digits a byte, in either case, and nothing else.
            assert_eq!(bytes.len() * 2, hex.len());
            assert!(
                hex.bytes().all(|byte| byte.is_ascii_hexdigit()),
                "{hex:?} read as {bytes:?}"
            );
        }
    }

    // `seq<TAB>millis<TAB>head`, as the publish script stores it.
    if let Some((seq, frame)) = history_entry(text) {
        let mut fields = text.splitn(3, '\t');
        assert_eq!(fields.next().and_then(|seq| seq.parse().ok()), Some(seq));
        let head = fields.nth(1).expect("three fields");
        assert_eq!(frame, channel_message_from_head(head, seq));
        assert_eq!(
            history_entry(&format!("{seq}\t0\t{head}")),
            Some((seq, frame))
        );
    }

    // `node<TAB>user`: a node id never holds a tab; a user id may.
    if let Some(user) = presence_user(text) {
        let node = &text[..text.len() - user.len() - 1];
        assert!(!node.contains('\t'));
        assert_eq!(presence_value(node, user), text);
        assert_eq!(presence_user(&presence_value("node", user)), Some(user));
    }
});

/// The message as the node (or, for a room message, the publish script) writes it.
fn encode(message: &Wire<'_>) -> String {
    match *message {
        Wire::Room {
            epoch,
            seq,
            except,
            head,
        } => format!("m\t{epoch}\t{seq}\t{}\t{head}", except.unwrap_or("")),
        Wire::Signal { except, frame } => signal(except, frame),
        Wire::ToConnection {
            tenant,
            connection,
            frame,
        } => to_connection(tenant, connection, frame),
        Wire::ToUser {
            tenant,
            user,
            frame,
        } => to_user(tenant, user, frame),
        Wire::Close {
            tenant,
            connection,
            code,
            reason,
        } => close(tenant, connection, code, reason),
        Wire::Attach {
            tenant,
            connection,
            hex,
        } => match unhex(hex) {
            Ok(bytes) => attach(tenant, connection, &bytes),
            // Refused when applied; carried as it is.
            Err(_) => format!("a\t{tenant}\t{connection}\t{hex}"),
        },
        Wire::Membership {
            join,
            tenant,
            connection,
            channel,
        } => membership(join, tenant, connection, channel),
        Wire::Probe { token } => probe(token),
    }
}
