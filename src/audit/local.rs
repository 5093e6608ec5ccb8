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
//! checkpoint, the state key last) without flushing. With `fsync`, the writer thread's
//! groups (`commit_then`) are synced and inserted by a thread of their own while the writer
//! seals and writes the next group: at most `IN_FLIGHT` written groups wait at a time, and
//! one `fdatasync` covers all that were written before it started. A commit on the
//! caller's thread (`commit`) first waits for them (`drain`), so sled takes groups in order.
//! A group whose signature is deferred (`signs_later`) has no checkpoint: no line, and no
//! `c` key; its records and state go the same way.
//! sled is flushed and fsynced, and `checkpoints.log` fsynced, only when the journal starts
//! over (every `journal::RESET_AT` bytes) and on close.

use std::fs::{self, File};
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, mpsc};
use std::thread;

use super::AuditError;
use super::journal::{self, Journal, Pair};
use super::log_store::{Committed, Done, LogStore, Seal, Sealed};
use super::store::{self, CheckpointFile, DirSyncer, IN_FLIGHT, State};

pub(crate) struct LocalStore {
    db: sled::Db,
    db_dir: PathBuf,
    syncer: DirSyncer,
    journal: Journal,
    checkpoints: CheckpointFile,
    state: State,
    fsync: bool,
    /// Set after a failed commit: memory and disk may disagree, so nothing more is written.
    failed: Option<String>,
    /// With `fsync`: the thread that syncs written groups (`commit_then`).
    pipe: Option<Pipe>,
}


/// The sync thread: `fdatasync`s the journal for the groups the writer wrote, in order,
/// then applies each to sled and reports it durable. The writer seals and writes the next
/// group meanwhile, so a group's own work and the previous group's sync overlap.
struct Pipe {
    jobs: Option<mpsc::Sender<Job>>,
    shared: Arc<PipeShared>,
    thread: Option<thread::JoinHandle<()>>,
}

struct PipeShared {
    state: Mutex<PipeState>,
    changed: Condvar,
}

#[derive(Default)]
struct PipeState {
    /// Groups sent and not yet reported.
    in_flight: usize,
    /// Why a sync failed: every group after it fails too.
    failed: Option<String>,
}

struct Job {
    pairs: Vec<Pair>,
    committed: Committed,
    done: Done,
}

impl PipeShared {
    fn lock(&self) -> MutexGuard<'_, PipeState> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Waits until at most `most` groups are in flight; says why the pipe failed, if it did.
    fn wait_for(&self, most: usize) -> Option<String> {
        let mut state = self.lock();
        while state.in_flight > most {
            state = self.changed.wait(state).unwrap_or_else(std::sync::PoisonError::into_inner);
        }
        state.failed.clone()
    }
}

impl Pipe {
    fn start(journal: &Journal, db: sled::Db) -> Result<Pipe, AuditError> {
        let (file, path) = journal.sync_handle()?;
        let error_path = path.clone();
        let (jobs, rx) = mpsc::channel::<Job>();
        let shared = Arc::new(PipeShared { state: Mutex::default(), changed: Condvar::new() });
        let pipe_shared = shared.clone();
        let thread = thread::Builder::new()
            .name("airlock-audit-sync".into())
            .spawn(move || sync_groups(&rx, &file, &path, &db, &pipe_shared))
            .map_err(|e| AuditError::io(&error_path, e))?;
        Ok(Pipe { jobs: Some(jobs), shared, thread: Some(thread) })
    }
}

/// The sync thread's loop: one `fdatasync` covers every group written before it starts.
fn sync_groups(rx: &mpsc::Receiver<Job>, file: &File, path: &std::path::Path, db: &sled::Db, shared: &PipeShared) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        batch.extend(rx.try_iter());
        let failed = shared.lock().failed.clone();
        let synced = match failed {
            Some(why) => Err(AuditError::Failed(why)),
            None => file.sync_data().map_err(|e| AuditError::io(path, e)),
        };
        let count = batch.len();
        let mut outcome = synced;
        for job in batch {
            // Applied in order; the state key last (see `write_group`).
            if outcome.is_ok() {
                outcome = job.pairs.into_iter().try_for_each(|(k, v)| db.insert(k, v).map(|_| ()).map_err(AuditError::from));
            }
            match &outcome {
                Ok(()) => (job.done)(Ok(job.committed)),
                Err(e) => {
                    let why = e.to_string();
                    let mut state = shared.lock();
                    if state.failed.is_none() {
                        tracing::error!(error = %why, "audit commit failed; the log refuses further writes");
                        state.failed = Some(why.clone());
                    }
                    drop(state);
                    (job.done)(Err(AuditError::Failed(why)));
                }
            }
        }
        let mut state = shared.lock();
        state.in_flight -= count;
        shared.changed.notify_all();
    }
}

impl LogStore for LocalStore {
    fn commit(&mut self, seal: Seal) -> Result<Committed, AuditError> {
        self.drain()?;
        let (committed, pairs) = self.write(seal)?;
        self.apply(pairs)?;
        Ok(committed)
    }

    fn commit_then(&mut self, seal: Seal, done: Done) {
        let Some((shared, Some(jobs))) = self.pipe.as_ref().map(|pipe| (pipe.shared.clone(), pipe.jobs.clone())) else {
            done(self.commit(seal));
            return;
        };
        if let Some(why) = shared.wait_for(IN_FLIGHT - 1) {
            self.failed.get_or_insert(why.clone());
            done(Err(AuditError::Failed(why)));
            return;
        }
        let (committed, pairs) = match self.write(seal) {
            Ok(written) => written,
            Err(e) => return done(Err(e)),
        };
        shared.lock().in_flight += 1;
        let job = Job { pairs, committed, done };
        if let Err(mpsc::SendError(job)) = jobs.send(job) {
            shared.lock().in_flight -= 1;
            self.failed = Some("the audit sync thread stopped".into());
            (job.done)(Err(AuditError::Failed("the audit sync thread stopped".into())));
            return;
        }
        if self.journal.len() >= journal::RESET_AT
            && let Err(e) = self.drain().and_then(|()| self.settle())
        {
            self.fail(&e);
        }
    }

    fn idle(&self) -> bool {
        self.pipe.as_ref().is_none_or(|pipe| pipe.shared.lock().in_flight == 0)
    }

    fn signs_later(&self) -> bool {
        true
    }

    fn close(mut self: Box<Self>) {
        // Release the database (and its lock) before the writer says it is closed. sled's
        // IO threads may hold the file a moment longer, so wait until its lock is free.
        let lock_file = self.db_dir.join("db");
        if let Err(e) = self.drain() {
            tracing::error!(error = %e, "audit groups were not made durable on close; the log refuses them");
        }
        if let Some(mut pipe) = self.pipe.take() {
            pipe.jobs = None;
            if let Some(thread) = pipe.thread.take() {
                let _ = thread.join();
            }
        }
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
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        db: sled::Db,
        db_dir: PathBuf,
        syncer: DirSyncer,
        journal: Journal,
        checkpoints: CheckpointFile,
        state: State,
        fsync: bool,
    ) -> Result<LocalStore, AuditError> {
        let pipe = if fsync { Some(Pipe::start(&journal, db.clone())?) } else { None };
        Ok(LocalStore { db, db_dir, syncer, journal, checkpoints, state, fsync, failed: None, pipe })
    }

    fn fail(&mut self, e: &AuditError) {
        tracing::error!(error = %e, "audit commit failed; the log refuses further writes");
        self.failed = Some(e.to_string());
    }

    /// Waits until every written group is durable and in sled.
    fn drain(&mut self) -> Result<(), AuditError> {
        if let Some(why) = self.pipe.as_ref().and_then(|pipe| pipe.shared.wait_for(0)) {
            self.failed.get_or_insert(why);
        }
        match &self.failed {
            Some(why) => Err(AuditError::Failed(why.clone())),
            None => Ok(()),
        }
    }

    /// Seals the group and writes it to `checkpoints.log` and the journal; returns what
    /// goes into sled once it is durable.
    fn write(&mut self, mut seal: Seal) -> Result<(Committed, Vec<Pair>), AuditError> {
        if let Some(why) = &self.failed {
            return Err(AuditError::Failed(why.clone()));
        }
        let first = self.state.seq + 1;
        let result = seal(&self.state).and_then(|sealed| self.write_group(sealed));
        match result {
            Ok(pairs) => Ok((Committed { first, last: self.state.seq, size: self.state.seq }, pairs)),
            Err(e) => {
                self.fail(&e);
                Err(e)
            }
        }
    }

    fn write_group(&mut self, sealed: Sealed) -> Result<Vec<Pair>, AuditError> {
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
        // a kill the file is at most `IN_FLIGHT` unacknowledged groups ahead of the log
        // (dropped on the next start) and never behind it: a line missing from the file is
        // a removed line.
        if let Some(checkpoint) = sealed.checkpoint {
            self.checkpoints.append(&checkpoint, false)?;
            pairs.push((store::checkpoint_key(self.state.checkpoints).to_vec(), checkpoint));
        }
        let before = journal::mark(self.state.seq, self.state.checkpoints);
        self.state = sealed.head;
        pairs.push((store::STATE_KEY.to_vec(), self.state.encode()));
        self.journal.append(before, journal::mark(self.state.seq, self.state.checkpoints), &pairs)?;
        Ok(pairs)
    }

    /// Makes a written group durable here (one `fdatasync` with `fsync`) and applies it.
    fn apply(&mut self, pairs: Vec<Pair>) -> Result<(), AuditError> {
        let applied = self.sync_and_insert(pairs);
        if let Err(e) = &applied {
            self.fail(e);
        }
        applied
    }

    fn sync_and_insert(&mut self, pairs: Vec<Pair>) -> Result<(), AuditError> {
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
    /// Only with nothing in flight (`drain`).
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
