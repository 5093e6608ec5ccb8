//! `airlock witness serve`: a minimal C2SP tlog-witness for one log.
//!
//! Owns: `POST /add-checkpoint`, the witness key and state files in its directory.
//! Uses: `audit` (notes, checkpoint text, consistency check, keys).
//! Must not: cosign a checkpoint whose signature, size or consistency it has not checked;
//! answer before the new state is durable.
//!
//! In its directory: `witness-key` (PKCS#8, 0600, made on first start), `witness.vkey`
//! (the verifier key a gateway configures), `checkpoint.note` (the latest cosigned
//! checkpoint, with the log's signature and the cosignature: what an auditor passes to
//! `airlock log verify --trusted`) and `refused/` (validly signed checkpoints it refused:
//! evidence of a fork or rollback).

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use tokio::sync::Mutex;

use crate::audit::{
    CheckpointText, KeyName, MAX_NOTE_BYTES, Note, SigningKey, VerifierKey, cosign,
    verify_consistency, Sha256Digest,
};

/// How the witness is set up.
#[derive(Debug, Clone)]
pub struct Settings {
    pub dir: PathBuf,
    /// The witness's own name (its cosignature key name).
    pub name: KeyName,
    /// The log it witnesses: origin (= key name) and Ed25519 key.
    pub log: VerifierKey,
}

/// Why the witness could not start.
#[derive(Debug, thiserror::Error)]
pub enum WitnessError {
    #[error("{0}")]
    Key(#[from] crate::audit::AuditError),
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{}: {why}", path.display())]
    BadState { path: PathBuf, why: String },
}

/// The latest checkpoint cosigned, as stored.
struct Latest {
    size: u64,
    root: Sha256Digest,
}

struct Witness {
    settings: Settings,
    key: SigningKey,
    /// Checked and updated under this lock, so two requests cannot roll each other back.
    latest: Mutex<Option<Latest>>,
}

/// Loads (or creates) the witness key and state; returns the router and the verifier key.
pub fn open(settings: Settings) -> Result<(Router, VerifierKey), WitnessError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| WitnessError::Io { path, source }
    };
    fs::create_dir_all(&settings.dir).map_err(io(&settings.dir))?;
    let key = SigningKey::load_or_create(&settings.dir.join("witness-key"))?;
    let vkey = VerifierKey::cosigner(settings.name.clone(), key.public_key());
    let vkey_path = settings.dir.join("witness.vkey");
    fs::write(&vkey_path, format!("{vkey}\n")).map_err(io(&vkey_path))?;
    let state_path = settings.dir.join("checkpoint.note");
    let latest = match fs::read_to_string(&state_path) {
        Ok(text) => Some(read_state(&text, &settings.log).map_err(|why| WitnessError::BadState { path: state_path.clone(), why })?),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(io(&state_path)(e)),
    };
    let witness = Arc::new(Witness { settings, key, latest: Mutex::new(latest) });
    let router = Router::new().route("/add-checkpoint", post(add_checkpoint)).with_state(witness);
    Ok((router, vkey))
}

/// The stored note must still carry a valid signature of the log.
fn read_state(text: &str, log: &VerifierKey) -> Result<Latest, String> {
    let note = Note::parse(text).map_err(|e| e.to_string())?;
    if note.verify(log) != Some(true) {
        return Err("not signed by the log key".into());
    }
    let cp = CheckpointText::parse(&note.text).map_err(|e| e.to_string())?;
    Ok(Latest { size: cp.size, root: cp.root })
}

fn answer(status: StatusCode, text: impl Into<String>) -> Response {
    (status, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], text.into()).into_response()
}

/// A parsed request body: old size, proof, the checkpoint note.
struct Request {
    old: u64,
    proof: Vec<Sha256Digest>,
    note: Note,
}

fn parse_request(body: &[u8]) -> Result<Request, String> {
    if body.len() > MAX_NOTE_BYTES + 64 * 64 + 32 {
        return Err("request too large".into());
    }
    let text = std::str::from_utf8(body).map_err(|_| "the body is not UTF-8")?;
    let (first, mut rest) = text.split_once('\n').ok_or("no old size line")?;
    let old = first.strip_prefix("old ").ok_or("the first line is `old <size>`")?;
    if old.is_empty() || (old.len() > 1 && old.starts_with('0')) || !old.bytes().all(|b| b.is_ascii_digit()) {
        return Err("the old size is not a decimal without leading zeroes".into());
    }
    let old: u64 = old.parse().map_err(|_| "the old size is too large")?;
    let mut proof = Vec::new();
    loop {
        let (line, after) = rest.split_once('\n').ok_or("no empty line before the checkpoint")?;
        rest = after;
        if line.is_empty() {
            break;
        }
        if proof.len() == 63 {
            return Err("more than 63 proof lines".into());
        }
        let hash = B64.decode(line).ok().and_then(|h| Sha256Digest::from_slice(&h)).ok_or("a proof line is not a base64 hash")?;
        proof.push(hash);
    }
    let note = Note::parse(rest).map_err(|e| e.to_string())?;
    Ok(Request { old, proof, note })
}

async fn add_checkpoint(State(w): State<Arc<Witness>>, body: Bytes) -> Response {
    let req = match parse_request(&body) {
        Ok(r) => r,
        Err(why) => return answer(StatusCode::BAD_REQUEST, why),
    };
    let Ok(cp) = CheckpointText::parse(&req.note.text) else {
        return answer(StatusCode::BAD_REQUEST, "not a checkpoint");
    };
    if cp.origin != w.settings.log.name.as_str() {
        return answer(StatusCode::NOT_FOUND, "unknown log origin");
    }
    if req.note.verify(&w.settings.log) != Some(true) {
        return answer(StatusCode::FORBIDDEN, "no valid signature by the log key");
    }
    if req.old > cp.size {
        return answer(StatusCode::BAD_REQUEST, "the old size exceeds the checkpoint size");
    }
    let mut latest = w.latest.lock().await;
    let (known_size, known_root) = latest.as_ref().map_or((0, None), |l| (l.size, Some(l.root)));
    if req.old != known_size {
        if cp.size < known_size {
            tracing::warn!(cosigned = known_size, offered = cp.size, "refused a checkpoint smaller than the one cosigned: a rollback");
            keep_refused(&w.settings.dir, &req.note, "rollback");
        }
        return size_conflict(known_size);
    }
    let consistent = match known_root {
        None => req.proof.is_empty(),
        Some(root) if req.old == cp.size => req.proof.is_empty() && root == cp.root,
        Some(root) => verify_consistency(req.old, cp.size, &root, &cp.root, &req.proof),
    };
    if !consistent {
        tracing::warn!(cosigned = known_size, offered = cp.size, "refused an inconsistent checkpoint: a fork of the log");
        keep_refused(&w.settings.dir, &req.note, "fork");
        return if req.old == cp.size {
            answer(StatusCode::CONFLICT, "same size, different root hash")
        } else {
            answer(StatusCode::UNPROCESSABLE_ENTITY, "the consistency proof does not verify")
        };
    }
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let cosig = cosign(&w.key, &w.settings.name, &req.note.text, now);
    let mut stored = req.note.clone();
    stored.signatures.retain(|s| s.is_from(&w.settings.log));
    stored.signatures.push(cosig.clone());
    if let Err(error) = persist(&w.settings.dir.join("checkpoint.note"), &stored.to_string()) {
        tracing::error!(%error, "could not store the cosigned checkpoint; not cosigning");
        return answer(StatusCode::SERVICE_UNAVAILABLE, "could not store state");
    }
    *latest = Some(Latest { size: cp.size, root: cp.root });
    tracing::info!(size = cp.size, "cosigned");
    answer(StatusCode::OK, format!("{cosig}\n"))
}

fn size_conflict(size: u64) -> Response {
    (StatusCode::CONFLICT, [(header::CONTENT_TYPE, "text/x.tlog.size")], format!("{size}\n")).into_response()
}

/// Writes `text` to `path` durably (temporary file, fsync, rename, fsync the directory).
fn persist(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    let mut f = fs::File::create(&tmp)?;
    f.write_all(text.as_bytes())?;
    f.sync_all()?;
    fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// Keeps a validly signed checkpoint the witness refused: it proves the log misbehaved.
fn keep_refused(dir: &Path, note: &Note, why: &str) {
    let refused = dir.join("refused");
    let name = format!("{why}-{}.note", std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos()));
    if let Err(error) = fs::create_dir_all(&refused).and_then(|()| fs::write(refused.join(name), note.to_string())) {
        tracing::warn!(%error, "could not keep the refused checkpoint");
    }
}
