//! The backplane wire format: every kind round-trips, and malformed input is refused.

use super::*;

/// The header of a room message before its head, as `scripts::PUBLISH` writes it.
fn room_header(epoch: &str, seq: u64, except: Option<&str>) -> String {
    format!("m\t{epoch}\t{seq}\t{}\t", except.unwrap_or(""))
}

#[test]
fn a_room_message_carries_the_head_and_the_receiver_completes_the_frame() {
    use crate::protocol::{channel_message, channel_message_from_head, channel_message_head};
    let head = channel_message_head("news", "lo\tbby", Some("{\"a\":\"x\\ty\"}"));
    let published = format!("{}{head}", room_header("e1", 7, None));
    let Ok(Wire::Room { seq, head, .. }) = Wire::parse(&published) else {
        panic!("not a room message: {published}");
    };
    assert_eq!(
        channel_message_from_head(head, seq),
        channel_message("news", "lo\tbby", Some("{\"a\":\"x\\ty\"}"), 7)
    );
    // A node of an older build publishes the complete frame: it is delivered as it is.
    let frame = channel_message("news", "c", None, 8);
    let published = format!("{}{}", room_header("e1", 8, None), frame.as_str());
    let Ok(Wire::Room { seq, head, .. }) = Wire::parse(&published) else {
        panic!("not a room message: {published}");
    };
    assert_eq!(channel_message_from_head(head, seq), frame);
}

#[test]
fn every_kind_round_trips() {
    let frame = "{\"type\":\"t\",\"payload\":{\"a\":\t1}}";
    let head = "{\"type\":\"t\",\"channel\":\"c\",\"payload\":{\"a\":\t1},\"seq\":";
    let room = format!("{}{head}", room_header("e1", 42, Some("n-1")));
    assert_eq!(
        Wire::parse(&room),
        Ok(Wire::Room {
            epoch: "e1",
            seq: 42,
            except: Some("n-1"),
            head
        })
    );
    let no_except = format!("{}{head}", room_header("e1", 1, None));
    assert!(matches!(
        Wire::parse(&no_except),
        Ok(Wire::Room { except: None, .. })
    ));
    assert_eq!(
        Wire::parse(&signal(None, frame)),
        Ok(Wire::Signal {
            except: None,
            frame
        })
    );
    assert_eq!(
        Wire::parse(&to_connection("t", "n-2", frame)),
        Ok(Wire::ToConnection {
            tenant: "t",
            connection: "n-2",
            frame
        })
    );
    let odd_user = "a\tb5{é";
    assert_eq!(
        Wire::parse(&to_user("t", odd_user, frame)),
        Ok(Wire::ToUser {
            tenant: "t",
            user: odd_user,
            frame
        })
    );
    assert_eq!(
        Wire::parse(&close("t", "n-3", 4001, "bye\tnow")),
        Ok(Wire::Close {
            tenant: "t",
            connection: "n-3",
            code: 4001,
            reason: "bye\tnow"
        })
    );
    let attached = attach("t", "n-4", &[0, 1, 254, 255]);
    let Ok(Wire::Attach { hex, .. }) = Wire::parse(&attached) else {
        panic!("not an attach: {attached}");
    };
    assert_eq!(unhex(hex), Ok(vec![0, 1, 254, 255]));
    assert_eq!(
        Wire::parse(&membership(false, "t", "n-5", "room")),
        Ok(Wire::Membership {
            join: false,
            tenant: "t",
            connection: "n-5",
            channel: "room"
        })
    );
    assert_eq!(Wire::parse(&probe(7)), Ok(Wire::Probe { token: 7 }));
}

#[test]
fn malformed_messages_are_refused_not_misread() {
    for bad in [
        "",
        "m",
        "m\te\tnotanumber\t\t{}",
        "m\te\t1",
        "z\tx",
        "u\tt\t99\tshort",
        "u\tt\tx\tuser",
        "x\tt\tc\tcode\treason",
        "p\tx",
    ] {
        assert!(Wire::parse(bad).is_err(), "{bad:?} was accepted");
    }
    assert!(unhex("abc").is_err());
    assert!(unhex("zz").is_err());
}

/// Found by the `redis_wire` fuzz target: `u8::from_str_radix` takes a sign, so `+f` read as
/// the byte 0x0f. Hex is digits only, in either case.
#[test]
fn hex_is_digits_only() {
    assert_eq!(unhex("00ff7fA0"), Ok(vec![0x00, 0xff, 0x7f, 0xa0]));
    assert_eq!(unhex(""), Ok(vec![]));
    for bad in ["+f", "0f+f", "-0", " f", "f ", "0x", "é"] {
        assert!(unhex(bad).is_err(), "{bad:?} was accepted");
    }
    let Ok(Wire::Attach { hex, .. }) = Wire::parse("a\tt\tn2-3\t0f0f7f80c3+f80c3a9") else {
        panic!("an attachment update");
    };
    assert!(unhex(hex).is_err());
}
