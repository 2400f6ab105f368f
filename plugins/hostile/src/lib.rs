//! `hostile`: a test fixture that misbehaves on purpose, one way per message type, so tests can
//! show that a trap or an overrun ends only that call.

use switchboard_sdk::{
    ConnInfo, Frame, HandlerError, LogLevel, Manifest, Message, Plugin, RawPlugin, env,
    export_raw_plugin, frames, log, realtime,
};

/// The plugin.
pub struct Hostile;

#[inline(never)]
fn recurse(depth: u64, trail: &mut [u64; 64]) -> u64 {
    // The array keeps each frame large and the recursion impossible to turn into a loop.
    trail[(depth % 64) as usize] = depth;
    if depth == u64::MAX {
        return 0;
    }
    recurse(depth + 1, trail) + trail[(depth % 7) as usize]
}

impl Plugin for Hostile {
    fn describe() -> Manifest {
        Manifest::new(
            "hostile",
            env!("CARGO_PKG_VERSION"),
            &[
                "hostile:loop",
                "hostile:alloc",
                "hostile:recurse",
                "hostile:panic",
                "hostile:flood",
                "hostile:huge-reply",
                "hostile:ok",
                "hostile:poke",
                "hostile:escape",
                "hostile:log",
                "hostile:spin",
            ],
        )
    }

    fn on_message(conn: ConnInfo, msg: Message) -> Result<Option<String>, HandlerError> {
        match msg.msg_type.as_str() {
            "hostile:loop" => {
                let mut counter: u64 = 0;
                loop {
                    counter = std::hint::black_box(counter.wrapping_add(1));
                }
            }
            "hostile:alloc" => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(vec![1u8; 1 << 20]);
                    std::hint::black_box(&hoard);
                }
            }
            "hostile:recurse" => {
                let mut trail = [0u64; 64];
                Ok(Some(recurse(0, &mut trail).to_string()))
            }
            "hostile:panic" => panic!("hostile plugin panics on purpose"),
            "hostile:spin" => {
                // Busy for the payload's milliseconds of wall time, then answers them.
                let millis: u64 = msg.payload()?;
                let until = env::now_ms().saturating_add(millis);
                while env::now_ms() < until {
                    for _ in 0..1_000 {
                        std::hint::spin_loop();
                    }
                }
                Ok(Some(millis.to_string()))
            }
            "hostile:log" => {
                // Fields of their own, one that tries to pass for the host's `tenant`, then a
                // line with more fields than the host keeps apart.
                log::with_fields(
                    LogLevel::Warn,
                    "hostile logs with fields",
                    &[("poll_id", &7), ("choice", &"b c"), ("tenant", &"evil")],
                );
                let many: Vec<(String, String)> = (0..20)
                    .map(|index| (format!("f{index}"), index.to_string()))
                    .collect();
                log::log(LogLevel::Warn, "hostile logs too many fields", &many);
                Ok(None)
            }
            "hostile:flood" => {
                let mut sent = 0u32;
                let mut refused = None;
                for _ in 0..100_000 {
                    match realtime::send(&conn.id, "flood", None, "{}") {
                        Ok(()) => sent += 1,
                        Err(error) => {
                            refused = Some(format!("{error:?}"));
                            break;
                        }
                    }
                }
                Ok(Some(format!(
                    r#"{{"sent":{sent},"refused":{:?}}}"#,
                    refused.unwrap_or_default()
                )))
            }
            "hostile:huge-reply" => Ok(Some(format!("\"{}\"", "x".repeat(8 << 20)))),
            "hostile:escape" => {
                // Everything outside the host API must be out of reach.
                let files = std::fs::read_dir("/").map(|entries| entries.count()).ok();
                let secret = std::fs::read_to_string("/etc/passwd").ok();
                let vars = std::env::vars().count();
                let args = std::env::args().count();
                let network = std::net::TcpStream::connect("127.0.0.1:80").is_ok();
                Ok(Some(format!(
                    r#"{{"files":{},"secret":{},"vars":{vars},"args":{args},"network":{network}}}"#,
                    files.is_some(),
                    secret.is_some()
                )))
            }
            "hostile:poke" => {
                // Tries to reach a connection named in the payload, whatever its tenant.
                let target: String = msg.payload()?;
                realtime::send(&target, "poke", None, "{}")?;
                realtime::join(&target, "stolen")?;
                Ok(Some("\"poked\"".to_owned()))
            }
            _ => Ok(Some("\"ok\"".to_owned())),
        }
    }
}

/// In a raw-frame tenant, a text frame names the misbehaviour; anything else is echoed.
impl RawPlugin for Hostile {
    fn on_frame(conn: ConnInfo, frame: Frame) -> Result<Vec<Frame>, HandlerError> {
        let Frame::Text(command) = &frame else {
            return Ok(vec![frame]);
        };
        match command.as_str() {
            "panic" => panic!("hostile plugin panics on a frame on purpose"),
            "loop" => {
                let mut counter: u64 = 0;
                loop {
                    counter = std::hint::black_box(counter.wrapping_add(1));
                }
            }
            "error" => Err(HandlerError::bad_request("hostile refuses this frame")),
            // One byte over the default message size limit (1 MiB).
            "huge" => Ok(vec![Frame::Binary(vec![7; (1 << 20) + 1])]),
            // More answers than any outbox a test sets holds.
            "flood" => Ok((0..5_000).map(|i| Frame::Text(i.to_string())).collect()),
            // A frame to a connection of another tenant (or none): the host must refuse it.
            poke if poke.starts_with("poke ") => {
                let answer = match frames::send(&poke[5..], &Frame::Text("poked".to_owned())) {
                    Ok(()) => "sent".to_owned(),
                    Err(error) => HandlerError::from(error).code,
                };
                Ok(vec![Frame::Text(answer)])
            }
            "whoami" => Ok(vec![Frame::Text(conn.id)]),
            _ => Ok(vec![frame]),
        }
    }
}

export_raw_plugin!(Hostile);
