//! The stdio bridge of `airlock serve`: one MCP client's stdin/stdout relayed, line for
//! line and unchanged, to an `mcp` connection of the data dir's gateway.
//!
//! The bridge reads only what it needs of each message (`id`, `method`) to keep three
//! things: the ids of the client's requests in flight, the ids of the gateway's requests
//! to the client (elicitation, sampling, roots) in flight, and the client's `initialize`
//! and `notifications/initialized`. When the gateway goes away (killed, crashed, stopped)
//! every request in flight is answered with a JSON-RPC error, and the next message from
//! the client finds or starts a gateway, replays the `initialize` (its response is
//! swallowed) and `notifications/initialized`, and goes on as a new session. A response to
//! a request of a gateway that is gone is dropped: no other gateway asked for it.
//!
//! When the client closes stdin, the bridge half-closes its connection, so the gateway
//! ends that session (cancelling only its calls) and its last answers still arrive.
//!
//! When stdin and stdout are pipes or sockets, the bridge first hands them to the gateway
//! (`handoff`) and only watches the gateway's mirror of the session, keeping the same
//! memory of it; if the gateway goes away, it takes them back and relays as above. A
//! request the gateway had read but not yet mirrored when it was killed (the microseconds
//! between its read and its mirror write) is not known here and gets no answer.

use std::collections::HashMap;
use std::os::fd::OwnedFd;

use serde::Deserialize;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt as _, AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _, BufReader};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::mpsc;

use super::launch::{Launch, LaunchError};
use super::{ControlError, RefusalCode, handoff};
use crate::gateway::stdio::{Line, jsonrpc_error_value, read_bounded, skip_line};

/// The id of a replayed `initialize`, whose response the client must not see.
const REPLAY_ID: &str = "airlock-bridge-replay-initialize";
/// How many times one message tries to reach a gateway (one may be exiting as we come).
const ATTEMPTS: usize = 3;

/// What a bridge needs.
#[derive(Debug, Clone)]
pub struct BridgeSettings {
    /// How to start the data dir's gateway (and which data dir and config it is).
    pub launch: Launch,
    /// `[gateway] max_message_size`: a longer client line is refused here, as the gateway
    /// would refuse it, without being held.
    pub max_message: usize,
}

/// Why a bridge stopped before its client left.
#[derive(Debug, thiserror::Error)]
pub enum BridgeError {
    #[error(transparent)]
    Launch(#[from] LaunchError),
    #[error("stdout: {0}")]
    Client(std::io::Error),
}

enum Event {
    Client(Vec<u8>),
    ClientTooLong,
    ClientEnd,
    Gateway { generation: u64, line: Vec<u8> },
    GatewayLost { generation: u64 },
}

/// The parts of a JSON-RPC message the bridge looks at.
#[derive(Debug, Default, Deserialize)]
struct Peek {
    #[serde(default)]
    id: Option<Value>,
    #[serde(default)]
    method: Option<String>,
    #[serde(default)]
    result: Option<serde::de::IgnoredAny>,
    #[serde(default)]
    error: Option<serde::de::IgnoredAny>,
}

impl Peek {
    /// A response (has `result` or `error`), as opposed to an invalid message the
    /// gateway must answer.
    fn is_response(&self) -> bool {
        self.method.is_none() && (self.result.is_some() || self.error.is_some())
    }
}

/// The messages in a line (a batch has several); none if it is not JSON-RPC-shaped.
fn peek(line: &[u8]) -> Vec<Peek> {
    match line.trim_ascii_start().first() {
        Some(b'[') => serde_json::from_slice::<Vec<Peek>>(line).unwrap_or_default(),
        Some(b'{') => serde_json::from_slice::<Peek>(line).map(|p| vec![p]).unwrap_or_default(),
        _ => Vec::new(),
    }
}

/// An id as a map key (its JSON text).
fn key(id: &Value) -> String {
    id.to_string()
}

struct Link {
    writer: OwnedWriteHalf,
    generation: u64,
    pid: u32,
}

/// The bridge's memory of the client's session.
#[derive(Default)]
struct Session {
    /// The client's `initialize` request.
    init: Option<Value>,
    /// Its response has reached the client.
    init_answered: bool,
    /// The raw `notifications/initialized` line.
    initialized: Option<Vec<u8>>,
    /// Client requests the current gateway has not answered: key → id.
    in_flight: HashMap<String, Value>,
    /// Requests of the current gateway the client has not answered.
    from_gateway: HashMap<String, Value>,
}

impl Session {
    /// Notes a line from the client; whether it goes to the gateway (`connected`: a
    /// gateway is attached now).
    fn client_line(&mut self, line: &[u8], messages: &[Peek], connected: bool) -> bool {
        let mut forward = messages.is_empty();
        for message in messages {
            match (&message.id, &message.method) {
                (Some(id), Some(method)) => {
                    if method == "initialize" {
                        self.init = serde_json::from_slice(line).ok();
                        self.init_answered = false;
                    }
                    self.in_flight.insert(key(id), id.clone());
                    forward = true;
                }
                (None, Some(method)) => {
                    if method == "notifications/initialized" {
                        self.initialized = Some(line.to_vec());
                    }
                    if method == "notifications/cancelled" {
                        forward |= self.cancelled(line);
                    } else {
                        forward = true;
                    }
                }
                // A response: only for a request of the gateway that is there now.
                (Some(id), None) if message.is_response() => {
                    forward |= self.from_gateway.remove(&key(id)).is_some() && connected;
                }
                _ => forward = true,
            }
        }
        forward
    }

    /// Forgets a cancelled request; a cancellation for a gateway that is gone is dropped.
    fn cancelled(&mut self, line: &[u8]) -> bool {
        let id = serde_json::from_slice::<Value>(line).ok().and_then(|v| v.pointer("/params/requestId").cloned());
        match id {
            Some(id) => self.in_flight.remove(&key(&id)).is_some(),
            None => true,
        }
    }

    /// Notes a line the gateway sent the client.
    fn gateway_line(&mut self, messages: &[Peek]) {
        for message in messages {
            match (&message.id, &message.method) {
                (Some(id), None) => {
                    if let Some(init) = &self.init
                        && init.get("id") == Some(id)
                    {
                        self.init_answered = true;
                    }
                    self.in_flight.remove(&key(id));
                }
                (Some(id), Some(_)) => {
                    self.from_gateway.insert(key(id), id.clone());
                }
                _ => {}
            }
        }
    }
}

/// Serves the client until it leaves: hands `handoff` (duplicates of its stdin and
/// stdout) to the data dir's gateway when given and the gateway takes them, else (or once
/// that gateway is gone) relays the streams `open` gives (the same stdin and stdout, opened
/// only then: registered with this process's reactor, every message would wake it).
/// Fails only if no gateway can be reached at the start, or stdout fails.
pub async fn run_bridge<R, W>(
    settings: BridgeSettings,
    open: impl FnOnce() -> (R, W),
    handoff: Option<(OwnedFd, OwnedFd)>,
) -> Result<(), BridgeError>
where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin,
{
    let (events, mut inbox) = mpsc::channel::<Event>(64);
    let mut bridge = Bridge { settings, events: events.clone(), session: Session::default(), generation: 0 };
    let handed = match handoff {
        Some(fds) => bridge.hand_off(fds).await?,
        None => HandOff::Refused,
    };
    let (client_in, mut client_out) = open();
    let mut link = None;
    let tail = match handed {
        HandOff::Ended => return Ok(()),
        HandOff::Refused => {
            link = Some(bridge.connect().await?);
            Vec::new()
        }
        HandOff::Lost { pid, tail } => {
            bridge.lost(pid, &mut link, &mut client_out).await?;
            tail
        }
    };
    // The start of a line the lost gateway had read part of comes first.
    let client_in = std::io::Cursor::new(tail).chain(client_in);
    tokio::spawn(read_client(client_in, bridge.settings.max_message, events));
    let mut client_open = true;
    while let Some(event) = inbox.recv().await {
        match event {
            Event::Client(line) => bridge.on_client_line(&mut link, line, &mut client_out).await?,
            Event::ClientTooLong => {
                let message = format!("Invalid Request: message longer than {} bytes; discarded", bridge.settings.max_message);
                write_client(&mut client_out, &jsonrpc_error_value(Value::Null, -32600, &message)).await?;
            }
            Event::ClientEnd => {
                client_open = false;
                match link.as_mut() {
                    // Half-closed: the gateway ends the session and its last lines come.
                    Some(l) => {
                        let _ = l.writer.shutdown().await;
                    }
                    None => return Ok(()),
                }
            }
            Event::Gateway { generation, line } if link.as_ref().is_some_and(|l| l.generation == generation) => {
                bridge.on_gateway_line(line, &mut client_out).await?;
            }
            Event::GatewayLost { generation } if link.as_ref().is_some_and(|l| l.generation == generation) => {
                let pid = link.take().map_or(0, |l| l.pid);
                if !client_open {
                    return Ok(());
                }
                bridge.lost(pid, &mut link, &mut client_out).await?;
            }
            Event::Gateway { .. } | Event::GatewayLost { .. } => {}
        }
    }
    Ok(())
}

struct Bridge {
    settings: BridgeSettings,
    events: mpsc::Sender<Event>,
    session: Session,
    generation: u64,
}

/// How handing the client's pipes to the gateway went.
enum HandOff {
    /// The session was served and ended there.
    Ended,
    /// The gateway `pid` went away mid-session; `tail` begins the client's next line.
    Lost { pid: u32, tail: Vec<u8> },
    /// The gateway does not take pipes (an older one): relay.
    Refused,
}

impl Bridge {
    /// Finds or starts the gateway and hands it the client's stdin and stdout, then
    /// watches its mirror of the session until the session ends or the gateway is gone.
    async fn hand_off(&mut self, fds: (OwnedFd, OwnedFd)) -> Result<HandOff, LaunchError> {
        let mut last = None;
        for _ in 0..ATTEMPTS {
            self.settings.launch.ensure_running().await?;
            match super::client::hand_off(&self.settings.launch.data_dir, self.settings.launch.config.clone(), &fds).await {
                Ok((welcome, socket)) => {
                    drop(fds);
                    self.generation += 1;
                    let max = self.settings.max_message;
                    let mut session = std::mem::take(&mut self.session);
                    let watching = tokio::task::spawn_blocking(move || {
                        let watched = handoff::watch(socket, max, |side, line| {
                            let messages = peek(line);
                            match side {
                                handoff::Side::Client => {
                                    session.client_line(line, &messages, true);
                                }
                                handoff::Side::Gateway => session.gateway_line(&messages),
                            }
                        });
                        (watched, session)
                    });
                    let (watched, session) = watching.await.unwrap_or_else(|_| (handoff::Watched::Lost { tail: Vec::new() }, Session::default()));
                    self.session = session;
                    return Ok(match watched {
                        handoff::Watched::Ended => HandOff::Ended,
                        handoff::Watched::Lost { tail } => HandOff::Lost { pid: welcome.pid, tail },
                    });
                }
                Err(ControlError::NotRunning(_)) => {}
                // A gateway that does not know the mode.
                Err(ControlError::Refused(refusal)) if refusal.code == RefusalCode::BadRequest => return Ok(HandOff::Refused),
                Err(error @ ControlError::Refused(_)) => return Err(error.into()),
                Err(error) => last = Some(error),
            }
        }
        Err(last.unwrap_or_else(|| ControlError::NotRunning(self.settings.launch.data_dir.clone())).into())
    }

    /// Finds or starts the gateway and attaches; replays the session when the client has
    /// already initialized one.
    async fn connect(&mut self) -> Result<Link, LaunchError> {
        let mut last = None;
        for _ in 0..ATTEMPTS {
            self.settings.launch.ensure_running().await?;
            match super::attach(&self.settings.launch.data_dir, self.settings.launch.config.clone()).await {
                Ok(connection) => {
                    self.generation += 1;
                    let mut reader = connection.reader;
                    let mut writer = connection.writer;
                    let replayed = self.replay(&mut reader, &mut writer).await;
                    if let Err(error) = replayed {
                        last = Some(error);
                        continue;
                    }
                    tokio::spawn(read_gateway(reader, self.generation, self.events.clone()));
                    return Ok(Link { writer, generation: self.generation, pid: connection.welcome.pid });
                }
                Err(ControlError::NotRunning(_)) => {}
                Err(error @ ControlError::Refused(_)) => return Err(error.into()),
                Err(error) => last = Some(error),
            }
        }
        Err(last.unwrap_or_else(|| ControlError::NotRunning(self.settings.launch.data_dir.clone())).into())
    }

    /// Sends the client's `initialize` again (under [`REPLAY_ID`], its answer read here
    /// and dropped) and its `notifications/initialized`. An `initialize` the client has
    /// had no answer to is resent as it was, for the client to get its answer.
    async fn replay(&self, reader: &mut BufReader<OwnedReadHalf>, writer: &mut OwnedWriteHalf) -> Result<(), ControlError> {
        let Some(init) = &self.session.init else { return Ok(()) };
        let io = |source| ControlError::Io { path: super::socket_path(&self.settings.launch.data_dir), source };
        if !self.session.init_answered {
            return send_line(writer, init.to_string().as_bytes()).await.map_err(io);
        }
        let mut replay = init.clone();
        replay["id"] = json!(REPLAY_ID);
        send_line(writer, replay.to_string().as_bytes()).await.map_err(io)?;
        loop {
            let mut line = Vec::new();
            if reader.read_until(b'\n', &mut line).await.map_err(io)? == 0 {
                return Err(ControlError::Closed);
            }
            let answered = peek(&line).iter().any(|p| p.method.is_none() && p.id.as_ref().and_then(Value::as_str) == Some(REPLAY_ID));
            if answered {
                if serde_json::from_slice::<Value>(&line).ok().is_some_and(|v| v.get("error").is_some()) {
                    return Err(ControlError::Protocol(format!("the new gateway refused the replayed initialize: {}", String::from_utf8_lossy(&line).trim())));
                }
                break;
            }
        }
        if let Some(initialized) = &self.session.initialized {
            send_line(writer, initialized).await.map_err(io)?;
        }
        Ok(())
    }

    async fn on_client_line<W: AsyncWrite + Unpin>(&mut self, link: &mut Option<Link>, line: Vec<u8>, out: &mut W) -> Result<(), BridgeError> {
        if line.trim_ascii().is_empty() {
            return Ok(());
        }
        let messages = peek(&line);
        if !self.session.client_line(&line, &messages, link.is_some()) {
            return Ok(());
        }
        if link.is_none() {
            match self.connect().await {
                Ok(new) => *link = Some(new),
                Err(error) => return self.unreachable(&messages, &error, out).await,
            }
        }
        if let Some(l) = link.as_mut()
            && send_line(&mut l.writer, &line).await.is_err()
        {
            // The reader sees the loss too and answers what is in flight.
            tracing::debug!("the gateway connection broke while writing");
        }
        Ok(())
    }

    /// No gateway could be reached for these messages: their requests get an error.
    async fn unreachable<W: AsyncWrite + Unpin>(&mut self, messages: &[Peek], error: &LaunchError, out: &mut W) -> Result<(), BridgeError> {
        tracing::error!(%error, "no gateway");
        for message in messages {
            if let (Some(id), Some(_)) = (&message.id, &message.method) {
                self.session.in_flight.remove(&key(id));
                let text = format!("Airlock: no gateway could be reached or started for this request: {error}");
                write_client(out, &jsonrpc_error_value(id.clone(), -32603, &text)).await?;
            }
        }
        Ok(())
    }

    async fn on_gateway_line<W: AsyncWrite + Unpin>(&mut self, line: Vec<u8>, out: &mut W) -> Result<(), BridgeError> {
        self.session.gateway_line(&peek(&line));
        out.write_all(&line).await.map_err(BridgeError::Client)?;
        if !line.ends_with(b"\n") {
            out.write_all(b"\n").await.map_err(BridgeError::Client)?;
        }
        out.flush().await.map_err(BridgeError::Client)
    }

    /// The gateway went away: answer what was in flight. An `initialize` still
    /// unanswered is resent at once to a new gateway instead, so a client that came as a
    /// gateway was exiting does not fail to start.
    async fn lost<W: AsyncWrite + Unpin>(&mut self, pid: u32, link: &mut Option<Link>, out: &mut W) -> Result<(), BridgeError> {
        tracing::warn!(pid, "the gateway connection was lost");
        self.session.from_gateway.clear();
        let init_key = self.session.init.as_ref().and_then(|i| i.get("id")).map(key);
        let waiting_init = !self.session.init_answered && init_key.as_ref().is_some_and(|k| self.session.in_flight.contains_key(k));
        let mut in_flight: Vec<Value> = self.session.in_flight.drain().map(|(_, id)| id).collect();
        if waiting_init {
            if let Some(k) = &init_key {
                in_flight.retain(|id| key(id) != *k);
            }
            match self.connect().await {
                Ok(new) => {
                    if let Some(k) = init_key {
                        self.session.in_flight.insert(k, self.session.init.as_ref().and_then(|i| i.get("id")).cloned().unwrap_or(Value::Null));
                    }
                    *link = Some(new);
                }
                Err(error) => {
                    let id = self.session.init.as_ref().and_then(|i| i.get("id")).cloned().unwrap_or(Value::Null);
                    let text = format!("Airlock: no gateway could be reached or started: {error}");
                    write_client(out, &jsonrpc_error_value(id, -32603, &text)).await?;
                }
            }
        }
        in_flight.sort_by_key(key);
        for id in in_flight {
            let text = format!(
                "Airlock: the gateway (pid {pid}) stopped before answering this request; the next request starts or finds a gateway. A tool call may or may not have run: the audit log has what was recorded."
            );
            let mut error = jsonrpc_error_value(id, -32603, &text);
            error["error"]["data"] = json!({"airlock": "gateway_lost"});
            write_client(out, &error).await?;
        }
        Ok(())
    }
}

async fn send_line(writer: &mut OwnedWriteHalf, line: &[u8]) -> std::io::Result<()> {
    writer.write_all(line).await?;
    if !line.ends_with(b"\n") {
        writer.write_all(b"\n").await?;
    }
    writer.flush().await
}

async fn write_client<W: AsyncWrite + Unpin>(out: &mut W, value: &Value) -> Result<(), BridgeError> {
    let mut line = value.to_string().into_bytes();
    line.push(b'\n');
    out.write_all(&line).await.map_err(BridgeError::Client)?;
    out.flush().await.map_err(BridgeError::Client)
}

async fn read_client<R: AsyncRead + Unpin>(input: R, max: usize, events: mpsc::Sender<Event>) {
    let mut reader = BufReader::new(input);
    loop {
        let mut line = Vec::new();
        let event = match read_bounded(&mut reader, &mut line, max).await {
            Ok(Line::Complete) => Event::Client(line),
            Ok(Line::TooLong) => {
                if events.send(Event::ClientTooLong).await.is_err() {
                    return;
                }
                match skip_line(&mut reader).await {
                    Ok(true) => continue,
                    Ok(false) | Err(_) => Event::ClientEnd,
                }
            }
            Ok(Line::End) | Err(_) => Event::ClientEnd,
        };
        let end = matches!(event, Event::ClientEnd);
        if events.send(event).await.is_err() || end {
            return;
        }
    }
}

/// The gateway is trusted to bound its own messages; its lines are read whole.
async fn read_gateway(mut reader: BufReader<OwnedReadHalf>, generation: u64, events: mpsc::Sender<Event>) {
    loop {
        let mut line = Vec::new();
        match reader.read_until(b'\n', &mut line).await {
            Ok(0) | Err(_) => {
                let _ = events.send(Event::GatewayLost { generation }).await;
                return;
            }
            Ok(_) => {
                if line.trim_ascii().is_empty() {
                    continue;
                }
                if events.send(Event::Gateway { generation, line }).await.is_err() {
                    return;
                }
            }
        }
    }
}
