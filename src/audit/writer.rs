//! The one writer: a dedicated thread that numbers, chains and signs each group and hands
//! it to the log's store (`LogStore`: sled here, or PostgreSQL shared by replicas).
//!
//! Owns: `AuditLog` (the cheap handle), `Recorded` (the proof token), group commit (what
//! goes in one group), `seal` (sequence numbers, record times, the chain, the Merkle
//! frontier and checkpoint signing: the one place they are computed, for every store).
//! Uses: `log_store` for the store interface, `local` for the embedded store, `keys`.
//! Must not: acknowledge a record before its store reports the group committed.
//!
//! The writer is an OS thread rather than a tokio task because it spends its time in
//! blocking `fsync` (or waiting on the database), which must not stall the runtime's
//! workers. Callers talk to it over a tokio channel and await a oneshot acknowledgement.
//! With the embedded store, a lone caller (nobody else appending) that finds the writer
//! idle (nothing queued, no group being committed) commits its group itself, on its own
//! thread: that saves the two thread hand-offs of a group commit, which were most of a
//! sequential call's wall time. At most one caller does so at a time (it holds the writer's
//! lock), so at most one runtime worker waits on an `fdatasync`; whatever arrives meanwhile
//! queues for the writer thread and is committed as the next group.
//!
//! Signatures deferred: a group that no answer to a client waits on (`append_all_sign_later`:
//! a call's `call_received`, `decision`, `call_forwarded`, before it is forwarded) is made
//! durable like any other, records and state, but without a checkpoint. The next group's
//! checkpoint covers it, or, when no group comes within `AuditConfig::sign_within` (5 ms),
//! a checkpoint-only group signed by the deadline thread; closing the log signs it too, and opening a log
//! whose records go past its last checkpoint (a crash in between) signs them before
//! anything else is written. So a call costs one signature, its `call_completed` group's,
//! and every record of a call that was answered is covered by a signed checkpoint. Only the
//! embedded store defers (`LogStore::signs_later`); replicas on PostgreSQL sign every group.

use std::fs;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, RwLock, TryLockError};
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use serde_json::json;
use tokio::sync::{mpsc, oneshot, watch};

use super::checkpoint::Checkpoint;
use super::export::LogReader;
use super::digest::{Seq, Sha256Digest};
use super::keys::{NewFiles, PublicKey, Signature, SigningKey, sync_parent};
use super::merkle::leaf_hash;
use super::arguments::{ARGS_KEY_FILE, ArgsKey, Redactor};
use super::record::{Prepared, Record, RecordKind};
use super::journal::{self, Journal};
use super::local::{Applied, Applier, LocalStore};
use super::log_store::{Load, LogStore, Readers, Seal, Sealed, SealedRecord};
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

/// Whether a group's checkpoint must be signed before it is acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Signing {
    Now,
    /// No client answer waits on the group: the next group (or the deadline) signs it.
    Later,
}

enum Msg {
    Append(Prepared, Ack),
    /// Several records that must land in one group, in this order.
    AppendAll(Vec<(Prepared, Ack)>, Signing),
    Rotate(Arc<SigningKey>, Ack),
    Close(oneshot::Sender<()>),
}

struct Shared {
    redactor: Redactor,
    signer: RwLock<Arc<SigningKey>>,
    key_path: PathBuf,
    /// Makes readers for in-process readers (witness publishing, live export); taken out
    /// by `close`, so the sled database lock goes with the writer.
    readers: Mutex<Option<Readers>>,
    /// False when replicas share the log (their key must stay the same).
    rotation_allowed: bool,
    /// How many records are durable and readable (the embedded store tells it once sled
    /// has a group, just after acknowledging it); followers of the log wait on it.
    durable: watch::Receiver<u64>,
    /// The writer, driven by its thread or (`inline`) by a caller that finds it idle.
    writer: Arc<Mutex<Writer>>,
    /// Callers may commit on their own thread: the embedded store (its commit never enters
    /// a runtime of its own, as the PostgreSQL store's does).
    inline: bool,
    /// Callers inside `append`/`append_all`. Only a lone caller commits on its own thread:
    /// concurrent callers go to the writer thread, whose groups gather them (a caller that
    /// committed alone would make a group, and a signature, of its records only).
    appending: AtomicUsize,
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
        // The files a new log creates are synced together, before `start` (see `NewFiles`).
        let mut created = NewFiles::default();
        let args_key = ArgsKey::load_or_create_in(&cfg.data_dir.join(ARGS_KEY_FILE), &mut created)?;
        let redactor = Redactor::new(&cfg.redact, args_key)?;
        let paths = LogPaths::new(&cfg.data_dir, cfg.key_path.as_deref());
        let (db, replayed) = store::open_and_replay(&paths.db)?;
        let stored = match db.get(store::STATE_KEY)? {
            Some(bytes) => Some(
                State::decode(&bytes)
                    .ok_or_else(|| AuditError::Corrupt("unreadable writer state".into()))?,
            ),
            None if store::has_records(&db)? => {
                return Err(AuditError::Corrupt("records without writer state".into()));
            }
            None => None,
        };
        let key = load_key(&paths.key, stored.as_ref().map(|s| s.key), &mut created)?;
        let state = match stored {
            Some(s) => check_state(&db, s)?,
            None => State::empty(key.public_key()),
        };
        let checkpoints = CheckpointFile::open_and_reconcile(&paths.checkpoints, &db, &mut created)?;
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
        let journal = Journal::open(&journal::path_for(&paths.db), journal::mark(state.seq, state.checkpoints), replayed.clean, &mut created)?;
        created.sync()?;
        // Records past the last checkpoint: a group whose signature was deferred when the
        // process stopped. `start` signs them before anything else is written.
        let unsigned = state.seq > logged_size(&db)?;
        let (durable_tx, durable) = watch::channel(state.seq);
        let applied = Applied::new(db.clone(), durable_tx);
        let applier = Applier::start(&applied)?;
        let read_db = db.clone();
        let caught_up = applied.clone();
        // A reader sees every group acknowledged before it was made (see `local`).
        let readers: Readers = Arc::new(move || {
            caught_up.wait()?;
            Ok(LogReader::from_db(read_db.clone()))
        });
        let local = LocalStore {
            db,
            syncer,
            journal,
            db_dir: paths.db.clone(),
            checkpoints,
            state: state.clone(),
            fsync: matches!(cfg.durability, Durability::Fsync),
            failed: None,
            applied,
            applier,
        };
        start(Started { store: Box::new(local), readers, durable, size: state.seq, key, origin, redactor, key_path: paths.key, inline: true, unsigned, sign_within: cfg.sign_within })
    }

    /// Opens the log kept by another store (PostgreSQL shared by replicas). `head` is the
    /// store's head when opened (`None`: an empty log), `origin` the origin its last
    /// checkpoint names. The key file must hold the key the head says signs the log: all
    /// replicas share one key. Key rotation is refused (it would split the replicas).
    pub fn open_shared(
        cfg: AuditConfig,
        store: Box<dyn LogStore>,
        readers: Readers,
        head: Option<(u64, PublicKey)>,
        origin: Option<String>,
    ) -> Result<AuditLog, AuditError> {
        fs::create_dir_all(&cfg.data_dir).map_err(|e| AuditError::io(&cfg.data_dir, e))?;
        let args_key = ArgsKey::load_or_create(&cfg.data_dir.join(ARGS_KEY_FILE))?;
        let redactor = Redactor::new(&cfg.redact, args_key)?;
        let paths = LogPaths::new(&cfg.data_dir, cfg.key_path.as_deref());
        let mut created = NewFiles::default();
        let key = load_key(&paths.key, head.as_ref().map(|(_, k)| *k), &mut created)?;
        created.sync()?;
        let origin = origin.unwrap_or(cfg.origin);
        let size = head.map_or(0, |(size, _)| size);
        let (_, durable) = watch::channel(size);
        start(Started { store, readers, durable, size, key, origin, redactor, key_path: paths.key, inline: false, unsigned: false, sign_within: cfg.sign_within })
    }

    /// Appends a record; resolves once it is durable and covered by a signed checkpoint.
    pub async fn append(&self, rec: Record) -> Result<Recorded, AuditError> {
        if matches!(rec.kind, RecordKind::Checkpoint | RecordKind::KeyRotated) {
            return Err(AuditError::ReservedKind(rec.kind));
        }
        let prepared = rec.prepare();
        let appending = Appending::enter(&self.shared.appending);
        match self.commit_here(vec![prepared], appending.others == 0, Signing::Now) {
            Ok(done) => done.and_then(|recorded| recorded.into_iter().next().ok_or(AuditError::Closed)),
            Err(mut back) => {
                let prepared = back.remove(0);
                self.request(|ack| Msg::Append(prepared, ack)).await
            }
        }
    }

    /// Appends `records` in order, in one group (one checkpoint, one fsync); resolves once
    /// all are durable and covered by a signed checkpoint.
    pub async fn append_all(&self, records: Vec<Record>) -> Result<Vec<Recorded>, AuditError> {
        self.append_group(records, Signing::Now).await
    }

    /// `append_all` for a group that no answer to a client waits on (what a call records
    /// before it is forwarded): resolves once all are durable; their checkpoint is signed
    /// with the next group, within `AuditConfig::sign_within` if none comes, on close, or
    /// by the next open after a crash (see the module doc). Replicas sign it at once.
    pub async fn append_all_sign_later(&self, records: Vec<Record>) -> Result<Vec<Recorded>, AuditError> {
        self.append_group(records, Signing::Later).await
    }

    async fn append_group(&self, records: Vec<Record>, signing: Signing) -> Result<Vec<Recorded>, AuditError> {
        if let Some(rec) = records.iter().find(|r| matches!(r.kind, RecordKind::Checkpoint | RecordKind::KeyRotated)) {
            return Err(AuditError::ReservedKind(rec.kind));
        }
        if records.is_empty() {
            return Ok(Vec::new());
        }
        let appending = Appending::enter(&self.shared.appending);
        let prepared = match self.commit_here(records.iter().map(Record::prepare).collect(), appending.others == 0, signing) {
            Ok(done) => return done,
            Err(back) => back,
        };
        let mut items = Vec::with_capacity(prepared.len());
        let mut done = Vec::with_capacity(prepared.len());
        for rec in prepared {
            let (ack, rx) = oneshot::channel();
            items.push((rec, ack));
            done.push(rx);
        }
        self.tx.send(Msg::AppendAll(items, signing)).await.map_err(|_| AuditError::Closed)?;
        let mut recorded = Vec::with_capacity(done.len());
        for rx in done {
            recorded.push(rx.await.map_err(|_| AuditError::Closed)??);
        }
        Ok(recorded)
    }

    /// Commits `records` as one group on this thread if the writer is idle: nothing queued
    /// for its thread and no group being committed. `Err` gives them back when it is busy.
    fn commit_here(&self, records: Vec<Prepared>, alone: bool, signing: Signing) -> Result<Result<Vec<Recorded>, AuditError>, Vec<Prepared>> {
        if !self.shared.inline || !alone || self.tx.capacity() < self.tx.max_capacity() {
            return Err(records);
        }
        let mut writer = match self.shared.writer.try_lock() {
            Ok(writer) => writer,
            Err(TryLockError::WouldBlock) => return Err(records),
            Err(TryLockError::Poisoned(_)) => return Ok(Err(AuditError::Closed)),
        };
        let committed = writer.commit_counted(records, signing, Load::Lone);
        Ok(committed.map(|(first, last)| (first..=last).map(|n| Recorded { seq: Seq::new(n) }).collect()))
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
        if !self.shared.rotation_allowed {
            return Err(AuditError::SharedRotation);
        }
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
        let readers = self.shared.readers.lock().map_err(|_| AuditError::Closed)?.clone();
        readers.ok_or(AuditError::Closed).and_then(|make| make())
    }

    /// The number of durable records, updated after every committed group once its records
    /// can be read: what a follower of the log may read up to.
    pub fn durable(&self) -> watch::Receiver<u64> {
        self.shared.durable.clone()
    }

    /// Commits what is queued, stops the writer and releases the database.
    pub async fn close(self) -> Result<(), AuditError> {
        if let Ok(mut readers) = self.shared.readers.lock() {
            readers.take();
        }
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Msg::Close(tx)).await.is_err() {
            return Ok(()); // already stopped
        }
        rx.await.map_err(|_| AuditError::Closed)
    }
}

/// Counts a caller in `Shared::appending` while it lives.
struct Appending<'a> {
    count: &'a AtomicUsize,
    /// Callers that were appending when this one came.
    others: usize,
}

impl<'a> Appending<'a> {
    fn enter(count: &'a AtomicUsize) -> Appending<'a> {
        let others = count.fetch_add(1, Ordering::AcqRel);
        Appending { count, others }
    }
}

impl Drop for Appending<'_> {
    fn drop(&mut self) {
        self.count.fetch_sub(1, Ordering::AcqRel);
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
    created: &mut NewFiles,
) -> Result<Arc<SigningKey>, AuditError> {
    let key = match logged {
        None => SigningKey::load_or_create_in(path, created)?,
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
    let last_seq = store::last_record(db)?;
    let checkpoints = store::stored_checkpoints(db)?;
    if last_seq != state.seq || checkpoints != state.checkpoints {
        return Err(AuditError::Corrupt(format!(
            "writer state says {} records and {} checkpoints, database has {last_seq} and {checkpoints}; run `airlock log verify`",
            state.seq, state.checkpoints
        )));
    }
    Ok(state)
}

/// The log's last checkpoint, if any.
fn last_checkpoint(db: &sled::Db) -> Result<Option<Checkpoint>, AuditError> {
    let last = db
        .scan_prefix([store::CHECKPOINT_PREFIX])
        .values()
        .next_back()
        .transpose()?;
    Ok(last.and_then(|v| Checkpoint::from_slice(&v)))
}

/// The origin the log's last checkpoint names, if any.
fn logged_origin(db: &sled::Db) -> Result<Option<String>, AuditError> {
    Ok(last_checkpoint(db)?.map(|c| c.origin))
}

/// How many records the log's last checkpoint covers (0: none).
fn logged_size(db: &sled::Db) -> Result<u64, AuditError> {
    Ok(last_checkpoint(db)?.map_or(0, |c| c.size))
}

fn now_rfc3339() -> String {
    humantime::format_rfc3339_micros(SystemTime::now()).to_string()
}

/// What `start` needs, whichever store keeps the log.
struct Started {
    store: Box<dyn LogStore>,
    readers: Readers,
    /// The durable-size watch; the writer tells it unless the store does
    /// (`LogStore::publishes_durable`).
    durable: watch::Receiver<u64>,
    /// Records in the log when opened.
    size: u64,
    key: Arc<SigningKey>,
    origin: String,
    redactor: Redactor,
    key_path: PathBuf,
    /// Whether callers may commit on their own thread (see `Shared::inline`).
    inline: bool,
    /// Records past the last checkpoint: signed before `start` returns.
    unsigned: bool,
    sign_within: Duration,
}

/// Starts the writer thread over `s.store`.
fn start(s: Started) -> Result<AuditLog, AuditError> {
    let (tx, rx) = mpsc::channel(QUEUE);
    let durable_tx = (!s.store.publishes_durable()).then(|| watch::Sender::new(s.size));
    let durable = durable_tx.as_ref().map_or(s.durable, watch::Sender::subscribe);
    let rotation_allowed = s.store.rotation_allowed();
    let defers = s.store.signs_later();
    let deadline = Arc::new(Deadline { state: Mutex::default(), wake: Condvar::new(), within: s.sign_within });
    let mut writer = Writer {
        store: Some(s.store),
        key: s.key.clone(),
        origin: s.origin,
        durable: durable_tx,
        defers,
        unsigned: s.unsigned,
        deadline: deadline.clone(),
    };
    writer.sign_pending()?;
    let writer = Arc::new(Mutex::new(writer));
    let driven = writer.clone();
    thread::Builder::new()
        .name("airlock-audit".into())
        .spawn(move || run(&driven, rx))
        .map_err(|e| AuditError::io(&s.key_path, e))?;
    if defers {
        let signer = writer.clone();
        thread::Builder::new()
            .name("airlock-audit-sign".into())
            .spawn(move || sign_when_due(&signer, &deadline))
            .map_err(|e| AuditError::io(&s.key_path, e))?;
    }
    let shared = Shared {
        redactor: s.redactor,
        signer: RwLock::new(s.key),
        key_path: s.key_path,
        readers: Mutex::new(Some(s.readers)),
        rotation_allowed,
        durable,
        writer,
        inline: s.inline,
        appending: AtomicUsize::new(0),
    };
    Ok(AuditLog { tx, shared: Arc::new(shared) })
}

/// Numbers `records` after `head`, chains them, extends the Merkle frontier and (`sign`)
/// signs the group's checkpoint with `key`: the one place this is done, whichever store
/// keeps it. Unsigned, the group adds no checkpoint (a later one covers it).
fn seal(head: &State, records: &[Prepared], key: &SigningKey, origin: &str, time: &str, sign: bool) -> Sealed {
    let mut state = head.clone();
    let mut sealed = Vec::with_capacity(records.len());
    for rec in records {
        state.seq += 1;
        let bytes = rec.finish(Seq::new(state.seq), time);
        state.chain_head = Sha256Digest::of_parts(&[state.chain_head.as_bytes(), &bytes]);
        state.frontier.push(leaf_hash(&bytes));
        sealed.push(SealedRecord { seq: state.seq, chain: state.chain_head, bytes });
    }
    if !sign {
        return Sealed { records: sealed, checkpoint: None, head: state };
    }
    let cp = Checkpoint::sign(key, origin, state.seq, state.frontier.root(), state.chain_head, time.to_owned());
    state.checkpoints += 1;
    state.key = key.public_key();
    Sealed { records: sealed, checkpoint: Some(cp.to_canonical()), head: state }
}

struct Writer {
    /// Taken out on close.
    store: Option<Box<dyn LogStore>>,
    key: Arc<SigningKey>,
    origin: String,
    /// Told the record count after each durable group, unless the store tells it.
    durable: Option<watch::Sender<u64>>,
    /// The store may keep a group without a checkpoint (`LogStore::signs_later`).
    defers: bool,
    /// Records past the last checkpoint (a deferred group's), to be signed.
    unsigned: bool,
    /// When the deadline thread signs them if no group does first.
    deadline: Arc<Deadline>,
}

/// When the unsigned records must be signed by, shared by the writer and the thread that
/// signs them when no group comes (`sign_when_due`).
struct Deadline {
    state: Mutex<Due>,
    wake: Condvar,
    /// `AuditConfig::sign_within`.
    within: Duration,
}

#[derive(Default)]
struct Due {
    /// Sign by then (`None`: nothing unsigned).
    at: Option<Instant>,
    /// The signing thread waits without a timeout (it must be woken for a new deadline;
    /// otherwise it wakes at its old one and finds the new one then).
    idle: bool,
    closed: bool,
}

impl Deadline {
    fn lock(&self) -> MutexGuard<'_, Due> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Records became unsigned: they must be signed within `within` from now, unless
    /// earlier ones already set a nearer deadline.
    fn arm(&self) {
        let mut due = self.lock();
        if due.at.is_none() {
            due.at = Some(Instant::now() + self.within);
            if due.idle {
                self.wake.notify_one();
            }
        }
    }

    /// Everything is signed.
    fn clear(&self) {
        self.lock().at = None;
    }

    fn close(&self) {
        self.lock().closed = true;
        self.wake.notify_one();
    }

    /// Waits until a deadline passes (true) or the log closes (false).
    fn wait(&self) -> bool {
        let mut due = self.lock();
        loop {
            if due.closed {
                return false;
            }
            let now = Instant::now();
            due = match due.at {
                Some(at) if at <= now => {
                    due.at = None;
                    return true;
                }
                Some(at) => {
                    due.idle = false;
                    self.wake.wait_timeout(due, at - now).unwrap_or_else(std::sync::PoisonError::into_inner).0
                }
                None => {
                    due.idle = true;
                    let mut woken = self.wake.wait(due).unwrap_or_else(std::sync::PoisonError::into_inner);
                    woken.idle = false;
                    woken
                }
            };
        }
    }
}

/// The signing thread: signs the unsigned records whenever their deadline passes first.
fn sign_when_due(writer: &Mutex<Writer>, deadline: &Deadline) {
    while deadline.wait() {
        let Ok(mut w) = writer.lock() else {
            return;
        };
        if let Err(e) = w.sign_pending() {
            tracing::error!(error = %e, "could not sign the audit log's deferred records");
        }
    }
}

/// The writer thread: takes what is queued (up to `MAX_GROUP` records) and commits it as
/// one group, until `close` or until every handle is gone.
fn run(writer: &Mutex<Writer>, mut rx: mpsc::Receiver<Msg>) {
    let mut group: Vec<(Prepared, Ack)> = Vec::new();
    let mut closing = None;
    while closing.is_none() {
        let Some(first) = rx.blocking_recv() else {
            break;
        };
        // A caller that panicked while committing leaves the lock poisoned: the log then
        // refuses everything, as a failed group does.
        let Ok(mut w) = writer.lock() else {
            return;
        };
        let mut next = Some(first);
        // Signed later only if every request of the group allows it.
        let mut signing = Signing::Later;
        while let Some(msg) = next.take() {
            match msg {
                Msg::Append(rec, ack) => {
                    group.push((rec, ack));
                    signing = Signing::Now;
                }
                Msg::AppendAll(items, how) => {
                    group.extend(items);
                    if how == Signing::Now {
                        signing = Signing::Now;
                    }
                }
                Msg::Rotate(key, ack) => {
                    w.commit_group(&mut group, signing);
                    signing = Signing::Later;
                    let result = w.rotate(key);
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
        w.commit_group(&mut group, signing);
    }
    if let Ok(mut w) = writer.lock() {
        if let Err(e) = w.sign_pending() {
            tracing::error!(error = %e, "could not sign the audit log's deferred records on close");
        }
        w.deadline.close();
        if let Some(store) = w.store.take() {
            store.close();
        }
    }
    if let Some(done) = closing {
        let _ = done.send(());
    }
}

impl Writer {
    fn commit_group(&mut self, group: &mut Vec<(Prepared, Ack)>, signing: Signing) {
        if group.is_empty() {
            return;
        }
        let (records, acks): (Vec<_>, Vec<_>) = group.drain(..).unzip();
        let result = self.commit_counted(records, signing, Load::Queued);
        for (ack, seq) in acks.into_iter().zip(seq_range(&result)) {
            let _ = ack.send(seq.map(|seq| Recorded { seq }));
        }
    }

    /// `commit`, counted in the group-commit statistics.
    fn commit_counted(&mut self, records: Vec<Prepared>, signing: Signing, load: Load) -> Result<(u64, u64), AuditError> {
        let (size, started) = (records.len(), std::time::Instant::now());
        let result = self.commit(records, signing, load);
        super::stats::committed(super::stats::GroupCommitted { records: size, elapsed: started.elapsed(), ok: result.is_ok() });
        result
    }

    /// Commits `records` and, unless signing is deferred, one checkpoint (which covers any
    /// unsigned records before them too); returns the first and last sequence numbers.
    fn commit(&mut self, records: Vec<Prepared>, signing: Signing, load: Load) -> Result<(u64, u64), AuditError> {
        let store = self.store.as_mut().ok_or(AuditError::Closed)?;
        let sign = signing == Signing::Now || !self.defers || records.is_empty();
        let adds = !records.is_empty();
        let (key, origin, time) = (self.key.clone(), self.origin.clone(), now_rfc3339());
        let sealer: Seal = Box::new(move |head: &State| Ok(seal(head, &records, &key, &origin, &time, sign)));
        let committed = store.commit(sealer, load)?;
        if sign && self.unsigned {
            self.unsigned = false;
            self.deadline.clear();
        } else if !sign && adds {
            self.unsigned = true;
            self.deadline.arm();
        }
        if let Some(watch) = &self.durable {
            watch.send_if_modified(|durable| {
                let grew = committed.size > *durable;
                *durable = (*durable).max(committed.size);
                grew
            });
        }
        Ok((committed.first, committed.last))
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
        let (seq, _) = self.commit(vec![rec.prepare()], Signing::Now, Load::Lone)?;
        self.key = new_key;
        self.commit(Vec::new(), Signing::Now, Load::Lone)?;
        Ok(Recorded { seq: Seq::new(seq) })
    }

    /// Signs a checkpoint over the unsigned records, if there are any.
    fn sign_pending(&mut self) -> Result<(), AuditError> {
        if !self.unsigned || self.store.is_none() {
            return Ok(());
        }
        self.commit(Vec::new(), Signing::Now, Load::Lone).map(|_| ())
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
