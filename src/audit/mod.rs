//! The signed, hash-chained audit log.
//!
//! Owns: the record format, canonical JSON, the writer with group commit, checkpoints,
//! Merkle proofs, verification, export and the signing key.
//! Uses: nothing else of ours (sled, ring, serde_json, tokio channels only).
//! Must not: `use crate::` anything outside `audit`; acknowledge a record before it is
//! durable; store an argument value that a redaction pointer names.
//!
//! On disk under `data_dir`: the sled database `audit/` (records, checkpoints, writer state;
//! see `store`), `checkpoints.log` (every checkpoint again, outside sled, so a truncated or
//! rewritten database is detectable), the key `audit-key` (PKCS#8, mode 0600) unless a
//! key path is configured, and `args-key` (32 bytes, mode 0600), which keys argument digests.
//!
//! Each record is hashed into a chain, `hash_i = SHA-256(hash_{i-1} ‖ canonical(record_i))`
//! with `hash_0` = 32 zero bytes, and is leaf `i-1` of an RFC 6962 Merkle tree. Every group
//! commit ends with a checkpoint signing `{origin, size, root, chain_head, time}`.

use std::path::{Path, PathBuf};
use std::time::Duration;

mod arguments;
mod canonical;
mod checkpoint;
mod digest;
mod export;
mod journal;
mod keys;
mod local;
mod log_store;
mod merkle;
mod note;
mod record;
mod stats;
pub(crate) mod store;
mod trusted;
mod verify;
mod writer;

pub use arguments::{ARGS_KEY_FILE, ArgsHmac, ArgsKey, DEFAULT_REDACT, REDACTED, Redactor};
pub use canonical::{canonical, canonical_value};
pub use checkpoint::{Checkpoint, Form, signed_message};
pub use digest::{BadDigest, Seq, Sha256Digest};
pub use export::{InclusionProof, LogReader, check_proof};
pub use log_store::{Committed, Load, LogSource, LogStore, Readers, Seal, Sealed, SealedRecord};
pub use keys::{KeyId, PublicKey, Signature, SigningKey};
pub use merkle::{
    Frontier, consistency_proof, empty_root, inclusion_proof, leaf_hash, node_hash, root_of,
    verify_consistency, verify_inclusion,
};
pub use note::{CheckpointText, KeyName, MAX_NOTE_BYTES, Note, NoteError, NoteSignature, VerifierKey, cosign};
pub use record::{RECORD_VERSION, Record, RecordKind};
pub use stats::{GroupCommitted, observe_commits};
pub use store::{LogPaths, State as LogHead};
pub use trusted::{
    ConsistencyProof, Provable, check_consistency, check_trusted, cosignatures, provable,
    split_notes, witnessed, witnessed_dir,
};
pub use verify::{
    Problem, Trust, VerifyFailure, VerifyReport, verify_dir, verify_export, verify_live, verify_reader,
    verify_stopped,
};
pub use writer::{AuditLog, Recorded};
/// For `fuzzing::journal_replay` only: the journal stays private to the log.
#[cfg(feature = "fuzzing")]
pub(crate) use journal::{Stored as JournalStored, replay as journal_replay};

/// How the log is opened.
#[derive(Debug, Clone)]
pub struct AuditConfig {
    /// Directory holding `audit/`, `checkpoints.log` and (by default) `audit-key`.
    pub data_dir: PathBuf,
    pub durability: Durability,
    /// Signing key file; `<data_dir>/audit-key` when `None`.
    pub key_path: Option<PathBuf>,
    /// Names this log in checkpoints (e.g. the gateway's host name).
    pub origin: String,
    /// JSON pointers into tool arguments whose values are replaced before storage.
    pub redact: Vec<String>,
    /// Longest a group whose signature is deferred (a forwarded call's first records) stays
    /// unsigned when no other group comes to cover it. 5 ms unless the environment says
    /// otherwise (`AIRLOCK_AUDIT_SIGN_WITHIN_MS`: how the crash tests hold the window open).
    pub sign_within: Duration,
}

/// The environment variable that sets `AuditConfig::sign_within`, in milliseconds.
pub const SIGN_WITHIN_ENV: &str = "AIRLOCK_AUDIT_SIGN_WITHIN_MS";

impl AuditConfig {
    /// Defaults for a data directory: fsync, default key path, origin `airlock`, no redaction.
    pub fn new(data_dir: impl Into<PathBuf>) -> AuditConfig {
        AuditConfig {
            data_dir: data_dir.into(),
            durability: Durability::Fsync,
            key_path: None,
            origin: "airlock".to_owned(),
            redact: Vec::new(),
            sign_within: std::env::var(SIGN_WITHIN_ENV)
                .ok()
                .and_then(|ms| ms.parse().ok())
                .map_or(Duration::from_millis(5), Duration::from_millis),
        }
    }
}

/// Whether an acknowledgement waits for fsync.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// Acknowledge after the group is fsynced (survives power loss). The default.
    #[default]
    Fsync,
    /// Acknowledge after the group is handed to the OS (survives a process crash only).
    None,
}

/// Everything that can go wrong in the audit log.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuditError {
    /// A file operation failed.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// sled reported an error.
    #[error("audit database: {0}")]
    Db(#[from] sled::Error),
    /// Another process (usually a running gateway) has the database open.
    #[error(
        "the audit database {} is locked by another process (a running gateway?); stop it or use an export",
        .0.display()
    )]
    Locked(PathBuf),
    /// There is no log at this path.
    #[error("no audit log at {} (wrong --data-dir?)", .0.display())]
    NoLog(PathBuf),
    /// The key file is not an Ed25519 PKCS#8 key.
    #[error("{}: not an Ed25519 PKCS#8 key file", .0.display())]
    BadKeyFile(PathBuf),
    /// The public key file holds no base64 or hex Ed25519 public key.
    #[error("{}: no Ed25519 public key (base64 or hex) found", .0.display())]
    BadPublicKey(PathBuf),
    /// The system random generator failed.
    #[error("could not generate an Ed25519 key")]
    KeyGeneration,
    /// The log was last signed by another key than the key file holds.
    #[error(
        "the key file holds key {found} but the log is signed by key {expected}; configure the right key_path"
    )]
    KeyMismatch { expected: String, found: String },
    /// A redaction pointer is not a JSON pointer.
    #[error(
        "{0:?} is not a redaction pointer (it must start with \"/\" or \"**/\", e.g. \"**/password\"; write \"~\" as \"~0\")"
    )]
    BadRedaction(String),
    /// The argument-digest key file is not 32 bytes.
    #[error("{}: not an argument-digest key (32 bytes); restore it or move it away to make a new one", .0.display())]
    BadArgsKey(PathBuf),
    /// Only the writer writes records of this kind.
    #[error("records of kind {0:?} are written by the log itself")]
    ReservedKind(RecordKind),
    /// The stored state does not add up.
    #[error("audit log is inconsistent: {0}")]
    Corrupt(String),
    /// The writer has stopped.
    #[error("the audit log is closed")]
    Closed,
    /// An earlier write failed; the writer refuses further writes.
    #[error("the audit log stopped after a failed write: {0}")]
    Failed(String),
    /// No checkpoint covers exactly this many records (0: the log has none).
    #[error("no checkpoint for {0} records (checkpoint sizes are listed by `airlock log export`)")]
    NoCheckpoint(u64),
    /// No record with this sequence number.
    #[error("no record with sequence number {0}")]
    NotFound(Seq),
    /// The shared log's database cannot be reached, or its transaction failed; nothing of
    /// the group was committed and later groups are tried again.
    #[error("the audit database is unavailable, so calls that must be recorded are refused: {0}")]
    Unavailable(String),
    /// The shared log does not extend the newest checkpoint this replica has seen.
    #[error(
        "the shared audit log holds {found} records and does not extend the checkpoint of {seen} records this replica saw: \
         the database lost commits (a failover without synchronous replication, or a restored backup); refusing to append. \
         Restore the lost records, or after an investigation remove {} to accept the database as it is",
        .marker
    )]
    NotExtending { seen: u64, found: u64, marker: String },
    /// Key rotation on a log that replicas share.
    #[error("key rotation is refused while replicas share the log ([storage] backend = \"postgres\"): every replica signs with the same key")]
    SharedRotation,
}

impl AuditError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> AuditError {
        AuditError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}
