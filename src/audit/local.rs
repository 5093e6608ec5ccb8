//! The embedded store of the log: sled, its journal and `checkpoints.log` under the data
//! directory (one gateway per data dir).
//!
//! Owns: `LocalStore`, the order of the writes of one group commit and when sled is settled.
//! Uses: `store` (layout, state, `DirSyncer`, `CheckpointFile`), `journal`.
//! Must not: report a group committed before it (records, checkpoint, state) is in the
//! journal and (with `Durability::Fsync`) the journal is fdatasynced, and its checkpoint
//! line is written to `checkpoints.log`; put the state key into sled before the group's
//! other keys; write anything after a failed group (memory and disk may disagree).
//!
//! One group commit: seal (number, chain, sign), write the checkpoint line to
//! `checkpoints.log` (no sync), write the group to the journal, one `fdatasync` of the
//! journal (`fsync` only), insert the group into sled (its records under one key, then the
//! checkpoint, the state key last) without flushing.
//! A group whose signature is deferred (`signs_later`) has no checkpoint: no line, and no
//! `c` key; its records and state go the same way.
//! sled is flushed and fsynced, and `checkpoints.log` fsynced, only when the journal starts
//! over (every `journal::RESET_AT` bytes) and on close.

use std::fs;
use std::path::PathBuf;
use std::thread;

use super::AuditError;
use super::journal::{self, Journal, Pair};
use super::log_store::{Committed, LogStore, Seal};
use super::store::{self, CheckpointFile, DirSyncer, State};

pub(crate) struct LocalStore {
    pub(crate) db: sled::Db,
    pub(crate) db_dir: PathBuf,
    pub(crate) syncer: DirSyncer,
    pub(crate) journal: Journal,
    pub(crate) checkpoints: CheckpointFile,
    pub(crate) state: State,
    pub(crate) fsync: bool,
    /// Set after a failed commit: memory and disk may disagree, so nothing more is written.
    pub(crate) failed: Option<String>,
}

impl LogStore for LocalStore {
    fn commit(&mut self, mut seal: Seal) -> Result<Committed, AuditError> {
        if let Some(why) = &self.failed {
            return Err(AuditError::Failed(why.clone()));
        }
        let first = self.state.seq + 1;
        let result = seal(&self.state).and_then(|sealed| self.write_group(sealed));
        if let Err(e) = &result {
            tracing::error!(error = %e, "audit commit failed; the log refuses further writes");
            self.failed = Some(e.to_string());
        }
        result.map(|()| Committed { first, last: self.state.seq, size: self.state.seq })
    }

    fn signs_later(&self) -> bool {
        true
    }

    fn close(mut self: Box<Self>) {
        // Release the database (and its lock) before the writer says it is closed. sled's
        // IO threads may hold the file a moment longer, so wait until its lock is free.
        let lock_file = self.db_dir.join("db");
        if self.failed.is_none()
            && let Err(e) = self.settle()
        {
            tracing::error!(error = %e, "could not flush the audit database on close; its journal keeps the groups");
        }
        drop(self);
        wait_for_unlock(&lock_file);
    }
}

impl LocalStore {
    fn write_group(&mut self, sealed: super::log_store::Sealed) -> Result<(), AuditError> {
        let mut pairs: Vec<Pair> = Vec::with_capacity(3);
        if let Some(last) = sealed.records.last().map(|r| r.seq) {
            let size = sealed.records.iter().map(|r| store::FRAME + r.bytes.len()).sum();
            let mut group = Vec::with_capacity(size);
            for rec in &sealed.records {
                store::push_to_group(&mut group, &rec.chain, &rec.bytes)?;
            }
            pairs.push((store::group_key(last).to_vec(), group));
        }
        // The line goes into checkpoints.log before the group is durable anywhere, so after
        // a kill the file is at most one unacknowledged group ahead of the log (dropped on
        // the next start) and never behind it: a line missing from the file is a removed line.
        if let Some(checkpoint) = sealed.checkpoint {
            self.checkpoints.append(&checkpoint, false)?;
            pairs.push((store::checkpoint_key(self.state.checkpoints).to_vec(), checkpoint));
        }
        let before = journal::mark(self.state.seq, self.state.checkpoints);
        self.state = sealed.head;
        pairs.push((store::STATE_KEY.to_vec(), self.state.encode()));
        self.journal.append(before, journal::mark(self.state.seq, self.state.checkpoints), &pairs)?;
        if self.fsync {
            self.journal.sync()?;
        }
        // Plain inserts, not a sled batch: a batch rolls sled's IO buffer, that is one write
        // and one `sync_file_range(WAIT_AFTER)` per group. The state key goes last, so a crash
        // can leave sled with part of a group but with the state of the group before, and the
        // journal (already durable) replays the whole group on open.
        for (k, v) in pairs {
            self.db.insert(k, v)?;
        }
        if self.journal.len() >= journal::RESET_AT {
            self.settle()?;
        }
        Ok(())
    }

    /// Makes sled and `checkpoints.log` durable on their own, then starts the journal over.
    fn settle(&mut self) -> Result<(), AuditError> {
        self.db.flush()?;
        if self.fsync {
            self.syncer.sync()?;
            self.checkpoints.sync()?;
        }
        self.journal.reset(journal::mark(self.state.seq, self.state.checkpoints), self.fsync)
    }
}

/// Waits (up to 5 s) until nobody holds the flock sled takes on `path`.
fn wait_for_unlock(path: &std::path::Path) {
    let Ok(file) = fs::File::open(path) else {
        return;
    };
    for _ in 0..5000 {
        if file.try_lock().is_ok() {
            let _ = file.unlock();
            return;
        }
        thread::sleep(std::time::Duration::from_millis(1));
    }
    tracing::warn!(path = %path.display(), "audit database still locked after close");
}
