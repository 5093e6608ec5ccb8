//! Following the log inside a running gateway: records after a sequence number, as they
//! become durable.
//!
//! Owns: `Follower`, and `ExportCursor` (a followed JSONL export: the same lines whether
//! they come from a running gateway's socket or a stopped one's data dir).
//! Uses: `AuditLog::durable` (a watch of the acknowledged record count) and
//! `AuditLog::reader`.
//! Must not: hand out a record the writer has not acknowledged (sled shows a group's
//! records before its fsync; the watch moves only after it).
//!
//! This is the seam for `airlock log export --follow` over the control socket: the op
//! makes a `Follower::new(audit, after)` and writes each batch `next_batch` returns until
//! the client leaves. The `[audit.sink]` task uses the same.

use tokio::sync::watch;

use crate::audit::{AuditError, AuditLog, Checkpoint, LogReader, Seq};

/// Reads records after a position, waiting for new ones.
pub struct Follower {
    audit: AuditLog,
    durable: watch::Receiver<u64>,
    /// The last record handed out.
    after: u64,
}

impl Follower {
    /// Follows `audit` from the record after `after` (0: from the first).
    pub fn new(audit: AuditLog, after: Seq) -> Follower {
        let durable = audit.durable();
        Follower { audit, durable, after: after.get() }
    }

    /// The last record handed out (or the starting point).
    pub fn position(&self) -> Seq {
        Seq::new(self.after)
    }

    /// How many records are durable now.
    pub fn durable(&self) -> u64 {
        *self.durable.borrow()
    }

    /// Up to `max` (at least 1) durable records after the position, waiting until there is
    /// one; advances the position past them. `AuditError::Closed` once the log closes.
    pub async fn next_batch(&mut self, max: usize) -> Result<Vec<(Seq, Vec<u8>)>, AuditError> {
        let durable = *self
            .durable
            .wait_for(|&n| n > self.after)
            .await
            .map_err(|_| AuditError::Closed)?;
        let batch = self.peek(max, durable)?;
        if let Some((last, _)) = batch.last() {
            self.after = last.get();
        }
        Ok(batch)
    }

    /// Up to `max` durable records after the position without advancing it (the sink
    /// reads the same batch again when a delivery fails).
    pub fn peek(&self, max: usize, durable: u64) -> Result<Vec<(Seq, Vec<u8>)>, AuditError> {
        let reader = self.audit.reader()?;
        let mut out = Vec::new();
        for item in reader.records_from(Seq::new(self.after + 1)) {
            let (seq, bytes) = item?;
            if seq.get() > durable || out.len() >= max.max(1) {
                break;
            }
            if seq.get() != self.after + 1 + out.len() as u64 {
                return Err(AuditError::Corrupt(format!("record {} is missing", self.after + 1 + out.len() as u64)));
            }
            out.push((seq, bytes));
        }
        Ok(out)
    }

    /// Waits until a record after the position is durable; returns the durable count.
    pub async fn wait(&mut self) -> Result<u64, AuditError> {
        let after = self.after;
        let n = *self.durable.wait_for(|&n| n > after).await.map_err(|_| AuditError::Closed)?;
        Ok(n)
    }

    /// Moves the position to `seq` (the sink, after the collector acknowledged it).
    pub fn advance(&mut self, seq: Seq) {
        self.after = self.after.max(seq.get());
    }

    /// The log's origin (from its latest checkpoint), as OCSF events and sink headers name it.
    pub fn origin(&self) -> Result<String, AuditError> {
        Ok(self.audit.reader()?.latest_checkpoint()?.origin)
    }
}

/// Where a followed `log export` (JSONL) stands, so that what it writes over time is one
/// export `log verify --export` accepts: `LogReader::export`'s header, records and
/// checkpoints first, then each later group's records with every checkpoint placed before
/// the first record it does not cover (the order `LogReader::export` writes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExportCursor {
    /// The next record to write.
    next: u64,
    /// The size of the last checkpoint written (or the record before the export's start).
    covered: u64,
}

impl ExportCursor {
    /// The export from `since` as `LogReader::export` writes it (lines ending in `\n`), and
    /// the cursor after it.
    pub fn start(reader: &LogReader, since: Seq) -> Result<(ExportCursor, Vec<u8>), AuditError> {
        let since = since.get().max(1);
        let mut bytes = Vec::new();
        reader.export(Seq::new(since), &mut bytes)?;
        let mut cursor = ExportCursor { next: since, covered: since - 1 };
        for line in bytes.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            if let Some(cp) = Checkpoint::from_slice(line) {
                cursor.covered = cursor.covered.max(cp.size);
            } else if let Some(seq) = record_seq(line) {
                cursor.next = seq + 1;
            }
        }
        Ok((cursor, bytes))
    }

    /// The next record the export will write.
    pub fn next(&self) -> Seq {
        Seq::new(self.next)
    }

    /// The lines after the cursor: records up to `upto` (the durable count in a running
    /// gateway, everything in a stopped one's files) and the checkpoints among them; moves
    /// the cursor past them. Empty when nothing is new.
    pub fn more(&mut self, reader: &LogReader, upto: u64) -> Result<Vec<u8>, AuditError> {
        let mut out = Vec::new();
        let checkpoints = reader.checkpoints()?;
        let covered = self.covered;
        let mut cps = checkpoints.iter().filter(|c| c.size > covered).peekable();
        for item in reader.records_from(Seq::new(self.next)) {
            let (seq, bytes) = item?;
            if seq.get() > upto {
                break;
            }
            if seq.get() != self.next {
                return Err(AuditError::Corrupt(format!("record {} is missing", self.next)));
            }
            while let Some(cp) = cps.next_if(|c| c.size < seq.get()) {
                push_line(&mut out, &cp.to_canonical());
                self.covered = cp.size;
            }
            push_line(&mut out, &bytes);
            self.next = seq.get() + 1;
        }
        // The checkpoint of the last group written (in the same commit as its records).
        while let Some(cp) = cps.next_if(|c| c.size < self.next) {
            push_line(&mut out, &cp.to_canonical());
            self.covered = cp.size;
        }
        Ok(out)
    }
}

fn record_seq(line: &[u8]) -> Option<u64> {
    serde_json::from_slice::<serde_json::Value>(line).ok()?.get("seq")?.as_u64()
}

fn push_line(out: &mut Vec<u8>, line: &[u8]) {
    out.extend_from_slice(line);
    out.push(b'\n');
}
