//! A plugin's deployment record: the version that should serve (or none: deleted) and the
//! versions kept for rollback, newest first.

use serde::{Deserialize, Serialize};

/// Versions a record keeps (the serving one included); older ones are dropped, and their
/// blobs with them.
pub const MAX_HISTORY: usize = 10;

/// One deployed build of a plugin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Version {
    /// Hex SHA-256 of the bytes as uploaded: the blob's address in the store.
    pub blob: String,
    /// Hex SHA-256 of the component (what the plugin API shows as `sha256`; for a precompiled
    /// artifact, of the component it was built from).
    pub sha256: String,
    /// The version the plugin declares.
    pub version: String,
    /// Size of the upload.
    pub bytes: usize,
    /// When it was last deployed (Unix milliseconds).
    pub deployed_at_ms: u64,
}

/// The desired state of one (tenant, plugin).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PluginRecord {
    /// Counts the record's writes: a write must name the revision it read.
    pub revision: u64,
    /// The `blob` of the version that should serve; `None`: the plugin is deleted (a
    /// configured file of that name is not served either).
    pub active: Option<String>,
    /// The kept versions, newest deploy first, at most [`MAX_HISTORY`].
    pub history: Vec<Version>,
    /// When the record was last written (Unix milliseconds): how long a change took to
    /// reach a node is measured from it.
    #[serde(default)]
    pub changed_at_ms: u64,
    /// After a delete: the `blob` that served until then, which a rollback brings back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deleted_from: Option<String>,
}

/// The desired state of one tenant made or changed through the tenant API.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TenantRecord {
    /// Counts the record's writes: a write must name the revision it read.
    pub revision: u64,
    /// Its settings as given: the fields of a `[[tenants]]` table, as JSON. `None`: deleted
    /// (a configured tenant of that name is not served either).
    pub settings: Option<serde_json::Value>,
    /// When the record was last written (Unix milliseconds).
    #[serde(default)]
    pub changed_at_ms: u64,
    /// The tenant API made the tenant anew (no tenant of that name served when it was
    /// created, updates keep it): the config file's plugins of that name are not served for
    /// it, so it starts as empty on every node as it did on the one that made it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub created: bool,
}

/// Why a rollback cannot be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    /// There is no kept version before the serving one.
    #[error("no earlier version is kept")]
    NothingEarlier,
    /// The named version is not in the kept history.
    #[error("version `{0}` is not in the kept history")]
    NotKept(String),
}

impl PluginRecord {
    /// The version that should serve.
    pub fn active_version(&self) -> Option<&Version> {
        let active = self.active.as_deref()?;
        self.history.iter().find(|version| version.blob == active)
    }

    /// The record after deploying `version`: it serves, and heads the history (a blob already
    /// kept moves there: it is the newest deploy, so a rollback returns to the one before it).
    pub fn deployed(&self, version: Version) -> PluginRecord {
        let mut history = self.history.clone();
        history.retain(|kept| kept.blob != version.blob);
        history.insert(0, version.clone());
        history.truncate(MAX_HISTORY);
        PluginRecord {
            revision: self.revision + 1,
            active: Some(version.blob),
            history,
            changed_at_ms: self.changed_at_ms,
            deleted_from: None,
        }
    }

    /// The record after a delete: nothing serves; the history stays for a rollback.
    pub fn deleted(&self) -> PluginRecord {
        PluginRecord {
            revision: self.revision + 1,
            active: None,
            history: self.history.clone(),
            changed_at_ms: self.changed_at_ms,
            deleted_from: self.active.clone().or_else(|| self.deleted_from.clone()),
        }
    }

    /// The record after a rollback: to the kept version whose `blob` or `sha256` is `to`,
    /// or, without `to`, to the version deployed before the serving one (after a delete, to
    /// the one that served until the delete, else the newest kept one).
    pub fn rolled_back(&self, to: Option<&str>) -> Result<PluginRecord, RecordError> {
        let target = match to {
            Some(wanted) => self
                .history
                .iter()
                .find(|version| version.blob == wanted || version.sha256 == wanted)
                .ok_or_else(|| RecordError::NotKept(wanted.to_owned()))?,
            None => {
                let next = match self.active.as_deref() {
                    None => self
                        .deleted_from
                        .as_deref()
                        .and_then(|last| self.history.iter().position(|kept| kept.blob == last))
                        .unwrap_or(0),
                    Some(active) => self
                        .history
                        .iter()
                        .position(|version| version.blob == active)
                        .map_or(0, |at| at + 1),
                };
                self.history.get(next).ok_or(RecordError::NothingEarlier)?
            }
        };
        Ok(PluginRecord {
            revision: self.revision + 1,
            active: Some(target.blob.clone()),
            history: self.history.clone(),
            changed_at_ms: self.changed_at_ms,
            deleted_from: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn version(n: u32) -> Version {
        Version {
            blob: format!("blob{n}"),
            sha256: format!("sha{n}"),
            version: format!("{n}.0.0"),
            bytes: 10,
            deployed_at_ms: u64::from(n),
        }
    }

    #[test]
    fn deploys_head_the_history_which_keeps_ten() {
        let mut record = PluginRecord::default();
        for n in 0..12 {
            record = record.deployed(version(n));
        }
        assert_eq!(record.revision, 12);
        assert_eq!(record.history.len(), MAX_HISTORY);
        assert_eq!(record.history[0], version(11));
        assert_eq!(record.history[9], version(2));
        assert_eq!(record.active_version(), Some(&version(11)));
    }

    #[test]
    fn redeploying_a_kept_build_moves_it_to_the_head_once() {
        let record = PluginRecord::default()
            .deployed(version(1))
            .deployed(version(2))
            .deployed(version(1));
        assert_eq!(record.history, vec![version(1), version(2)]);
        assert_eq!(record.active.as_deref(), Some("blob1"));
        let back = record.rolled_back(None).expect("to 2");
        assert_eq!(back.active.as_deref(), Some("blob2"));
    }

    #[test]
    fn rollbacks_walk_back_and_stop_at_the_oldest() {
        let record = PluginRecord::default()
            .deployed(version(1))
            .deployed(version(2))
            .deployed(version(3));
        let back = record.rolled_back(None).expect("to 2");
        assert_eq!(back.active.as_deref(), Some("blob2"));
        let back = back.rolled_back(None).expect("to 1");
        assert_eq!(back.active.as_deref(), Some("blob1"));
        assert_eq!(back.rolled_back(None), Err(RecordError::NothingEarlier));
        let to = record.rolled_back(Some("sha1")).expect("by sha256");
        assert_eq!(to.active.as_deref(), Some("blob1"));
        assert_eq!(
            record.rolled_back(Some("nope")),
            Err(RecordError::NotKept("nope".to_owned()))
        );
    }

    #[test]
    fn a_rollback_after_a_delete_restores_what_served_before_it() {
        let record = PluginRecord::default()
            .deployed(version(1))
            .deployed(version(2))
            .deleted();
        assert_eq!(record.active_version(), None);
        let back = record.rolled_back(None).expect("restored");
        assert_eq!(back.active.as_deref(), Some("blob2"));
        assert_eq!(back.deleted_from, None);
        // Rolled back to 1, deleted (twice): 1 comes back, not the newest.
        let earlier = record
            .rolled_back(Some("blob1"))
            .expect("to 1")
            .deleted()
            .deleted();
        let back = earlier.rolled_back(None).expect("restored");
        assert_eq!(back.active.as_deref(), Some("blob1"));
        assert_eq!(
            PluginRecord::default().deleted().rolled_back(None),
            Err(RecordError::NothingEarlier)
        );
    }
}
