//! What the writer reports about each group commit, for whoever wants to count them
//! (telemetry). The audit log depends on nothing of ours, so it offers an observer
//! instead of calling a metrics module.
//!
//! Owns: `GroupCommitted` and the process's one commit observer.
//! Uses: nothing else of ours.
//! Must not: block or fail the writer: the observer runs on the writer thread after the
//! group's acks were sent, and must be cheap.

use std::sync::OnceLock;
use std::time::Duration;

/// One group commit: its size, how long write + sync took, and whether it succeeded.
#[derive(Debug, Clone, Copy)]
pub struct GroupCommitted {
    /// Records in the group (the checkpoint not counted).
    pub records: usize,
    /// Time to write the group, its checkpoint and sync them.
    pub elapsed: Duration,
    /// `false` when the commit failed (the log then refuses further writes).
    pub ok: bool,
}

type Observer = Box<dyn Fn(GroupCommitted) + Send + Sync>;

static OBSERVER: OnceLock<Observer> = OnceLock::new();

/// Sets the process's commit observer; a second call is ignored.
pub fn observe_commits(observer: Observer) {
    let _ = OBSERVER.set(observer);
}

/// Called by the writer after each group commit.
pub(super) fn committed(commit: GroupCommitted) {
    if let Some(observer) = OBSERVER.get() {
        observer(commit);
    }
}
