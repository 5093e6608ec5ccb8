//! The one writer: a dedicated thread that owns the sled database and does group commit.
//!
//! Owns: `AuditLog` (the cheap handle), `Recorded` (the proof token), sequence numbers,
//! record times, the chain, the Merkle frontier and checkpoint signing.
//! Uses: `store` for the layout, `keys` for signing.
//! Must not: acknowledge a record before its group (records, checkpoint, state) is in the
//! journal and (with `Durability::Fsync`) the journal is fdatasynced, and its checkpoint
//! line is written to `checkpoints.log`; put the state key into sled before the group's
//! other keys.
//!
//! One group commit: sign the checkpoint, write its line to `checkpoints.log` (no sync), write
//! the group to the journal, one `fdatasync` of the journal (`fsync` only), insert the group
//! into sled (state key last) without flushing, acknowledge. sled is flushed and fsynced, and `checkpoints.log`
//! fsynced, only when the journal starts over (every `journal::RESET_AT` bytes) and on close.
//!
//! The writer is an OS thread rather than a tokio task because it spends its time in
//! blocking `fsync`, which must not stall the runtime's workers. Callers talk to it over a
//! tokio channel and await a oneshot acknowledgement.

use std::fs;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::thread;
use std::time::SystemTime;

use serde_json::json;
use tokio::sync::{mpsc, oneshot, watch};

use super::checkpoint::Checkpoint;
use super::export::LogReader;
use super::digest::{Seq, Sha256Digest};
use super::keys::{PublicKey, Signature, SigningKey, sync_parent};
use super::merkle::{Frontier, leaf_hash};
use super::arguments::{ARGS_KEY_FILE, ArgsKey, Redactor};
use super::record::{Prepared, Record, RecordKind};
use super::journal::{self, Journal, Pair};
use super::store::{self, CheckpointFile, DirSyncer, LogPaths, State};
use super::{AuditConfig, AuditError, Durability};

/// Most records committed in one group; bounds the batch and the time to the next ack.
const MAX_GROUP: usize = 4096;
/// Requests that may wait for the writer before `append` applies back-pressure.
const QUEUE: usize = 1 << 16;

/// Proof that a record is durable in the log. Only the writer can make one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub struct Recorded {
    seq: Seq,
}

impl Recorded {
    /// The record's sequence number.
    pub fn seq(&self) -> Seq {
        self.seq
    }
}

type Ack = oneshot::Sender<Result<Recorded, AuditError>>;

enum Msg {
    Append(Prepared, Ack),
    /// Several records that must land in one group, in this order.
    AppendAll(Vec<(Prepared, Ack)>),
    Rotate(Arc<SigningKey>, Ack),
    Close(oneshot::Sender<()>),
}

struct Shared {
    redactor: Redactor,
    signer: RwLock<Arc<SigningKey>>,
    key_path: PathBuf,
    /// A read handle on the database for in-process readers (witness publishing); taken
    /// out by `close`, so the database lock goes with the writer.
    read_db: Mutex<Option<sled::Db>>,
    /// How many records are durable (acknowledged); followers of the log wait on it.
    durable: watch::Receiver<u64>,
}

/// A handle to the audit log's writer. Clones share one writer.
#[derive(Clone)]
pub struct AuditLog {
    tx: mpsc::Sender<Msg>,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AuditLog({})", self.public_key().id())
    }
}

impl AuditLog {
    /// Opens (or creates) the log under `cfg.data_dir` and starts its writer.
    pub fn open(cfg: AuditConfig) -> Result<AuditLog, AuditError> {
        fs::create_dir_all(&cfg.data_dir).map_err(|e| AuditError::io(&cfg.data_dir, e))?;
        let args_key = ArgsKey::load_or_create(&cfg.data_dir.join(ARGS_KEY_FILE))?;
        let redactor = Redactor::new(&cfg.redact, args_key)?;
        let paths = LogPaths::new(&cfg.data_dir, cfg.key_path.as_deref());
        let (db, replayed) = store::open_and_replay(&paths.db)?;
        let stored = match db.get(store::STATE_KEY)? {
            Some(bytes) => Some(
                State::decode(&bytes)
                    .ok_or_else(|| AuditError::Corrupt("unreadable writer state".into()))?,
            ),
            None if db.scan_prefix([store::RECORD_PREFIX]).next().is_some() => {
                return Err(AuditError::Corrupt("records without writer state".into()));
            }
            None => None,
        };
        let key = load_key(&paths.key, stored.as_ref().map(|s| s.key))?;
        let state = match stored {
            Some(s) => check_state(&db, s)?,
            None => State {
                seq: 0,
                chain_head: Sha256Digest::from_bytes([0; 32]),
                frontier: Frontier::new(),
                checkpoints: 0,
                key: key.public_key(),
            },
        };
        let checkpoints = CheckpointFile::open_and_reconcile(&paths.checkpoints, &db)?;
        let origin = logged_origin(&db)?.map_or(cfg.origin.clone(), |logged| {
            if logged != cfg.origin {
                tracing::warn!(%logged, configured = %cfg.origin, "keeping the log's origin; a log has one origin");
            }
            logged
        });
        // Whatever the journal held is in sled now (replayed on open): make sled durable
        // before the journal starts over. After a clean close there is nothing to settle,
        // which keeps syncs off the start-up path.
        let mut syncer = DirSyncer::new(&paths.db);
        if !replayed.clean {
            db.flush()?;
            syncer.sync()?;
        }
        let journal = Journal::open(&journal::path_for(&paths.db), state.checkpoints, replayed.clean)?;
        let (tx, rx) = mpsc::channel(QUEUE);
        let read_db = Mutex::new(Some(db.clone()));
        let (durable_tx, durable) = watch::channel(state.seq);
        let writer = Writer {
            db,
            syncer,
            journal,
            db_dir: paths.db.clone(),
            checkpoints,
            state,
            key: key.clone(),
            origin,
            fsync: matches!(cfg.durability, Durability::Fsync),
            failed: None,
            durable: durable_tx,
        };
        thread::Builder::new()
            .name("airlock-audit".into())
            .spawn(move || writer.run(rx))
            .map_err(|e| AuditError::io(&paths.db, e))?;
        let shared = Shared {
            redactor,
            signer: RwLock::new(key),
            key_path: paths.key,
            read_db,
            durable,
        };
        Ok(AuditLog {
            tx,
            shared: Arc::new(shared),
        })
    }

    /// Appends a record; resolves once it is durable and covered by a signed checkpoint.
    pub async fn append(&self, rec: Record) -> Result<Recorded, AuditError> {
        if matches!(rec.kind, RecordKind::Checkpoint | RecordKind::KeyRotated) {
            return Err(AuditError::ReservedKind(rec.kind));
        }
        let prepared = rec.prepare();
        self.request(|ack| Msg::Append(prepared, ack)).await
    }

    /// Appends `records` in order, in one group (one checkpoint, one fsync); resolves once
    /// all are durable.
    pub async fn append_all(&self, records: Vec<Record>) -> Result<Vec<Recorded>, AuditError> {
        let mut items = Vec::with_capacity(records.len());
        let mut done = Vec::with_capacity(records.len());
        for rec in records {
            if matches!(rec.kind, RecordKind::Checkpoint | RecordKind::KeyRotated) {
                return Err(AuditError::ReservedKind(rec.kind));
            }
            let (ack, rx) = oneshot::channel();
            items.push((rec.prepare(), ack));
            done.push(rx);
        }
        self.tx.send(Msg::AppendAll(items)).await.map_err(|_| AuditError::Closed)?;
        let mut recorded = Vec::with_capacity(done.len());
        for rx in done {
            recorded.push(rx.await.map_err(|_| AuditError::Closed)??);
        }
        Ok(recorded)
    }

    async fn request(&self, msg: impl FnOnce(Ack) -> Msg) -> Result<Recorded, AuditError> {
        let (ack, done) = oneshot::channel();
        self.tx
            .send(msg(ack))
            .await
            .map_err(|_| AuditError::Closed)?;
        done.await.map_err(|_| AuditError::Closed)?
    }

    /// The redactor built from the configured pointers, with the argument-digest key.
    pub fn redactor(&self) -> &Redactor {
        &self.shared.redactor
    }

    fn signer(&self) -> Arc<SigningKey> {
        match self.shared.signer.read() {
            Ok(k) => k.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// The current signing key's public half.
    pub fn public_key(&self) -> PublicKey {
        self.signer().public_key()
    }

    /// Signs `msg` with the log's current key (receipts of the approval broker).
    pub fn sign(&self, msg: &[u8]) -> Signature {
        self.signer().sign(msg)
    }

    /// Replaces the signing key: writes a `key_rotated` record signed by the old key that
    /// names the new one, then a checkpoint signed by the new key, then replaces the key
    /// file. Returns the rotation record's token.
    pub async fn rotate_key(&self) -> Result<Recorded, AuditError> {
        let new_key = Arc::new(SigningKey::generate()?);
        let staged = staged_key_path(&self.shared.key_path);
        match fs::remove_file(&staged) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(AuditError::io(&staged, e)),
        }
        new_key.write_new(&staged)?;
        let recorded = self
            .request(|ack| Msg::Rotate(new_key.clone(), ack))
            .await?;
        fs::rename(&staged, &self.shared.key_path)
            .map_err(|e| AuditError::io(&self.shared.key_path, e))?;
        sync_parent(&self.shared.key_path)?;
        match self.shared.signer.write() {
            Ok(mut k) => *k = new_key,
            Err(poisoned) => *poisoned.into_inner() = new_key,
        }
        Ok(recorded)
    }

    /// A reader of what is committed (acknowledged records and their checkpoints), for
    /// in-process readers. Drop it before `close`: it keeps the database open.
    pub fn reader(&self) -> Result<LogReader, AuditError> {
        let guard = self.shared.read_db.lock().map_err(|_| AuditError::Closed)?;
        guard.clone().map(LogReader::from_db).ok_or(AuditError::Closed)
    }

    /// The number of durable records (the last acknowledged sequence number), updated after
    /// every committed group: what a follower of the log may read up to.
    pub fn durable(&self) -> watch::Receiver<u64> {
        self.shared.durable.clone()
    }

    /// Commits what is queued, stops the writer and releases the database.
    pub async fn close(self) -> Result<(), AuditError> {
        if let Ok(mut db) = self.shared.read_db.lock() {
            db.take();
        }
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Msg::Close(tx)).await.is_err() {
            return Ok(()); // already stopped
        }
        rx.await.map_err(|_| AuditError::Closed)
    }
}

/// Where a new key waits while its rotation is being written.
fn staged_key_path(key_path: &std::path::Path) -> PathBuf {
    let mut name = key_path.as_os_str().to_owned();
    name.push(".new");
    PathBuf::from(name)
}

/// Loads the key, creating it for a new log. If the log says the current key is another
/// one, a rotation was interrupted after it was logged: finish it from the staged file.
fn load_key(
    path: &std::path::Path,
    logged: Option<PublicKey>,
) -> Result<Arc<SigningKey>, AuditError> {
    let key = match logged {
        None => SigningKey::load_or_create(path)?,
        Some(_) => SigningKey::load(path)?,
    };
    match logged {
        Some(expected) if expected != key.public_key() => {
            let staged = staged_key_path(path);
            match SigningKey::load(&staged) {
                Ok(new) if new.public_key() == expected => {
                    fs::rename(&staged, path).map_err(|e| AuditError::io(path, e))?;
                    sync_parent(path)?;
                    tracing::warn!("finished an interrupted key rotation");
                    Ok(Arc::new(new))
                }
                _ => Err(AuditError::KeyMismatch {
                    expected: expected.id().to_string(),
                    found: key.public_key().id().to_string(),
                }),
            }
        }
        _ => Ok(Arc::new(key)),
    }
}

/// Cheap consistency check of the persisted state against the last stored keys.
fn check_state(db: &sled::Db, state: State) -> Result<State, AuditError> {
    let last = |prefix: u8| -> Result<Option<u64>, AuditError> {
        Ok(db
            .scan_prefix([prefix])
            .keys()
            .next_back()
            .transpose()?
            .and_then(|k| store::key_number(&k)))
    };
    let last_seq = last(store::RECORD_PREFIX)?.unwrap_or(0);
    let checkpoints = last(store::CHECKPOINT_PREFIX)?.map_or(0, |i| i + 1);
    if last_seq != state.seq || checkpoints != state.checkpoints {
        return Err(AuditError::Corrupt(format!(
            "writer state says {} records and {} checkpoints, database has {last_seq} and {checkpoints}; run `airlock log verify`",
            state.seq, state.checkpoints
        )));
    }
    Ok(state)
}

/// The origin the log's last checkpoint names, if any.
fn logged_origin(db: &sled::Db) -> Result<Option<String>, AuditError> {
    let last = db
        .scan_prefix([store::CHECKPOINT_PREFIX])
        .values()
        .next_back()
        .transpose()?;
    Ok(last
        .and_then(|v| Checkpoint::from_slice(&v))
        .map(|c| c.origin))
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

fn now_rfc3339() -> String {
    humantime::format_rfc3339_micros(SystemTime::now()).to_string()
}

struct Writer {
    db: sled::Db,
    db_dir: PathBuf,
    syncer: DirSyncer,
    journal: Journal,
    checkpoints: CheckpointFile,
    state: State,
    key: Arc<SigningKey>,
    origin: String,
    fsync: bool,
    /// Set after a failed commit: memory and disk may disagree, so nothing more is written.
    failed: Option<String>,
    /// Told the record count after each durable group.
    durable: watch::Sender<u64>,
}

impl Writer {
    fn run(mut self, mut rx: mpsc::Receiver<Msg>) {
        let mut group: Vec<(Prepared, Ack)> = Vec::new();
        let mut closing = None;
        while closing.is_none() {
            let Some(first) = rx.blocking_recv() else {
                break;
            };
            let mut next = Some(first);
            while let Some(msg) = next.take() {
                match msg {
                    Msg::Append(rec, ack) => group.push((rec, ack)),
                    Msg::AppendAll(items) => group.extend(items),
                    Msg::Rotate(key, ack) => {
                        self.commit_group(&mut group);
                        let result = self.rotate(key);
                        let _ = ack.send(result);
                    }
                    Msg::Close(done) => {
                        closing = Some(done);
                        break;
                    }
                }
                if group.len() < MAX_GROUP {
                    next = rx.try_recv().ok();
                }
            }
            self.commit_group(&mut group);
        }
        // Release the database (and its lock) before telling `close` we are done. sled's IO
        // threads may hold the file a moment longer, so wait until its lock is free.
        let lock_file = self.db_dir.join("db");
        if self.failed.is_none() {
            if let Err(e) = self.settle() {
                tracing::error!(error = %e, "could not flush the audit database on close; its journal keeps the groups");
            }
        }
        drop(self);
        wait_for_unlock(&lock_file);
        if let Some(done) = closing {
            let _ = done.send(());
        }
    }

    fn commit_group(&mut self, group: &mut Vec<(Prepared, Ack)>) {
        if group.is_empty() {
            return;
        }
        let (records, acks): (Vec<_>, Vec<_>) = group.drain(..).unzip();
        let (size, started) = (records.len(), std::time::Instant::now());
        let result = self.commit(records);
        let elapsed = started.elapsed();
        for (ack, seq) in acks.into_iter().zip(seq_range(&result)) {
            let _ = ack.send(seq.map(|seq| Recorded { seq }));
        }
        super::stats::committed(super::stats::GroupCommitted { records: size, elapsed, ok: result.is_ok() });
    }

    /// Writes `records` and one checkpoint; returns the first and last sequence numbers.
    fn commit(&mut self, records: Vec<Prepared>) -> Result<(u64, u64), AuditError> {
        if let Some(why) = &self.failed {
            return Err(AuditError::Failed(why.clone()));
        }
        let first = self.state.seq + 1;
        let result = self.write_group(records);
        if let Err(e) = &result {
            tracing::error!(error = %e, "audit commit failed; the log refuses further writes");
            self.failed = Some(e.to_string());
        } else {
            self.durable.send_replace(self.state.seq);
        }
        result.map(|()| (first, self.state.seq))
    }

    fn write_group(&mut self, records: Vec<Prepared>) -> Result<(), AuditError> {
        let time = now_rfc3339();
        let mut pairs: Vec<Pair> = Vec::with_capacity(records.len() + 2);
        for rec in records {
            self.state.seq += 1;
            let bytes = rec.finish(Seq::new(self.state.seq), &time);
            self.state.chain_head =
                Sha256Digest::of_parts(&[self.state.chain_head.as_bytes(), &bytes]);
            self.state.frontier.push(leaf_hash(&bytes));
            let mut value = Vec::with_capacity(32 + bytes.len());
            value.extend_from_slice(self.state.chain_head.as_bytes());
            value.extend_from_slice(&bytes);
            pairs.push((store::record_key(self.state.seq).to_vec(), value));
        }
        let cp = Checkpoint::sign(
            &self.key,
            &self.origin,
            self.state.seq,
            self.state.frontier.root(),
            self.state.chain_head,
            time,
        );
        let cp_bytes = cp.to_canonical();
        // The line goes into checkpoints.log before the group is durable anywhere, so after
        // a kill the file is at most one unacknowledged group ahead of the log (dropped on
        // the next start) and never behind it: a line missing from the file is a removed line.
        self.checkpoints.append(&cp_bytes, false)?;
        pairs.push((store::checkpoint_key(self.state.checkpoints).to_vec(), cp_bytes));
        self.state.checkpoints += 1;
        self.state.key = self.key.public_key();
        pairs.push((store::STATE_KEY.to_vec(), self.state.encode()));
        self.journal.append(self.state.checkpoints, &pairs)?;
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
        self.journal.reset(self.state.checkpoints, self.fsync)
    }

    /// Logs the rotation under the old key, then a checkpoint under the new key, so the new
    /// key has signed something as soon as the rotation is acknowledged.
    fn rotate(&mut self, new_key: Arc<SigningKey>) -> Result<Recorded, AuditError> {
        let old = self.key.public_key();
        let new = new_key.public_key();
        let rec = Record::new(RecordKind::KeyRotated).detail(json!({
            "old_key": old.to_base64(), "old_key_id": old.id().to_string(),
            "new_key": new.to_base64(), "new_key_id": new.id().to_string(),
        }));
        let (seq, _) = self.commit(vec![rec.prepare()])?;
        self.key = new_key;
        self.commit(Vec::new())?;
        Ok(Recorded { seq: Seq::new(seq) })
    }
}

fn seq_range(
    result: &Result<(u64, u64), AuditError>,
) -> Box<dyn Iterator<Item = Result<Seq, AuditError>> + '_> {
    match result {
        Ok((first, last)) => Box::new((*first..=*last).map(|n| Ok(Seq::new(n)))),
        Err(e) => {
            let why = e.to_string();
            Box::new(std::iter::repeat_with(move || {
                Err(AuditError::Failed(why.clone()))
            }))
        }
    }
}
