//! Verification of a log directory or an export: chain, Merkle roots, checkpoint
//! signatures, key rotations, and agreement with `checkpoints.log`.
//!
//! Owns: `verify_dir`, `verify_export`, the trust rules for keys, `Problem`.
//! Uses: `store` to read, `checkpoint`/`merkle`/`keys` to check.
//! Must not: write anything.
//!
//! Trust: the verifier is given one trusted public key (the anchor: `--pubkey`, or the local
//! key file). The key in effect starts as the key of the first checkpoint and changes only
//! at a `key_rotated` record, once a checkpoint signed by the old key covers it. Every
//! checkpoint must be signed by the key in effect, and the anchor must have signed at least
//! one checkpoint: its signature over the Merkle root vouches for everything before it, and
//! the rotations it signed vouch for the keys after it.

use std::fmt;
use std::path::Path;
use std::sync::mpsc;
use std::thread;

use memchr::memmem;
use serde_json::Value;

use super::AuditError;
use super::checkpoint::Checkpoint;
use super::digest::{Seq, Sha256Digest};
use super::keys::{KeyId, PublicKey, verify_batch};
use super::merkle::{Frontier, leaf_hash};
use super::store::{self, LogPaths};

mod prehash;

/// What is wrong at the first bad sequence number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Problem {
    /// The record's bytes are not what was hashed and signed.
    Edited,
    /// A sequence number is absent from the middle of the log.
    Missing,
    /// A record sits at another position than the one it was written at.
    Reordered,
    /// Records that a checkpoint covers are gone from the end.
    Truncated,
    /// A checkpoint signature does not verify.
    BadSignature,
    /// A checkpoint is signed by a key that is not the trusted one or not the one in effect.
    KeyMismatch,
    /// Records exist that no checkpoint covers.
    Unsigned,
    /// `checkpoints.log` and the database disagree.
    CheckpointLogMismatch,
    /// A line or entry cannot be parsed.
    Malformed,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Problem::Edited => "edited",
            Problem::Missing => "missing",
            Problem::Reordered => "reordered",
            Problem::Truncated => "truncated",
            Problem::BadSignature => "bad signature",
            Problem::KeyMismatch => "key mismatch",
            Problem::Unsigned => "unsigned",
            Problem::CheckpointLogMismatch => "checkpoints.log mismatch",
            Problem::Malformed => "malformed",
        })
    }
}

/// The first problem found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyFailure {
    pub seq: Seq,
    pub problem: Problem,
    pub detail: String,
}

impl fmt::Display for VerifyFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "seq {}: {}: {}", self.seq, self.problem, self.detail)
    }
}

fn fail(seq: u64, problem: Problem, detail: impl Into<String>) -> VerifyFailure {
    VerifyFailure {
        seq: Seq::new(seq),
        problem,
        detail: detail.into(),
    }
}

/// What an intact log contains.
#[derive(Debug, Clone)]
pub struct VerifyReport {
    /// First and last sequence number checked (`first > last` when empty).
    pub first: Seq,
    pub last: Seq,
    pub checkpoints: u64,
    /// Keys that signed, in order of use.
    pub keys: Vec<KeyId>,
    pub root: Sha256Digest,
    pub chain_head: Sha256Digest,
    /// Things worth knowing that are not tampering (e.g. a crash left checkpoints.log short).
    pub warnings: Vec<String>,
}

impl VerifyReport {
    /// The one line `airlock log verify` prints for an intact log.
    pub fn summary(&self) -> String {
        let keys: Vec<String> = self.keys.iter().map(ToString::to_string).collect();
        format!(
            "ok: records {}..={} intact, {} checkpoints, signed by key {}, root {}",
            self.first,
            self.last,
            self.checkpoints,
            keys.join(" then "),
            self.root
        )
    }
}

/// The key verification is anchored to.
#[derive(Debug, Clone, Copy)]
pub struct Trust {
    pub anchor: PublicKey,
}

const ROTATION_MARK: &[u8] = br#""kind":"key_rotated""#;

/// A checkpoint whose signature still has to be checked (off the hashing thread).
struct SigJob {
    report_seq: u64,
    checkpoint: Checkpoint,
}

/// The chain, tree and key state shared by directory and export verification.
struct Verifier {
    next_seq: u64,
    first_seq: u64,
    chain: Sha256Digest,
    frontier: Frontier,
    covered: u64,
    key: Option<PublicKey>,
    rotations: Vec<(u64, PublicKey, PublicKey)>,
    signers: Vec<PublicKey>,
    anchor: PublicKey,
    origin: Option<String>,
    checkpoints: u64,
    finder: memmem::Finder<'static>,
    /// Signature checkers, fed round-robin.
    sigs: Vec<mpsc::Sender<SigJob>>,
}

impl Verifier {
    fn new(
        trust: Trust,
        sigs: Vec<mpsc::Sender<SigJob>>,
        start: u64,
        chain: Sha256Digest,
        frontier: Frontier,
    ) -> Verifier {
        Verifier {
            next_seq: start,
            first_seq: start,
            chain,
            frontier,
            covered: start - 1,
            key: None,
            rotations: Vec::new(),
            signers: Vec::new(),
            anchor: trust.anchor,
            origin: None,
            checkpoints: 0,
            finder: memmem::Finder::new(ROTATION_MARK),
            sigs,
        }
    }

    /// Hashes the next record into the chain and the tree.
    fn record(&mut self, bytes: &[u8]) -> Result<(), VerifyFailure> {
        let chain = Sha256Digest::of_parts(&[self.chain.as_bytes(), bytes]);
        self.advance(bytes, chain, leaf_hash(bytes))
    }

    /// Takes the next record with its hashes already computed: `chain` after it, `leaf`.
    fn advance(&mut self, bytes: &[u8], chain: Sha256Digest, leaf: Sha256Digest) -> Result<(), VerifyFailure> {
        let seq = self.next_seq;
        // An export header may start at any seq; the one after u64::MAX does not exist.
        let next = seq
            .checked_add(1)
            .ok_or_else(|| fail(seq, Problem::Malformed, "seq overflows 64 bits"))?;
        self.chain = chain;
        self.frontier.push(leaf);
        if self.finder.find(bytes).is_some() {
            self.note_rotation(seq, bytes)?;
        }
        self.next_seq = next;
        Ok(())
    }

    fn note_rotation(&mut self, seq: u64, bytes: &[u8]) -> Result<(), VerifyFailure> {
        let v: Value = serde_json::from_slice(bytes)
            .map_err(|e| fail(seq, Problem::Malformed, e.to_string()))?;
        if v.get("kind").and_then(Value::as_str) != Some("key_rotated") {
            return Ok(()); // the marker was inside arguments or detail
        }
        let key = |name: &str| {
            v.pointer(&format!("/detail/{name}"))
                .and_then(Value::as_str)
                .and_then(PublicKey::parse)
        };
        match (key("old_key"), key("new_key")) {
            (Some(old), Some(new)) => {
                self.rotations.push((seq, old, new));
                Ok(())
            }
            _ => Err(fail(
                seq,
                Problem::Malformed,
                "key_rotated record without old_key and new_key",
            )),
        }
    }

    fn checkpoint(&mut self, cp: Checkpoint) -> Result<(), VerifyFailure> {
        let size = self.next_seq - 1;
        let first = (self.covered + 1).min(size.max(1));
        let index = self.checkpoints;
        if cp.size != size {
            return Err(fail(
                first,
                Problem::Malformed,
                format!(
                    "checkpoint #{index} claims {} records where {size} precede it",
                    cp.size
                ),
            ));
        }
        if cp.chain_head != self.chain || cp.root != self.frontier.root() {
            return Err(fail(
                first,
                Problem::Edited,
                format!("records {first}..={size} do not hash to checkpoint #{index}"),
            ));
        }
        match &self.origin {
            None => self.origin = Some(cp.origin.clone()),
            Some(o) if *o != cp.origin => {
                return Err(fail(
                    first,
                    Problem::KeyMismatch,
                    format!(
                        "checkpoint #{index} has origin {:?}, the log {o:?}",
                        cp.origin
                    ),
                ));
            }
            Some(_) => {}
        }
        let in_effect = *self.key.get_or_insert(cp.key);
        if cp.key != in_effect {
            return Err(fail(
                first,
                Problem::KeyMismatch,
                format!(
                    "checkpoint #{index} is signed by key {}, but the key in effect is {}",
                    cp.key.id(),
                    in_effect.id()
                ),
            ));
        }
        if !self.signers.contains(&cp.key) {
            self.signers.push(cp.key);
        }
        let lane = (self.checkpoints as usize) % self.sigs.len().max(1);
        let _ = self.sigs[lane].send(SigJob {
            report_seq: first,
            checkpoint: cp,
        });
        self.apply_rotations(size)?;
        self.covered = size;
        self.checkpoints += 1;
        Ok(())
    }

    fn apply_rotations(&mut self, size: u64) -> Result<(), VerifyFailure> {
        while let Some(&(seq, old, new)) = self.rotations.first() {
            if seq > size {
                break;
            }
            if Some(old) != self.key {
                return Err(fail(
                    seq,
                    Problem::KeyMismatch,
                    format!(
                        "key_rotated names old key {}, which is not the key in effect",
                        old.id()
                    ),
                ));
            }
            self.key = Some(new);
            self.rotations.remove(0);
        }
        Ok(())
    }

    fn finish(self) -> Result<VerifyReport, VerifyFailure> {
        let last = self.next_seq - 1;
        if last > self.covered {
            return Err(fail(
                self.covered + 1,
                Problem::Unsigned,
                format!(
                    "records {}..={last} are not covered by any checkpoint",
                    self.covered + 1
                ),
            ));
        }
        if self.checkpoints > 0 && !self.signers.contains(&self.anchor) {
            let used: Vec<String> = self.signers.iter().map(|k| k.id().to_string()).collect();
            return Err(fail(
                self.first_seq,
                Problem::KeyMismatch,
                format!(
                    "no checkpoint is signed by the trusted key {}; the log is signed by {}",
                    self.anchor.id(),
                    used.join(", ")
                ),
            ));
        }
        Ok(VerifyReport {
            first: Seq::new(self.first_seq),
            last: Seq::new(last),
            checkpoints: self.checkpoints,
            keys: self.signers.iter().map(PublicKey::id).collect(),
            root: self.frontier.root(),
            chain_head: self.chain,
            warnings: Vec::new(),
        })
    }
}

/// Signatures checked as one batch: large enough to take most of the batch saving
/// (`keys::verify_batch`), small enough that a bad one is found without much rework and
/// that the batches left when the walk ends (checked after it, on every core) are short:
/// 256 left 4–10 ms of a 100k-record verification to that tail, 64 about half of it.
const SIG_BATCH: usize = 64;

/// Checks signatures in batches of `SIG_BATCH` as they arrive (the last one short);
/// returns the first failure.
fn check_signatures(jobs: mpsc::Receiver<SigJob>) -> Option<VerifyFailure> {
    let mut jobs = jobs.into_iter().peekable();
    while jobs.peek().is_some() {
        let batch: Vec<SigJob> = jobs.by_ref().take(SIG_BATCH).collect();
        if let Some(failure) = check_batch(&batch) {
            return Some(failure);
        }
    }
    None
}

/// The first checkpoint of `batch` whose signature does not verify, if any.
fn check_batch(batch: &[SigJob]) -> Option<VerifyFailure> {
    let messages: Vec<Vec<u8>> = batch.iter().map(|job| job.checkpoint.signed_bytes()).collect();
    let items: Vec<_> = batch
        .iter()
        .zip(&messages)
        .map(|(job, msg)| (job.checkpoint.key, msg.as_slice(), job.checkpoint.signature))
        .collect();
    if batch.len() > 1 && verify_batch(&items) {
        return None;
    }
    // One by one, with the single-signature check, to name the bad one.
    let bad = batch.iter().zip(&messages).find(|(job, msg)| !job.checkpoint.key.verify(msg, &job.checkpoint.signature))?;
    let cp = &bad.0.checkpoint;
    Some(fail(
        bad.0.report_seq,
        Problem::BadSignature,
        format!("checkpoint for {} records does not verify under key {}", cp.size, cp.key.id()),
    ))
}

/// The earlier of two failures (ties go to `a`).
fn earliest(a: Option<VerifyFailure>, b: Option<VerifyFailure>) -> Option<VerifyFailure> {
    match (a, b) {
        (Some(a), Some(b)) => Some(if b.seq < a.seq { b } else { a }),
        (a, b) => a.or(b),
    }
}

/// Runs `body` with a verifier whose signature checks happen on a second thread.
fn with_verifier<T>(
    trust: Trust,
    start: (u64, Sha256Digest, Frontier),
    body: impl FnOnce(&mut Verifier) -> Result<T, VerifyFailure>,
) -> Result<(T, VerifyReport), VerifyFailure> {
    // Ed25519 verification costs more than hashing a group, so it gets every core.
    let lanes = thread::available_parallelism().map_or(1, |n| n.get());
    thread::scope(|s| {
        let (senders, checkers): (Vec<_>, Vec<_>) = (0..lanes)
            .map(|_| {
                let (tx, rx) = mpsc::channel();
                (tx, s.spawn(move || check_signatures(rx)))
            })
            .unzip();
        let mut v = Verifier::new(trust, senders, start.0, start.1, start.2);
        let outcome = body(&mut v).and_then(|t| v.finish().map(|r| (t, r)));
        let sig_failure = checkers.into_iter().fold(None, |acc, checker| {
            let found = checker.join().unwrap_or_else(|_| {
                Some(fail(0, Problem::BadSignature, "signature checker panicked"))
            });
            earliest(acc, found)
        });
        match (outcome, sig_failure) {
            (Ok(ok), None) => Ok(ok),
            (Ok(_), Some(f)) => Err(f),
            (Err(e), f) => {
                Err(earliest(Some(e), f)
                    .unwrap_or_else(|| fail(0, Problem::Malformed, "unreachable")))
            }
        }
    })
}

/// Verifies the log under `data_dir`. The outer error means it could not be read.
pub fn verify_dir(
    paths: &LogPaths,
    trust: Trust,
) -> Result<Result<VerifyReport, VerifyFailure>, AuditError> {
    verify_stopped(&super::LogReader::open(paths)?, paths, trust)
}

/// `verify_dir` through a reader the caller opened (`LogReader::open`) on a stopped log,
/// for a caller that reads the records too: one open for both. Opening sled again right
/// after a drop can find the lock still held by sled's IO thread finishing the last
/// write, which a second `LogReader::open` reports as a locked database.
pub fn verify_stopped(
    reader: &super::LogReader,
    paths: &LogPaths,
    trust: Trust,
) -> Result<Result<VerifyReport, VerifyFailure>, AuditError> {
    match reader.sled() {
        Some(db) => verify_db(db, paths, trust, Snapshot::Stopped),
        None => verify_reader(reader, trust),
    }
}

/// Verifies the log of a running gateway through its reader (`AuditLog::reader`): what is
/// durable when it starts, i.e. every record the checkpoints then stored cover. Groups the
/// writer commits meanwhile (records, their checkpoint and its `checkpoints.log` line)
/// are left for the next verification, so the database is never opened a second time.
pub fn verify_live(
    reader: &super::LogReader,
    paths: &LogPaths,
    trust: Trust,
) -> Result<Result<VerifyReport, VerifyFailure>, AuditError> {
    match reader.sled() {
        Some(db) => verify_db(db, paths, trust, Snapshot::Live),
        None => verify_reader(reader, trust),
    }
}

/// Verifies the log a reader reads through its export (a store without `checkpoints.log`,
/// e.g. PostgreSQL): the same checks `verify_export` makes of a file.
pub fn verify_reader(
    reader: &super::LogReader,
    trust: Trust,
) -> Result<Result<VerifyReport, VerifyFailure>, AuditError> {
    let mut export = Vec::new();
    reader.export(Seq::new(1), &mut export)?;
    Ok(verify_export_bytes(&export, trust))
}

/// Whether a writer may be appending while the log is verified.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Snapshot {
    /// Nothing writes: every stored record must be covered, every line matched.
    Stopped,
    /// The writer runs: the stored checkpoints, read first, bound what is checked.
    Live,
}

fn verify_db(
    db: &sled::Db,
    paths: &LogPaths,
    trust: Trust,
    snapshot: Snapshot,
) -> Result<Result<VerifyReport, VerifyFailure>, AuditError> {
    let start = (1, Sha256Digest::from_bytes([0; 32]), Frontier::new());
    let scan = || prehash::Prehashed::new(store::records_from(db, 0), start.1);
    // With nothing writing, the first batches are read and hashed while the checkpoints
    // are parsed. A live log's records are scanned only after its checkpoints are read:
    // a scan begun earlier might miss a group that a checkpoint read later covers.
    let early = (snapshot == Snapshot::Stopped).then(scan);
    let stored = store::load_checkpoints(db)?;
    let mut lines = store::read_checkpoint_lines(&paths.checkpoints)?;
    if snapshot == Snapshot::Live {
        // The writer syncs a group's line before its database batch, so the file holds
        // every stored checkpoint and perhaps newer ones: those are not checked yet.
        lines.truncate(stored.len());
    }
    let records = early.unwrap_or_else(scan);
    let mut db_error: Option<AuditError> = None;
    let mut unsigned = None;
    let outcome =
        with_verifier(trust, start, |v| walk_db(records, &stored, v, &mut db_error, snapshot, &mut unsigned));
    if let Some(e) = db_error {
        return Err(e);
    }
    let last_seq = match &outcome {
        Ok((last, _)) => *last,
        Err(_) => u64::MAX,
    };
    let (log_failure, warning) = compare_checkpoint_log(&stored, &lines, last_seq);
    Ok(match (outcome, log_failure) {
        (Ok((_, mut report)), None) => {
            report.warnings.extend(warning);
            report.warnings.extend(unsigned.map(|(first, last)| format!(
                "records {first}..={last} are durable but not signed yet: the gateway stopped after recording a call it forwarded and before answering it; no checkpoint vouches for them until its next start signs them"
            )));
            Ok(report)
        }
        (Ok(_), Some(f)) => Err(f),
        (Err(e), f) => {
            Err(earliest(Some(e), f).unwrap_or_else(|| fail(0, Problem::Malformed, "unreachable")))
        }
    })
}

type Stored = [(Vec<u8>, Option<Checkpoint>)];

/// Feeds records and checkpoints in order; returns the last sequence number seen. With
/// the writer stopped, records past the last checkpoint must continue the chain: they are
/// a group whose signature was deferred (`writer`), reported in `unsigned`, not covered.
fn walk_db(
    records: prehash::Prehashed,
    stored: &Stored,
    v: &mut Verifier,
    db_error: &mut Option<AuditError>,
    snapshot: Snapshot,
    unsigned: &mut Option<(u64, u64)>,
) -> Result<u64, VerifyFailure> {
    let mut records = records.peekable();
    let mut last_seen = 0u64;
    for (index, (_, cp)) in stored.iter().enumerate() {
        let Some(cp) = cp.clone() else {
            return Err(fail(
                v.covered + 1,
                Problem::Malformed,
                format!("checkpoint #{index} cannot be parsed"),
            ));
        };
        while v.next_seq <= cp.size {
            let key = match records.next() {
                None => {
                    return Err(fail(
                        v.next_seq,
                        Problem::Truncated,
                        format!(
                            "checkpoint #{index} covers {} records but the log ends at seq {}",
                            cp.size,
                            v.next_seq - 1
                        ),
                    ));
                }
                Some(Err(e)) => return Err(unreadable(v.next_seq, e, db_error)),
                Some(Ok(hashed)) => hashed,
            };
            let seq = key.seq;
            last_seen = seq;
            check_db_record(v, seq, &key)?;
        }
        v.checkpoint(cp)?;
    }
    if snapshot == Snapshot::Stopped {
        // The tail is checked like any record (numbering, chain) without advancing the
        // verifier: what the report calls intact stays what a checkpoint covers.
        for (expected, item) in (v.next_seq..).zip(records) {
            let hashed = match item {
                Ok(hashed) => hashed,
                Err(e) => return Err(unreadable(expected, e, db_error)),
            };
            let seq = hashed.seq;
            linked_db_record(expected, seq, &hashed)?;
            *unsigned = Some((unsigned.map_or(seq, |(first, _)| first), seq));
            last_seen = seq;
        }
    }
    Ok(last_seen.max(v.next_seq - 1))
}

/// A record that could not be read at `expected`: a group whose records are not whole is
/// a finding about the log; a database error is not (it goes to `db_error`).
fn unreadable(expected: u64, e: store::ScanError, db_error: &mut Option<AuditError>) -> VerifyFailure {
    match e {
        store::ScanError::Unreadable(_) => fail(expected, Problem::Malformed, e.to_string()),
        store::ScanError::Db(e) => {
            *db_error = Some(e.into());
            fail(expected, Problem::Malformed, "database read failed")
        }
    }
}

fn check_db_record(v: &mut Verifier, seq: u64, record: &prehash::Hashed) -> Result<(), VerifyFailure> {
    let (bytes, link) = linked_db_record(v.next_seq, seq, record)?;
    v.advance(bytes, link, record.leaf)
}

/// Checks that the stored record `seq` is the `expected` one and continues the chain;
/// returns its canonical bytes and its link.
fn linked_db_record(expected: u64, seq: u64, record: &prehash::Hashed) -> Result<(&[u8], Sha256Digest), VerifyFailure> {
    let value = &record.value;
    if seq != expected {
        return Err(if seq > expected {
            fail(
                expected,
                Problem::Missing,
                format!("no record at seq {expected}; the next stored is {seq}"),
            )
        } else {
            fail(
                seq,
                Problem::Reordered,
                format!("record at seq {seq} found where {expected} was expected"),
            )
        });
    }
    if value.len() < 32 {
        return Err(fail(seq, Problem::Edited, "stored entry is too short"));
    }
    let (stored_hash, bytes) = value.split_at(32);
    match record.link {
        // The link was hashed from the stored hash before it; every earlier one matched,
        // so that is the chain (see `prehash`).
        Some(link) if link.as_bytes() == stored_hash => Ok((bytes, link)),
        _ => Err(diagnose(seq, bytes)),
    }
}

/// Says why a record's hash is wrong: moved from elsewhere, or changed.
fn diagnose(seq: u64, bytes: &[u8]) -> VerifyFailure {
    let claimed = serde_json::from_slice::<Value>(bytes)
        .ok()
        .and_then(|v| v.get("seq").and_then(Value::as_u64));
    match claimed {
        Some(other) if other != seq => fail(
            seq,
            Problem::Reordered,
            format!("the record stored at seq {seq} was written as seq {other}"),
        ),
        _ => fail(
            seq,
            Problem::Edited,
            "the record does not match its chain hash",
        ),
    }
}

/// Compares `checkpoints.log` with the stored checkpoints: each line must be the stored
/// checkpoint of its index, and none may be missing, at the end either.
fn compare_checkpoint_log(
    stored: &Stored,
    lines: &[Vec<u8>],
    last_seq: u64,
) -> (Option<VerifyFailure>, Option<String>) {
    let first_of = |i: usize| -> u64 {
        if i == 0 {
            1
        } else {
            stored
                .get(i - 1)
                .and_then(|(_, c)| c.as_ref())
                .map_or(1, |c| c.size + 1)
        }
    };
    for (i, line) in lines.iter().enumerate() {
        if i == stored.len() && i + 1 == lines.len() && Checkpoint::from_slice(line).is_some() {
            // The writer puts a group's line in the file before the database: one line
            // ahead is the group a stopped gateway was writing, never acknowledged.
            let size = Checkpoint::from_slice(line).map_or(0, |c| c.size);
            return (
                None,
                Some(format!(
                    "checkpoints.log ends with a checkpoint for {size} records that the database lacks: the group being written when the gateway stopped (never acknowledged); the next start drops it"
                )),
            );
        }
        let Some((bytes, _)) = stored.get(i) else {
            let size = Checkpoint::from_slice(line).map_or(0, |c| c.size);
            let seq = first_of(i).max(if last_seq == u64::MAX {
                1
            } else {
                last_seq + 1
            });
            let problem = if size > last_seq {
                Problem::Truncated
            } else {
                Problem::CheckpointLogMismatch
            };
            return (
                Some(fail(
                    seq,
                    problem,
                    format!(
                        "checkpoints.log has checkpoint #{i} for {size} records, which the database lacks"
                    ),
                )),
                None,
            );
        };
        if bytes != line {
            return (
                Some(fail(
                    first_of(i),
                    Problem::CheckpointLogMismatch,
                    format!(
                        "checkpoint #{i} in the database differs from line {} of checkpoints.log",
                        i + 1
                    ),
                )),
                None,
            );
        }
    }
    if lines.len() < stored.len() {
        // The writer writes and syncs the line before the database, so only a removed
        // line leaves the file short.
        let missing = stored.len() - lines.len();
        let size = stored.last().and_then(|(_, c)| c.as_ref()).map_or(0, |c| c.size);
        return (
            Some(fail(
                first_of(lines.len()),
                Problem::CheckpointLogMismatch,
                format!(
                    "checkpoints.log lacks the last {missing} checkpoint(s) the database holds (the last for {size} records): its last line(s) were removed"
                ),
            )),
            None,
        );
    }
    (None, None)
}

/// Verifies an export produced by `airlock log export` (no database needed). Edits are
/// located to the group of the checkpoint that fails, not to the single record.
pub fn verify_export(
    path: &Path,
    trust: Trust,
) -> Result<Result<VerifyReport, VerifyFailure>, AuditError> {
    let text = std::fs::read(path).map_err(|e| AuditError::io(path, e))?;
    Ok(verify_export_bytes(&text, trust))
}

/// `verify_export` of an export in memory.
fn verify_export_bytes(text: &[u8], trust: Trust) -> Result<VerifyReport, VerifyFailure> {
    let mut lines = text
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .peekable();
    let mut start = (1, Sha256Digest::from_bytes([0; 32]), Frontier::new());
    if let Some(header) = lines
        .peek()
        .and_then(|first| super::export::parse_header(first))
    {
        start = header;
        lines.next();
    }
    with_verifier(trust, start, |v| {
        for line in lines {
            export_line(v, line)?;
        }
        Ok(())
    })
    .map(|((), report)| report)
}

fn export_line(v: &mut Verifier, line: &[u8]) -> Result<(), VerifyFailure> {
    let value: Value = serde_json::from_slice(line)
        .map_err(|e| fail(v.next_seq, Problem::Malformed, e.to_string()))?;
    if value.get("kind").and_then(Value::as_str) == Some("checkpoint") {
        let cp = Checkpoint::from_value(&value).ok_or_else(|| {
            fail(
                v.covered + 1,
                Problem::Malformed,
                "unreadable checkpoint line",
            )
        })?;
        if cp.size < v.next_seq - 1 {
            // A checkpoint line placed after records it does not cover.
            return Err(fail(
                cp.size + 1,
                Problem::Reordered,
                format!(
                    "checkpoint for {} records follows seq {}",
                    cp.size,
                    v.next_seq - 1
                ),
            ));
        }
        if cp.size >= v.next_seq {
            return Err(fail(
                v.next_seq,
                Problem::Missing,
                format!(
                    "checkpoint covers {} records but seq {} is absent",
                    cp.size, v.next_seq
                ),
            ));
        }
        return v.checkpoint(cp);
    }
    let expected = v.next_seq;
    match value.get("seq").and_then(Value::as_u64) {
        Some(seq) if seq == expected => v.record(line),
        Some(seq) if seq > expected => Err(fail(
            expected,
            Problem::Missing,
            format!("seq {seq} follows seq {}", expected - 1),
        )),
        Some(seq) => Err(fail(
            expected,
            Problem::Reordered,
            format!("seq {seq} found where {expected} was expected"),
        )),
        None => Err(fail(
            expected,
            Problem::Malformed,
            "record line without seq",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::keys::{Signature, SigningKey};

    /// `n` checkpoints signed by one key, the `i`th reported at seq `i + 1`.
    fn jobs(n: u64) -> Vec<SigJob> {
        let key = SigningKey::generate().unwrap();
        (0..n)
            .map(|i| SigJob {
                report_seq: i + 1,
                checkpoint: Checkpoint::sign(
                    &key,
                    "airlock.test/log",
                    i + 1,
                    Sha256Digest::from_bytes([i as u8; 32]),
                    Sha256Digest::from_bytes([1; 32]),
                    "2026-12-03T00:00:00Z".into(),
                ),
            })
            .collect()
    }

    fn first_bad(jobs: Vec<SigJob>) -> Option<u64> {
        let (tx, rx) = mpsc::channel();
        for job in jobs {
            tx.send(job).unwrap();
        }
        drop(tx);
        check_signatures(rx).map(|f| f.seq.get())
    }

    #[test]
    fn good_signatures_pass_in_full_and_short_batches() {
        assert_eq!(first_bad(jobs(SIG_BATCH as u64 * 2 + 3)), None);
        assert_eq!(first_bad(jobs(1)), None);
    }

    #[test]
    fn a_bad_signature_inside_a_batch_is_named() {
        for (n, bad) in [(150u64, 100usize), (150, 0), (150, 149), (1, 0)] {
            let mut all = jobs(n);
            let mut sig = *all[bad].checkpoint.signature.as_bytes();
            sig[7] ^= 1;
            all[bad].checkpoint.signature = Signature::from_bytes(sig);
            assert_eq!(first_bad(all), Some(bad as u64 + 1), "{n} checkpoints, bad at {bad}");
        }
    }

    #[test]
    fn a_signature_under_another_key_is_named() {
        let mut all = jobs(70);
        all[65].checkpoint.key = SigningKey::generate().unwrap().public_key();
        assert_eq!(first_bad(all), Some(66));
    }
}
