//! What to do about a plugin that does not load: the compiler's and the linker's messages
//! name the symptom (a parser, an import); the hint names the fix.

/// `message` (from compiling or linking a plugin) followed by what to do about it, when it is
/// a mistake of how the plugin was built.
pub fn with_hint(message: String) -> String {
    match hint(&message) {
        Some(hint) => format!("{message}; {hint}"),
        None => message,
    }
}

fn hint(message: &str) -> Option<&'static str> {
    if message.contains("attempted to parse a wasm module with a component parser") {
        Some(
            "this is a core WebAssembly module, not a component: build the plugin for the \
             wasm32-wasip2 target (`cargo build --release --target wasm32-wasip2`), which makes \
             a component",
        )
    } else if message.contains("magic header not detected") {
        Some(
            "this is not a WebAssembly file: upload the plugin's `.wasm` from \
             target/wasm32-wasip2/release/",
        )
    } else if message.contains("but a matching implementation was not found in the linker") {
        Some(
            "the plugin imports something this host does not provide: build it with \
             switchboard-sdk, whose world (sdk/wit/plugin.wit) is what the host links",
        )
    } else if message.contains("switchboard:plugin/handler") {
        Some(
            "the plugin does not export Switchboard's handler: build it with switchboard-sdk \
             and `export_plugin!`",
        )
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_build_mistake_gets_its_fix() {
        let cases = [
            (
                "failed to parse WebAssembly module: attempted to parse a wasm module with a component parser",
                "wasm32-wasip2",
            ),
            (
                "magic header not detected: bad magic number - expected=[0x0, 0x61, 0x73, 0x6d] actual=[0x74, 0x68, 0x69, 0x73] (at offset 0x0)",
                "not a WebAssembly file",
            ),
            (
                "component imports instance `wasi:sockets/tcp@0.2.0`, but a matching implementation was not found in the linker",
                "switchboard-sdk",
            ),
            (
                "no exported instance named `switchboard:plugin/handler@0.1.0`",
                "export_plugin!",
            ),
        ];
        for (message, fix) in cases {
            let hinted = with_hint(message.to_owned());
            assert!(hinted.starts_with(message), "{hinted}");
            assert!(hinted.contains(fix), "{hinted}");
        }
        assert_eq!(with_hint("out of fuel".to_owned()), "out of fuel");
    }
}
