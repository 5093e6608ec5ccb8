//! Publishing the gateway's checkpoints to witnesses, off the call path.
//!
//! Owns: the background task, its targets (a directory, C2SP tlog-witness endpoints), the
//! retry with backoff, the cosigned copies kept in `<data_dir>/witnessed/`, and `Health`.
//! Uses: `audit` (the in-process reader, notes, proofs).
//! Must not: delay or block a call (it only reads what the writer committed), or keep a
//! cosignature it has not verified with the witness's configured key.

use std::fs;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::audit::{AuditLog, Checkpoint, Note, NoteSignature, VerifierKey};

/// Longest wait between retries of a failing witness.
const MAX_BACKOFF: Duration = Duration::from_secs(300);
/// How long shutdown waits for the last publication.
const FINAL_WAIT: Duration = Duration::from_secs(5);

/// Where checkpoints go.
#[derive(Debug, Clone)]
pub struct Settings {
    pub interval: Duration,
    pub dir: Option<PathBuf>,
    pub http: Vec<(url::Url, VerifierKey)>,
    /// `<data_dir>/witnessed`: the cosigned copies returned.
    pub witnessed: PathBuf,
}

enum Target {
    Dir(PathBuf),
    Http { url: url::Url, key: VerifierKey, witness_size: u64 },
}

impl Target {
    fn name(&self) -> String {
        match self {
            Target::Dir(d) => format!("dir:{}", d.display()),
            Target::Http { url, .. } => url.to_string(),
        }
    }
}

struct Slot {
    target: Target,
    published: u64,
    next_try: Instant,
    backoff: Duration,
    failing_since: Option<SystemTime>,
    last_error: Option<String>,
}

/// What `/healthz` shows: per target, how far it is behind and why.
#[derive(Debug, Clone, Default)]
pub struct Health(Arc<Mutex<Value>>);

impl Health {
    /// The current detail as JSON.
    pub fn snapshot(&self) -> Value {
        self.0.lock().map(|v| v.clone()).unwrap_or(Value::Null)
    }
}

/// The running publisher.
pub struct Publisher {
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
    health: Health,
}

impl Publisher {
    /// Starts publishing the log's new checkpoints.
    pub fn start(settings: Settings, audit: AuditLog) -> Publisher {
        let mut slots: Vec<Slot> = Vec::new();
        let now = Instant::now();
        let slot = |target| Slot { target, published: 0, next_try: now, backoff: Duration::from_secs(1), failing_since: None, last_error: None };
        if let Some(dir) = &settings.dir {
            slots.push(slot(Target::Dir(dir.clone())));
        }
        for (url, key) in &settings.http {
            slots.push(slot(Target::Http { url: url.clone(), key: key.clone(), witness_size: 0 }));
        }
        let stop = CancellationToken::new();
        let health = Health::default();
        let task = tokio::spawn(run(settings, audit, slots, stop.clone(), health.clone()));
        Publisher { stop, task, health }
    }

    /// The health detail handle.
    pub fn health(&self) -> Health {
        self.health.clone()
    }

    /// Publishes the last checkpoint (waiting a few seconds at most) and stops. Call before
    /// closing the audit log.
    pub async fn finish(self) {
        self.stop.cancel();
        if tokio::time::timeout(FINAL_WAIT * 2, self.task).await.is_err() {
            tracing::warn!("witness publishing did not finish at shutdown");
        }
    }
}

async fn run(settings: Settings, audit: AuditLog, mut slots: Vec<Slot>, stop: CancellationToken, health: Health) {
    let client = match reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(15))
        .redirect(reqwest::redirect::Policy::none())
        .build()
    {
        Ok(c) => c,
        Err(error) => {
            tracing::error!(%error, "witness publishing is off: no HTTP client");
            return;
        }
    };
    let mut last_final = false;
    loop {
        let finishing = stop.is_cancelled();
        let latest = audit.reader().and_then(|r| r.latest_checkpoint()).ok();
        if let Some(cp) = latest.as_ref().filter(|c| c.to_note().is_some()) {
            for slot in &mut slots {
                if slot.published < cp.size && (finishing || Instant::now() >= slot.next_try) {
                    let attempt = if finishing {
                        tokio::time::timeout(FINAL_WAIT, publish(&client, &audit, &settings, slot, cp)).await.unwrap_or_else(|_| Err("timed out at shutdown".into()))
                    } else {
                        publish(&client, &audit, &settings, slot, cp).await
                    };
                    settle(slot, cp.size, attempt, settings.interval);
                }
            }
        }
        report(&health, &slots, latest.as_ref().map_or(0, |c| c.size));
        if last_final {
            return;
        }
        let wait = slots.iter().map(|s| s.next_try.saturating_duration_since(Instant::now())).min().unwrap_or(settings.interval);
        let wait = wait.clamp(Duration::from_millis(200), settings.interval.max(Duration::from_millis(200)));
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = stop.cancelled(), if !finishing => {}
        }
        last_final = finishing || stop.is_cancelled();
    }
}

fn settle(slot: &mut Slot, size: u64, attempt: Result<(), String>, interval: Duration) {
    let now = Instant::now();
    match attempt {
        Ok(()) => {
            if slot.failing_since.is_some() {
                tracing::info!(target = %slot.target.name(), size, "witness reachable again; checkpoint published");
            }
            slot.published = size;
            slot.failing_since = None;
            slot.last_error = None;
            slot.backoff = Duration::from_secs(1);
            slot.next_try = now + interval;
        }
        Err(why) => {
            tracing::warn!(target = %slot.target.name(), behind_from = slot.published, size, error = %why, "could not publish a checkpoint to a witness; retrying");
            slot.failing_since.get_or_insert_with(SystemTime::now);
            slot.last_error = Some(why);
            slot.next_try = now + slot.backoff;
            slot.backoff = (slot.backoff * 2).min(MAX_BACKOFF.max(interval));
        }
    }
}

fn report(health: &Health, slots: &[Slot], latest: u64) {
    let targets: Vec<Value> = slots
        .iter()
        .map(|s| {
            json!({
                "target": s.target.name(),
                "published_size": s.published,
                "latest_size": latest,
                "unwitnessed_records": latest.saturating_sub(s.published),
                "failing_since": s.failing_since.map(|t| humantime::format_rfc3339_seconds(t).to_string()),
                "last_error": s.last_error,
            })
        })
        .collect();
    if let Ok(mut v) = health.0.lock() {
        *v = json!({ "targets": targets });
    }
}

async fn publish(client: &reqwest::Client, audit: &AuditLog, settings: &Settings, slot: &mut Slot, cp: &Checkpoint) -> Result<(), String> {
    let note = cp.to_note().ok_or("the checkpoint is not a note")?;
    match &mut slot.target {
        Target::Dir(dir) => to_dir(dir, cp, &note),
        Target::Http { url, key, witness_size } => {
            let cosigned = add_checkpoint(client, audit, url, key, witness_size, cp, &note).await?;
            keep_cosigned(&settings.witnessed, key, &cosigned)
        }
    }
}

/// One file per checkpoint, never overwritten (a write-once mount accepts it).
fn to_dir(dir: &std::path::Path, cp: &Checkpoint, note: &Note) -> Result<(), String> {
    fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let path = dir.join(format!("{}-{:020}.note", cp.origin.replace('/', "_"), cp.size));
    let text = note.to_string();
    match fs::OpenOptions::new().write(true).create_new(true).open(&path) {
        Ok(mut f) => {
            use std::io::Write;
            f.write_all(text.as_bytes()).and_then(|()| f.sync_all()).map_err(|e| format!("{}: {e}", path.display()))
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => match fs::read_to_string(&path) {
            Ok(existing) if existing == text => Ok(()),
            _ => Err(format!("{} already holds a different checkpoint of this size: the log was forked or rolled back", path.display())),
        },
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}

/// `POST <url>/add-checkpoint` (c2sp.org/tlog-witness); returns the note with the
/// verified cosignature added.
async fn add_checkpoint(
    client: &reqwest::Client,
    audit: &AuditLog,
    url: &url::Url,
    key: &VerifierKey,
    witness_size: &mut u64,
    cp: &Checkpoint,
    note: &Note,
) -> Result<Note, String> {
    let endpoint = format!("{}/add-checkpoint", url.as_str().trim_end_matches('/'));
    for _ in 0..3 {
        if *witness_size > cp.size {
            return Err(format!(
                "the witness has cosigned {} records but the log holds {}: the log was rolled back (restored from an older copy?)",
                witness_size, cp.size
            ));
        }
        let proof = audit
            .reader()
            .and_then(|r| r.consistency_path(*witness_size, cp.size))
            .map_err(|e| format!("consistency proof from {witness_size}: {e}"))?;
        let mut body = format!("old {witness_size}\n");
        for h in &proof {
            body.push_str(&B64.encode(h.as_bytes()));
            body.push('\n');
        }
        body.push('\n');
        body.push_str(&note.to_string());
        let resp = client.post(&endpoint).body(body).send().await.map_err(|e| format!("{}", e.without_url()))?;
        let status = resp.status();
        let text = resp.text().await.map_err(|e| format!("{}", e.without_url()))?;
        match status.as_u16() {
            200 => return verify_cosignature(note, key, &text),
            409 => match text.trim().parse::<u64>() {
                Ok(size) if size != *witness_size => *witness_size = size,
                _ => return Err(format!("the witness refused: 409 {}", clip(&text))),
            },
            code => return Err(format!("the witness answered {code}: {}", clip(&text))),
        }
    }
    Err("the witness keeps changing its size".into())
}

fn verify_cosignature(note: &Note, key: &VerifierKey, body: &str) -> Result<Note, String> {
    let mut cosigned = note.clone();
    for line in body.lines().filter(|l| !l.is_empty()) {
        let sig = NoteSignature::parse_line(line).map_err(|e| e.to_string())?;
        if sig.is_from(key) {
            cosigned.signatures.push(sig);
        }
    }
    match cosigned.cosigned_by(key) {
        Some(Ok(_)) => Ok(cosigned),
        Some(Err(())) => Err("the witness's cosignature does not verify".into()),
        None => Err(format!("the witness returned no cosignature by {}", key.name)),
    }
}

fn clip(text: &str) -> String {
    text.chars().take(200).filter(|c| !c.is_control()).collect()
}

/// Keeps the latest cosigned copy per witness in `<data_dir>/witnessed/<name>.note`.
fn keep_cosigned(dir: &std::path::Path, key: &VerifierKey, note: &Note) -> Result<(), String> {
    fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let name: String = key.name.as_str().chars().map(|c| if c.is_ascii_alphanumeric() || c == '.' || c == '-' { c } else { '_' }).collect();
    let path = dir.join(format!("{name}.note"));
    let tmp = path.with_extension("tmp");
    fs::write(&tmp, note.to_string()).and_then(|()| fs::rename(&tmp, &path)).map_err(|e| format!("{}: {e}", path.display()))
}
