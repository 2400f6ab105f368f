//! `switchboard plugin new`: a plugin crate that builds and tests as it is, with typed
//! handlers, a native test against the SDK's mock host, and the commands in its README.

use std::path::{Path, PathBuf};

/// Why a plugin crate was not made.
#[derive(Debug, thiserror::Error)]
pub enum ScaffoldError {
    /// The name cannot be a plugin's.
    #[error("`{0}` is not a plugin name: use 1 to 64 of a-z 0-9 - _, starting with a letter")]
    Name(String),
    /// The folder is there already.
    #[error("{0} already exists; choose another name or folder")]
    Exists(PathBuf),
    /// No SDK at the path given.
    #[error(
        "no switchboard-sdk at {0} (its Cargo.toml is missing): pass --sdk with the `sdk` folder of a Switchboard checkout"
    )]
    Sdk(PathBuf),
    /// Writing a file failed.
    #[error("writing {path}: {error}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        error: std::io::Error,
    },
}

/// Where the SDK of the checkout this binary was built from is, if it is still there.
pub fn built_in_sdk() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../sdk")
}

/// Makes the crate of plugin `name` in folder `dir` (which must not exist), depending on the
/// SDK at `sdk`. Returns the files written.
pub fn new_plugin(name: &str, dir: &Path, sdk: &Path) -> Result<Vec<PathBuf>, ScaffoldError> {
    let valid = name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
    if !valid {
        return Err(ScaffoldError::Name(name.to_owned()));
    }
    if dir.exists() {
        return Err(ScaffoldError::Exists(dir.to_owned()));
    }
    let sdk = std::fs::canonicalize(sdk).map_err(|_| ScaffoldError::Sdk(sdk.to_owned()))?;
    if !sdk.join("Cargo.toml").is_file() {
        return Err(ScaffoldError::Sdk(sdk));
    }
    let files = [
        ("Cargo.toml", cargo_toml(name, &sdk)),
        ("src/lib.rs", lib_rs(name)),
        ("README.md", readme(name)),
        (".gitignore", "/target\n".to_owned()),
    ];
    let mut written = Vec::new();
    for (file, text) in files {
        let path = dir.join(file);
        let write = |path: &Path| {
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent)?;
            }
            std::fs::write(path, text)
        };
        write(&path).map_err(|error| ScaffoldError::Write {
            path: path.clone(),
            error,
        })?;
        written.push(path);
    }
    Ok(written)
}

/// The file name cargo gives the component of crate `name`.
pub fn component_file(name: &str) -> String {
    format!("{}.wasm", name.replace('-', "_"))
}

fn cargo_toml(name: &str, sdk: &Path) -> String {
    format!(
        r#"[package]
name = "{name}"
version = "0.1.0"
edition = "2024"

[lib]
# cdylib: the component the server loads; rlib: so `cargo test` links the logic natively.
crate-type = ["cdylib", "rlib"]

[dependencies]
switchboard-sdk = {{ path = "{sdk}" }}
serde = {{ version = "1", features = ["derive"] }}
serde_json = "1"

[profile.release]
opt-level = "s"
lto = true
codegen-units = 1
# Keep the name section: a trap's backtrace in the server's log then names your functions.
strip = "debuginfo"

# A crate of its own, even when made inside another workspace.
[workspace]
"#,
        sdk = sdk.display()
    )
}

fn lib_rs(name: &str) -> String {
    let template = r##"//! The `NAME` plugin: answers `NAME:hello` with a greeting for the sender.

use serde::{Deserialize, Serialize};
use switchboard_sdk::{
    ConnInfo, HandlerError, Manifest, Message, Plugin, Request, Router, export_plugin,
};

/// What `NAME:hello` takes (the payload may be left out).
#[derive(Deserialize, Default)]
#[serde(default)]
struct Hello {
    /// Who to greet instead of the sender.
    name: Option<String>,
}

/// What `NAME:hello` answers.
#[derive(Serialize)]
struct Greeting {
    greeting: String,
}

fn hello(request: Request<Option<Hello>>) -> Result<Greeting, HandlerError> {
    let hello = request.payload.unwrap_or_default();
    let name = hello.name.unwrap_or(request.conn.user_id);
    if name.len() > 100 {
        return Err(HandlerError::bad_request("a name is at most 100 bytes"));
    }
    Ok(Greeting {
        greeting: format!("hello, {name}"),
    })
}

/// Every message type and its handler; the manifest lists them.
fn router() -> Router {
    Router::new("NAME", env!("CARGO_PKG_VERSION")).on("NAME:hello", hello)
}

/// The plugin.
pub struct Plugged;

impl Plugin for Plugged {
    fn describe() -> Manifest {
        router().manifest()
    }

    fn on_message(conn: ConnInfo, msg: Message) -> Result<Option<String>, HandlerError> {
        router().handle(conn, msg)
    }
}

export_plugin!(Plugged);

#[cfg(test)]
mod tests {
    use serde_json::json;
    use switchboard_sdk::{Plugin, mock};

    use super::Plugged;

    fn hello(payload: serde_json::Value) -> Result<Option<String>, switchboard_sdk::HandlerError> {
        mock::reset();
        let conn = mock::conn("n-1", "ada", json!({}));
        Plugged::on_message(conn, mock::message("NAME:hello", None, payload))
    }

    #[test]
    fn greets_the_sender_or_the_name_given() {
        assert_eq!(
            hello(json!(null)).ok().flatten().as_deref(),
            Some(r#"{"greeting":"hello, ada"}"#)
        );
        assert_eq!(
            hello(json!({"name": "bob"})).ok().flatten().as_deref(),
            Some(r#"{"greeting":"hello, bob"}"#)
        );
    }

    #[test]
    fn a_name_too_long_is_a_bad_request() {
        let error = hello(json!({"name": "x".repeat(101)})).expect_err("refused");
        assert_eq!(error.code, "bad_request");
    }
}
"##;
    template.replace("NAME", name)
}

fn readme(name: &str) -> String {
    let file = component_file(name);
    format!(
        r#"# {name}

A Switchboard plugin. The authoring guide is the SDK's README (`sdk/README.md` of Switchboard).

```sh
cargo test                                        # the logic, natively, against the mock host
rustup target add wasm32-wasip2                   # once
cargo build --release --target wasm32-wasip2      # target/wasm32-wasip2/release/{file}
switchboard dev                                   # serve it locally; every change is rebuilt and swapped in
curl -X PUT --data-binary @target/wasm32-wasip2/release/{file} \
  -H 'Authorization: Bearer API_KEY' http://127.0.0.1:8080/api/tenants/TENANT/plugins/{name}
```
"#
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_that_cannot_be_a_plugin_or_a_crate_is_refused() {
        let dir = std::env::temp_dir().join(format!("switchboard-scaffold-{}", std::process::id()));
        for name in ["", "1st", "Upper", "with space", "dot.ted", &"x".repeat(65)] {
            let error = new_plugin(name, &dir, &built_in_sdk()).expect_err("refused");
            assert!(matches!(error, ScaffoldError::Name(_)), "{name}: {error}");
        }
        assert!(!dir.exists());
    }

    #[test]
    fn an_existing_folder_or_a_missing_sdk_is_refused_before_writing() {
        let here = std::env::temp_dir();
        let error = new_plugin("poll", &here, &built_in_sdk()).expect_err("refused");
        assert!(matches!(error, ScaffoldError::Exists(_)), "{error}");
        let dir = here.join(format!("switchboard-scaffold-sdk-{}", std::process::id()));
        let error = new_plugin("poll", &dir, Path::new("/nonexistent")).expect_err("refused");
        assert!(matches!(error, ScaffoldError::Sdk(_)), "{error}");
        assert!(!dir.exists());
    }

    #[test]
    fn the_crate_names_the_plugin_and_the_sdk() {
        let text = cargo_toml("my-poll", Path::new("/opt/switchboard/sdk"));
        assert!(text.contains(r#"name = "my-poll""#));
        assert!(text.contains(r#"switchboard-sdk = { path = "/opt/switchboard/sdk" }"#));
        let code = lib_rs("my-poll");
        assert!(code.contains(r#"Router::new("my-poll""#) && code.contains(r#""my-poll:hello""#));
        assert_eq!(component_file("my-poll"), "my_poll.wasm");
    }
}
