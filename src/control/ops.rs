//! Operator requests over the control socket: one [`Request`] variant and one handler
//! function each.
//!
//! To add a request: a variant of [`Request`] (its JSON is `{"op":"<snake_case name>", …
//! fields}`), its arm in [`Request::name`] and [`Request::needs_operator`], and a handler
//! `async fn x(ctx: &OpContext<'_>, out: &mut ReplyWriter, …) -> Result<Value, Refusal>`
//! called from [`handle`]. A handler streams with `out.item(value)` (stop when it errs:
//! the client left) and returns the final `done` value or a [`Refusal`]. The operator
//! check happens before the handler runs; a handler never re-checks the peer.

use std::path::Path;
use std::sync::atomic::Ordering;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::peer::{PeerUser, Standing};
use super::server::{Control, ReplyWriter};
use super::{Refusal, RefusalCode};

/// A request on an `op` connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    /// The gateway's state ([`StatusReport`]). Any admitted peer.
    Status,
    /// Stops the gateway gracefully: held calls are cancelled, the log is closed.
    /// Operators only.
    Stop,
}

impl Request {
    /// The wire name, for messages and `control_refused` records.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Status => "status",
            Self::Stop => "stop",
        }
    }

    /// True for requests only the gateway's own uid and `[gateway] operators` may make.
    pub fn needs_operator(&self) -> bool {
        match self {
            Self::Status => false,
            Self::Stop => true,
        }
    }
}

/// What a handler knows about the request's connection.
pub struct OpContext<'a> {
    pub(super) control: &'a std::sync::Arc<Control>,
    pub peer: &'a PeerUser,
    pub standing: Standing,
}

/// Runs one request whose peer has already been checked.
pub(super) async fn handle(request: Request, ctx: &OpContext<'_>, out: &mut ReplyWriter) -> Result<Value, Refusal> {
    let _ = out;
    match request {
        Request::Status => status(ctx),
        Request::Stop => stop(ctx),
    }
}

/// The answer to `status`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusReport {
    pub pid: u32,
    pub version: String,
    pub uptime_secs: u64,
    pub data_dir: String,
    pub config: Option<String>,
    /// Live MCP sessions of every channel (socket, stdio, HTTP).
    pub sessions: u64,
    /// Of those, `mcp` connections on the socket (stdio clients through `airlock serve`).
    pub attached: usize,
    /// Calls waiting for an approval.
    pub held_calls: usize,
    pub downstreams: Vec<DownstreamStatus>,
    /// Records in the audit log (the last sequence number).
    pub log_records: u64,
    /// Bytes of the audit database on disk.
    pub log_bytes: u64,
    /// `[gateway] idle_exit` in seconds; `None` for `"never"`.
    pub idle_exit_secs: Option<u64>,
}

/// One downstream in a [`StatusReport`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DownstreamStatus {
    pub name: String,
    /// `starting`, `ready` or `down`.
    pub state: String,
    /// Why it is down.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

fn status(ctx: &OpContext<'_>) -> Result<Value, Refusal> {
    let control = ctx.control;
    let (sessions, held_calls) = control.busy();
    let downstreams = control
        .gateway
        .downstreams()
        .servers()
        .iter()
        .map(|server| {
            let (state, reason) = match server.health() {
                crate::downstream::Health::Starting => ("starting", None),
                crate::downstream::Health::Ready => ("ready", None),
                crate::downstream::Health::Down { reason } => ("down", Some(reason)),
            };
            DownstreamStatus { name: server.name().to_owned(), state: state.into(), reason }
        })
        .collect();
    let log_records = control
        .gateway
        .audit()
        .reader()
        .and_then(|reader| reader.last_seq())
        .map(|seq| seq.get())
        .map_err(|e| Refusal::new(RefusalCode::Failed, format!("could not read the audit log: {e}")))?;
    let report = StatusReport {
        pid: std::process::id(),
        version: env!("CARGO_PKG_VERSION").into(),
        uptime_secs: control.started.elapsed().as_secs(),
        data_dir: control.settings.data_dir.display().to_string(),
        config: control.settings.config.as_ref().map(|p| p.display().to_string()),
        sessions,
        attached: control.attached.load(Ordering::Relaxed),
        held_calls,
        downstreams,
        log_records,
        log_bytes: dir_size(&control.settings.data_dir.join("audit")),
        idle_exit_secs: match control.settings.idle_exit {
            crate::config::IdleExit::After(d) => Some(d.as_secs()),
            crate::config::IdleExit::Never => None,
        },
    };
    serde_json::to_value(report).map_err(|e| Refusal::new(RefusalCode::Failed, e.to_string()))
}

fn stop(ctx: &OpContext<'_>) -> Result<Value, Refusal> {
    tracing::info!(by = %ctx.peer.describe(), "stopping on request over the control socket");
    ctx.control.shutdown.cancel();
    Ok(json!({"stopping": std::process::id()}))
}

/// Bytes of the regular files under `dir` (sled keeps a few files and a blob folder).
fn dir_size(dir: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for entry in entries.flatten() {
            match entry.metadata() {
                Ok(meta) if meta.is_dir() => stack.push(entry.path()),
                Ok(meta) => total += meta.len(),
                Err(_) => {}
            }
        }
    }
    total
}
