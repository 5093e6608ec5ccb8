//! The control socket: how every `airlock` process on the machine reaches the one gateway
//! that owns a data dir.
//!
//! Owns: `<data_dir>/airlock.sock`, the liveness lock `gateway.lock` (held by the running
//! gateway for its whole life) and the start lock `start.lock` (held by whoever is starting
//! one), the admission of socket peers (`[gateway] socket_clients`, `operators`), the
//! hello, the operator request enum and its handlers, the `mcp` mode's sessions, the
//! client side ([`connect`]) and the stdio bridge of `airlock serve`.
//! Uses: `gateway` (sessions, status), `audit` (`control_refused`), `identity` (callers),
//! `approval` (held calls), `config` (peer rules).
//! Must not: parse `airlock.toml` (the CLI hands it the values), or decide anything about
//! calls: an `mcp` connection is an ordinary gateway session.
//!
//! # Protocol (version 1)
//!
//! Every message is one line of JSON ending in `\n`.
//!
//! 1. The client sends a [`Hello`]: `{"airlock":1,"mode":"mcp"|"op","config":PATH|null}`.
//!    `config` is the canonical path of the `airlock.toml` the client was started with
//!    (`null`: built-in defaults or not known, e.g. `--data-dir` commands).
//! 2. The gateway answers one [`HelloReply`]: `{"ok":{"pid":…,"version":…,"config":…,
//!    "principal":…}}`, or `{"refused":{"code":…,"message":…}}` and closes. It refuses a
//!    peer that is not admitted (and records `control_refused`), a hello it cannot read,
//!    and a `config` that is not its own (code `config_mismatch`, naming both files).
//! 3. Mode `mcp`: the rest of the connection is an MCP session exactly as on stdio
//!    (newline-delimited JSON-RPC both ways), served as its own gateway session whose
//!    caller is the stdio principal for the gateway's own uid and `unix:<name>` for any
//!    other admitted uid (its Unix groups as `unix:<group>`).
//! 4. Mode `handoff` (what `airlock serve` uses when its stdin and stdout are pipes or
//!    sockets): after the welcome the client sends one byte carrying its stdin and stdout
//!    (`SCM_RIGHTS`), and the session is served on them as in mode `mcp`; the gateway
//!    mirrors what it reads and writes there back over the socket, in frames
//!    ([`handoff`]), so the bridge can answer what is in flight if the gateway dies. A
//!    gateway that does not know the mode refuses the hello, and the bridge relays.
//! 5. Mode `op`: the client sends [`Request`] lines (`{"op":"status"}`); each is answered
//!    by zero or more `{"item":…}` lines (a stream, e.g. a followed log) and then exactly
//!    one `{"done":…}` or `{"error":{"code":…,"message":…}}` line ([`Reply`]). The client
//!    may then send the next request, or close. Operator requests
//!    ([`Request::needs_operator`]) are answered `not_operator` (and recorded
//!    `control_refused`) unless the peer is the gateway's own uid or in `operators`.

mod bridge;
mod client;
mod handoff;
mod launch;
mod ops;
mod ops_approvals;
mod ops_log;
mod ops_tools;
mod peer;
mod reload;
mod server;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use bridge::{BridgeError, BridgeSettings, run_bridge};
pub use client::{Connection, OpLine, OpStream, attach, connect, connect_op};
pub use launch::{Launch, LaunchError, announce_ready};
pub use ops::{DownstreamStatus, OpContext, Request, Rotated, StatusReport, Token};
pub use ops_tools::{ToolRow, tool_rows};
pub use reload::{Reload, ReloadOutcome, ReloadRefused};
pub use peer::{Admission, PeerUser, Standing};
pub use server::{Control, ControlSettings, Liveness, ReplyWriter, bind, is_free, wait_until_free};

/// Version of the protocol in [`Hello::airlock`].
pub const PROTOCOL: u32 = 1;

/// Longest hello, reply or op request line read, in bytes (MCP lines have the gateway's
/// own `max_message_size`).
pub const MAX_CONTROL_LINE: usize = 64 * 1024;

/// `<data_dir>/airlock.sock`.
pub fn socket_path(data_dir: &Path) -> PathBuf {
    data_dir.join("airlock.sock")
}

/// `<data_dir>/gateway.lock`: held exclusively by the running gateway (flock), so a
/// process that can take it knows no gateway runs.
pub fn liveness_lock_path(data_dir: &Path) -> PathBuf {
    data_dir.join("gateway.lock")
}

/// `<data_dir>/start.lock`: held by whoever is starting a gateway, so that simultaneous
/// launches start exactly one.
pub fn start_lock_path(data_dir: &Path) -> PathBuf {
    data_dir.join("start.lock")
}

/// `<data_dir>/gateway.log`: stderr of a gateway started in the background.
pub fn log_path(data_dir: &Path) -> PathBuf {
    data_dir.join("gateway.log")
}

/// The first line a client sends.
/// Unknown fields are ignored, so a later client may add some.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// [`PROTOCOL`].
    pub airlock: u32,
    pub mode: Mode,
    /// Canonical path of the client's `airlock.toml`; `None` when it has none.
    #[serde(default)]
    pub config: Option<PathBuf>,
}

/// What the rest of a connection carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// One MCP session (what `airlock serve` relays).
    Mcp,
    /// One MCP session on the bridge's own stdin and stdout, passed over the socket
    /// (`handoff`): the rest of the connection is the gateway's mirror of it.
    Handoff,
    /// Operator requests and their replies.
    Op,
}

/// The gateway's answer to a [`Hello`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HelloReply {
    Ok(Welcome),
    Refused(Refusal),
}

/// Who answered, and as whom the peer is served.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Welcome {
    pub pid: u32,
    pub version: String,
    /// The gateway's `airlock.toml`.
    pub config: Option<PathBuf>,
    /// The principal an `mcp` session of this peer calls as.
    pub principal: String,
}

/// Why the gateway did not do what a peer asked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{message}")]
pub struct Refusal {
    pub code: RefusalCode,
    pub message: String,
}

impl Refusal {
    pub fn new(code: RefusalCode, message: impl Into<String>) -> Self {
        Self { code, message: message.into() }
    }
}

/// The kind of a [`Refusal`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RefusalCode {
    /// The peer's uid is not the gateway's and not in `socket_clients` or `operators`.
    NotAdmitted,
    /// The peer may not run operator commands.
    NotOperator,
    /// The peer's `airlock.toml` is not the gateway's.
    ConfigMismatch,
    /// Another protocol version.
    WrongVersion,
    /// A line that is not a hello or request.
    BadRequest,
    /// The request was understood but failed.
    Failed,
    /// An approval decision the rules refused (the caller's own call, not an approver,
    /// another channel, settled or expired).
    DecisionRefused,
    /// A reload found problems; the running configuration stays. The message holds the
    /// `file:line: message` lines.
    ReloadRefused,
}

/// One line of the answer to a [`Request`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reply {
    /// One element of a stream.
    Item(serde_json::Value),
    /// The request's result; the last line of its answer.
    Done(serde_json::Value),
    /// The request failed; the last line of its answer.
    Error(Refusal),
}

/// A control-socket failure on either side.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// No gateway listens on the data dir's socket.
    #[error("no gateway is running for {}", .0.display())]
    NotRunning(PathBuf),
    #[error("{path}: {source}", path = .path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{}: the path is longer than a Unix socket address allows ({} bytes, at most {}); use a shorter data_dir", .0.display(), .0.as_os_str().len(), MAX_SOCKET_PATH)]
    PathTooLong(PathBuf),
    /// Something other than a gateway's socket is at the socket's path: never removed.
    #[error("{path}: {1}; not removed (remove it yourself if it is not needed)", path = .0.display())]
    NotOurs(PathBuf, String),
    /// Another gateway holds the data dir.
    #[error("a gateway is already running for {}{}", .data_dir.display(), .pid.map(|p| format!(" (pid {p})")).unwrap_or_default())]
    AlreadyRunning { data_dir: PathBuf, pid: Option<u32> },
    #[error("the gateway refused: {0}")]
    Refused(Refusal),
    #[error("the gateway sent an unreadable line: {0}")]
    Protocol(String),
    #[error("the gateway closed the connection")]
    Closed,
}

/// Longest path a `sockaddr_un` holds (108 bytes with its terminating NUL on Linux).
pub const MAX_SOCKET_PATH: usize = 107;

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> ControlError + '_ {
    move |source| ControlError::Io { path: path.to_path_buf(), source }
}

/// Serialises a message as one line, newline included.
fn line<T: Serialize>(value: &T) -> Vec<u8> {
    // These types serialise infallibly (no maps with non-string keys, no foreign types).
    let mut bytes = serde_json::to_vec(value).unwrap_or_else(|_| b"null".to_vec());
    bytes.push(b'\n');
    bytes
}

/// Reads one line of at most [`MAX_CONTROL_LINE`] bytes; `None` at end of input.
pub(crate) async fn read_line<R: tokio::io::AsyncBufRead + Unpin>(reader: &mut R) -> std::io::Result<Option<Vec<u8>>> {
    let mut buf = Vec::new();
    match crate::gateway::stdio::read_bounded(reader, &mut buf, MAX_CONTROL_LINE).await? {
        crate::gateway::stdio::Line::End => Ok(None),
        crate::gateway::stdio::Line::Complete => Ok(Some(buf)),
        crate::gateway::stdio::Line::TooLong => {
            Err(std::io::Error::new(std::io::ErrorKind::InvalidData, format!("a control line longer than {MAX_CONTROL_LINE} bytes")))
        }
    }
}
