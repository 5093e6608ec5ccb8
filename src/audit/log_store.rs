//! The one interface between the writer and where the log is kept, and between readers
//! and it: `LogStore` (append a group) and `LogSource` (read records and checkpoints).
//!
//! Owns: `LogStore`, `Seal`, `Sealed`, `Committed`, `LogSource`, `Readers`.
//! Uses: the writer's `State` (the head: size, chain head, Merkle frontier, checkpoint
//! count, key).
//! Must not: number, chain or sign anything: the writer's `Seal` does, for every backend,
//! so the record bytes, chain, tree and checkpoints are the same whichever store keeps them.
//!
//! Two implementations: the embedded one (`local`: sled + journal + `checkpoints.log`),
//! and PostgreSQL (`storage::audit_pg`, outside `audit`, which must import nothing of ours).
//! A store calls the seal with the head it holds (sled: its own; PostgreSQL: the head row it
//! has locked), so under PostgreSQL the head may have moved since the last group (other
//! replicas append too), and a seal may be called again when a transaction is retried.

use std::sync::Arc;

use super::AuditError;
use super::digest::Sha256Digest;
use super::export::LogReader;
use super::store::State;

/// Numbers the group's records after `head`, chains them, and signs the checkpoint.
pub type Seal = Box<dyn FnMut(&State) -> Result<Sealed, AuditError> + Send>;

/// One group, numbered, chained and signed, ready to store.
#[derive(Debug, Clone)]
pub struct Sealed {
    pub records: Vec<SealedRecord>,
    /// The group's canonical checkpoint; `None` when its signature is deferred (only for a
    /// store whose `signs_later` is true: a later group's checkpoint covers it).
    pub checkpoint: Option<Vec<u8>>,
    /// The head after the group (its `checkpoints` counts this group's checkpoint, if any).
    pub head: State,
}

/// One record of a sealed group.
#[derive(Debug, Clone)]
pub struct SealedRecord {
    pub seq: u64,
    /// The chain hash after this record.
    pub chain: Sha256Digest,
    /// Its canonical bytes.
    pub bytes: Vec<u8>,
}

/// A group the store made durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Committed {
    /// The group's first and last sequence numbers (`first > last`: no records).
    pub first: u64,
    pub last: u64,
    /// Records in the whole log now (other replicas' included).
    pub size: u64,
}

/// Who is committing a group: what a store may do after the group is durable and before
/// it returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Load {
    /// A lone caller on its own thread, or the writer with nothing else to do.
    Lone,
    /// The writer thread, with callers queued for the next group.
    Queued,
}

/// Where the writer keeps the log.
pub trait LogStore: Send {
    /// Stores one group atomically: calls `seal` with the current head and stores what it
    /// returns, or nothing. An error means the group is not acknowledged; the store decides
    /// whether later groups may still be tried (an unreachable database: yes).
    fn commit(&mut self, seal: Seal, load: Load) -> Result<Committed, AuditError>;
    /// Whether the store tells the log's durable-size watch itself, once what it has
    /// committed can be read (the embedded store inserts into sled after acknowledging).
    fn publishes_durable(&self) -> bool {
        false
    }
    /// Whether the signing key may be rotated by this writer alone (not when replicas
    /// share the log: they would disagree on the key).
    fn rotation_allowed(&self) -> bool {
        true
    }
    /// Whether the writer may hand this store a group without a checkpoint (a group no
    /// answer to a client waits on; the next group's checkpoint covers it, see `writer`).
    /// A store that says so must keep such a group as durably as any other.
    fn signs_later(&self) -> bool {
        false
    }
    /// Makes everything durable on its own and releases the store.
    fn close(self: Box<Self>);
}

/// Read access to a stored log, for `LogReader`.
pub trait LogSource: Send + Sync {
    /// The canonical bytes of record `seq`.
    fn get(&self, seq: u64) -> Result<Option<Vec<u8>>, AuditError>;
    /// The highest sequence number (0: empty).
    fn last_seq(&self) -> Result<u64, AuditError>;
    /// Up to `limit` records from `from` on, in order.
    fn records(&self, from: u64, limit: usize) -> Result<Vec<(u64, Vec<u8>)>, AuditError>;
    /// Every stored checkpoint's bytes, in order.
    fn checkpoints(&self) -> Result<Vec<Vec<u8>>, AuditError>;
}

/// Makes readers of a store's log (`AuditLog::reader`).
pub type Readers = Arc<dyn Fn() -> Result<LogReader, AuditError> + Send + Sync>;
