//! Where accepted and last-seen fingerprints are kept: the interface and the sled backend
//! (`<data_dir>/state`, tree `fingerprints`: exposed name → `{"accepted","seen"}`).
//!
//! Owns: [`FingerprintStore`], [`Entry`], [`SledFingerprints`]. Uses: nothing of ours.
//! Must not: compare fingerprints (`Fingerprints` does) or let `sled::Error` out.
//!
//! Contract: `get` may be served from memory; a read that fails is an error, never
//! "not seen"; `put_all` returns once every entry is durable.

use futures::FutureExt;
use futures::future::BoxFuture;

use super::FingerprintError;

const TREE: &str = "fingerprints";

/// One stored entry: what an operator accepted (nothing yet, for a held new tool) and what
/// was last seen. Version-1 entries have the same shape with bare hex strings.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Entry {
    pub accepted: Option<String>,
    pub seen: String,
}

impl Entry {
    /// What an entry that does not parse reads as: reading it as "never seen" would hide a
    /// change, so it reads as accepted nothing (critical until accepted).
    pub fn unreadable() -> Entry {
        Entry { accepted: None, seen: String::new() }
    }
}

/// The fingerprints' storage backend.
pub trait FingerprintStore: Send + Sync + 'static {
    /// The entry of one exposed tool name.
    fn get(&self, exposed_name: &str) -> Result<Option<Entry>, FingerprintError>;
    /// Stores every entry, durably, in one step.
    fn put_all<'a>(&'a self, entries: &'a [(String, Entry)]) -> BoxFuture<'a, Result<(), FingerprintError>>;
}

/// The sled backend.
pub struct SledFingerprints {
    pub(super) tree: sled::Tree,
}

impl SledFingerprints {
    /// The tree inside an open state database.
    pub fn open(db: &sled::Db) -> Result<SledFingerprints, FingerprintError> {
        Ok(SledFingerprints { tree: db.open_tree(TREE).map_err(unavailable)? })
    }
}

fn unavailable(error: sled::Error) -> FingerprintError {
    FingerprintError::Store(error.to_string())
}

impl FingerprintStore for SledFingerprints {
    fn get(&self, exposed_name: &str) -> Result<Option<Entry>, FingerprintError> {
        let Some(bytes) = self.tree.get(exposed_name).map_err(unavailable)? else { return Ok(None) };
        Ok(Some(serde_json::from_slice(&bytes).unwrap_or_else(|_| Entry::unreadable())))
    }

    fn put_all<'a>(&'a self, entries: &'a [(String, Entry)]) -> BoxFuture<'a, Result<(), FingerprintError>> {
        async move {
            if entries.is_empty() {
                return Ok(());
            }
            let mut batch = sled::Batch::default();
            for (key, entry) in entries {
                // An Entry is plain data; serialising it cannot fail.
                batch.insert(key.as_bytes(), serde_json::to_vec(entry).unwrap_or_default());
            }
            self.tree.apply_batch(batch).map_err(unavailable)?;
            self.tree.flush_async().await.map_err(unavailable)?;
            Ok(())
        }
        .boxed()
    }
}
