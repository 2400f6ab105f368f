//! The `[state]` section: where a node on the memory backplane keeps its desired state (the
//! plugin deployments made through the API), so a restart serves what was deployed.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::Validator;

/// The raw `[state]` table.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawState {
    dir: Option<String>,
}

/// The default state directory for a config file: `{file stem}.state` beside the file (so
/// `switchboard.toml` keeps its state in `switchboard.state/`).
pub fn default_dir(file: &str, base_dir: &Path) -> PathBuf {
    let stem = Path::new(file)
        .file_stem()
        .and_then(|stem| stem.to_str())
        .filter(|stem| !stem.is_empty())
        .unwrap_or("switchboard");
    base_dir.join(format!("{stem}.state"))
}

impl Validator<'_> {
    /// The validated `state.dir`, relative paths resolved against the config's folder.
    pub(super) fn state_dir(&mut self, raw: RawState) -> PathBuf {
        match raw.dir {
            None => default_dir(self.file, self.base_dir),
            Some(dir) if dir.trim().is_empty() => {
                self.issue("state.dir", "must name a directory");
                default_dir(self.file, self.base_dir)
            }
            Some(dir) => self.base_dir.join(dir),
        }
    }
}
