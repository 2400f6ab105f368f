//! `raw-echo`: a raw-frame tenant's plugin that sends every text and binary message back to
//! its sender, unchanged. The Autobahn|Testsuite run (`scripts/autobahn`) goes through it.

use switchboard_sdk::{
    ConnInfo, Frame, HandlerError, Manifest, Message, Plugin, RawPlugin, export_raw_plugin,
};

/// The plugin.
pub struct RawEcho;

impl Plugin for RawEcho {
    fn describe() -> Manifest {
        // No envelope types: a raw-frame tenant has no envelopes.
        Manifest::new("raw-echo", env!("CARGO_PKG_VERSION"), &[])
    }

    fn on_message(_conn: ConnInfo, _msg: Message) -> Result<Option<String>, HandlerError> {
        Err(HandlerError::bad_request(
            "raw-echo handles raw frames only",
        ))
    }
}

impl RawPlugin for RawEcho {
    fn on_frame(_conn: ConnInfo, frame: Frame) -> Result<Vec<Frame>, HandlerError> {
        Ok(vec![frame])
    }
}

export_raw_plugin!(RawEcho);

#[cfg(test)]
mod tests {
    use switchboard_sdk::{Frame, RawPlugin, mock};

    use super::RawEcho;

    #[test]
    fn sends_back_what_it_got() {
        let conn = mock::conn("n-1", "u", serde_json::json!({}));
        for frame in [
            Frame::Text("héllo".to_owned()),
            Frame::Binary(vec![0, 255, 7]),
            Frame::Text(String::new()),
        ] {
            let answer = RawEcho::on_frame(conn.clone(), frame.clone()).expect("answers");
            assert_eq!(answer, vec![frame]);
        }
    }
}
