//! The audit log on PostgreSQL, shared by replicas: an `audit::LogStore` (appending groups)
//! and an `audit::LogSource` (reading them back for `log verify|export|tail|prove`).
//!
//! Owns: the append transaction, its retries, the replica's record of the newest head it
//! has seen (`<data_dir>/shared-log-seen`), and the thread that runs the database calls.
//! Uses: `audit` (the store interface, `LogHead`, `AuditLog::open_shared`), `PgPool`.
//! Must not: number, chain or sign (the writer's seal does, exactly as for sled); report a
//! group committed unless its transaction committed; append to a log whose head does not
//! extend the newest head this replica has seen, or that another key signs.
//!
//! One append: each replica group-commits locally (the writer's groups), then in ONE
//! transaction: `SELECT … FOR UPDATE` of the single head row (which serialises all
//! replicas), check it extends what this replica saw and is signed by our key, seal the
//! group on it (number, chain, Merkle frontier, signed checkpoint), insert the records and
//! the checkpoint, update the head, commit. Each group carries a random id stored with its
//! checkpoint: a group retried after a commit whose outcome was lost (the connection died
//! during COMMIT) finds its id and is not appended twice.
//!
//! Fail closed: an error before COMMIT means nothing was committed (PostgreSQL rolls the
//! transaction back with the connection); the group's calls are refused, and the next group
//! tries again, so the gateway resumes by itself when the database returns.
//!
//! The calls run on a thread of their own with a current-thread runtime, so the writer (an
//! OS thread) and synchronous readers (CLI, verification) can call them from anywhere.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use crate::audit::{
    AuditConfig, AuditError, AuditLog, Committed, Load, LogHead, LogPaths, LogReader, LogSource, LogStore, Readers,
    Seal, Sha256Digest, SigningKey,
};

use super::{PgPool, PgSettings};

type Job = Box<dyn FnOnce(PgPool) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send>;

/// The thread that owns the pool and runs database calls for synchronous callers.
struct PgWorker {
    jobs: tokio::sync::mpsc::UnboundedSender<Job>,
}

impl PgWorker {
    fn start(settings: &PgSettings) -> Result<Arc<PgWorker>, AuditError> {
        let (jobs, mut rx) = tokio::sync::mpsc::unbounded_channel::<Job>();
        let (ready_tx, ready) = std::sync::mpsc::sync_channel(1);
        let settings = settings.clone();
        std::thread::Builder::new()
            .name("airlock-pg".into())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = ready_tx.send(Err(AuditError::Unavailable(e.to_string())));
                        return;
                    }
                };
                runtime.block_on(async move {
                    let pool = match PgPool::new(&settings) {
                        Ok(pool) => pool,
                        Err(e) => {
                            let _ = ready_tx.send(Err(AuditError::Unavailable(e.to_string())));
                            return;
                        }
                    };
                    let _ = ready_tx.send(Ok(()));
                    // One call at a time: the writer's appends are serial anyway, and a
                    // reader waits behind an append rather than racing it.
                    while let Some(job) = rx.recv().await {
                        job(pool.clone()).await;
                    }
                });
            })
            .map_err(|e| AuditError::Unavailable(e.to_string()))?;
        ready.recv().map_err(|_| AuditError::Closed)??;
        Ok(Arc::new(PgWorker { jobs }))
    }

    /// Runs `f` on the worker and waits for its result.
    fn call<T, F, Fut>(&self, f: F) -> Result<T, AuditError>
    where
        F: FnOnce(PgPool) -> Fut + Send + 'static,
        Fut: Future<Output = T> + Send + 'static,
        T: Send + 'static,
    {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let job: Job = Box::new(move |pool| {
            Box::pin(async move {
                let _ = tx.send(f(pool).await);
            })
        });
        self.jobs.send(job).map_err(|_| AuditError::Closed)?;
        rx.recv().map_err(|_| AuditError::Closed)
    }
}

fn unavailable(e: impl std::fmt::Display) -> AuditError {
    AuditError::Unavailable(e.to_string())
}

/// Opens the shared log for a gateway: migrates the schema, checks the head against what
/// this replica saw and its key, and starts the writer.
pub fn open_log(settings: &PgSettings, cfg: AuditConfig) -> Result<AuditLog, AuditError> {
    let worker = PgWorker::start(settings)?;
    worker.call(|pool| async move { pool.migrate().await })?.map_err(unavailable)?;
    let (head, origin) = worker.call(|pool| async move { read_head(&pool).await })??;
    let paths = LogPaths::new(&cfg.data_dir, cfg.key_path.as_deref());
    std::fs::create_dir_all(&cfg.data_dir).map_err(|e| AuditError::io(&cfg.data_dir, e))?;
    // The key every replica signs with; the file is provisioned (created only for a new log).
    let key = match &head {
        None => SigningKey::load_or_create(&paths.key)?.public_key(),
        Some(_) => SigningKey::load(&paths.key)?.public_key(),
    };
    let seen = Seen::new(&cfg.data_dir);
    let current = head.clone().unwrap_or_else(|| LogHead::empty(key));
    if let Some(saw) = seen.load()? {
        let w = worker.clone();
        let size = saw.0;
        let chain = w.call(move |pool| async move { chain_at(&pool, size).await })??;
        seen.check(saw, current.seq, chain)?;
    }
    seen.save(&current)?;
    let store = PgLog { worker: worker.clone(), key, seen };
    let readers: Readers = Arc::new(move || open_source(worker.clone()));
    AuditLog::open_shared(cfg, Box::new(store), readers, head.map(|h| (h.seq, h.key)), origin)
}

/// A reader of the shared log (for `airlock log …` when `[storage]` says postgres).
pub fn open_reader(settings: &PgSettings) -> Result<LogReader, AuditError> {
    open_source(PgWorker::start(settings)?)
}

fn open_source(worker: Arc<PgWorker>) -> Result<LogReader, AuditError> {
    // A snapshot: the records and checkpoints of the head when the reader opens, so an
    // export or a verification sees a log whose every record a checkpoint covers.
    let upto = worker.call(|pool| async move {
        let client = pool.get().await.map_err(unavailable)?;
        let row = client.query_one("SELECT size FROM audit_head WHERE id = 1", &[]).await.map_err(unavailable)?;
        Ok::<i64, AuditError>(row.get(0))
    })??;
    Ok(LogReader::from_source(Box::new(PgSource { worker, upto })))
}

/// The head row's state (`None`: an empty log) and the origin its last checkpoint names.
async fn read_head(pool: &PgPool) -> Result<(Option<LogHead>, Option<String>), AuditError> {
    let client = pool.get().await.map_err(unavailable)?;
    let row = client.query_one("SELECT state FROM audit_head WHERE id = 1", &[]).await.map_err(unavailable)?;
    let state: Option<Vec<u8>> = row.get(0);
    let head = state.map(|s| decode_head(&s)).transpose()?;
    let last = client
        .query_opt("SELECT checkpoint FROM audit_checkpoints ORDER BY idx DESC LIMIT 1", &[])
        .await
        .map_err(unavailable)?;
    let origin = last
        .and_then(|r| serde_json::from_slice::<serde_json::Value>(&r.get::<_, Vec<u8>>(0)).ok())
        .and_then(|v| v.get("origin").and_then(|o| o.as_str()).map(str::to_owned));
    Ok((head, origin))
}

fn decode_head(bytes: &[u8]) -> Result<LogHead, AuditError> {
    LogHead::decode(bytes).ok_or_else(|| AuditError::Corrupt("the shared log's head row does not parse".into()))
}

/// The chain hash stored with record `seq` (`None`: no such record; 0: the empty chain).
async fn chain_at(pool: &PgPool, seq: u64) -> Result<Option<Sha256Digest>, AuditError> {
    if seq == 0 {
        return Ok(Some(Sha256Digest::from_bytes([0; 32])));
    }
    let client = pool.get().await.map_err(unavailable)?;
    let row = client
        .query_opt("SELECT chain FROM audit_records WHERE seq = $1", &[&to_i64(seq)?])
        .await
        .map_err(unavailable)?;
    Ok(row.and_then(|r| <[u8; 32]>::try_from(r.get::<_, Vec<u8>>(0)).ok()).map(Sha256Digest::from_bytes))
}

fn to_i64(n: u64) -> Result<i64, AuditError> {
    i64::try_from(n).map_err(|_| AuditError::Corrupt(format!("sequence number {n} out of range")))
}

/// The newest head this replica has seen, kept in its data dir: a database that does
/// not extend it lost commits.
struct Seen {
    path: PathBuf,
}

impl Seen {
    fn new(data_dir: &Path) -> Seen {
        Seen { path: data_dir.join("shared-log-seen") }
    }

    /// `(size, chain head)`, if this replica has seen the log before.
    fn load(&self) -> Result<Option<(u64, Sha256Digest)>, AuditError> {
        let text = match std::fs::read_to_string(&self.path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(AuditError::io(&self.path, e)),
        };
        let mut parts = text.split_whitespace();
        let parsed = (|| Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?)))();
        parsed
            .map(Some)
            .ok_or_else(|| AuditError::Corrupt(format!("{}: not \"SIZE CHAIN_HEAD\"", self.path.display())))
    }

    /// Refuses a head of `found` records whose record `saw.0` has chain hash `chain`
    /// unless it extends `saw`.
    fn check(&self, saw: (u64, Sha256Digest), found: u64, chain: Option<Sha256Digest>) -> Result<(), AuditError> {
        if found < saw.0 || chain != Some(saw.1) {
            return Err(AuditError::NotExtending { seen: saw.0, found, marker: self.path.display().to_string() });
        }
        Ok(())
    }

    /// Remembers `head` (written whole through a rename, so it is never torn).
    fn save(&self, head: &LogHead) -> Result<(), AuditError> {
        let tmp = self.path.with_extension("new");
        let text = format!("{} {}\n", head.seq, head.chain_head);
        std::fs::write(&tmp, text).map_err(|e| AuditError::io(&tmp, e))?;
        std::fs::rename(&tmp, &self.path).map_err(|e| AuditError::io(&self.path, e))
    }
}

/// The writer's store on PostgreSQL.
struct PgLog {
    worker: Arc<PgWorker>,
    /// The key this replica signs with (the writer's; rotation is refused).
    key: crate::audit::PublicKey,
    seen: Seen,
}

/// Why an append attempt did not commit.
enum Failure {
    /// Surely not committed (an error before COMMIT, or COMMIT refused by the server).
    NotCommitted(AuditError),
    /// The connection failed during COMMIT: it may have committed.
    InDoubt(String),
}

/// How often an in-doubt group is tried again (with its id) before its calls are refused.
const IN_DOUBT_TRIES: u32 = 5;

impl LogStore for PgLog {
    fn commit(&mut self, seal: Seal, _load: Load) -> Result<Committed, AuditError> {
        let group = uuid::Uuid::new_v4().to_string();
        let mut seal = Some(seal);
        let mut tries = 0;
        loop {
            tries += 1;
            let saw = self.seen.load()?;
            let (key, id, sealer) = (self.key, group.clone(), seal.take().ok_or(AuditError::Closed)?);
            let (back, result) = self.worker.call(move |pool| async move { append(pool, id, sealer, key, saw).await })?;
            seal = Some(back);
            match result {
                Ok((committed, head)) => {
                    self.seen.save(&head)?;
                    return Ok(committed);
                }
                // A pooled connection the database closed (a restart) fails on first use:
                // one immediate try on a fresh connection.
                Err(Failure::NotCommitted(AuditError::Unavailable(_))) if tries == 1 => continue,
                Err(Failure::NotCommitted(e)) => return Err(e),
                Err(Failure::InDoubt(why)) if tries < IN_DOUBT_TRIES => {
                    tracing::warn!(error = %why, "audit commit outcome unknown; retrying the same group");
                    std::thread::sleep(Duration::from_millis(100 << tries.min(4)));
                }
                Err(Failure::InDoubt(why)) => {
                    return Err(AuditError::Unavailable(format!("the commit's outcome is unknown ({why}); the group was not acknowledged")));
                }
            }
        }
    }

    fn rotation_allowed(&self) -> bool {
        false
    }

    fn close(self: Box<Self>) {}
}

/// One attempt at appending a group; gives the seal back for a retry.
async fn append(
    pool: PgPool,
    group: String,
    mut seal: Seal,
    key: crate::audit::PublicKey,
    saw: Option<(u64, Sha256Digest)>,
) -> (Seal, Result<(Committed, LogHead), Failure>) {
    let result = try_append(&pool, &group, &mut seal, key, saw).await;
    (seal, result)
}

async fn try_append(
    pool: &PgPool,
    group: &str,
    seal: &mut Seal,
    key: crate::audit::PublicKey,
    saw: Option<(u64, Sha256Digest)>,
) -> Result<(Committed, LogHead), Failure> {
    let nc = |e: tokio_postgres::Error| Failure::NotCommitted(unavailable(e));
    let mut client = pool.get().await.map_err(|e| Failure::NotCommitted(unavailable(e)))?;
    let tx = client.transaction().await.map_err(nc)?;
    let row = tx.query_one("SELECT state FROM audit_head WHERE id = 1 FOR UPDATE", &[]).await.map_err(nc)?;
    let state: Option<Vec<u8>> = row.get(0);
    let head = match state {
        Some(bytes) => decode_head(&bytes).map_err(Failure::NotCommitted)?,
        None => LogHead::empty(key),
    };
    // Appended by an earlier try whose COMMIT answer was lost.
    if let Some(done) = tx
        .query_opt("SELECT first, size FROM audit_checkpoints WHERE group_id = $1", &[&group])
        .await
        .map_err(nc)?
    {
        let (first, last): (i64, i64) = (done.get(0), done.get(1));
        let (first, last) = (u64::try_from(first).unwrap_or(0), u64::try_from(last).unwrap_or(0));
        return Ok((Committed { first, last, size: head.seq }, head));
    }
    if head.seq > 0 && head.key != key {
        return Err(Failure::NotCommitted(AuditError::KeyMismatch {
            expected: head.key.id().to_string(),
            found: key.id().to_string(),
        }));
    }
    if let Some((size, chain)) = saw {
        let at = chain_at_tx(&tx, size).await.map_err(nc)?;
        if head.seq < size || at != Some(chain) {
            let marker = "shared-log-seen in the data dir".to_owned();
            return Err(Failure::NotCommitted(AuditError::NotExtending { seen: size, found: head.seq, marker }));
        }
    }
    let sealed = seal(&head).map_err(Failure::NotCommitted)?;
    // The writer signs every group of a store that does not defer signatures (`signs_later`).
    let Some(checkpoint) = &sealed.checkpoint else {
        return Err(Failure::NotCommitted(AuditError::Failed("a group without its checkpoint (replicas sign every group)".into())));
    };
    let seqs: Vec<i64> = sealed.records.iter().map(|r| r.seq as i64).collect();
    let chains: Vec<&[u8]> = sealed.records.iter().map(|r| r.chain.as_bytes().as_slice()).collect();
    let bytes: Vec<&[u8]> = sealed.records.iter().map(|r| r.bytes.as_slice()).collect();
    if !seqs.is_empty() {
        tx.execute(
            "INSERT INTO audit_records (seq, chain, record) SELECT * FROM unnest($1::bigint[], $2::bytea[], $3::bytea[])",
            &[&seqs, &chains, &bytes],
        )
        .await
        .map_err(nc)?;
    }
    let (first, last) = ((head.seq + 1) as i64, sealed.head.seq as i64);
    tx.execute(
        "INSERT INTO audit_checkpoints (idx, first, size, group_id, checkpoint) VALUES ($1, $2, $3, $4, $5)",
        &[&(head.checkpoints as i64), &first, &last, &group, checkpoint],
    )
    .await
    .map_err(nc)?;
    tx.execute("UPDATE audit_head SET size = $1, state = $2 WHERE id = 1", &[&last, &sealed.head.encode()])
        .await
        .map_err(nc)?;
    match tx.commit().await {
        Ok(()) => {}
        // The server answered: it refused the commit, nothing is in.
        Err(e) if e.as_db_error().is_some() => return Err(nc(e)),
        Err(e) => return Err(Failure::InDoubt(e.to_string())),
    }
    let committed = Committed { first: head.seq + 1, last: sealed.head.seq, size: sealed.head.seq };
    Ok((committed, sealed.head))
}

async fn chain_at_tx(tx: &deadpool_postgres::Transaction<'_>, seq: u64) -> Result<Option<Sha256Digest>, tokio_postgres::Error> {
    if seq == 0 {
        return Ok(Some(Sha256Digest::from_bytes([0; 32])));
    }
    let row = tx.query_opt("SELECT chain FROM audit_records WHERE seq = $1", &[&(seq as i64)]).await?;
    Ok(row.and_then(|r| <[u8; 32]>::try_from(r.get::<_, Vec<u8>>(0)).ok()).map(Sha256Digest::from_bytes))
}

/// Reads the shared log up to the head it saw when opened.
struct PgSource {
    worker: Arc<PgWorker>,
    upto: i64,
}

impl LogSource for PgSource {
    fn get(&self, seq: u64) -> Result<Option<Vec<u8>>, AuditError> {
        let (seq, upto) = (to_i64(seq)?, self.upto);
        self.worker.call(move |pool| async move {
            let client = pool.get().await.map_err(unavailable)?;
            let row = client
                .query_opt("SELECT record FROM audit_records WHERE seq = $1 AND seq <= $2", &[&seq, &upto])
                .await
                .map_err(unavailable)?;
            Ok(row.map(|r| r.get::<_, Vec<u8>>(0)))
        })?
    }

    fn last_seq(&self) -> Result<u64, AuditError> {
        Ok(u64::try_from(self.upto).unwrap_or(0))
    }

    fn records(&self, from: u64, limit: usize) -> Result<Vec<(u64, Vec<u8>)>, AuditError> {
        let (from, upto, limit) = (to_i64(from)?, self.upto, i64::try_from(limit).unwrap_or(i64::MAX));
        self.worker.call(move |pool| async move {
            let client = pool.get().await.map_err(unavailable)?;
            let rows = client
                .query(
                    "SELECT seq, record FROM audit_records WHERE seq >= $1 AND seq <= $2 ORDER BY seq LIMIT $3",
                    &[&from, &upto, &limit],
                )
                .await
                .map_err(unavailable)?;
            Ok(rows.iter().map(|r| (u64::try_from(r.get::<_, i64>(0)).unwrap_or(0), r.get::<_, Vec<u8>>(1))).collect())
        })?
    }

    fn checkpoints(&self) -> Result<Vec<Vec<u8>>, AuditError> {
        let upto = self.upto;
        self.worker.call(move |pool| async move {
            let client = pool.get().await.map_err(unavailable)?;
            let rows = client
                .query("SELECT checkpoint FROM audit_checkpoints WHERE size <= $1 ORDER BY idx", &[&upto])
                .await
                .map_err(unavailable)?;
            Ok(rows.iter().map(|r| r.get::<_, Vec<u8>>(0)).collect())
        })?
    }
}
