//! Where the log lives on disk: the sled key layout, the persisted writer state, fsync of
//! the database files, and `checkpoints.log`.
//!
//! Owns: file and key names under `data_dir`, `State`, `DirSyncer`, `CheckpointFile`.
//! Uses: sled, the checkpoint and merkle types.
//! Must not: decide what to write (the writer does) or whether it is valid (verify does).
//!
//! Layout of the sled database `<data_dir>/audit` (one tree):
//! - `g` ‖ seq of the group's last record (u64 big-endian) → the group's records, in
//!   order, each as length of the record (u32 big-endian) ‖ chain hash after it (32
//!   bytes) ‖ canonical record. One key per group: sled's cost is per key (an insert is
//!   several microseconds, a scanned key most of a microsecond), not per byte.
//! - `r` ‖ seq (u64 big-endian) → chain hash after this record ‖ canonical record: one key
//!   per record, as logs written before group keys hold them (read, never written; such a
//!   log goes on in `g` keys, all after its `r` keys)
//! - `c` ‖ index (u64 big-endian) → canonical checkpoint
//! - `s` → `State` (binary, see `State::encode`; canonical JSON in older logs), rewritten
//!   with every group
//!
//! Each group is made durable in `<data_dir>/audit.journal` first (see `journal`); sled is
//! flushed and fsynced only when the journal starts over.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::AuditError;
use super::journal;
use super::checkpoint::Checkpoint;
use super::digest::Sha256Digest;
use super::keys::{NewFiles, PublicKey};
use super::merkle::Frontier;

pub(crate) const GROUP_PREFIX: u8 = b'g';
/// One key per record: logs written before group keys.
pub(crate) const RECORD_PREFIX: u8 = b'r';
pub(crate) const CHECKPOINT_PREFIX: u8 = b'c';
pub(crate) const STATE_KEY: &[u8] = b"s";
/// First bytes of the binary `State` (the JSON form of older logs starts with `{`).
const STATE_TAG: &[u8] = b"AST1";

/// The files of one log under a data directory.
#[derive(Debug, Clone)]
pub struct LogPaths {
    /// The sled database directory, `<data_dir>/audit`.
    pub db: PathBuf,
    /// `<data_dir>/checkpoints.log`.
    pub checkpoints: PathBuf,
    /// The signing key, `<data_dir>/audit-key` unless configured.
    pub key: PathBuf,
}

impl LogPaths {
    /// The default paths under `data_dir`, with an optional configured key path.
    pub fn new(data_dir: &Path, key_path: Option<&Path>) -> LogPaths {
        LogPaths {
            db: data_dir.join("audit"),
            checkpoints: data_dir.join("checkpoints.log"),
            key: key_path.map_or_else(|| data_dir.join("audit-key"), Path::to_path_buf),
        }
    }
}

pub(crate) fn record_key(seq: u64) -> [u8; 9] {
    prefixed(RECORD_PREFIX, seq)
}

/// The key of the group whose last record is `last`.
pub(crate) fn group_key(last: u64) -> [u8; 9] {
    prefixed(GROUP_PREFIX, last)
}

/// Bytes in front of each record of a group: its length and its chain hash.
pub(crate) const FRAME: usize = 4 + 32;

/// Appends one record to a group's value (see the layout above).
pub(crate) fn push_to_group(group: &mut Vec<u8>, chain: &Sha256Digest, bytes: &[u8]) -> Result<(), AuditError> {
    let len = u32::try_from(bytes.len()).map_err(|_| AuditError::Corrupt("a record over 4 GiB".into()))?;
    group.extend_from_slice(&len.to_be_bytes());
    group.extend_from_slice(chain.as_bytes());
    group.extend_from_slice(bytes);
    Ok(())
}

/// Where each record of a group's value lies: (offset of its chain hash, length of hash
/// and record), or `None` when the value is not a sequence of whole frames.
fn group_frames(value: &[u8]) -> Option<Vec<(usize, usize)>> {
    let mut frames = Vec::new();
    let mut at = 0;
    while at < value.len() {
        let len = u32::from_be_bytes(value.get(at..at + 4)?.try_into().ok()?) as usize;
        let end = (at + FRAME).checked_add(len).filter(|&end| end <= value.len())?;
        frames.push((at + 4, 32 + len));
        at = end;
    }
    Some(frames)
}

/// A stored record: its sequence number and `chain hash ‖ canonical record`.
pub(crate) type StoredRecord = (u64, sled::IVec);

/// Why records could not be read.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ScanError {
    #[error(transparent)]
    Db(#[from] sled::Error),
    /// A group's value is not a sequence of whole records (tampering or a torn write).
    #[error("the records stored up to seq {0} are not whole")]
    Unreadable(u64),
}

impl From<ScanError> for AuditError {
    fn from(e: ScanError) -> AuditError {
        match e {
            ScanError::Db(e) => AuditError::Db(e),
            unreadable @ ScanError::Unreadable(_) => AuditError::Corrupt(unreadable.to_string()),
        }
    }
}

/// The records of `db` from sequence number `from` on, in stored order: the per-record
/// keys of an older log, then the groups. A record's number is its key's (per record) or
/// its place in its group, counted back from the group's key; verification checks that
/// the numbers follow each other. Ends after the first error.
pub(crate) fn records_from(db: &sled::Db, from: u64) -> Records {
    Records {
        old: Some(db.range(record_key(from)..=record_key(u64::MAX))),
        groups: db.range(group_key(from)..=group_key(u64::MAX)),
        from,
        current: Vec::new().into_iter(),
        done: false,
    }
}

/// See `records_from`.
pub(crate) struct Records {
    old: Option<sled::Iter>,
    groups: sled::Iter,
    from: u64,
    /// The rest of the group being read.
    current: std::vec::IntoIter<StoredRecord>,
    done: bool,
}

impl Records {
    fn read(&mut self) -> Option<Result<StoredRecord, ScanError>> {
        if let Some(old) = &mut self.old {
            match old.next() {
                Some(Ok((k, v))) => return Some(Ok((key_number(&k).unwrap_or(0), v))),
                Some(Err(e)) => return Some(Err(e.into())),
                None => self.old = None,
            }
        }
        loop {
            if let Some(record) = self.current.next() {
                return Some(Ok(record));
            }
            if let Err(e) = self.next_group()? {
                return Some(Err(e));
            }
        }
    }

    fn next_group(&mut self) -> Option<Result<(), ScanError>> {
        let (key, value) = match self.groups.next()? {
            Ok(kv) => kv,
            Err(e) => return Some(Err(e.into())),
        };
        let last = key_number(&key).unwrap_or(0);
        let Some(frames) = group_frames(&value).filter(|f| !f.is_empty() && f.len() as u64 <= last) else {
            return Some(Err(ScanError::Unreadable(last)));
        };
        let first = last + 1 - frames.len() as u64;
        let records: Vec<StoredRecord> = (first..)
            .zip(frames)
            .filter(|(seq, _)| *seq >= self.from)
            .map(|(seq, (at, len))| (seq, value.subslice(at, len)))
            .collect();
        self.current = records.into_iter();
        Some(Ok(()))
    }
}

impl Iterator for Records {
    type Item = Result<StoredRecord, ScanError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let item = self.read();
        if !matches!(item, Some(Ok(_))) {
            self.done = true;
        }
        item
    }
}

/// The stored `chain hash ‖ canonical record` of record `seq`.
pub(crate) fn record(db: &sled::Db, seq: u64) -> Result<Option<sled::IVec>, AuditError> {
    if let Some(value) = db.get(record_key(seq))? {
        return Ok(Some(value));
    }
    match records_from(db, seq).next().transpose()? {
        Some((found, value)) if found == seq => Ok(Some(value)),
        _ => Ok(None),
    }
}

/// Whether the database holds any record.
pub(crate) fn has_records(db: &sled::Db) -> Result<bool, AuditError> {
    Ok(db.scan_prefix([GROUP_PREFIX]).next().transpose()?.is_some()
        || db.scan_prefix([RECORD_PREFIX]).next().transpose()?.is_some())
}

pub(crate) fn checkpoint_key(index: u64) -> [u8; 9] {
    prefixed(CHECKPOINT_PREFIX, index)
}

fn prefixed(prefix: u8, n: u64) -> [u8; 9] {
    let mut k = [0u8; 9];
    k[0] = prefix;
    k[1..].copy_from_slice(&n.to_be_bytes());
    k
}

/// The number in a `r…`/`c…` key, if it is one.
pub(crate) fn key_number(key: &[u8]) -> Option<u64> {
    let bytes: [u8; 8] = key.get(1..)?.try_into().ok()?;
    Some(u64::from_be_bytes(bytes))
}

/// Opens the sled database, naming the lock when another process holds it, and replays
/// into it the groups of the journal that it lost in a crash (see `journal`).
pub(crate) fn open_db(path: &Path) -> Result<sled::Db, AuditError> {
    open_and_replay(path).map(|(db, _)| db)
}

/// `open_db`, also saying what the journal replay found.
pub(crate) fn open_and_replay(path: &Path) -> Result<(sled::Db, journal::Replayed), AuditError> {
    let result = sled::Config::new().path(path).flush_every_ms(None).open();
    let db = result.map_err(|e| match e {
        sled::Error::Io(io) if io.to_string().contains("could not acquire lock") => {
            AuditError::Locked(path.to_path_buf())
        }
        other => AuditError::Db(other),
    })?;
    // Counted by the state key, the last key of a group written: a group sled kept only
    // part of is replayed whole.
    let stored = match db.get(STATE_KEY)?.map(|bytes| State::decode(&bytes)) {
        Some(Some(s)) => journal::Stored { seq: s.seq, checkpoints: s.checkpoints },
        Some(None) => journal::Stored { seq: last_record(&db)?, checkpoints: stored_checkpoints(&db)? },
        None => journal::Stored { seq: 0, checkpoints: 0 },
    };
    let replayed = journal::replay(&journal::path_for(path), &db, stored)?;
    Ok((db, replayed))
}

/// The last record's sequence number in the database (0: none).
pub(crate) fn last_record(db: &sled::Db) -> Result<u64, AuditError> {
    let last = |prefix: u8| -> Result<u64, AuditError> {
        Ok(db.scan_prefix([prefix]).keys().next_back().transpose()?.and_then(|k| key_number(&k)).unwrap_or(0))
    };
    Ok(last(GROUP_PREFIX)?.max(last(RECORD_PREFIX)?))
}

/// How many checkpoints the database holds (the last checkpoint key's index + 1).
pub(crate) fn stored_checkpoints(db: &sled::Db) -> Result<u64, AuditError> {
    Ok(db
        .scan_prefix([CHECKPOINT_PREFIX])
        .keys()
        .next_back()
        .transpose()?
        .and_then(|k| key_number(&k))
        .map_or(0, |i| i + 1))
}

/// Opens an existing database for reading commands; never creates one.
pub(crate) fn open_existing_db(path: &Path) -> Result<sled::Db, AuditError> {
    if !path.join("db").exists() {
        return Err(AuditError::NoLog(path.to_path_buf()));
    }
    open_db(path)
}

/// What the writer needs to carry on after a restart, persisted in the same batch as the
/// records it describes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct State {
    /// Records in the log (the last sequence number).
    pub seq: u64,
    /// The chain hash after the last record.
    pub chain_head: Sha256Digest,
    pub frontier: Frontier,
    /// Checkpoints in the log.
    pub checkpoints: u64,
    /// The key that signed the last checkpoint.
    pub key: PublicKey,
}

impl State {
    /// The head of an empty log that `key` will sign.
    pub fn empty(key: PublicKey) -> State {
        State { seq: 0, chain_head: Sha256Digest::from_bytes([0; 32]), frontier: Frontier::new(), checkpoints: 0, key }
    }

    /// The binary form: `STATE_TAG` ‖ seq (u64 BE) ‖ checkpoints (u64 BE) ‖ chain head ‖
    /// key ‖ the frontier's subtree roots, largest first (as many as `seq` has set bits).
    /// Rewritten with every group, so it is kept cheap to make (it was canonical JSON with
    /// hex digests, a fifth of the writer's work per group besides the signature).
    pub fn encode(&self) -> Vec<u8> {
        let roots = self.frontier.roots();
        let mut out = Vec::with_capacity(STATE_TAG.len() + 16 + 64 + 32 * roots.len());
        out.extend_from_slice(STATE_TAG);
        out.extend_from_slice(&self.seq.to_be_bytes());
        out.extend_from_slice(&self.checkpoints.to_be_bytes());
        out.extend_from_slice(self.chain_head.as_bytes());
        out.extend_from_slice(self.key.as_bytes());
        for root in &roots {
            out.extend_from_slice(root.as_bytes());
        }
        out
    }

    /// Reads the binary form, or the canonical JSON that logs written before it hold.
    pub fn decode(bytes: &[u8]) -> Option<State> {
        match bytes.strip_prefix(STATE_TAG) {
            Some(body) => State::decode_binary(body),
            None => State::decode_json(bytes),
        }
    }

    fn decode_binary(body: &[u8]) -> Option<State> {
        let (fixed, roots) = body.split_at_checked(16 + 64)?;
        if roots.len() % 32 != 0 {
            return None;
        }
        let word = |at: usize| fixed[at..at + 8].try_into().ok().map(u64::from_be_bytes);
        let digest = |b: &[u8]| <[u8; 32]>::try_from(b).ok().map(Sha256Digest::from_bytes);
        let seq = word(0)?;
        let roots = roots.chunks_exact(32).map(digest).collect::<Option<Vec<_>>>()?;
        Some(State {
            seq,
            chain_head: digest(&fixed[16..48])?,
            frontier: Frontier::from_parts(seq, roots)?,
            checkpoints: word(8)?,
            key: PublicKey::from_bytes(fixed[48..80].try_into().ok()?),
        })
    }

    fn decode_json(bytes: &[u8]) -> Option<State> {
        let v: Value = serde_json::from_slice(bytes).ok()?;
        let seq = v.get("seq")?.as_u64()?;
        let roots = v
            .get("frontier")?
            .as_array()?
            .iter()
            .map(|r| r.as_str()?.parse().ok())
            .collect::<Option<Vec<Sha256Digest>>>()?;
        Some(State {
            seq,
            chain_head: v.get("chain_head")?.as_str()?.parse().ok()?,
            frontier: Frontier::from_parts(seq, roots)?,
            checkpoints: v.get("checkpoints")?.as_u64()?,
            key: PublicKey::parse(v.get("key")?.as_str()?)?,
        })
    }
}

/// fsyncs sled's files (sled's `flush` only writes, issue 1452): the log file `db` every
/// time, any other file when it is new or its length changed (snapshots and blobs are
/// written once; sled syncs snapshots itself), and the directory when its entries changed.
/// Uses `fdatasync`: an mtime-only change needs no journal commit, which is what makes an
/// fsync slow on a busy ext4 disk. (mtime is too coarse to detect rewrites of `db`.)
pub(crate) struct DirSyncer {
    dir: PathBuf,
    files: HashMap<PathBuf, Synced>,
}

struct Synced {
    file: File,
    len: u64,
}

impl DirSyncer {
    pub(crate) fn new(dir: &Path) -> DirSyncer {
        DirSyncer {
            dir: dir.to_path_buf(),
            files: HashMap::new(),
        }
    }

    pub(crate) fn sync(&mut self) -> Result<(), AuditError> {
        let mut seen = Vec::new();
        let mut changed = false;
        self.sync_dir_files(&self.dir.clone(), &mut seen, &mut changed)?;
        let before = self.files.len();
        self.files.retain(|p, _| seen.contains(p));
        if changed || before != self.files.len() {
            for dir in [self.dir.join("blobs"), self.dir.clone()] {
                if dir.is_dir() {
                    File::open(&dir)
                        .and_then(|d| d.sync_all())
                        .map_err(|e| AuditError::io(&dir, e))?;
                }
            }
            if let Some(parent) = self.dir.parent() {
                File::open(parent)
                    .and_then(|d| d.sync_all())
                    .map_err(|e| AuditError::io(parent, e))?;
            }
        }
        Ok(())
    }

    fn sync_dir_files(
        &mut self,
        dir: &Path,
        seen: &mut Vec<PathBuf>,
        changed: &mut bool,
    ) -> Result<(), AuditError> {
        let entries = fs::read_dir(dir).map_err(|e| AuditError::io(dir, e))?;
        for entry in entries {
            let entry = entry.map_err(|e| AuditError::io(dir, e))?;
            let path = entry.path();
            let kind = entry.file_type().map_err(|e| AuditError::io(&path, e))?;
            if kind.is_dir() {
                self.sync_dir_files(&path, seen, changed)?;
                continue;
            }
            if !self.files.contains_key(&path) {
                match File::open(&path) {
                    Ok(file) => {
                        self.files.insert(
                            path.clone(),
                            Synced {
                                file,
                                len: u64::MAX,
                            },
                        );
                        *changed = true;
                    }
                    // sled removes old snapshots concurrently; a vanished file needs no sync.
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(AuditError::io(&path, e)),
                }
            }
            if let Some(synced) = self.files.get_mut(&path) {
                let io = |e| AuditError::io(&path, e);
                let len = synced.file.metadata().map_err(io)?.len();
                if len != synced.len || path.file_name().is_some_and(|n| n == "db") {
                    synced.file.sync_data().map_err(io)?;
                    synced.len = len;
                }
            }
            seen.push(path);
        }
        Ok(())
    }
}

/// `checkpoints.log`: one canonical checkpoint per line, appended after each group.
///
/// The file is grown in zero-filled chunks and lines are written into that space, so the
/// per-group `fdatasync` does not change the file's size: on ext4 that avoids a journal
/// commit and makes the sync several times cheaper on a busy disk. Readers ignore the
/// trailing NUL bytes.
pub(crate) struct CheckpointFile {
    path: PathBuf,
    file: File,
    /// Where the next line goes.
    end: u64,
    /// Current file length (end of the zero-filled space).
    cap: u64,
}

/// Most zero-filled space added at a time (`journal::grow_zeroed`); a torn last line is
/// looked for within two of these from the end.
const CHUNK: u64 = 1 << 20;

impl CheckpointFile {
    /// Opens the file, drops a torn last line (never acknowledged), and appends any
    /// checkpoints the database has that the file lacks (a crash between the two writes).
    /// A new file is zero-filled ahead of its first line, durable once `created` is synced
    /// (not by the first group commit, which would pay a file system journal commit).
    pub(crate) fn open_and_reconcile(
        path: &Path,
        db: &sled::Db,
        created: &mut NewFiles,
    ) -> Result<CheckpointFile, AuditError> {
        let io = |e| AuditError::io(path, e);
        let existed = path.exists();
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(io)?;
        let mut cap = file.metadata().map_err(io)?.len();
        if !existed {
            cap = journal::zero_fill(&file, 0, 1, CHUNK).map_err(io)?;
            created.add(path, file.try_clone().map_err(io)?);
        }
        let mut cf = CheckpointFile {
            path: path.to_path_buf(),
            file,
            end: 0,
            cap,
        };
        let last = cf.find_end()?;
        let stored: Vec<Vec<u8>> = db
            .scan_prefix([CHECKPOINT_PREFIX])
            .values()
            .map(|v| v.map(|v| v.to_vec()))
            .collect::<Result<_, _>>()?;
        let start = match last {
            None => 0,
            Some(line) => match stored.iter().rposition(|c| *c == line) {
                Some(i) => i + 1,
                // One line ahead: the group being written when the process stopped, never
                // acknowledged (the writer puts the line in the file before the database).
                None if cf.ahead_by_one(&stored, &line) => {
                    tracing::warn!(path = %path.display(), "dropping the last checkpoint of checkpoints.log: its group was never committed");
                    cf.drop_last_line(line.len())?;
                    stored.len()
                }
                None => {
                    return Err(AuditError::Corrupt(format!(
                        "{} ends with a checkpoint the database does not have (truncated or replaced database?); run `airlock log verify`",
                        path.display()
                    )));
                }
            },
        };
        if start < stored.len() {
            tracing::warn!(
                missing = stored.len() - start,
                "appending checkpoints missing from checkpoints.log"
            );
            for cp in &stored[start..] {
                cf.append(cp, false)?;
            }
            cf.file.sync_all().map_err(io)?;
        }
        Ok(cf)
    }

    /// Is `last` the file's only line past the database's checkpoints (all others equal)?
    fn ahead_by_one(&self, stored: &[Vec<u8>], last: &[u8]) -> bool {
        let lines = read_checkpoint_lines(&self.path).unwrap_or_default();
        lines.len() == stored.len() + 1
            && lines.last().is_some_and(|l| l == last)
            && lines.iter().zip(stored).all(|(l, c)| l == c)
    }

    /// Zeroes the last line (`len` bytes plus its newline).
    fn drop_last_line(&mut self, len: usize) -> Result<(), AuditError> {
        let io = |e| AuditError::io(&self.path, e);
        let from = self.end - len as u64 - 1;
        self.file.write_all_at(&vec![0u8; len + 1], from).map_err(io)?;
        self.file.sync_all().map_err(io)?;
        self.end = from;
        Ok(())
    }

    /// Finds where the lines end, zeroes a torn last line, and returns the last full line.
    fn find_end(&mut self) -> Result<Option<Vec<u8>>, AuditError> {
        let io = |e| AuditError::io(&self.path, e);
        let start = self.cap.saturating_sub(2 * CHUNK + 64 * 1024);
        let mut tail = vec![0u8; usize::try_from(self.cap - start).unwrap_or(0)];
        self.file.read_exact_at(&mut tail, start).map_err(io)?;
        let data_end = tail.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
        let complete = tail[..data_end]
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |i| i + 1);
        if complete < data_end {
            tracing::warn!(path = %self.path.display(), "dropping a torn last line of checkpoints.log");
            self.file
                .write_all_at(&vec![0u8; data_end - complete], start + complete as u64)
                .map_err(io)?;
            self.file.sync_all().map_err(io)?;
        }
        self.end = start + complete as u64;
        if complete == 0 {
            return Ok(None);
        }
        let body = &tail[..complete - 1];
        let from = body.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        Ok(Some(body[from..].to_vec()))
    }

    /// Makes appended lines durable (when the journal starts over and on close; each line
    /// is also in the journal, which is synced per group).
    pub(crate) fn sync(&mut self) -> Result<(), AuditError> {
        self.file.sync_data().map_err(|e| AuditError::io(&self.path, e))
    }

    pub(crate) fn append(&mut self, checkpoint: &[u8], fsync: bool) -> Result<(), AuditError> {
        let io = |e| AuditError::io(&self.path, e);
        let mut line = Vec::with_capacity(checkpoint.len() + 1);
        line.extend_from_slice(checkpoint);
        line.push(b'\n');
        let needed = self.end + line.len() as u64;
        self.cap = journal::grow_zeroed(&self.file, self.cap, needed, CHUNK).map_err(io)?;
        self.file.write_all_at(&line, self.end).map_err(io)?;
        self.end = needed;
        if fsync {
            self.file.sync_data().map_err(io)?;
        }
        Ok(())
    }
}

/// Reads every line of `checkpoints.log` (missing file: no lines).
pub(crate) fn read_checkpoint_lines(path: &Path) -> Result<Vec<Vec<u8>>, AuditError> {
    match fs::read(path) {
        Ok(bytes) => Ok(bytes
            .split(|&b| b == b'\n')
            .filter(|l| l.first().is_some_and(|&b| b != 0))
            .map(<[u8]>::to_vec)
            .collect()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(AuditError::io(path, e)),
    }
}

/// Stored checkpoints: their bytes, and the parsed form when they parse.
pub(crate) type StoredCheckpoints = Vec<(Vec<u8>, Option<Checkpoint>)>;

/// Loads every stored checkpoint, in order.
pub(crate) fn load_checkpoints(db: &sled::Db) -> Result<StoredCheckpoints, AuditError> {
    db.scan_prefix([CHECKPOINT_PREFIX])
        .values()
        .map(|v| {
            v.map(|v| (v.to_vec(), Checkpoint::from_slice(&v)))
                .map_err(AuditError::Db)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::merkle::leaf_hash;

    fn state(records: u64) -> State {
        let mut s = State::empty(PublicKey::from_bytes([7; 32]));
        for n in 0..records {
            s.seq += 1;
            s.chain_head = Sha256Digest::of(&n.to_be_bytes());
            s.frontier.push(leaf_hash(&n.to_be_bytes()));
        }
        s.checkpoints = records / 2;
        s
    }

    fn stored(n: u64) -> Vec<u8> {
        [vec![n as u8; 32], format!("record {n}").into_bytes()].concat()
    }

    /// An older log's per-record keys 1..=3, then groups 4..=5 and 6.
    fn mixed_log() -> (tempfile::TempDir, sled::Db) {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path().join("db")).unwrap();
        for n in 1..=3 {
            db.insert(record_key(n), stored(n)).unwrap();
        }
        for group in [4..=5u64, 6..=6] {
            let mut value = Vec::new();
            for n in group.clone() {
                push_to_group(&mut value, &Sha256Digest::from_bytes([n as u8; 32]), format!("record {n}").as_bytes()).unwrap();
            }
            db.insert(group_key(*group.end()), value).unwrap();
        }
        (dir, db)
    }

    #[test]
    fn records_read_across_per_record_keys_and_groups_in_order() {
        let (_dir, db) = mixed_log();
        let all: Vec<(u64, Vec<u8>)> = records_from(&db, 0).map(|r| r.map(|(n, v)| (n, v.to_vec())).unwrap()).collect();
        assert_eq!(all, (1..=6).map(|n| (n, stored(n))).collect::<Vec<_>>());
        let from: Vec<u64> = records_from(&db, 5).map(|r| r.unwrap().0).collect();
        assert_eq!(from, [5, 6]);
        for n in 1..=6 {
            assert_eq!(record(&db, n).unwrap().as_deref(), Some(stored(n).as_slice()), "record {n}");
        }
        assert_eq!(record(&db, 7).unwrap(), None);
        assert_eq!(last_record(&db).unwrap(), 6);
        assert!(has_records(&db).unwrap());
    }

    #[test]
    fn a_group_that_is_not_whole_records_ends_the_scan_with_an_error() {
        let (_dir, db) = mixed_log();
        let value = db.get(group_key(5)).unwrap().unwrap();
        db.insert(group_key(5), &value[..value.len() - 1]).unwrap();
        let seen: Vec<Result<u64, String>> = records_from(&db, 0).map(|r| r.map(|(n, _)| n).map_err(|e| e.to_string())).collect();
        assert_eq!(seen, [Ok(1), Ok(2), Ok(3), Err("the records stored up to seq 5 are not whole".into())]);
        // More records than numbers below the key cannot be numbered either.
        db.insert(group_key(1), value).unwrap();
        assert!(matches!(records_from(&db, 0).last(), Some(Err(ScanError::Unreadable(1)))));
    }

    #[test]
    fn the_binary_state_reads_back_and_a_wrong_length_is_refused() {
        for records in [0, 1, 5, 64, 1000] {
            let s = state(records);
            let bytes = s.encode();
            assert_eq!(State::decode(&bytes), Some(s));
            // One root missing or one byte extra: not a state of that size.
            assert_eq!(State::decode(&bytes[..bytes.len() - 1]), None);
            let mut longer = bytes.clone();
            longer.extend_from_slice(&[0; 32]);
            assert_eq!(State::decode(&longer), None);
        }
    }

    #[test]
    fn the_json_state_of_older_logs_still_reads() {
        let s = state(13);
        let roots: Vec<String> = s.frontier.roots().iter().map(ToString::to_string).collect();
        let old = crate::audit::canonical::canonical(&serde_json::json!({
            "seq": s.seq,
            "chain_head": s.chain_head.to_string(),
            "frontier": roots,
            "checkpoints": s.checkpoints,
            "key": s.key.to_base64(),
        }));
        assert_eq!(State::decode(&old), Some(s.clone()));
        assert_eq!(State::decode(&State::decode(&old).unwrap().encode()), Some(s));
    }
}
