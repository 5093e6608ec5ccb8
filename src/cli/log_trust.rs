//! `airlock log verify` of a data directory (with `--trusted` checkpoints, witnessed copies
//! and a damaged database) and `log check-proof` of consistency proofs.
//!
//! Owns: how those outcomes are printed and which exit code they give.
//! Uses: `audit` (verification, trusted checks, what is still provable).
//! Must not: write to the log.

#![allow(clippy::print_stdout)] // printing results is the point of these commands

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};

use crate::audit::{
    AuditError, Checkpoint, LogPaths, LogReader, Note, PublicKey, Trust, VerifierKey,
    check_consistency, check_trusted, cosignatures, provable, split_notes, verify_stopped,
    witnessed,
};
use crate::cli::EXIT_FOUND_PROBLEM;
use crate::cli::log::{DirArgs, print_report};

/// A trusted note and where it came from.
struct Kept {
    source: String,
    note: Result<Note, String>,
}

/// Reads `--trusted` files (notes one after another) and directories (`*.note`).
fn read_trusted(files: &[PathBuf]) -> anyhow::Result<Vec<Kept>> {
    let mut out = Vec::new();
    for path in files {
        let mut paths = vec![path.clone()];
        if path.is_dir() {
            paths = std::fs::read_dir(path)
                .with_context(|| format!("reading {}", path.display()))?
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|e| e == "note"))
                .collect();
            paths.sort();
        }
        for file in paths {
            let text = std::fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))?;
            let notes = split_notes(&text);
            if notes.is_empty() {
                bail!("{}: no checkpoint notes in it", file.display());
            }
            for (i, note) in notes.iter().enumerate() {
                let source = if notes.len() == 1 { file.display().to_string() } else { format!("{} note {}", file.display(), i + 1) };
                out.push(Kept { source, note: Note::parse(note).map_err(|e| e.to_string()) });
            }
        }
    }
    Ok(out)
}

/// The witness keys given on the command line and in `[audit.witness]` of the config.
fn witness_keys(dir: &DirArgs, given: &[String]) -> anyhow::Result<Vec<VerifierKey>> {
    let mut keys = Vec::new();
    for text in given.iter().cloned().chain(dir.witness_keys()?) {
        keys.push(VerifierKey::parse(&text).with_context(|| format!("--witness-key {text}"))?);
    }
    Ok(keys)
}

/// `log verify` of the log PostgreSQL keeps (`[storage] backend = "postgres"`): the chain,
/// tree and signatures of its export, as `log verify --export` checks a file.
pub(crate) fn verify_shared(dir: &DirArgs, anchor: PublicKey) -> anyhow::Result<ExitCode> {
    let reader = super::log::open_reader(dir)?;
    match crate::audit::verify_reader(&reader, Trust { anchor })? {
        Ok(report) => {
            println!("shared log (PostgreSQL):");
            super::log::print_report(&report);
            Ok(ExitCode::SUCCESS)
        }
        Err(failure) => {
            println!("FAILED at {failure}");
            Ok(ExitCode::from(EXIT_FOUND_PROBLEM))
        }
    }
}

pub(crate) fn verify_dir(
    dir: &DirArgs,
    paths: &LogPaths,
    anchor: PublicKey,
    trusted: &[PathBuf],
    witness_key: &[String],
) -> anyhow::Result<ExitCode> {
    let kept = read_trusted(trusted)?;
    let witnesses = witness_keys(dir, witness_key)?;
    // sled may panic on some damaged files rather than return an error.
    // One open for the verification and the trusted checks (see `audit::verify_stopped`).
    let outcome = std::panic::catch_unwind(|| {
        let reader = LogReader::open(paths)?;
        verify_stopped(&reader, paths, Trust { anchor }).map(|verified| verified.map(|report| (report, reader)))
    })
    .unwrap_or_else(|_| Err(AuditError::Corrupt("the database reader crashed on damaged data".into())));
    let (report, reader) = match outcome {
        Ok(Ok(verified)) => verified,
        Ok(Err(failure)) => {
            println!("FAILED at {failure}");
            print_provable(paths, anchor);
            return Ok(ExitCode::from(EXIT_FOUND_PROBLEM));
        }
        Err(e @ (AuditError::Locked(_) | AuditError::NoLog(_))) => bail!(e),
        Err(e) => {
            println!("FAILED: the audit database {} is unreadable: {e}", paths.db.display());
            print_provable(paths, anchor);
            return Ok(ExitCode::from(EXIT_FOUND_PROBLEM));
        }
    };
    print_report(&report);
    let mut keys: Vec<PublicKey> = reader.checkpoints()?.iter().map(|c| c.key).collect();
    keys.push(anchor);
    keys.dedup();
    let mut bad = 0;
    let notes: Vec<Note> = kept.iter().filter_map(|k| k.note.clone().ok()).collect();
    let mut results = check_trusted(&reader, report.last.get(), &notes, &keys)?.into_iter();
    for k in &kept {
        let result = match &k.note {
            Err(why) => Err(why.clone()),
            Ok(_) => results.next().unwrap_or_else(|| Err("not checked".into())),
        };
        match result {
            Ok(cp) => println!("ok: the log extends trusted checkpoint {} ({} records, signed {})", k.source, cp.size, cp.time),
            Err(why) => {
                bad += 1;
                println!("FAILED: trusted checkpoint {}: {why}", k.source);
            }
        }
    }
    bad += show_witnessed(&reader, paths, &report, &keys, &witnesses)?;
    Ok(if bad == 0 { ExitCode::SUCCESS } else { ExitCode::from(EXIT_FOUND_PROBLEM) })
}

/// Prints the cosigned copies witnesses returned; they must be extended by the log too.
fn show_witnessed(
    reader: &LogReader,
    paths: &LogPaths,
    report: &crate::audit::VerifyReport,
    keys: &[PublicKey],
    witnesses: &[VerifierKey],
) -> anyhow::Result<u32> {
    let mut bad = 0;
    for copy in witnessed(paths, keys) {
        let copy = match copy {
            Ok(c) => c,
            Err(why) => {
                bad += 1;
                println!("FAILED: witnessed copy {why}");
                continue;
            }
        };
        let note = copy.checkpoint.to_note();
        let text = std::fs::read_to_string(&copy.source).unwrap_or_default();
        let full = Note::parse(&text).ok().or(note);
        let extends = match &full {
            Some(n) => check_trusted(reader, report.last.get(), std::slice::from_ref(n), keys)?.pop(),
            None => None,
        };
        if let Some(Err(why)) = extends {
            bad += 1;
            println!("FAILED: witnessed copy {}: {why}", copy.source);
            continue;
        }
        let checked = full.as_ref().map(|n| cosignatures(n, witnesses)).unwrap_or_default();
        let mut shown = Vec::new();
        for (key, result) in &checked {
            match result {
                Ok(ts) => shown.push(format!("{key} at {}", rfc3339(*ts))),
                Err(()) => {
                    bad += 1;
                    println!("FAILED: witnessed copy {}: the cosignature by {key} does not verify", copy.source);
                }
            }
        }
        let unchecked = copy.cosigners.len().saturating_sub(checked.len());
        let mut line = format!("witnessed: records 1..={} cosigned", copy.checkpoint.size);
        if !shown.is_empty() {
            line.push_str(&format!(" by {}", shown.join(", ")));
        }
        if unchecked > 0 {
            line.push_str(&format!(" ({unchecked} cosignature(s) by {} not checked: pass --witness-key)", copy.cosigners.join(", ")));
        }
        println!("{line} ({})", copy.source);
    }
    Ok(bad)
}

fn rfc3339(ts: u64) -> String {
    humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + std::time::Duration::from_secs(ts)).to_string()
}

/// What can still be proven without the database: the last good checkpoint of
/// `checkpoints.log` and the witnessed copies.
fn print_provable(paths: &LogPaths, anchor: PublicKey) {
    let found = provable(paths, &[anchor]);
    if found.is_empty() {
        println!("no checkpoint signed by key {} can be found outside the database", anchor.id());
        return;
    }
    for (i, p) in found.iter().enumerate() {
        let label = if i == 0 { "last provable checkpoint" } else { "also provable" };
        let cosigned = if p.cosigners.is_empty() { String::new() } else { format!(", cosigned by {}", p.cosigners.join(", ")) };
        println!(
            "{label}: records 1..={} (root {}, signed {} by key {}{cosigned}) from {}",
            p.checkpoint.size,
            p.checkpoint.root,
            p.checkpoint.time,
            p.checkpoint.key.id(),
            p.source
        );
    }
}

fn read_note_checkpoint(path: &Path, key: &PublicKey) -> anyhow::Result<Checkpoint> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let note = Note::parse(&text).with_context(|| path.display().to_string())?;
    Checkpoint::from_note(&note, &[*key]).map_err(|why| anyhow::anyhow!("{}: {why}", path.display()))
}

pub(crate) fn check_consistency_proof(
    proof: &serde_json::Value,
    key: &PublicKey,
    old: Option<&Path>,
    new: Option<&Path>,
) -> anyhow::Result<ExitCode> {
    let old = old.map(|p| read_note_checkpoint(p, key)).transpose();
    let new = new.map(|p| read_note_checkpoint(p, key)).transpose();
    let outcome = match (old, new) {
        (Ok(old), Ok(new)) => check_consistency(proof, key, old.as_ref(), new.as_ref()),
        (Err(e), _) | (_, Err(e)) => Err(format!("{e:#}")),
    };
    match outcome {
        Ok((old, new)) => {
            println!("ok: the log of {new} records signed by key {} extends its checkpoint of {old} records", key.id());
            Ok(ExitCode::SUCCESS)
        }
        Err(why) => {
            println!("FAILED: {why}");
            Ok(ExitCode::from(EXIT_FOUND_PROBLEM))
        }
    }
}
