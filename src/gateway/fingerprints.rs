//! Tool fingerprints: trust on first sight, and a changed tool is `critical` until an
//! operator accepts it (DESIGN.md §3).
//!
//! A fingerprint is SHA-256 of the canonical JSON of the tool's exposed name,
//! description, input schema and annotations, as the downstream served them. They live in
//! the gateway's state database (`<data_dir>/state`, separate from the audit log).

use std::collections::HashSet;
use std::path::Path;
use std::sync::{PoisonError, RwLock};

use rmcp::model::Tool;
use serde_json::json;

use crate::audit::{Sha256Digest, canonical};

const TREE: &str = "fingerprints";

/// Why the fingerprint store failed.
#[derive(Debug, thiserror::Error)]
pub enum FingerprintError {
    /// sled failed (or the database is locked by a running gateway).
    #[error("gateway state database: {0}")]
    Db(#[from] sled::Error),
    /// No tool of that name was ever seen.
    #[error("no tool named {0} has been seen by this gateway")]
    Unknown(String),
}

/// Whether a tool is as first seen (or as last accepted).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Matches the accepted fingerprint.
    Trusted,
    /// Seen for the first time just now.
    New,
    /// Differs from the accepted fingerprint: treated as critical.
    Changed,
}

impl Status {
    /// Lowercase name for output.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Trusted => "trusted",
            Status::New => "new",
            Status::Changed => "changed",
        }
    }
}

/// What observing one tool found.
pub struct Observation {
    /// The tool's current fingerprint.
    pub fingerprint: Sha256Digest,
    /// Its status against the accepted one.
    pub status: Status,
    /// The accepted fingerprint, when it differs.
    pub accepted: Option<Sha256Digest>,
    /// True the first time this particular changed fingerprint is seen (log it once).
    pub newly_changed: bool,
}

/// The store.
pub struct Fingerprints {
    tree: sled::Tree,
    changed: RwLock<HashSet<String>>,
}

/// The fingerprint of a tool under its exposed name.
pub fn fingerprint(exposed_name: &str, tool: &Tool) -> Sha256Digest {
    let value = json!({
        "name": exposed_name,
        "description": tool.description,
        "inputSchema": tool.input_schema.as_ref(),
        "annotations": tool.annotations,
    });
    Sha256Digest::of(&canonical(&value))
}

impl Fingerprints {
    /// Opens (or creates) the state database under `data_dir`.
    pub fn open(data_dir: &Path) -> Result<Self, FingerprintError> {
        Self::in_db(&open_state(data_dir)?)
    }

    /// The store inside an open state database (shared with the approval broker).
    pub fn in_db(db: &sled::Db) -> Result<Self, FingerprintError> {
        Ok(Self { tree: db.open_tree(TREE)?, changed: RwLock::default() })
    }

    /// Compares `tool` with what was accepted; records a first sighting.
    pub fn observe(&self, exposed_name: &str, tool: &Tool) -> Result<Observation, FingerprintError> {
        let fingerprint = fingerprint(exposed_name, tool);
        let stored = self.tree.get(exposed_name)?.and_then(|v| serde_json::from_slice::<Stored>(&v).ok());
        let observation = match stored {
            None => {
                self.put(exposed_name, &Stored { accepted: fingerprint.to_string(), seen: fingerprint.to_string() })?;
                Observation { fingerprint, status: Status::New, accepted: None, newly_changed: false }
            }
            Some(stored) if stored.accepted == fingerprint.to_string() => {
                if stored.seen != stored.accepted {
                    self.put(exposed_name, &Stored { seen: stored.accepted.clone(), ..stored })?;
                }
                Observation { fingerprint, status: Status::Trusted, accepted: None, newly_changed: false }
            }
            Some(stored) => {
                let newly_changed = stored.seen != fingerprint.to_string();
                if newly_changed {
                    self.put(exposed_name, &Stored { seen: fingerprint.to_string(), accepted: stored.accepted.clone() })?;
                }
                let accepted = stored.accepted.parse().ok();
                Observation { fingerprint, status: Status::Changed, accepted, newly_changed }
            }
        };
        let mut changed = self.changed.write().unwrap_or_else(PoisonError::into_inner);
        if observation.status == Status::Changed {
            changed.insert(exposed_name.to_owned());
        } else {
            changed.remove(exposed_name);
        }
        Ok(observation)
    }

    /// True when the tool's current fingerprint is not the accepted one.
    pub fn is_changed(&self, exposed_name: &str) -> bool {
        self.changed.read().unwrap_or_else(PoisonError::into_inner).contains(exposed_name)
    }

    /// Accepts the last seen fingerprint of `exposed_name` (`airlock tools accept`).
    pub fn accept(&self, exposed_name: &str) -> Result<Sha256Digest, FingerprintError> {
        let stored = self
            .tree
            .get(exposed_name)?
            .and_then(|v| serde_json::from_slice::<Stored>(&v).ok())
            .ok_or_else(|| FingerprintError::Unknown(exposed_name.to_owned()))?;
        self.put(exposed_name, &Stored { accepted: stored.seen.clone(), seen: stored.seen.clone() })?;
        self.tree.flush()?;
        self.changed.write().unwrap_or_else(PoisonError::into_inner).remove(exposed_name);
        stored.seen.parse().map_err(|_| FingerprintError::Unknown(exposed_name.to_owned()))
    }

    fn put(&self, name: &str, stored: &Stored) -> Result<(), FingerprintError> {
        let bytes = serde_json::to_vec(stored).unwrap_or_default();
        self.tree.insert(name, bytes)?;
        Ok(())
    }
}

/// Opens the gateway state database, `<data_dir>/state`.
pub fn open_state(data_dir: &Path) -> Result<sled::Db, sled::Error> {
    sled::open(data_dir.join("state"))
}

/// The stored form: what an operator accepted and what was last seen.
#[derive(serde::Serialize, serde::Deserialize)]
struct Stored {
    accepted: String,
    seen: String,
}
