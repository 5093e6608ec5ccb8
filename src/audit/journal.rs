//! The journal: the log's durability point, one append and (with `fsync`) one `fdatasync`
//! per group commit.
//!
//! Owns: `<data_dir>/audit.journal`, its entry format, replaying it into sled on open.
//! Uses: sled (as the store the entries are replayed into), `digest` for entry checksums.
//! Must not: decide what a group holds (the writer does) or acknowledge anything.
//!
//! Why our own file: sled 0.34's `flush` issues `sync_file_range(WAIT_AFTER)` per buffer and
//! its files need a separate fsync, so a durable sled batch costs several syncing calls. The
//! writer applies each group to sled without flushing it and makes the same group durable
//! here instead; sled stays the store every reader reads. sled is flushed and fsynced only
//! when the journal is reset (when it grows past `RESET_AT`, and on close), and whatever sled
//! lost in a crash is replayed from here when the database is next opened.
//!
//! Groups are numbered by their mark, records plus checkpoints in the log after them
//! (`mark`): every group raises it, since it adds records, a checkpoint, or both (a group
//! whose signature is deferred adds no checkpoint, see `writer`).
//!
//! Layout: a 64-byte header (`MAGIC`, then `base`: the mark of what sled held, durably,
//! when the journal was reset, then a SHA-256 of both), then entries from offset 64:
//! `ENTRY` ‖ payload length (u32 BE) ‖ mark before the group (u64 BE) ‖ mark after it
//! (u64 BE) ‖ SHA-256(before ‖ after ‖ payload) ‖ payload, the payload being the group's
//! sled batch as (u16 BE key length ‖ key ‖ u32 BE value length ‖ value)*. Only entries
//! that continue one another from `base` count (each one's `before` is the previous one's
//! `after`): the first torn or stale entry ends the journal, so the file is reused from
//! offset 64 after a reset without being zeroed. The file grows in zero-filled chunks so a
//! per-group `fdatasync` never changes its size (no ext4 journal commit).
//!
//! Journals written before deferred signatures (`airlock-journal1`, entries `AJE1` with one
//! number, the checkpoints after the group) are still replayed; the next reset rewrites the
//! header in the current form.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::AuditError;
use super::digest::Sha256Digest;
use super::keys::NewFiles;

const MAGIC: &[u8; 16] = b"airlock-journal2";
const ENTRY: &[u8; 4] = b"AJE2";
/// The first form: groups numbered by the checkpoints after them.
const MAGIC_V1: &[u8; 16] = b"airlock-journal1";
const ENTRY_V1: &[u8; 4] = b"AJE1";
const HEADER: u64 = 64;
/// Bytes before an entry's payload: tag, length, marks before and after, checksum.
const ENTRY_HEAD: usize = 4 + 4 + 8 + 8 + 32;
/// The same in the first form: tag, length, count, checksum.
const ENTRY_HEAD_V1: usize = 4 + 4 + 8 + 32;
/// Most zero-filled space added at a time.
const CHUNK: u64 = 4 << 20;
/// The first zero-filled step of a new file (journal or `checkpoints.log`), doubling from
/// there: creating a log costs one small write and sync. A first 4 MiB step took 12–20 ms
/// of a gateway's start on a fresh data dir, before it could answer `initialize`.
const FIRST_STEP: u64 = 64 << 10;
/// Journal length at which the writer flushes sled and starts the journal over.
pub(crate) const RESET_AT: u64 = 64 << 20;

/// The journal path for the sled directory `db_dir` (`<data_dir>/audit.journal`).
pub(crate) fn path_for(db_dir: &Path) -> PathBuf {
    db_dir.with_extension("journal")
}

/// One key/value pair of a group's sled batch.
pub(crate) type Pair = (Vec<u8>, Vec<u8>);

/// How far a log is, in the journal's numbering: records plus checkpoints.
pub(crate) fn mark(seq: u64, checkpoints: u64) -> u64 {
    seq + checkpoints
}

/// What sled holds durably (from its state key), to replay the journal against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Stored {
    pub(crate) seq: u64,
    pub(crate) checkpoints: u64,
}

/// The journal's two forms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Form {
    /// `airlock-journal1`: one number per group, the checkpoints after it.
    V1,
    /// `airlock-journal2`: marks before and after each group.
    V2,
}

impl Form {
    /// Where `stored` is in this form's numbering.
    fn number(self, stored: Stored) -> u64 {
        match self {
            Form::V1 => stored.checkpoints,
            Form::V2 => mark(stored.seq, stored.checkpoints),
        }
    }
}

/// The open journal of a writer.
pub(crate) struct Journal {
    path: PathBuf,
    file: File,
    /// Where the next entry goes.
    end: u64,
    /// Current file length (end of the zero-filled space).
    cap: u64,
}

impl Journal {
    /// Opens (or creates) the journal, started over at mark `base`. Call `replay` (and make
    /// sled durable) first. `clean` (see `Replayed`): the header already says `base` and
    /// nothing follows it, so it is kept as it is, without a write or a sync, if it is in
    /// the current form.
    /// A new journal is durable only once `created` is synced.
    pub(crate) fn open(path: &Path, base: u64, clean: bool, created: &mut NewFiles) -> Result<Journal, AuditError> {
        let io = |e| AuditError::io(path, e);
        let existed = path.exists();
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(io)?;
        let cap = file.metadata().map_err(io)?.len();
        let mut journal = Journal {
            path: path.to_path_buf(),
            file,
            end: HEADER,
            cap,
        };
        if !existed {
            journal.cap = zero_fill(&journal.file, 0, HEADER, CHUNK).map_err(io)?;
            journal.reset(base, false)?;
            created.add(path, journal.file.try_clone().map_err(io)?);
            return Ok(journal);
        }
        let empty = journal.cap == 0;
        journal.reserve(HEADER)?;
        let mut magic = [0u8; 16];
        let current = read_at(&journal.file, &mut magic, 0).map_err(io)? && &magic == MAGIC;
        if !clean || empty || !current {
            journal.reset(base, true)?;
        }
        Ok(journal)
    }

    /// Bytes in use (header and entries).
    pub(crate) fn len(&self) -> u64 {
        self.end
    }

    /// Starts the journal over: everything in it is durable in sled, which is at mark
    /// `base`. `sync`: make the new header durable now.
    pub(crate) fn reset(&mut self, base: u64, sync: bool) -> Result<(), AuditError> {
        let io = |e| AuditError::io(&self.path, e);
        let mut header = [0u8; HEADER as usize];
        header[..16].copy_from_slice(MAGIC);
        header[16..24].copy_from_slice(&base.to_be_bytes());
        let sum = Sha256Digest::of(&header[..24]);
        header[24..56].copy_from_slice(sum.as_bytes());
        self.file.write_all_at(&header, 0).map_err(io)?;
        if sync {
            self.file.sync_data().map_err(io)?;
        }
        self.end = HEADER;
        Ok(())
    }

    /// Writes one group, which takes the log from mark `before` to mark `after`. Not
    /// durable until `sync`.
    pub(crate) fn append(&mut self, before: u64, after: u64, pairs: &[Pair]) -> Result<(), AuditError> {
        let size: usize = pairs.iter().map(|(k, v)| 6 + k.len() + v.len()).sum();
        let mut entry = Vec::with_capacity(ENTRY_HEAD + size);
        entry.extend_from_slice(ENTRY);
        let len = u32::try_from(size)
            .map_err(|_| AuditError::Corrupt("a group too large for the journal".into()))?;
        entry.extend_from_slice(&len.to_be_bytes());
        entry.extend_from_slice(&before.to_be_bytes());
        entry.extend_from_slice(&after.to_be_bytes());
        entry.extend_from_slice(&[0u8; 32]);
        for (k, v) in pairs {
            let (Ok(kl), Ok(vl)) = (u16::try_from(k.len()), u32::try_from(v.len())) else {
                return Err(AuditError::Corrupt("a record too large for the journal".into()));
            };
            entry.extend_from_slice(&kl.to_be_bytes());
            entry.extend_from_slice(k);
            entry.extend_from_slice(&vl.to_be_bytes());
            entry.extend_from_slice(v);
        }
        let sum = Sha256Digest::of_parts(&[&entry[8..24], &entry[ENTRY_HEAD..]]);
        entry[24..56].copy_from_slice(sum.as_bytes());
        let needed = self.end + entry.len() as u64;
        self.reserve(needed)?;
        self.file
            .write_all_at(&entry, self.end)
            .map_err(|e| AuditError::io(&self.path, e))?;
        self.end = needed;
        Ok(())
    }

    /// Makes the appended entries durable: the one `fdatasync` of a group commit.
    pub(crate) fn sync(&mut self) -> Result<(), AuditError> {
        self.file
            .sync_data()
            .map_err(|e| AuditError::io(&self.path, e))
    }

    /// Grows the file in zero-filled chunks to at least `needed` bytes.
    fn reserve(&mut self, needed: u64) -> Result<(), AuditError> {
        if needed <= self.cap {
            return Ok(());
        }
        self.cap = grow_zeroed(&self.file, self.cap, needed, CHUNK).map_err(|e| AuditError::io(&self.path, e))?;
        Ok(())
    }
}

/// Grows `file` from `cap` to at least `needed` bytes with zeros and syncs it (data and
/// size), so that the in-place writes and `fdatasync`s after it never change its size (no
/// ext4 journal commit). Steps double with the file, from `FIRST_STEP` up to `largest`.
/// Returns the new length.
pub(crate) fn grow_zeroed(file: &File, cap: u64, needed: u64, largest: u64) -> std::io::Result<u64> {
    let grown = zero_fill(file, cap, needed, largest)?;
    if grown > cap {
        file.sync_all()?;
    }
    Ok(grown)
}

/// `grow_zeroed` without the sync: for a new file, synced with the others (`NewFiles`).
pub(crate) fn zero_fill(file: &File, cap: u64, needed: u64, largest: u64) -> std::io::Result<u64> {
    let mut grown = cap;
    while grown < needed {
        grown += grown.clamp(FIRST_STEP, largest.max(FIRST_STEP));
    }
    if grown > cap {
        let zeros = vec![0u8; usize::try_from(grown - cap).map_err(std::io::Error::other)?];
        file.write_all_at(&zeros, cap)?;
    }
    Ok(grown)
}

/// What replaying found.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Replayed {
    /// Groups applied to sled (it had lost them).
    pub(crate) applied: usize,
    /// The journal holds nothing past what sled held durably at its last reset (a clean
    /// close, or no journal): the writer may append to it without settling sled first.
    pub(crate) clean: bool,
}

/// Applies to `db` the journal's groups that sled lost (those past `stored`), in order,
/// and flushes sled when it applied any. A missing journal replays nothing. Entries that do
/// not continue the database (the database is behind the journal's base, or a numbering
/// gap) are left alone with a warning: the checks against `checkpoints.log` then report the
/// loss; the journal never papers over it.
pub(crate) fn replay(path: &Path, db: &sled::Db, stored: Stored) -> Result<Replayed, AuditError> {
    let io = |e| AuditError::io(path, e);
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(Replayed { applied: 0, clean: true });
        }
        Err(e) => return Err(io(e)),
    };
    let mut header = [0u8; HEADER as usize];
    let Some((form, base)) = read_at(&file, &mut header, 0).map_err(io)?.then(|| header_base(&header)).flatten()
    else {
        let len = file.metadata().map_err(io)?.len();
        let mut head = vec![0u8; usize::try_from(len.min(HEADER)).unwrap_or(0)];
        file.read_exact_at(&mut head, 0).map_err(io)?;
        if head.iter().any(|&b| b != 0) {
            return Err(AuditError::Corrupt(format!(
                "{}: not an Airlock journal (bad header)",
                path.display()
            )));
        }
        return Ok(Replayed { applied: 0, clean: true }); // created, header never written
    };
    let stored = form.number(stored);
    let mut at = HEADER;
    let mut last = base;
    let mut in_db = stored;
    let mut applied = 0;
    let mut entries = 0;
    while let Some(entry) = entry_at(&file, at, form).map_err(io)? {
        if entry.before != last || entry.after <= entry.before {
            break; // a stale entry from before the last reset
        }
        entries += 1;
        if entry.after > in_db {
            if entry.before != in_db {
                tracing::warn!(path = %path.display(), stored, journal = entry.after, "the audit database is behind its journal; not replaying");
                break;
            }
            let mut batch = sled::Batch::default();
            for (k, v) in entry.pairs {
                batch.insert(k, v);
            }
            db.apply_batch(batch)?;
            in_db = entry.after;
            applied += 1;
        }
        last = entry.after;
        at += entry.len;
    }
    if applied > 0 {
        tracing::warn!(path = %path.display(), groups = applied, "replayed groups the audit database lost in a crash from its journal");
        db.flush()?;
    }
    Ok(Replayed { applied, clean: entries == 0 && base == stored })
}

/// Fills `buf` from `at`; false when the file ends first.
fn read_at(file: &File, buf: &mut [u8], at: u64) -> std::io::Result<bool> {
    match file.read_exact_at(buf, at) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(false),
        Err(e) => Err(e),
    }
}

fn header_base(header: &[u8]) -> Option<(Form, u64)> {
    let form = match &header[..16] {
        m if m == MAGIC => Form::V2,
        m if m == MAGIC_V1 => Form::V1,
        _ => return None,
    };
    if Sha256Digest::of(&header[..24]).as_bytes()[..] != header[24..56] {
        return None;
    }
    Some((form, u64::from_be_bytes(header[16..24].try_into().ok()?)))
}

/// One whole entry read back.
struct Entry {
    /// The marks before and after its group.
    before: u64,
    after: u64,
    pairs: Vec<Pair>,
    /// Its length in bytes.
    len: u64,
}

/// The entry at `at`, if it is whole.
fn entry_at(file: &File, at: u64, form: Form) -> std::io::Result<Option<Entry>> {
    let (tag, head_len) = match form {
        Form::V1 => (ENTRY_V1, ENTRY_HEAD_V1),
        Form::V2 => (ENTRY, ENTRY_HEAD),
    };
    let mut head = [0u8; ENTRY_HEAD];
    let head = &mut head[..head_len];
    if !read_at(file, head, at)? || &head[..4] != tag {
        return Ok(None);
    }
    let len = u32::from_be_bytes([head[4], head[5], head[6], head[7]]) as usize;
    // The length is read before the checksum can vouch for it: a payload that would end
    // past the file is a torn entry, never an allocation of up to 4 GiB (fuzz target
    // `audit_journal`; an allocation that fails aborts the process opening the log).
    if at + (head_len + len) as u64 > file.metadata()?.len() {
        return Ok(None);
    }
    let mut payload = vec![0u8; len];
    if !read_at(file, &mut payload, at + head_len as u64)? {
        return Ok(None);
    }
    // The numbers and the checksum sit between the length and the payload.
    let numbers = &head[8..head_len - 32];
    if Sha256Digest::of_parts(&[numbers, &payload]).as_bytes()[..] != head[head_len - 32..] {
        return Ok(None);
    }
    let word = |b: &[u8]| b.try_into().ok().map(u64::from_be_bytes);
    let (before, after) = match form {
        Form::V1 => {
            let count = word(numbers).unwrap_or(0);
            (count.wrapping_sub(1), count)
        }
        Form::V2 => (word(&numbers[..8]).unwrap_or(0), word(&numbers[8..]).unwrap_or(0)),
    };
    Ok(pairs_of(&payload).map(|pairs| Entry { before, after, pairs, len: (head_len + len) as u64 }))
}

/// Splits a checksummed payload into its pairs (`None`: malformed).
fn pairs_of(payload: &[u8]) -> Option<Vec<Pair>> {
    let mut pairs = Vec::new();
    let mut rest = payload;
    while !rest.is_empty() {
        let kl = u16::from_be_bytes(rest.get(..2)?.try_into().ok()?) as usize;
        let key = rest.get(2..2 + kl)?.to_vec();
        rest = &rest[2 + kl..];
        let vl = u32::from_be_bytes(rest.get(..4)?.try_into().ok()?) as usize;
        let value = rest.get(4..4 + vl)?.to_vec();
        rest = &rest[4 + vl..];
        pairs.push((key, value));
    }
    Some(pairs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::store::{checkpoint_key, stored_checkpoints};

    /// Opens the journal and makes it durable at once, as a log's open does after it.
    fn open(path: &Path, base: u64, clean: bool) -> Result<Journal, AuditError> {
        let mut created = NewFiles::default();
        let journal = Journal::open(path, base, clean, &mut created)?;
        created.sync()?;
        Ok(journal)
    }

    /// A group as the writer makes it: one checkpoint key and a value naming the group.
    fn group(n: u64) -> Vec<Pair> {
        vec![(checkpoint_key(n - 1).to_vec(), format!("cp{n}").into_bytes())]
    }

    /// A database that holds `n` checkpoints and no records (what these groups write).
    fn at(checkpoints: u64) -> Stored {
        Stored { seq: 0, checkpoints }
    }

    fn db(dir: &Path) -> sled::Db {
        sled::Config::new().path(dir.join("audit")).temporary(false).open().unwrap()
    }

    #[test]
    fn replays_exactly_the_groups_the_database_lost() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.journal");
        let db = db(dir.path());
        let mut j = open(&path, 0, false).unwrap();
        for n in 1..=3 {
            j.append(n - 1, n, &group(n)).unwrap();
        }
        j.sync().unwrap();
        // The database kept group 1 only.
        db.insert(checkpoint_key(0), b"cp1".as_slice()).unwrap();
        let r = replay(&path, &db, at(stored_checkpoints(&db).unwrap())).unwrap();
        assert_eq!(r.applied, 2);
        assert_eq!(stored_checkpoints(&db).unwrap(), 3);
        assert_eq!(&*db.get(checkpoint_key(2)).unwrap().unwrap(), b"cp3");
        // Replaying again changes nothing.
        assert_eq!(replay(&path, &db, at(3)).unwrap().applied, 0);
    }

    #[test]
    fn a_torn_entry_ends_the_journal_and_stale_entries_after_a_reset_count_for_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.journal");
        let db = db(dir.path());
        let mut j = open(&path, 0, false).unwrap();
        for n in 1..=4 {
            j.append(n - 1, n, &group(n)).unwrap();
        }
        // Start over at base 4 and write group 5 over the first old entry: the old groups
        // 2..4 behind it must not be read as the continuation.
        j.reset(4, true).unwrap();
        j.append(4, 5, &group(5)).unwrap();
        let end = j.len();
        for n in 1..=4 {
            db.insert(checkpoint_key(n - 1), format!("cp{n}").into_bytes()).unwrap();
        }
        assert_eq!(replay(&path, &db, at(4)).unwrap().applied, 1);
        // A torn group 6 (its last byte missing) is not applied.
        j.append(5, 6, &group(6)).unwrap();
        let file = OpenOptions::new().write(true).open(&path).unwrap();
        let torn_at = j.len() - 1;
        file.write_all_at(&[0xff], torn_at).unwrap();
        assert!(end < torn_at);
        assert_eq!(replay(&path, &db, at(5)).unwrap().applied, 0);
        assert_eq!(stored_checkpoints(&db).unwrap(), 5);
    }

    #[test]
    fn a_database_behind_the_journal_base_is_not_papered_over() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.journal");
        let db = db(dir.path());
        let mut j = open(&path, 2, false).unwrap();
        j.append(2, 3, &group(3)).unwrap();
        // The database has none of the two checkpoints it held at the reset.
        assert_eq!(replay(&path, &db, at(0)).unwrap().applied, 0);
        assert_eq!(stored_checkpoints(&db).unwrap(), 0);
    }

    #[test]
    fn only_a_journal_with_nothing_past_its_base_is_clean() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.journal");
        let db = db(dir.path());
        assert!(replay(&path, &db, at(0)).unwrap().clean, "no journal yet");
        let mut j = open(&path, 0, false).unwrap();
        assert!(replay(&path, &db, at(0)).unwrap().clean);
        j.append(0, 1, &group(1)).unwrap();
        let r = replay(&path, &db, at(0)).unwrap();
        assert_eq!((r.applied, r.clean), (1, false));
        // Reopened clean, the header stays and the next group is read after it.
        let mut j = open(&path, 1, false).unwrap();
        assert!(replay(&path, &db, at(1)).unwrap().clean);
        drop(j);
        j = open(&path, 1, true).unwrap();
        j.append(1, 2, &group(2)).unwrap();
        assert_eq!(replay(&path, &db, at(1)).unwrap().applied, 1);
    }

    #[test]
    fn a_file_that_is_not_a_journal_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.journal");
        std::fs::write(&path, b"something else entirely, not a journal header at all, 64+ bytes long").unwrap();
        let db = db(dir.path());
        assert!(matches!(replay(&path, &db, at(0)), Err(AuditError::Corrupt(_))));
    }

    #[test]
    fn a_group_without_a_checkpoint_is_numbered_by_its_records() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.journal");
        let db = db(dir.path());
        let mut j = open(&path, 0, false).unwrap();
        // Two records signed later (mark 0 → 2), then a checkpoint over them (2 → 3).
        let records: Vec<Pair> = (1..=2u64).map(|n| (crate::audit::store::record_key(n).to_vec(), vec![n as u8])).collect();
        j.append(0, 2, &records).unwrap();
        j.append(2, 3, &group(1)).unwrap();
        let r = replay(&path, &db, Stored { seq: 0, checkpoints: 0 }).unwrap();
        assert_eq!(r.applied, 2);
        assert_eq!(stored_checkpoints(&db).unwrap(), 1);
        // A database that kept the unsigned group gets only the checkpoint.
        db.clear().unwrap();
        assert_eq!(replay(&path, &db, Stored { seq: 2, checkpoints: 0 }).unwrap().applied, 1);
        assert!(db.get(crate::audit::store::record_key(1)).unwrap().is_none());
    }

    #[test]
    fn a_journal_of_the_first_form_still_replays_and_is_rewritten() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.journal");
        let db = db(dir.path());
        let mut file = vec![0u8; HEADER as usize];
        file[..16].copy_from_slice(MAGIC_V1);
        file[16..24].copy_from_slice(&0u64.to_be_bytes());
        let sum = Sha256Digest::of(&file[..24]);
        file[24..56].copy_from_slice(sum.as_bytes());
        for n in 1..=2u64 {
            let pairs = group(n);
            let mut payload = Vec::new();
            for (k, v) in &pairs {
                payload.extend_from_slice(&(k.len() as u16).to_be_bytes());
                payload.extend_from_slice(k);
                payload.extend_from_slice(&(v.len() as u32).to_be_bytes());
                payload.extend_from_slice(v);
            }
            file.extend_from_slice(ENTRY_V1);
            file.extend_from_slice(&(payload.len() as u32).to_be_bytes());
            file.extend_from_slice(&n.to_be_bytes());
            file.extend_from_slice(Sha256Digest::of_parts(&[&n.to_be_bytes(), &payload]).as_bytes());
            file.extend_from_slice(&payload);
        }
        std::fs::write(&path, &file).unwrap();
        // Counted by checkpoints in that form: sled held one, so one group is replayed.
        db.insert(checkpoint_key(0), b"cp1".as_slice()).unwrap();
        assert_eq!(replay(&path, &db, Stored { seq: 5, checkpoints: 1 }).unwrap().applied, 1);
        assert_eq!(stored_checkpoints(&db).unwrap(), 2);
        // Clean in its own numbering, the old header is still rewritten on open.
        assert!(replay(&path, &db, Stored { seq: 5, checkpoints: 2 }).unwrap().applied == 0);
        open(&path, 7, true).unwrap();
        assert_eq!(header_base(&std::fs::read(&path).unwrap()[..64]), Some((Form::V2, 7)));
    }
}
