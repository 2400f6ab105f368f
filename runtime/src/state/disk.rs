//! The desired state in a directory on local disk, for a node on the memory backplane:
//! `state.json` (every record) and `blobs/{sha256}.wasm`. Every file is written to a
//! temporary name, synced and renamed over the old one, then the directory is synced, so a
//! kill at any moment leaves the old file or the new one, never a torn one.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use super::{BLOB_GRACE_MS, PluginRecord, Snapshot, StateStore, StoreError, TenantRecord};

/// The desired state kept under one directory.
#[derive(Debug, Clone)]
pub struct DiskStore {
    dir: PathBuf,
    /// The records as last read or written; `None` until first read.
    cached: Arc<Mutex<Option<Snapshot>>>,
    /// Held by a record write from its read to its rename.
    writing: Arc<Mutex<()>>,
}

/// `state.json`.
#[derive(Serialize, Deserialize, Default)]
struct StateFile {
    revision: u64,
    plugins: Vec<StoredRecord>,
    #[serde(default)]
    tenants: BTreeMap<String, TenantRecord>,
}

#[derive(Serialize, Deserialize)]
struct StoredRecord {
    tenant: String,
    plugin: String,
    record: PluginRecord,
}

fn unavailable(what: &str, path: &Path, error: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(format!("{what} {}: {error}", path.display()))
}

/// Writes `bytes` to `path` so that a crash leaves either the old file or the new one.
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|error| unavailable("cannot create", dir, error))?;
    let name = path
        .file_name()
        .and_then(|name| name.to_str())
        .unwrap_or("state");
    let temporary = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let written = (|| {
        // Tenant records hold secrets (JWT keys, API keys): readable by the node's user only.
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&temporary)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&temporary, path)?;
        // The rename is durable only once the directory is.
        std::fs::File::open(dir)?.sync_all()
    })();
    written.map_err(|error| {
        let _ = std::fs::remove_file(&temporary);
        unavailable("cannot write", path, error)
    })
}

impl DiskStore {
    /// A store in `dir`, created on the first write.
    pub fn new(dir: PathBuf) -> DiskStore {
        DiskStore {
            dir,
            cached: Arc::new(Mutex::new(None)),
            writing: Arc::new(Mutex::new(())),
        }
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn state_file(&self) -> PathBuf {
        self.dir.join("state.json")
    }

    fn blob_file(&self, blob: &str) -> PathBuf {
        self.dir.join("blobs").join(format!("{blob}.wasm"))
    }

    fn read(&self) -> Result<Snapshot, StoreError> {
        if let Some(snapshot) = &*self.cached.lock() {
            return Ok(snapshot.clone());
        }
        let path = self.state_file();
        let file: StateFile = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|error| StoreError::Corrupt(format!("{}: {error}", path.display())))?,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => StateFile::default(),
            Err(error) => return Err(unavailable("cannot read", &path, error)),
        };
        let snapshot = Snapshot {
            revision: file.revision,
            plugins: file
                .plugins
                .into_iter()
                .map(|stored| ((stored.tenant, stored.plugin), stored.record))
                .collect::<BTreeMap<_, _>>(),
            tenants: file.tenants,
        };
        *self.cached.lock() = Some(snapshot.clone());
        Ok(snapshot)
    }

    /// Replaces (`Some`) or removes (`None`) a record if the stored one is at `expected`.
    fn write_record(
        &self,
        tenant: &str,
        plugin: &str,
        expected: u64,
        record: Option<&PluginRecord>,
    ) -> Result<bool, StoreError> {
        self.change(|snapshot| {
            let key = (tenant.to_owned(), plugin.to_owned());
            let stored = snapshot.plugins.get(&key).map_or(0, |found| found.revision);
            if stored != expected || (record.is_none() && !snapshot.plugins.contains_key(&key)) {
                return false;
            }
            match record {
                Some(record) => snapshot.plugins.insert(key, record.clone()),
                None => snapshot.plugins.remove(&key),
            };
            true
        })
    }

    /// Replaces a tenant's record if the stored one is at `record.revision - 1`.
    fn write_tenant_record(&self, tenant: &str, record: &TenantRecord) -> Result<bool, StoreError> {
        self.change(|snapshot| {
            let stored = snapshot
                .tenants
                .get(tenant)
                .map_or(0, |found| found.revision);
            if stored != record.revision.saturating_sub(1) {
                return false;
            }
            snapshot.tenants.insert(tenant.to_owned(), record.clone());
            true
        })
    }

    /// Reads, lets `change` edit (it says whether it did) and writes as one step, so two
    /// writes never lose one another.
    fn change(&self, change: impl FnOnce(&mut Snapshot) -> bool) -> Result<bool, StoreError> {
        let _writing = self.writing.lock();
        let mut snapshot = self.read()?;
        if !change(&mut snapshot) {
            return Ok(false);
        }
        snapshot.revision += 1;
        let file = StateFile {
            revision: snapshot.revision,
            plugins: snapshot
                .plugins
                .iter()
                .map(|((tenant, plugin), record)| StoredRecord {
                    tenant: tenant.clone(),
                    plugin: plugin.clone(),
                    record: record.clone(),
                })
                .collect(),
            tenants: snapshot.tenants.clone(),
        };
        let bytes = serde_json::to_vec_pretty(&file)
            .map_err(|error| StoreError::Corrupt(error.to_string()))?;
        write_atomically(&self.state_file(), &bytes)?;
        *self.cached.lock() = Some(snapshot);
        Ok(true)
    }
}

/// Runs blocking file work off the async threads.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|error| StoreError::Unavailable(error.to_string()))?
}

#[async_trait]
impl StateStore for DiskStore {
    fn kind(&self) -> &'static str {
        "disk"
    }

    async fn revision(&self) -> Result<u64, StoreError> {
        let store = self.clone();
        blocking(move || store.read().map(|snapshot| snapshot.revision)).await
    }

    async fn snapshot(&self) -> Result<Snapshot, StoreError> {
        let store = self.clone();
        blocking(move || store.read()).await
    }

    async fn put_blob(&self, blob: &str, bytes: &[u8]) -> Result<(), StoreError> {
        let path = self.blob_file(blob);
        if path.exists() {
            return Ok(());
        }
        let bytes = bytes.to_vec();
        blocking(move || write_atomically(&path, &bytes)).await
    }

    async fn blob(&self, blob: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let path = self.blob_file(blob);
        match tokio::fs::read(&path).await {
            Ok(bytes) => Ok(Some(bytes)),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(error) => Err(unavailable("cannot read", &path, error)),
        }
    }

    async fn write(
        &self,
        tenant: &str,
        plugin: &str,
        record: &PluginRecord,
    ) -> Result<bool, StoreError> {
        let (store, tenant, plugin, record) = (
            self.clone(),
            tenant.to_owned(),
            plugin.to_owned(),
            record.clone(),
        );
        let expected = record.revision.saturating_sub(1);
        blocking(move || store.write_record(&tenant, &plugin, expected, Some(&record))).await
    }

    async fn write_tenant(&self, tenant: &str, record: &TenantRecord) -> Result<bool, StoreError> {
        let (store, tenant, record) = (self.clone(), tenant.to_owned(), record.clone());
        blocking(move || store.write_tenant_record(&tenant, &record)).await
    }

    async fn forget(&self, tenant: &str, plugin: &str, revision: u64) -> Result<bool, StoreError> {
        let (store, tenant, plugin) = (self.clone(), tenant.to_owned(), plugin.to_owned());
        blocking(move || store.write_record(&tenant, &plugin, revision, None)).await
    }

    async fn collect(&self, keep: &BTreeSet<String>) -> Result<usize, StoreError> {
        let dir = self.dir.join("blobs");
        let keep = keep.clone();
        blocking(move || {
            let entries = match std::fs::read_dir(&dir) {
                Ok(entries) => entries,
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(0),
                Err(error) => return Err(unavailable("cannot list", &dir, error)),
            };
            let mut removed = 0;
            for entry in entries.flatten() {
                let path = entry.path();
                let Some(blob) = path
                    .file_name()
                    .and_then(|name| name.to_str())
                    .and_then(|name| name.strip_suffix(".wasm"))
                else {
                    continue;
                };
                let age_ms = entry
                    .metadata()
                    .and_then(|metadata| metadata.modified())
                    .ok()
                    .and_then(|modified| modified.elapsed().ok())
                    .map_or(0, |age| age.as_millis() as u64);
                if !keep.contains(blob)
                    && age_ms > BLOB_GRACE_MS
                    && std::fs::remove_file(&path).is_ok()
                {
                    removed += 1;
                }
            }
            Ok(removed)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::unix_millis as now_ms;
    use crate::state::Version;

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "switchboard-state-{name}-{}-{}",
            std::process::id(),
            now_ms()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    fn version(blob: &str) -> Version {
        Version {
            blob: blob.to_owned(),
            sha256: blob.to_owned(),
            version: "1.0.0".to_owned(),
            bytes: 3,
            deployed_at_ms: 1,
        }
    }

    #[tokio::test]
    async fn tenant_records_are_compare_and_set_kept_private_and_survive_a_reopen() {
        let dir = temp_dir("tenants");
        let store = DiskStore::new(dir.clone());
        let created = TenantRecord {
            revision: 1,
            settings: Some(serde_json::json!({"jwt": {"secret": "s"}})),
            changed_at_ms: 1,
            created: true,
        };
        assert_eq!(store.write_tenant("acme", &created).await, Ok(true));
        assert_eq!(
            store.write_tenant("acme", &created).await,
            Ok(false),
            "a write that did not read the latest record is refused"
        );
        let deleted = TenantRecord {
            revision: 2,
            settings: None,
            changed_at_ms: 2,
            created: false,
        };
        assert_eq!(store.write_tenant("acme", &deleted).await, Ok(true));
        let record = PluginRecord::default().deployed(version("abc"));
        assert_eq!(store.write("acme", "p", &record).await, Ok(true));

        let reopened = DiskStore::new(dir.clone());
        let snapshot = reopened.snapshot().await.expect("read");
        assert_eq!(snapshot.revision, 3);
        assert_eq!(snapshot.tenants.get("acme"), Some(&deleted));
        assert_eq!(snapshot.record("acme", "p"), Some(&record));
        let mode = std::fs::metadata(dir.join("state.json"))
            .expect("written")
            .permissions();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
            0o600,
            "secrets are readable by the node's user only"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn records_and_blobs_survive_a_new_store_on_the_same_directory() {
        let dir = temp_dir("reopen");
        let store = DiskStore::new(dir.clone());
        assert_eq!(store.revision().await, Ok(0));
        assert!(!dir.exists(), "nothing is written before the first change");
        store.put_blob("abc", b"wasm").await.expect("blob");
        let record = PluginRecord::default().deployed(version("abc"));
        assert_eq!(store.write("t", "p", &record).await, Ok(true));
        // A write that did not read the latest record is refused.
        assert_eq!(store.write("t", "p", &record).await, Ok(false));

        let reopened = DiskStore::new(dir.clone());
        let snapshot = reopened.snapshot().await.expect("read");
        assert_eq!(snapshot.revision, 1);
        assert_eq!(snapshot.record("t", "p"), Some(&record));
        assert_eq!(reopened.blob("abc").await, Ok(Some(b"wasm".to_vec())));
        assert_eq!(reopened.blob("nope").await, Ok(None));
        let leftovers: Vec<_> = std::fs::read_dir(&dir)
            .expect("dir")
            .flatten()
            .filter(|entry| entry.file_name().to_string_lossy().ends_with(".tmp"))
            .collect();
        assert!(leftovers.is_empty(), "no temporary file is left");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn a_record_is_forgotten_only_at_the_revision_read_and_concurrent_writes_all_land() {
        let dir = temp_dir("forget");
        let store = DiskStore::new(dir.clone());
        let record = PluginRecord::default().deployed(version("abc"));
        assert_eq!(store.write("t", "p", &record).await, Ok(true));
        assert_eq!(
            store.forget("t", "p", 0).await,
            Ok(false),
            "a stale revision"
        );
        assert_eq!(store.forget("t", "q", 0).await, Ok(false), "no such record");
        assert_eq!(store.forget("t", "p", 1).await, Ok(true));
        let reopened = DiskStore::new(dir.clone());
        let snapshot = reopened.snapshot().await.expect("read");
        assert_eq!((snapshot.revision, snapshot.record("t", "p")), (2, None));

        // Writes of different records at once: none loses another.
        let writes = (0..16).map(|n| {
            let store = store.clone();
            let record = PluginRecord::default().deployed(version(&format!("b{n}")));
            tokio::spawn(async move { store.write("t", &format!("p{n}"), &record).await })
        });
        for write in writes {
            assert_eq!(write.await.expect("task"), Ok(true));
        }
        let snapshot = DiskStore::new(dir.clone()).snapshot().await.expect("read");
        assert_eq!((snapshot.revision, snapshot.plugins.len()), (18, 16));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn a_torn_state_file_is_an_error_not_an_empty_state() {
        let dir = temp_dir("torn");
        std::fs::create_dir_all(&dir).expect("dir");
        std::fs::write(dir.join("state.json"), b"{\"revision\": 3, \"plu").expect("write");
        let store = DiskStore::new(dir.clone());
        assert!(matches!(
            store.snapshot().await,
            Err(StoreError::Corrupt(_))
        ));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
