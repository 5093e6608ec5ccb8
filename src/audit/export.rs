//! Reading a log: single records, the tail, JSONL export and inclusion proofs, from the
//! sled database of a data dir or from any other store's `LogSource` (PostgreSQL).
//!
//! Owns: `LogReader`, the export format, `InclusionProof` and its check.
//! Uses: `store` to read sled, `log_store::LogSource` for other stores, `merkle` for proofs.
//! Must not: write to the database.
//!
//! Export format (JSONL): a header `{"chain_head":HEX,"frontier":[HEX…],"kind":"export",
//! "since":N}` giving the chain hash and Merkle frontier before record `N`, then every
//! record from `N` as its stored canonical line, each checkpoint line right after the last
//! record it covers. The header needs no trust: the checkpoints that follow sign roots and
//! chain heads computed from it.

use std::io::Write;

use serde_json::{Value, json};

use super::AuditError;
use super::canonical::canonical;
use super::checkpoint::Checkpoint;
use super::digest::{Seq, Sha256Digest};
use super::keys::PublicKey;
use super::log_store::LogSource;
use super::merkle::{Frontier, inclusion_proof, leaf_hash, verify_inclusion};
use super::store::{self, LogPaths};

/// Stored records with their sequence numbers, in order.
pub(super) type RecordIter<'a> = Box<dyn Iterator<Item = Result<(Seq, Vec<u8>), AuditError>> + Send + 'a>;

/// Read access to a log: a data dir's sled database whose writer is not running (or the
/// running writer's own handle), or another store's source.
pub struct LogReader {
    source: Source,
}

enum Source {
    Sled(sled::Db),
    Other(Box<dyn LogSource>),
}

/// Records fetched at a time from a `LogSource`.
const BATCH: usize = 2048;

impl LogReader {
    /// Opens the database; fails with `AuditError::Locked` while a gateway has it open.
    pub fn open(paths: &LogPaths) -> Result<LogReader, AuditError> {
        Ok(LogReader::from_db(store::open_existing_db(&paths.db)?))
    }

    pub(super) fn from_db(db: sled::Db) -> LogReader {
        LogReader { source: Source::Sled(db) }
    }

    /// A reader of another store's log.
    pub fn from_source(source: Box<dyn LogSource>) -> LogReader {
        LogReader { source: Source::Other(source) }
    }

    /// The sled database, when this reads one (verification also checks its files).
    pub(super) fn sled(&self) -> Option<&sled::Db> {
        match &self.source {
            Source::Sled(db) => Some(db),
            Source::Other(_) => None,
        }
    }

    /// The stored canonical bytes of record `seq`.
    pub fn get(&self, seq: Seq) -> Result<Vec<u8>, AuditError> {
        match &self.source {
            Source::Sled(db) => {
                let value = store::record(db, seq.get())?.ok_or(AuditError::NotFound(seq))?;
                Ok(value.get(32..).unwrap_or_default().to_vec())
            }
            Source::Other(src) => src.get(seq.get())?.ok_or(AuditError::NotFound(seq)),
        }
    }

    /// The highest stored sequence number (0 when empty).
    pub fn last_seq(&self) -> Result<Seq, AuditError> {
        match &self.source {
            Source::Sled(db) => Ok(Seq::new(store::last_record(db)?)),
            Source::Other(src) => Ok(Seq::new(src.last_seq()?)),
        }
    }

    /// Records with sequence number at least `from`, in order.
    pub fn records_from(&self, from: Seq) -> RecordIter<'_> {
        match &self.source {
            Source::Sled(db) => Box::new(store::records_from(db, from.get()).map(|item| {
                let (seq, value) = item?;
                Ok((Seq::new(seq), value.get(32..).unwrap_or_default().to_vec()))
            })),
            Source::Other(src) => Box::new(Batches { src: src.as_ref(), next: from.get(), buf: Vec::new().into_iter(), done: false }),
        }
    }

    /// Every stored checkpoint that parses, in order.
    pub fn checkpoints(&self) -> Result<Vec<Checkpoint>, AuditError> {
        match &self.source {
            Source::Sled(db) => Ok(store::load_checkpoints(db)?.into_iter().filter_map(|(_, c)| c).collect()),
            Source::Other(src) => Ok(src.checkpoints()?.iter().filter_map(|c| Checkpoint::from_slice(c)).collect()),
        }
    }

    /// The consistency proof from the tree of `old` records to the tree of `new` records.
    pub fn consistency_path(&self, old: u64, new: u64) -> Result<Vec<Sha256Digest>, AuditError> {
        let (leaves, _, _) = self.prefix_state(new)?;
        usize::try_from(old)
            .ok()
            .filter(|_| leaves.len() as u64 == new)
            .and_then(|m| super::merkle::consistency_proof(&leaves, m))
            .ok_or(AuditError::NoCheckpoint(new))
    }

    /// Leaf hashes, chain head and frontier of records `1..=upto`.
    pub(super) fn prefix_state(
        &self,
        upto: u64,
    ) -> Result<(Vec<Sha256Digest>, Sha256Digest, Frontier), AuditError> {
        let mut leaves = Vec::new();
        let mut chain = Sha256Digest::from_bytes([0; 32]);
        let mut frontier = Frontier::new();
        for item in self.records_from(Seq::new(1)) {
            let (seq, bytes) = item?;
            if seq.get() > upto {
                break;
            }
            chain = Sha256Digest::of_parts(&[chain.as_bytes(), &bytes]);
            let leaf = leaf_hash(&bytes);
            frontier.push(leaf);
            leaves.push(leaf);
        }
        Ok((leaves, chain, frontier))
    }

    /// Writes the export from `since` (1 for everything) to `out`: the records the last
    /// checkpoint covers (records past it, whose signature is deferred, wait for it).
    pub fn export(&self, since: Seq, out: &mut dyn Write) -> Result<u64, AuditError> {
        let since = since.get().max(1);
        let (_, chain, frontier) = self.prefix_state(since - 1)?;
        let roots: Vec<String> = frontier.roots().iter().map(ToString::to_string).collect();
        let header = json!({"kind": "export", "since": since, "chain_head": chain.to_string(), "frontier": roots});
        let io = |e| AuditError::io(std::path::Path::new("<export>"), e);
        write_line(out, &canonical(&header)).map_err(io)?;
        let checkpoints = self.checkpoints()?;
        let covered = checkpoints.last().map_or(0, |c| c.size);
        let mut cps = checkpoints.iter().filter(|c| c.size >= since).peekable();
        let mut written = 0;
        for item in self.records_from(Seq::new(since)) {
            let (seq, bytes) = item?;
            if seq.get() > covered {
                break;
            }
            while let Some(cp) = cps.next_if(|c| c.size < seq.get()) {
                write_line(out, &cp.to_canonical()).map_err(io)?;
            }
            write_line(out, &bytes).map_err(io)?;
            written += 1;
        }
        for cp in cps {
            write_line(out, &cp.to_canonical()).map_err(io)?;
        }
        Ok(written)
    }

    /// An inclusion proof of record `seq` against the latest checkpoint.
    pub fn prove(&self, seq: Seq) -> Result<InclusionProof, AuditError> {
        let checkpoint = self.checkpoints()?.pop().ok_or(AuditError::NotFound(seq))?;
        if seq.get() == 0 || seq.get() > checkpoint.size {
            return Err(AuditError::NotFound(seq));
        }
        let (leaves, _, _) = self.prefix_state(checkpoint.size)?;
        let index = usize::try_from(seq.get() - 1).map_err(|_| AuditError::NotFound(seq))?;
        let path = inclusion_proof(&leaves, index).ok_or(AuditError::NotFound(seq))?;
        let record: Value = serde_json::from_slice(&self.get(seq)?)
            .map_err(|e| AuditError::Corrupt(format!("record {seq} does not parse: {e}")))?;
        Ok(InclusionProof {
            seq,
            record,
            path,
            checkpoint,
        })
    }
}

/// Reads a `LogSource` a batch at a time.
struct Batches<'a> {
    src: &'a dyn LogSource,
    next: u64,
    buf: std::vec::IntoIter<(u64, Vec<u8>)>,
    done: bool,
}

impl Iterator for Batches<'_> {
    type Item = Result<(Seq, Vec<u8>), AuditError>;

    fn next(&mut self) -> Option<Self::Item> {
        if let Some((seq, bytes)) = self.buf.next() {
            return Some(Ok((Seq::new(seq), bytes)));
        }
        if self.done {
            return None;
        }
        match self.src.records(self.next.max(1), BATCH) {
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
            Ok(batch) => {
                self.done = batch.len() < BATCH;
                self.next = batch.last().map_or(self.next, |(seq, _)| seq + 1);
                self.buf = batch.into_iter();
                self.buf.next().map(|(seq, bytes)| Ok((Seq::new(seq), bytes)))
            }
        }
    }
}

fn write_line(out: &mut dyn Write, bytes: &[u8]) -> std::io::Result<()> {
    out.write_all(bytes)?;
    out.write_all(b"\n")
}

/// Parses an export header into (first seq, chain head, frontier).
pub(crate) fn parse_header(line: &[u8]) -> Option<(u64, Sha256Digest, Frontier)> {
    let v: Value = serde_json::from_slice(line).ok()?;
    if v.get("kind")?.as_str()? != "export" {
        return None;
    }
    let since = v.get("since")?.as_u64()?.max(1);
    let roots = v
        .get("frontier")?
        .as_array()?
        .iter()
        .map(|r| r.as_str()?.parse().ok())
        .collect::<Option<Vec<_>>>()?;
    Some((
        since,
        v.get("chain_head")?.as_str()?.parse().ok()?,
        Frontier::from_parts(since - 1, roots)?,
    ))
}

/// Proof that a record is leaf `seq - 1` of the tree a signed checkpoint commits to.
#[derive(Debug, Clone)]
pub struct InclusionProof {
    pub seq: Seq,
    /// The record; its leaf is `SHA-256(0x00 ‖ canonical(record))`.
    pub record: Value,
    /// RFC 6962 audit path, bottom up.
    pub path: Vec<Sha256Digest>,
    pub checkpoint: Checkpoint,
}

impl InclusionProof {
    /// The JSON form printed by `airlock log prove`.
    pub fn to_value(&self) -> Value {
        json!({
            "seq": self.seq.get(),
            "leaf_index": self.seq.get() - 1,
            "record": self.record,
            "path": self.path.iter().map(ToString::to_string).collect::<Vec<_>>(),
            "checkpoint": self.checkpoint.to_value(),
        })
    }
}

/// Checks a proof in its JSON form with nothing but the signer's public key.
pub fn check_proof(proof: &Value, key: &PublicKey) -> Result<Seq, String> {
    let seq = proof
        .get("seq")
        .and_then(Value::as_u64)
        .ok_or("proof has no seq")?;
    let record = proof.get("record").ok_or("proof has no record")?;
    if record.get("seq").and_then(Value::as_u64) != Some(seq) {
        return Err("the record's seq differs from the proof's".into());
    }
    let cp = proof
        .get("checkpoint")
        .and_then(Checkpoint::from_value)
        .ok_or("proof has no readable checkpoint")?;
    if cp.key != *key {
        return Err(format!(
            "checkpoint is signed by key {}, not by the given key {}",
            cp.key.id(),
            key.id()
        ));
    }
    if !cp.signature_is_valid() {
        return Err("checkpoint signature does not verify".into());
    }
    let path = proof
        .get("path")
        .and_then(Value::as_array)
        .and_then(|p| {
            p.iter()
                .map(|h| h.as_str()?.parse().ok())
                .collect::<Option<Vec<Sha256Digest>>>()
        })
        .ok_or("proof path is not a list of digests")?;
    let leaf = leaf_hash(&canonical(record));
    if seq == 0 || !verify_inclusion(&leaf, seq - 1, cp.size, &path, &cp.root) {
        return Err(format!(
            "record {seq} is not included in the tree of {} records",
            cp.size
        ));
    }
    Ok(Seq::new(seq))
}
