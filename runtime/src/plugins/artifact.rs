//! Precompiled plugin artifacts: a component compiled ahead of time by `switchboard precompile`
//! with the optimizing engine, and signed with the node's artifact key. Loading one skips the
//! compile, which is nearly all of a swap's time.
//!
//! Layout: `MAGIC` (8 bytes), the SHA-256 of the source `.wasm` (32), an HMAC-SHA256 over the
//! magic, the source hash and the compiled code (32), then wasmtime's serialized component. The
//! compiled code is native code that wasmtime maps and runs without validating it, so only an
//! artifact whose signature checks against the node's key ever reaches wasmtime: `Verified`
//! can only be made by `open`. The compile worker seals its builds the same way, with a key the
//! node makes for each compile (`super::compile`). wasmtime then checks that the code was made
//! by this wasmtime version for this engine configuration, and refuses it otherwise.

use hmac::{Hmac, Mac};
use sha2::{Digest as _, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

use crate::config::ArtifactKey;

/// The first bytes of every artifact. The leading zero byte keeps it from being mistaken for
/// text, and `\0asm` components never start this way.
pub const MAGIC: [u8; 8] = *b"\0sbart01";

const HASH: usize = 32;
const HEADER: usize = MAGIC.len() + HASH + HASH;

/// Why an artifact was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ArtifactError {
    /// The node accepts no artifacts.
    #[error("precompiled artifacts are refused: this node has no `plugins.artifact_key`")]
    NoKey,
    /// Shorter than its header.
    #[error("the artifact is truncated ({0} bytes)")]
    Truncated(usize),
    /// Made with another key, or changed since.
    #[error("the artifact's signature does not match this node's artifact key")]
    BadSignature,
}

/// An artifact whose signature checks: the only input `deserialize` takes.
#[derive(Debug, Clone)]
pub struct Verified {
    bytes: Vec<u8>,
}

impl Verified {
    /// Its size in bytes.
    pub fn size(&self) -> usize {
        self.bytes.len()
    }

    /// Hex SHA-256 of the `.wasm` the artifact was compiled from.
    pub fn source_sha256(&self) -> String {
        hex(&self.bytes[MAGIC.len()..MAGIC.len() + HASH])
    }
}

/// Whether `bytes` claim to be an artifact (before any check).
pub fn is_artifact(bytes: &[u8]) -> bool {
    bytes.starts_with(&MAGIC)
}

/// Lower-case hex of some bytes.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

fn mac(key: &ArtifactKey) -> Hmac<Sha256> {
    // HMAC takes a key of any length; the config guarantees a strong one.
    <Hmac<Sha256> as Mac>::new_from_slice(key.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC accepts keys of every length"))
}

/// An artifact of `compiled`, wasmtime's serialized build of the component `wasm`, signed with
/// `key`.
pub fn seal(key: &ArtifactKey, wasm: &[u8], compiled: &[u8]) -> Vec<u8> {
    let source = Sha256::digest(wasm);
    let mut signer = mac(key);
    signer.update(&MAGIC);
    signer.update(&source);
    signer.update(compiled);
    let signature = signer.finalize().into_bytes();
    let mut out = Vec::with_capacity(HEADER + compiled.len());
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&source);
    out.extend_from_slice(&signature);
    out.extend_from_slice(compiled);
    out
}

/// Checks an artifact's signature against the node's key.
pub fn open(key: Option<&ArtifactKey>, bytes: Vec<u8>) -> Result<Verified, ArtifactError> {
    let key = key.ok_or(ArtifactError::NoKey)?;
    if bytes.len() < HEADER || !is_artifact(&bytes) {
        return Err(ArtifactError::Truncated(bytes.len()));
    }
    let (header, compiled) = bytes.split_at(HEADER);
    let (signed, signature) = header.split_at(MAGIC.len() + HASH);
    let mut verifier = mac(key);
    verifier.update(signed);
    verifier.update(compiled);
    // Constant-time comparison.
    verifier
        .verify_slice(signature)
        .map_err(|_| ArtifactError::BadSignature)?;
    Ok(Verified { bytes })
}

/// Maps a verified artifact's code into `engine`; wasmtime refuses code made by another
/// version or for another configuration.
pub fn deserialize(engine: &Engine, artifact: &Verified) -> wasmtime::Result<Component> {
    // SAFETY: `Component::deserialize` requires bytes that wasmtime itself serialized and that
    // nobody altered since. A `Verified` exists only after its HMAC checked, either against the
    // operator's key, which `Plugins::precompile` signs only output of wasmtime's serializer
    // with, or against the key the node made for one compile and gave only to the compile
    // worker it started, which seals only the output of wasmtime's serializer with it
    // (`compile::worker`).
    #[allow(unsafe_code)]
    unsafe {
        Component::deserialize(engine, &artifact.bytes[HEADER..])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(byte: u8) -> ArtifactKey {
        ArtifactKey::new(vec![byte; 32]).expect("long enough")
    }

    fn sealed(key: &ArtifactKey, compiled: &[u8]) -> Vec<u8> {
        seal(key, b"source", compiled)
    }

    #[test]
    fn opens_with_its_key_and_names_its_source() {
        let artifact = sealed(&key(1), b"compiled code");
        let verified = open(Some(&key(1)), artifact).expect("verifies");
        assert_eq!(verified.source_sha256(), hex(&Sha256::digest(b"source")));
    }

    #[test]
    fn refuses_another_key_any_changed_byte_and_no_key() {
        let artifact = sealed(&key(1), b"compiled code");
        assert_eq!(
            open(Some(&key(2)), artifact.clone()).err(),
            Some(ArtifactError::BadSignature)
        );
        for at in [MAGIC.len(), MAGIC.len() + HASH, HEADER, artifact.len() - 1] {
            let mut changed = artifact.clone();
            changed[at] ^= 1;
            assert_eq!(
                open(Some(&key(1)), changed).err(),
                Some(ArtifactError::BadSignature),
                "byte {at}"
            );
        }
        assert_eq!(
            open(None, artifact.clone()).err(),
            Some(ArtifactError::NoKey)
        );
        assert_eq!(
            open(Some(&key(1)), artifact[..HEADER - 1].to_vec()).err(),
            Some(ArtifactError::Truncated(HEADER - 1))
        );
    }

    #[test]
    fn tells_artifacts_from_components() {
        assert!(is_artifact(&sealed(&key(1), b"")));
        assert!(!is_artifact(b"\0asm\x0d\0\x01\0"));
    }
}
