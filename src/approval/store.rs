//! Where the broker keeps approvals: the storage interface and its backends.
//!
//! Owns: [`ApprovalStore`] (approvals, the live index that lets a retried call re-attach,
//! the channels' notes) and [`Transition`], the store's side of one serialized transition;
//! the sled backend (`sled.rs`, `<data_dir>/state`) and the PostgreSQL one (`postgres.rs`).
//! Uses: `Approval` and its id.
//! Must not: decide anything or write the audit log (the broker does, inside a transition).
//!
//! Contract: a transition is opened with [`ApprovalStore::begin`] while the broker holds
//! its own lock; until it is dropped no other transition runs on any gateway sharing the
//! store (sled: one process; PostgreSQL: every replica). Reads inside it are fresh, and
//! [`Transition::put`] changes the approval and its live-index entry in one atomic step
//! and returns only once that is durable. Reads outside one ([`ApprovalStore::get`]) may
//! lag another replica's latest change by the time its notification takes. A read that
//! fails is an error, never "not found".

use futures::future::BoxFuture;
use serde_json::Value;
use tokio::sync::mpsc;

use super::{Approval, ApprovalId, Kind};

pub mod listen;
pub mod postgres;
pub mod sled;

#[cfg(test)]
mod conformance;

/// Why the store could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The backend is unreachable or refused (the database is down, the disk failed):
    /// nothing was changed.
    #[error("the approval store is unavailable: {0}")]
    Unavailable(String),
    /// Another writer changed the approval since it was read (optimistic concurrency).
    #[error("approval {0} was changed by another gateway meanwhile; nothing was written")]
    Conflict(ApprovalId),
}

impl From<::sled::Error> for StoreError {
    fn from(error: ::sled::Error) -> Self {
        StoreError::Unavailable(error.to_string())
    }
}

/// A change another gateway made, as this one learnt of it.
#[derive(Debug, Clone)]
pub struct Change {
    /// The approval as this gateway knew it before, if it did.
    pub before: Option<Approval>,
    pub after: Approval,
}

/// One serialized transition's reads and writes (see the module's contract).
pub trait Transition: Send {
    /// The approval as it is now.
    fn get<'a>(&'a mut self, id: &'a ApprovalId) -> BoxFuture<'a, Result<Option<Approval>, StoreError>>;
    /// The live approval (pending, or approved and unused) bound to `binding`, if any.
    fn live<'a>(&'a mut self, binding: &'a str) -> BoxFuture<'a, Result<Option<Approval>, StoreError>>;
    /// Stores `approval` and sets or clears its live-index entry, atomically and durably.
    fn put<'a>(&'a mut self, approval: &'a Approval) -> BoxFuture<'a, Result<(), StoreError>>;
    /// Drops an approval (a settled one past retention).
    fn remove<'a>(&'a mut self, id: &'a ApprovalId) -> BoxFuture<'a, Result<(), StoreError>>;
    /// Pending approvals whose holding replica's lease lapsed (their call is gone); forgets
    /// those replicas. Always empty where one gateway owns the store.
    fn orphans(&mut self) -> BoxFuture<'_, Result<Vec<Approval>, StoreError>>;
}

/// The approvals' storage backend.
pub trait ApprovalStore: Send + Sync + 'static {
    /// Starts a transition: waits for every other one (on every gateway sharing the store).
    fn begin(&self) -> BoxFuture<'_, Result<Box<dyn Transition + '_>, StoreError>>;
    /// One approval, as last known here.
    fn get(&self, id: &ApprovalId) -> Result<Option<Approval>, StoreError>;
    /// Every approval kept, in no particular order.
    fn all(&self) -> Result<Vec<Approval>, StoreError>;
    /// Keeps a channel's note about a hold, durably.
    fn remember<'a>(&'a self, channel: &'a str, id: &'a ApprovalId, note: &'a Value) -> BoxFuture<'a, Result<(), StoreError>>;
    /// Drops a channel's note.
    fn forget<'a>(&'a self, channel: &'a str, id: &'a ApprovalId) -> BoxFuture<'a, Result<(), StoreError>>;
    /// A channel's notes.
    fn notes<'a>(&'a self, channel: &'a str) -> BoxFuture<'a, Result<Vec<(ApprovalId, Value)>, StoreError>>;
    /// This replica's id where several gateways share the store (then a start must not
    /// cancel others' holds, and each hold names the replica its call waits on).
    fn replica(&self) -> Option<&str>;
    /// Changes made by other gateways, as they are learnt (None: nobody else writes).
    fn changes(&self) -> Option<mpsc::UnboundedReceiver<Change>>;
}

/// How long a replica's lease lasts without a heartbeat: then its holds are orphans.
pub const LEASE: std::time::Duration = std::time::Duration::from_secs(5);

/// What a hold is bound to: the key of the live index.
pub(crate) fn binding(kind: Kind, caller: &str, tool: &str, fingerprint: &str, args_hmac: &str) -> String {
    // Unit separators keep the parts apart whatever characters a principal holds.
    format!("{}\u{1f}{caller}\u{1f}{tool}\u{1f}{fingerprint}\u{1f}{args_hmac}", kind.as_str())
}

/// The live-index key of `approval`.
pub(crate) fn binding_of(approval: &Approval) -> String {
    binding(approval.kind, &approval.caller, &approval.tool, &approval.tool_fingerprint, &approval.args_hmac)
}

/// Whether `approval` belongs in the live index: a retry may still re-attach to it.
pub(crate) fn is_live(approval: &Approval) -> bool {
    approval.is_pending() || (approval.state == super::State::Approved && approval.executed_by.is_none())
}
