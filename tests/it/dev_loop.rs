//! `switchboard dev` on a crate from `switchboard plugin new`: it builds the crate, serves it,
//! prints a working token, and swaps in a new build after a source change, while a client stays
//! connected. The builds go to `plugins/target`, where the example plugins' dependencies are.

use std::process::Stdio;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::time::{Instant, timeout};
use tokio_tungstenite::tungstenite::Message;

use crate::external::{free_port, repo_root};
use crate::support::{binary, try_upgrade, upgrade_request};

/// Sends a correlated `hello-dev:hello` and returns the greeting in its ack.
async fn greeting(ws: &mut crate::support::WsClient, id: u32) -> String {
    let request = json!({"type": "hello-dev:hello", "correlationId": id.to_string()});
    ws.send(Message::text(request.to_string()))
        .await
        .expect("sent");
    loop {
        let frame = timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("a reply in time")
            .expect("open")
            .expect("a frame");
        let Message::Text(text) = frame else { continue };
        let reply: Value = serde_json::from_str(text.as_str()).expect("JSON");
        if reply["correlationId"] == json!(id.to_string()) {
            assert_eq!(reply["type"], "ack", "{reply}");
            return reply["payload"]["greeting"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
        }
    }
}

/// `switchboard dev`, stopped with SIGINT even when the test fails: a SIGKILL would leave its
/// server running (it stops the server itself on SIGINT).
struct Dev(tokio::process::Child);

impl Drop for Dev {
    fn drop(&mut self) {
        let Some(pid) = self.0.id() else { return };
        let _ = std::process::Command::new("kill")
            .args(["-INT", &pid.to_string()])
            .status();
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while std::time::Instant::now() < deadline {
            if !matches!(self.0.try_wait(), Ok(None)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.0.start_kill();
    }
}

#[tokio::test]
async fn dev_serves_a_new_crate_and_swaps_in_each_change() {
    let dir = std::env::temp_dir().join(format!("switchboard-dev-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let crate_dir = dir.join("hello-dev");
    let made = std::process::Command::new(binary())
        .args(["plugin", "new", "hello-dev", "--dir"])
        .arg(&crate_dir)
        .status()
        .expect("plugin new runs");
    assert!(made.success());

    let port = free_port();
    let mut dev = Dev(tokio::process::Command::new(binary())
        .args(["dev", "--port", &port.to_string(), "--dir"])
        .arg(&crate_dir)
        .env("CARGO_TARGET_DIR", repo_root().join("plugins/target"))
        .stdout(Stdio::piped())
        .spawn()
        .expect("dev starts"));
    let stdout = dev.0.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let token = timeout(Duration::from_secs(150), async {
        while let Some(line) = lines.next_line().await.expect("readable") {
            if let Some(rest) = line.strip_prefix("dev: token (user `dev`, 24 h): ") {
                return rest.to_owned();
            }
        }
        panic!("dev exited before serving");
    })
    .await
    .expect("served in time");

    let bearer = format!("Bearer {token}");
    let url = format!("ws://127.0.0.1:{port}/ws/dev");
    let (mut ws, _) = try_upgrade(upgrade_request(&url, &[("authorization", &bearer)]))
        .await
        .expect("the printed token works");
    assert_eq!(greeting(&mut ws, 1).await, "hello, dev");

    let source = crate_dir.join("src/lib.rs");
    let code = std::fs::read_to_string(&source).expect("source");
    std::fs::write(&source, code.replace("\"hello, {name}\"", "\"hi, {name}\"")).expect("edited");
    let deadline = Instant::now() + Duration::from_secs(150);
    let mut id = 2;
    while greeting(&mut ws, id).await != "hi, dev" {
        assert!(Instant::now() < deadline, "the change was never swapped in");
        tokio::time::sleep(Duration::from_millis(500)).await;
        id += 1;
    }

    let pid = dev.0.id().expect("running").to_string();
    let _ = std::process::Command::new("kill")
        .args(["-INT", &pid])
        .status();
    let exit = timeout(Duration::from_secs(20), dev.0.wait())
        .await
        .expect("dev stopped in time")
        .expect("wait");
    assert!(exit.success(), "{exit:?}");
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_file(
        repo_root().join("plugins/target/wasm32-wasip2/release/hello_dev.wasm"),
    );
}
