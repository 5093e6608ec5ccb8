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
//!
//! The group is acknowledged once the journal holds it; its sled inserts follow. A lone
//! caller's group is inserted on the caller's thread. Groups the writer thread commits
//! (callers queued) are inserted by the applier thread, so the next group is sealed and
//! synced meanwhile: sled's inserts were a third of the writer thread's time with many
//! callers. Groups go into sled in commit order, one at a time. What reads sled in the
//! process sees only what sled has: the durable-size watch moves after a group's inserts,
//! and a new reader first waits for the inserts of every group committed before it
//! (`Applied::wait`).
//! A group whose signature is deferred (`signs_later`) has no checkpoint: no line, and no
//! `c` key; its records and state go the same way.
//! sled is flushed and fsynced, and `checkpoints.log` fsynced, only when the journal starts
//! over (every `journal::RESET_AT` bytes) and on close.

use std::fs;
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError, mpsc};
use std::thread;

use tokio::sync::watch;

use super::AuditError;
use super::journal::{self, Journal, Pair};
use super::log_store::{Committed, Load, LogStore, Seal};
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
    /// The groups' sled inserts and what they have reached.
    pub(crate) applied: Arc<Applied>,
    pub(crate) applier: Applier,
}

impl LogStore for LocalStore {
    fn commit(&mut self, mut seal: Seal, load: Load) -> Result<Committed, AuditError> {
        if let Some(why) = self.failed.clone().or_else(|| self.applied.failure()) {
            self.failed = Some(why.clone());
            return Err(AuditError::Failed(why));
        }
        let first = self.state.seq + 1;
        let result = seal(&self.state).and_then(|sealed| self.write_group(sealed, load));
        if let Err(e) = &result {
            tracing::error!(error = %e, "audit commit failed; the log refuses further writes");
            self.failed = Some(e.to_string());
        }
        result.map(|()| Committed { first, last: self.state.seq, size: self.state.seq })
    }

    fn signs_later(&self) -> bool {
        true
    }

    fn publishes_durable(&self) -> bool {
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
    fn write_group(&mut self, sealed: super::log_store::Sealed, load: Load) -> Result<(), AuditError> {
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
        // A lone caller inserts here unless earlier groups are still on their way in.
        match load {
            Load::Lone if self.applied.idle() => self.applied.insert(pairs, self.state.seq)?,
            _ => self.applier.send(&self.applied, pairs, self.state.seq)?,
        }
        if self.journal.len() >= journal::RESET_AT {
            self.settle()?;
        }
        Ok(())
    }

    /// Makes sled and `checkpoints.log` durable on their own, then starts the journal over.
    fn settle(&mut self) -> Result<(), AuditError> {
        self.applied.wait()?;
        self.db.flush()?;
        if self.fsync {
            self.syncer.sync()?;
            self.checkpoints.sync()?;
        }
        self.journal.reset(journal::mark(self.state.seq, self.state.checkpoints), self.fsync)
    }
}

/// Where the groups' sled inserts stand, shared by the store, its applier thread and the
/// log's readers.
pub(crate) struct Applied {
    db: sled::Db,
    progress: Mutex<Progress>,
    caught_up: Condvar,
    /// The log's durable-size watch: told a group's size once sled has the group.
    durable: watch::Sender<u64>,
}

#[derive(Default)]
struct Progress {
    /// Groups handed to the applier thread, and how many of them it has inserted.
    sent: u64,
    done: u64,
    /// The first insert that failed.
    failed: Option<String>,
}

impl Applied {
    pub(crate) fn new(db: sled::Db, durable: watch::Sender<u64>) -> Arc<Applied> {
        Arc::new(Applied { db, progress: Mutex::default(), caught_up: Condvar::new(), durable })
    }

    fn lock(&self) -> MutexGuard<'_, Progress> {
        self.progress.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn idle(&self) -> bool {
        let progress = self.lock();
        progress.sent == progress.done
    }

    fn failure(&self) -> Option<String> {
        self.lock().failed.clone()
    }

    /// Inserts one group's keys (the state key last), then says the log holds `size`
    /// records.
    fn insert(&self, pairs: Vec<Pair>, size: u64) -> Result<(), AuditError> {
        for (k, v) in pairs {
            self.db.insert(k, v)?;
        }
        self.durable.send_if_modified(|durable| {
            let grew = size > *durable;
            *durable = (*durable).max(size);
            grew
        });
        Ok(())
    }

    /// Waits until sled has every group handed to the applier so far. Short: at most the
    /// inserts of the groups committed meanwhile.
    pub(crate) fn wait(&self) -> Result<(), AuditError> {
        let mut progress = self.lock();
        let target = progress.sent;
        while progress.done < target && progress.failed.is_none() {
            progress = self.caught_up.wait(progress).unwrap_or_else(PoisonError::into_inner);
        }
        match &progress.failed {
            Some(why) => Err(AuditError::Failed(why.clone())),
            None => Ok(()),
        }
    }
}

/// The thread that inserts the writer thread's groups into sled, in order.
pub(crate) struct Applier {
    /// `None` once closing.
    tx: Option<mpsc::Sender<(Vec<Pair>, u64)>>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Applier {
    pub(crate) fn start(applied: &Arc<Applied>) -> Result<Applier, AuditError> {
        let (tx, rx) = mpsc::channel::<(Vec<Pair>, u64)>();
        let shared = applied.clone();
        let thread = thread::Builder::new()
            .name("airlock-audit-apply".into())
            .spawn(move || {
                for (pairs, size) in rx {
                    let result = shared.insert(pairs, size);
                    let mut progress = shared.lock();
                    progress.done += 1;
                    if let Err(e) = result {
                        tracing::error!(error = %e, "audit database insert failed; the log refuses further writes (the journal keeps the group)");
                        progress.failed.get_or_insert(e.to_string());
                    }
                    drop(progress);
                    shared.caught_up.notify_all();
                }
            })
            .map_err(|e| AuditError::Failed(format!("could not start the audit applier: {e}")))?;
        Ok(Applier { tx: Some(tx), thread: Some(thread) })
    }

    fn send(&self, applied: &Applied, pairs: Vec<Pair>, size: u64) -> Result<(), AuditError> {
        let gone = || AuditError::Failed("the audit applier stopped".into());
        let tx = self.tx.as_ref().ok_or_else(gone)?;
        applied.lock().sent += 1;
        tx.send((pairs, size)).map_err(|_| {
            // Nothing will insert it: count it done, and failed, so nobody waits for it.
            let mut progress = applied.lock();
            progress.done += 1;
            progress.failed.get_or_insert("the audit applier stopped".into());
            applied.caught_up.notify_all();
            gone()
        })
    }
}

impl Drop for Applier {
    fn drop(&mut self) {
        self.tx = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
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
