//! Checks against checkpoints kept away from the gateway's disk: consistency proofs between
//! two checkpoints, `log verify --trusted`, cosigned copies from witnesses, and what a
//! damaged database can still prove.
//!
//! Owns: `ConsistencyProof` (its JSON form and check), `check_trusted`, `Provable`.
//! Uses: `export::LogReader` to read, `merkle` for proofs, `checkpoint`/`note` for notes.
//! Must not: write anything.
//!
//! A checkpoint an auditor saved is signed by the log key; the log on disk must extend it:
//! hold at least as many records, and its first `size` records must hash to the saved root.
//! A data directory restored from an older copy fails the first test, a rewritten history
//! the second, whatever was done to `checkpoints.log` alongside.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::{Value, json};

use super::AuditError;
use super::checkpoint::Checkpoint;
use super::digest::{Seq, Sha256Digest};
use super::export::LogReader;
use super::keys::PublicKey;
use super::merkle::{Frontier, consistency_proof, leaf_hash, verify_consistency};
use super::note::{Note, VerifierKey};
use super::store::{self, LogPaths};

/// Proof that the log at `new` extends the log at `old` (RFC 9162 §2.1.4).
#[derive(Debug, Clone)]
pub struct ConsistencyProof {
    pub old: Checkpoint,
    pub new: Checkpoint,
    pub proof: Vec<Sha256Digest>,
}

impl ConsistencyProof {
    /// The JSON form printed by `airlock log prove --consistency`.
    pub fn to_value(&self) -> Value {
        let note = |c: &Checkpoint| c.to_note().map(|n| n.to_string());
        json!({
            "kind": "consistency",
            "old_size": self.old.size,
            "new_size": self.new.size,
            "proof": self.proof.iter().map(|h| B64.encode(h.as_bytes())).collect::<Vec<_>>(),
            "old_checkpoint": self.old.to_value(),
            "new_checkpoint": self.new.to_value(),
            "old_note": note(&self.old),
            "new_note": note(&self.new),
        })
    }
}

/// Reads a checkpoint given as a note (the text `log checkpoint` prints) or as the wire JSON.
fn checkpoint_of(value: &Value, key: &PublicKey) -> Result<Checkpoint, String> {
    if let Some(text) = value.as_str() {
        let note = Note::parse(text).map_err(|e| e.to_string())?;
        return Checkpoint::from_note(&note, &[*key]);
    }
    let cp = Checkpoint::from_value(value).ok_or("unreadable checkpoint")?;
    if cp.key != *key {
        return Err(format!("signed by key {}, not by the given key {}", cp.key.id(), key.id()));
    }
    if !cp.signature_is_valid() {
        return Err("its signature does not verify".into());
    }
    Ok(cp)
}

/// Checks a consistency proof in its JSON form with the public key alone. `old` and `new`
/// replace the proof's own checkpoints (an auditor passes the ones they kept).
pub fn check_consistency(
    proof: &Value,
    key: &PublicKey,
    old: Option<&Checkpoint>,
    new: Option<&Checkpoint>,
) -> Result<(u64, u64), String> {
    let pick = |given: Option<&Checkpoint>, name: &str| -> Result<Checkpoint, String> {
        match given {
            Some(c) => Ok(c.clone()),
            None => checkpoint_of(proof.get(name).unwrap_or(&Value::Null), key)
                .map_err(|e| format!("{name}: {e}")),
        }
    };
    let old = pick(old, "old_checkpoint")?;
    let new = pick(new, "new_checkpoint")?;
    for (c, name) in [(&old, "old"), (&new, "new")] {
        if c.key != *key || !c.signature_is_valid() {
            return Err(format!("the {name} checkpoint is not signed by key {}", key.id()));
        }
    }
    if old.origin != new.origin {
        return Err(format!("the checkpoints are of two logs ({:?}, {:?})", old.origin, new.origin));
    }
    let sizes = (proof.get("old_size").and_then(Value::as_u64), proof.get("new_size").and_then(Value::as_u64));
    if sizes != (Some(old.size), Some(new.size)) {
        return Err(format!(
            "the proof is for sizes {:?}..{:?}, the checkpoints are for {} and {}",
            sizes.0, sizes.1, old.size, new.size
        ));
    }
    let path = proof
        .get("proof")
        .and_then(Value::as_array)
        .and_then(|p| {
            p.iter()
                .map(|h| Sha256Digest::from_slice(&B64.decode(h.as_str()?).ok()?))
                .collect::<Option<Vec<_>>>()
        })
        .ok_or("the proof is not a list of base64 hashes")?;
    if !verify_consistency(old.size, new.size, &old.root, &new.root, &path) {
        return Err(format!(
            "the tree of {} records is not an extension of the tree of {} records",
            new.size, old.size
        ));
    }
    Ok((old.size, new.size))
}

impl LogReader {
    /// The latest checkpoint.
    pub fn latest_checkpoint(&self) -> Result<Checkpoint, AuditError> {
        self.checkpoints()?.pop().ok_or(AuditError::NoCheckpoint(0))
    }

    /// A consistency proof from the checkpoint of `old` records to the checkpoint of `new`
    /// records (the latest when `None`).
    pub fn consistency(&self, old: u64, new: Option<u64>) -> Result<ConsistencyProof, AuditError> {
        let cps = self.checkpoints()?;
        let find = |size: u64| cps.iter().rev().find(|c| c.size == size).cloned();
        let new = match new {
            Some(n) => find(n).ok_or(AuditError::NoCheckpoint(n))?,
            None => cps.last().cloned().ok_or(AuditError::NoCheckpoint(0))?,
        };
        let old = find(old).ok_or(AuditError::NoCheckpoint(old))?;
        if old.size > new.size {
            return Err(AuditError::NoCheckpoint(old.size));
        }
        let (leaves, _, _) = self.prefix_state(new.size)?;
        let proof = usize::try_from(old.size)
            .ok()
            .and_then(|m| consistency_proof(&leaves, m))
            .ok_or_else(|| AuditError::Corrupt(format!("the database holds fewer than {} records", new.size)))?;
        Ok(ConsistencyProof { old, new, proof })
    }

    /// Root and chain head of the first `size` records, for each size asked (in one pass).
    pub fn heads_at(&self, sizes: &[u64]) -> Result<BTreeMap<u64, (Sha256Digest, Sha256Digest)>, AuditError> {
        let mut wanted: Vec<u64> = sizes.to_vec();
        wanted.sort_unstable();
        wanted.dedup();
        let mut out = BTreeMap::new();
        let mut frontier = Frontier::new();
        let mut chain = Sha256Digest::from_bytes([0; 32]);
        let mut next = wanted.iter().peekable();
        while next.next_if(|&&s| s == 0).is_some() {
            out.insert(0, (frontier.root(), chain));
        }
        let Some(&&last) = wanted.last().as_ref() else { return Ok(out) };
        for item in self.records_from(Seq::new(1)) {
            let (seq, bytes) = item?;
            if frontier.size() + 1 != seq.get() {
                break; // a hole: the sizes past it are not in this log
            }
            chain = Sha256Digest::of_parts(&[chain.as_bytes(), &bytes]);
            frontier.push(leaf_hash(&bytes));
            while next.next_if(|&&s| s == frontier.size()).is_some() {
                out.insert(frontier.size(), (frontier.root(), chain));
            }
            if frontier.size() >= last {
                break;
            }
        }
        Ok(out)
    }
}

/// Splits a file of notes written one after another (blank lines between them allowed).
pub fn split_notes(text: &str) -> Vec<String> {
    let mut notes = Vec::new();
    let mut current = String::new();
    let mut in_signatures = false;
    for line in text.split_inclusive('\n') {
        let is_sig = line.starts_with("\u{2014} ");
        if in_signatures && !is_sig {
            notes.push(std::mem::take(&mut current));
            in_signatures = false;
        }
        if current.is_empty() && line.trim().is_empty() {
            continue;
        }
        if is_sig && current.ends_with("\n\n") {
            in_signatures = true;
        }
        current.push_str(line);
    }
    if !current.trim().is_empty() {
        notes.push(current);
    }
    notes
}

/// Checks that the log (verified up to `log_size` records) extends each trusted note.
/// Each result is the checkpoint the note holds, or why the log does not extend it.
pub fn check_trusted(
    reader: &LogReader,
    log_size: u64,
    notes: &[Note],
    keys: &[PublicKey],
) -> Result<Vec<Result<Checkpoint, String>>, AuditError> {
    let parsed: Vec<Result<Checkpoint, String>> =
        notes.iter().map(|n| Checkpoint::from_note(n, keys)).collect();
    let sizes: Vec<u64> = parsed.iter().flatten().map(|c| c.size).filter(|&s| s <= log_size).collect();
    let heads = reader.heads_at(&sizes)?;
    Ok(parsed
        .into_iter()
        .map(|cp| {
            let cp = cp?;
            if cp.size > log_size {
                return Err(format!(
                    "the log holds {log_size} records, but this checkpoint (signed {}) covers {}: the log was rolled back or truncated",
                    cp.time, cp.size
                ));
            }
            match heads.get(&cp.size) {
                Some((root, chain)) if *root == cp.root && *chain == cp.chain_head => Ok(cp),
                Some((root, _)) => Err(format!(
                    "the log's first {} records hash to root {root}, this checkpoint (signed {}) to {}: history was rewritten",
                    cp.size, cp.time, cp.root
                )),
                None => Err(format!("records 1..={} cannot be read", cp.size)),
            }
        })
        .collect())
}

/// A checkpoint that still proves something when the database cannot be read.
#[derive(Debug, Clone)]
pub struct Provable {
    /// Where it was found (`checkpoints.log line N`, or a witnessed copy's file).
    pub source: String,
    pub checkpoint: Checkpoint,
    /// Names on signature lines other than the log's (witness cosignatures), unchecked.
    pub cosigners: Vec<String>,
}

/// The directory where cosigned checkpoints returned by witnesses are kept.
pub fn witnessed_dir(paths: &LogPaths) -> PathBuf {
    paths.checkpoints.with_file_name("witnessed")
}

/// The last checkpoint of `checkpoints.log` signed by one of `keys`, and every witnessed
/// copy signed by one of them, newest first.
pub fn provable(paths: &LogPaths, keys: &[PublicKey]) -> Vec<Provable> {
    let mut out = Vec::new();
    if let Ok(lines) = store::read_checkpoint_lines(&paths.checkpoints) {
        let last = lines.iter().enumerate().rev().find_map(|(i, l)| {
            let cp = Checkpoint::from_slice(l)?;
            (keys.contains(&cp.key) && cp.signature_is_valid()).then_some((i, cp))
        });
        if let Some((i, cp)) = last {
            out.push(Provable { source: format!("{} line {}", paths.checkpoints.display(), i + 1), checkpoint: cp, cosigners: Vec::new() });
        }
    }
    out.extend(witnessed(paths, keys).into_iter().filter_map(Result::ok));
    out.sort_by_key(|p| std::cmp::Reverse(p.checkpoint.size));
    out
}

/// The cosigned copies kept in the witnessed directory: each parsed, or why it is not.
pub fn witnessed(paths: &LogPaths, keys: &[PublicKey]) -> Vec<Result<Provable, String>> {
    let dir = witnessed_dir(paths);
    let Ok(entries) = fs::read_dir(&dir) else { return Vec::new() };
    let mut files: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "note"))
        .collect();
    files.sort();
    files.iter().map(|f| read_witnessed(f, keys)).collect()
}

fn read_witnessed(file: &Path, keys: &[PublicKey]) -> Result<Provable, String> {
    let why = |e: String| format!("{}: {e}", file.display());
    let text = fs::read_to_string(file).map_err(|e| why(e.to_string()))?;
    let note = Note::parse(&text).map_err(|e| why(e.to_string()))?;
    let cp = Checkpoint::from_note(&note, keys).map_err(why)?;
    let log_name = cp.origin.clone();
    let cosigners = note.signatures.iter().filter(|s| s.name != log_name).map(|s| s.name.clone()).collect();
    Ok(Provable { source: file.display().to_string(), checkpoint: cp, cosigners })
}

/// Which of `witnesses` cosigned `note`, with the cosignature times (POSIX seconds).
pub fn cosignatures(note: &Note, witnesses: &[VerifierKey]) -> Vec<(String, Result<u64, ()>)> {
    witnesses
        .iter()
        .filter_map(|w| note.cosigned_by(w).map(|r| (w.to_string(), r)))
        .collect()
}
