//! Connecting to one downstream and keeping it connected.

use std::process::Stdio;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use rmcp::RoleClient;
use rmcp::service::RunningService;
use rmcp::transport::{IntoTransport, StreamableHttpClientTransport, TokioChildProcess};
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use super::handler::DownstreamHandler;
use super::sse_client::SseClientTransport;
use super::tap::Tap;
use super::{Downstreams, Health, Server};
use crate::manifest::{Protocol, Transport};
use rmcp::model::ProtocolVersion;
use rmcp::service::ClientLifecycleMode;
use rmcp::service::ClientServiceExt;

const BACKOFF_START: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// A connection that lived this long resets the backoff.
const STABLE_AFTER: Duration = Duration::from_secs(60);
/// Concurrent requests allowed to one streamable-HTTP downstream (rmcp's default is 16).
const HTTP_MAX_IN_FLIGHT: usize = 256;

type Running = RunningService<RoleClient, DownstreamHandler>;

/// Keeps one downstream connected until shutdown: connect, serve, and on loss reconnect
/// with exponential backoff. `first_done` fires after the first attempt either way.
pub(super) async fn supervise(
    server: Arc<Server>,
    downstreams: Weak<Downstreams>,
    shutdown: CancellationToken,
    first_done: oneshot::Sender<()>,
) {
    let mut first_done = Some(first_done);
    let mut backoff = BACKOFF_START;
    loop {
        let started = Instant::now();
        let outcome = tokio::select! {
            outcome = connect(&server, &downstreams) => outcome,
            () = shutdown.cancelled() => return,
        };
        match outcome {
            Ok(running) => {
                let reason = serve_until_closed(&server, &downstreams, running, &mut first_done, &shutdown).await;
                let Some(reason) = reason else { return };
                tracing::warn!(server = server.name(), %reason, "downstream disconnected; restarting");
                server.set_health(Health::Down { reason });
                crate::telemetry::downstream_restarted(server.name());
            }
            Err(reason) => {
                tracing::error!(
                    server = server.name(),
                    manifest = %server.manifest().file.display(),
                    %reason,
                    "downstream failed to start"
                );
                server.set_health(Health::Down { reason });
                crate::telemetry::downstream_up(server.name(), false);
                crate::telemetry::downstream_restarted(server.name());
                if let Some(done) = first_done.take() {
                    let _ = done.send(());
                }
            }
        }
        if started.elapsed() > STABLE_AFTER {
            backoff = BACKOFF_START;
        }
        tokio::select! {
            () = tokio::time::sleep(backoff) => {}
            () = shutdown.cancelled() => return,
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// Publishes a fresh connection, then waits for it to end. Returns why it ended, or
/// `None` on shutdown.
async fn serve_until_closed(
    server: &Arc<Server>,
    downstreams: &Weak<Downstreams>,
    running: Running,
    first_done: &mut Option<oneshot::Sender<()>>,
    shutdown: &CancellationToken,
) -> Option<String> {
    let peer = running.peer().clone();
    match super::freshness::tools(&peer).await {
        Ok(tools) => server.set_tools(tools),
        Err(error) => tracing::warn!(server = server.name(), %error, "tools/list failed"),
    }
    server.set_peer(Some(peer));
    server.set_health(Health::Ready);
    crate::telemetry::downstream_up(server.name(), true);
    if let Some(downstreams) = downstreams.upgrade() {
        downstreams.rebuild_catalog();
    }
    tracing::info!(server = server.name(), tools = server.tools().len(), "downstream ready");
    if let Some(done) = first_done.take() {
        let _ = done.send(());
    }
    let ended = tokio::select! {
        quit = running.waiting() => Some(format!("connection closed ({quit:?})")),
        () = shutdown.cancelled() => None,
    };
    server.set_peer(None);
    crate::telemetry::downstream_up(server.name(), false);
    ended
}

/// Connects a session's own connection to a `scope = "session"` server and keeps it until
/// `stop` (the session ended) or the connection closes; no restart (the session's next
/// call starts a new one). Returns once the connection is ready to take calls.
pub(super) async fn start_session_child(
    server: &Arc<Server>,
    downstreams: &Weak<Downstreams>,
    stop: CancellationToken,
) -> Result<(), String> {
    let running = tokio::select! {
        running = connect(server, downstreams) => running?,
        () = stop.cancelled() => return Err("the session ended".to_owned()),
    };
    let peer = running.peer().clone();
    match super::freshness::tools(&peer).await {
        Ok(tools) => server.set_tools(tools),
        Err(error) => tracing::warn!(server = server.name(), %error, "tools/list failed on a session child"),
    }
    server.set_peer(Some(peer));
    server.set_health(Health::Ready);
    tracing::info!(server = server.name(), "session child ready");
    let server = server.clone();
    tokio::spawn(async move {
        tokio::select! {
            quit = running.waiting() => {
                tracing::warn!(server = server.name(), ?quit, "session child closed");
            }
            () = stop.cancelled() => tracing::debug!(server = server.name(), "session ended; stopping its child"),
        }
        server.set_peer(None);
        server.set_health(Health::Down { reason: "session child stopped".to_owned() });
    });
    Ok(())
}

async fn connect(server: &Arc<Server>, downstreams: &Weak<Downstreams>) -> Result<Running, String> {
    let handler = DownstreamHandler { server: server.clone(), downstreams: downstreams.clone() };
    let routes = server.progress.clone();
    let calls = server.calls.clone();
    let lifecycle = match server.manifest().protocol {
        Protocol::Legacy => ClientLifecycleMode::Initialize,
        Protocol::Auto => ClientLifecycleMode::Auto {
            preferred_versions: vec![ProtocolVersion::default()],
            legacy_version: None,
        },
    };
    match &server.manifest().transport {
        Transport::Stdio(command) => {
            let mut cmd = tokio::process::Command::new(&command.program);
            cmd.args(&command.args).envs(&command.env).current_dir(&command.cwd);
            let (child, _stderr) = TokioChildProcess::builder(cmd)
                .stderr(Stdio::inherit())
                .spawn()
                .map_err(|e| format!("could not run {}: {e}", command.program.display()))?;
            let transport = Tap::new(IntoTransport::<RoleClient, _, _>::into_transport(child), routes, calls);
            handler
                .serve_with_lifecycle(transport, lifecycle)
                .await
                .map_err(|e| format!("MCP initialize failed: {e}"))
        }
        Transport::StreamableHttp(target) => {
            let mut config = StreamableHttpClientTransportConfig::with_uri(target.url.as_str())
                .max_concurrent_requests(HTTP_MAX_IN_FLIGHT);
            if !target.headers.is_empty() {
                config = config.custom_headers(header_map(&target.headers)?);
            }
            let transport = StreamableHttpClientTransport::with_client(reqwest::Client::new(), config);
            let transport = Tap::new(transport, routes, calls);
            handler
                .serve_with_lifecycle(transport, lifecycle)
                .await
                .map_err(|e| format!("MCP initialize with {} failed: {e}", target.url))
        }
        Transport::Sse(target) => {
            let http = reqwest::Client::builder()
                .default_headers(header_map(&target.headers)?.into_iter().collect())
                .build()
                .map_err(|e| format!("HTTP client: {e}"))?;
            let transport = SseClientTransport::connect(http, target.url.as_str())
                .await
                .map_err(|e| format!("could not open the SSE stream at {}: {e}", target.url))?;
            let transport = Tap::new(transport, routes, calls);
            handler
                .serve_with_lifecycle(transport, lifecycle)
                .await
                .map_err(|e| format!("MCP initialize with {} failed: {e}", target.url))
        }
    }
}

fn header_map(
    headers: &std::collections::BTreeMap<String, String>,
) -> Result<std::collections::HashMap<http::HeaderName, http::HeaderValue>, String> {
    headers
        .iter()
        .map(|(name, value)| {
            let name = http::HeaderName::try_from(name.as_str()).map_err(|e| format!("header {name}: {e}"))?;
            let value = http::HeaderValue::try_from(value.as_str()).map_err(|e| format!("header {name}: {e}"))?;
            Ok((name, value))
        })
        .collect()
}
