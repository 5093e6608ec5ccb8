//! `[audit.sink]`: POSTs batches of durable records to an HTTP collector, off the call path.
//!
//! Owns: the sink task, its batches and headers, retry with backoff, and its position (the
//! last sequence number the collector acknowledged) in `<data_dir>/state`, tree
//! `audit-sink`, keyed by the collector URL.
//! Uses: `follow::Follower`, `Format`, reqwest.
//! Must not: block or slow a call (it reads only what the writer acknowledged), skip a
//! record (a batch that fails is sent again, from the same first record, until a 2xx), or
//! log the token or the URL (which may carry credentials).
//!
//! Delivery is at least once: the position is saved after the collector's 2xx, so a crash
//! between the two resends that batch's records. A resent record's line is byte-identical
//! (the same stored record, or the same canonical OCSF event), and every batch names its log
//! and range, so a collector deduplicates on (log, seq). Exactly once would need the
//! collector to keep that key; Airlock cannot know what a collector stored before a crash.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::Format;
use super::follow::Follower;
use crate::approval::outbound::Secret;
use crate::audit::{AuditLog, Seq};

/// Longest wait between attempts while the collector fails.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// How long shutdown waits for the last delivery.
const FINAL_WAIT: Duration = Duration::from_secs(5);
/// The sled tree holding positions.
const TREE: &str = "audit-sink";

/// What `[audit.sink]` configured.
#[derive(Debug, Clone)]
pub struct Settings {
    pub url: url::Url,
    pub format: Format,
    /// The bearer token, from `token_env`.
    pub token: Option<Secret>,
    /// Most records in one POST.
    pub batch: usize,
}

/// Why the sink could not start.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("the sink's position store: {0}")]
    Store(#[from] sled::Error),
    #[error("could not build the sink's HTTP client: {0}")]
    Client(String),
}

/// The running sink.
pub struct Sink {
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

/// Where the sink is, persisted.
struct Position {
    tree: sled::Tree,
    key: Vec<u8>,
}

impl Position {
    fn load(&self) -> Result<u64, sled::Error> {
        Ok(self
            .tree
            .get(&self.key)?
            .and_then(|v| <[u8; 8]>::try_from(v.as_ref()).ok())
            .map_or(0, u64::from_be_bytes))
    }

    /// Saves `seq`; only ever after a 2xx, so a lost save means a resend, never a gap.
    async fn save(&self, seq: u64) -> Result<(), sled::Error> {
        self.tree.insert(&self.key, &seq.to_be_bytes())?;
        self.tree.flush_async().await?;
        Ok(())
    }
}

impl Sink {
    /// Starts delivering from the position stored for `settings.url` in `state`.
    pub fn start(settings: Settings, audit: AuditLog, state: &sled::Db) -> Result<Sink, SinkError> {
        let position = Position { tree: state.open_tree(TREE)?, key: settings.url.as_str().as_bytes().to_vec() };
        let mut acked = position.load()?;
        let durable = *audit.durable().borrow();
        if acked > durable {
            tracing::warn!(acked, durable, "the audit sink's collector acknowledged more records than the log holds (log restored from an older copy?); resuming at the log's end");
            acked = durable;
        }
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(30))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| SinkError::Client(e.without_url().to_string()))?;
        let stop = CancellationToken::new();
        let follower = Follower::new(audit, Seq::new(acked));
        tracing::info!(resume_after = acked, "audit sink started");
        let task = tokio::spawn(run(settings, client, follower, position, stop.clone()));
        Ok(Sink { stop, task })
    }

    /// Delivers what is durable (waiting a few seconds at most) and stops. Call before
    /// closing the audit log.
    pub async fn finish(self) {
        self.stop.cancel();
        if tokio::time::timeout(FINAL_WAIT * 2, self.task).await.is_err() {
            tracing::warn!("the audit sink did not finish at shutdown");
        }
    }
}

async fn run(settings: Settings, client: reqwest::Client, mut follower: Follower, position: Position, stop: CancellationToken) {
    let mut backoff = Duration::from_millis(500);
    let mut failing = false;
    loop {
        let durable = tokio::select! {
            n = follower.wait() => match n {
                Ok(n) => n,
                Err(_) => return, // the log closed
            },
            () = stop.cancelled() => follower.durable(),
        };
        let finishing = stop.is_cancelled();
        if durable <= follower.position().get() {
            return; // finishing with nothing left
        }
        let attempt = deliver(&settings, &client, &mut follower, &position, durable);
        let result = if finishing {
            tokio::time::timeout(FINAL_WAIT, attempt).await.unwrap_or_else(|_| Err("timed out at shutdown".into()))
        } else {
            attempt.await
        };
        match result {
            Ok(()) => {
                if failing {
                    tracing::info!(acked = follower.position().get(), "the audit sink's collector is reachable again");
                }
                failing = false;
                backoff = Duration::from_millis(500);
            }
            Err(why) => {
                tracing::warn!(behind_from = follower.position().get() + 1, durable, error = %why, "the audit sink could not deliver; retrying");
                failing = true;
                if finishing {
                    return;
                }
                tokio::select! {
                    () = tokio::time::sleep(backoff) => {}
                    () = stop.cancelled() => {}
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

/// Sends the next batch after the position; on a 2xx saves and advances the position.
async fn deliver(settings: &Settings, client: &reqwest::Client, follower: &mut Follower, position: &Position, durable: u64) -> Result<(), String> {
    let origin = follower.origin().map_err(|e| e.to_string())?;
    let records = follower.peek(settings.batch, durable).map_err(|e| e.to_string())?;
    let (Some((first, _)), Some((last, _))) = (records.first(), records.last()) else {
        return Ok(());
    };
    let (first, last) = (first.get(), last.get());
    let mut body = Vec::new();
    for (_, bytes) in &records {
        body.extend_from_slice(&settings.format.line(bytes, &origin).map_err(|e| e.to_string())?);
        body.push(b'\n');
    }
    let mut request = client
        .post(settings.url.clone())
        .header(reqwest::header::CONTENT_TYPE, "application/x-ndjson")
        .header("Airlock-Log", origin.as_str())
        .header("Airlock-First-Seq", first)
        .header("Airlock-Last-Seq", last)
        .header("Airlock-Format", match settings.format { Format::Jsonl => "jsonl", Format::Ocsf => "ocsf" })
        .header("Idempotency-Key", format!("{origin}:{first}-{last}"))
        .body(body);
    if let Some(token) = &settings.token {
        request = request.bearer_auth(token.expose());
    }
    let response = request.send().await.map_err(|e| e.without_url().to_string())?;
    let status = response.status();
    if !status.is_success() {
        return Err(format!("the collector answered HTTP {}", status.as_u16()));
    }
    position.save(last).await.map_err(|e| format!("saving the position: {e}"))?;
    follower.advance(Seq::new(last));
    Ok(())
}
