//! Operator requests over the control socket: one [`Request`] variant and one handler
//! function each.
//!
//! To add a request: a variant of [`Request`] (its JSON is `{"op":"<snake_case name>", …
//! fields}`), its arm in [`Request::name`] and [`Request::needs_operator`], and a handler
//! `async fn x(ctx: &OpContext<'_>, out: &mut ReplyWriter, …) -> Result<Value, Refusal>`
//! called from [`handle`]. A handler streams with `out.item(value)` (stop when it errs:
//! the client left) and returns the final `done` value or a [`Refusal`]. The operator
//! check happens before the handler runs; a handler never re-checks the peer.
//!
//! The work of each request is the function the offline CLI calls too (a `LogReader`
//! method, `Fingerprints::accept`, `AuditLog::rotate_key`, the approvals API's functions),
//! here given the running gateway's open handles: the CLI with no gateway opens them
//! itself. Reading the log is for operators (the log holds every caller's arguments,
//! redacted as configured, and the peers `socket_clients` admits are agents); approvals
//! requests carry the caller's own bearer token, which is who decides, never the peer.

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
    /// The served catalog: every tool with its risk and fingerprint status. Any admitted peer.
    ToolsList,
    /// Accepts a tool's current definition and re-vets the served catalog. Operators only.
    ToolsAccept { name: String },
    /// One record (its stored canonical line). Operators only (so are the other `log_*`).
    LogShow { seq: u64 },
    /// The last `lines` records, then with `follow` every record as it becomes durable.
    LogTail { lines: u64, #[serde(default)] follow: bool },
    /// Verifies what is durable; `pubkey` (base64 or hex) anchors it, else the gateway's key.
    LogVerify { #[serde(default)] pubkey: Option<String> },
    /// The JSONL export from `since`, then with `follow` each new group as it becomes durable.
    LogExport { #[serde(default)] since: Option<u64>, #[serde(default)] follow: bool },
    /// An inclusion proof of `seq`, or a consistency proof from `consistency` records.
    LogProve {
        #[serde(default)]
        seq: Option<u64>,
        #[serde(default)]
        consistency: Option<u64>,
        #[serde(default)]
        to: Option<u64>,
    },
    /// The latest checkpoint as a signed note.
    LogCheckpoint,
    /// Every metric in the Prometheus/OpenMetrics text format (what `/metrics` serves).
    /// Operators only: `socket_clients` peers are agents, and the counts describe every
    /// caller's traffic.
    Metrics,
    /// Approvals the token's identity may see. Any admitted peer; the token decides.
    ApprovalsList { token: Token, #[serde(default)] state: Option<String> },
    /// One approval, if the token's identity may see it.
    ApprovalsShow { token: Token, id: String },
    /// A decision as the token's identity (channel `api`), under the API's rules.
    ApprovalsDecide { token: Token, id: String, decision: crate::approval::Verdict, #[serde(default)] comment: Option<String> },
    /// Rotates the audit signing key in the writer's order. Operators only.
    KeysRotate,
    /// Re-reads the configuration ([`super::Reload`]). Operators only.
    Reload,
    /// The evidence report of a period (`airlock report`), verified live, as HTML or JSON
    /// text. Operators only (it holds every caller's records).
    Report {
        #[serde(default)]
        from: Option<String>,
        #[serde(default)]
        to: Option<String>,
        #[serde(default)]
        json: bool,
        #[serde(default)]
        pubkey: Option<String>,
    },
}

/// A bearer token or JWT, as `Authorization: Bearer` carries it to the API; never shown.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Token(String);

impl Token {
    pub fn new(text: impl Into<String>) -> Self {
        Self(text.into())
    }

    /// The `Authorization` header value the API would have been sent.
    pub(super) fn authorization(&self) -> String {
        format!("Bearer {}", self.0.trim())
    }
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(…)")
    }
}

impl Request {
    /// The wire name, for messages and `control_refused` records.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Status => "status",
            Self::Stop => "stop",
            Self::ToolsList => "tools_list",
            Self::ToolsAccept { .. } => "tools_accept",
            Self::LogShow { .. } => "log_show",
            Self::LogTail { .. } => "log_tail",
            Self::LogVerify { .. } => "log_verify",
            Self::LogExport { .. } => "log_export",
            Self::LogProve { .. } => "log_prove",
            Self::LogCheckpoint => "log_checkpoint",
            Self::Metrics => "metrics",
            Self::ApprovalsList { .. } => "approvals_list",
            Self::ApprovalsShow { .. } => "approvals_show",
            Self::ApprovalsDecide { .. } => "approvals_decide",
            Self::KeysRotate => "keys_rotate",
            Self::Reload => "reload",
            Self::Report { .. } => "report",
        }
    }

    /// True for requests only the gateway's own uid and `[gateway] operators` may make.
    pub fn needs_operator(&self) -> bool {
        match self {
            Self::Status | Self::ToolsList => false,
            // The token presented is checked by the approvals rules themselves.
            Self::ApprovalsList { .. } | Self::ApprovalsShow { .. } | Self::ApprovalsDecide { .. } => false,
            Self::Stop | Self::ToolsAccept { .. } | Self::KeysRotate | Self::Reload | Self::Report { .. } | Self::Metrics => true,
            Self::LogShow { .. }
            | Self::LogTail { .. }
            | Self::LogVerify { .. }
            | Self::LogExport { .. }
            | Self::LogProve { .. }
            | Self::LogCheckpoint => true,
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
    let gateway = &ctx.control.gateway;
    match request {
        Request::Status => status(ctx),
        Request::Stop => stop(ctx),
        Request::ToolsList => super::ops_tools::list(gateway),
        Request::ToolsAccept { name } => super::ops_tools::accept(ctx, &name).await,
        Request::LogShow { seq } => super::ops_log::show(gateway, seq),
        Request::LogTail { lines, follow } => super::ops_log::tail(ctx, out, lines, follow).await,
        Request::LogVerify { pubkey } => super::ops_log::verify(ctx, pubkey.as_deref()).await,
        Request::LogExport { since, follow } => super::ops_log::export(ctx, out, since, follow).await,
        Request::LogProve { seq, consistency, to } => super::ops_log::prove(gateway, seq, consistency, to).await,
        Request::LogCheckpoint => super::ops_log::checkpoint(gateway),
        Request::Metrics => metrics(),
        Request::ApprovalsList { token, state } => super::ops_approvals::list(gateway, &token, state.as_deref()).await,
        Request::ApprovalsShow { token, id } => super::ops_approvals::show(gateway, &token, &id).await,
        Request::ApprovalsDecide { token, id, decision, comment } => {
            super::ops_approvals::decide(gateway, &token, &id, decision, comment).await
        }
        Request::KeysRotate => keys_rotate(ctx).await,
        Request::Reload => super::reload::reload(ctx).await,
        Request::Report { from, to, json, pubkey } => super::ops_log::report(ctx, from, to, json, pubkey.as_deref()).await,
    }
}

/// The answer to `keys_rotate` (and what the offline `airlock keys rotate` prints).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rotated {
    pub old_key_id: String,
    pub new_key_id: String,
    /// The new public key, base64.
    pub public_key: String,
    /// Sequence number of the `key_rotated` record (signed by the old key).
    pub seq: u64,
}

impl Rotated {
    /// Rotates `audit`'s key: the one function the gateway and the offline CLI both call.
    pub async fn rotate(audit: &crate::audit::AuditLog) -> Result<Self, crate::audit::AuditError> {
        let old = audit.public_key();
        let recorded = audit.rotate_key().await?;
        let new = audit.public_key();
        Ok(Self { old_key_id: old.id().to_string(), new_key_id: new.id().to_string(), public_key: new.to_string(), seq: recorded.seq().get() })
    }
}

async fn keys_rotate(ctx: &OpContext<'_>) -> Result<Value, Refusal> {
    let rotated = Rotated::rotate(ctx.control.gateway.audit())
        .await
        .map_err(|e| Refusal::new(RefusalCode::Failed, format!("could not rotate the audit key: {e}")))?;
    tracing::info!(by = %ctx.peer.describe(), old = %rotated.old_key_id, new = %rotated.new_key_id, "audit key rotated over the control socket");
    to_value(&rotated)
}

/// A reply value; these types serialise infallibly.
pub(super) fn to_value<T: Serialize>(value: &T) -> Result<Value, Refusal> {
    serde_json::to_value(value).map_err(|e| Refusal::new(RefusalCode::Failed, e.to_string()))
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

/// `{"text": …}`: the exposition `/metrics` would serve.
fn metrics() -> Result<Value, Refusal> {
    match crate::telemetry::render() {
        Some(text) => Ok(json!({"text": text})),
        None => Err(Refusal::new(
            RefusalCode::Failed,
            "metrics are off in this gateway ([telemetry] metrics = false); remove that line and restart it",
        )),
    }
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
