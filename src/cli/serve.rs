//! `airlock serve`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use rmcp::ServiceExt;
use tokio_util::sync::CancellationToken;

use crate::downstream::{Downstreams, Namespacing};
use crate::gateway::stdio::LineTransport;
use crate::gateway::{Channel, Gateway};
use crate::http::HostGuard;
use crate::identity::{Authenticator, IdentityConfig};
use crate::manifest::{Manifest, Transport};

/// Arguments of `airlock serve`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    #[command(flatten)]
    config: super::ConfigArg,
    /// Serve MCP on stdin/stdout (the default when --http is not given).
    #[arg(long)]
    stdio: bool,
    /// Serve MCP over HTTP on ADDR (e.g. 127.0.0.1:8787; port 0 picks one).
    #[arg(long, value_name = "ADDR")]
    http: Option<SocketAddr>,
}

pub(crate) fn run(args: Args) -> anyhow::Result<ExitCode> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let settings = TempSettings::load(args.config.config.as_deref())?;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(serve(args, settings))
}

async fn serve(args: Args, settings: TempSettings) -> anyhow::Result<ExitCode> {
    let authenticator = Arc::new(Authenticator::new(IdentityConfig::default())?);
    let downstreams = Downstreams::start(settings.manifests, settings.namespacing).await;
    let gateway = Gateway::new(downstreams.clone(), authenticator.clone());
    let shutdown = CancellationToken::new();
    let http_addr = args.http.or(settings.listen);
    let use_stdio = args.stdio || http_addr.is_none();

    let mut tasks = tokio::task::JoinSet::new();
    if let Some(addr) = http_addr {
        let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| format!("could not listen on {addr}"))?;
        let local = listener.local_addr()?;
        // Tests and scripts read this line to find the port.
        tracing::info!(%local, "listening on http://{local}/mcp");
        eprintln!("airlock: listening on http://{local}");
        let public_url = format!("http://{local}");
        let router = crate::http::router(gateway.clone(), settings.guard, public_url, shutdown.clone());
        let shutdown = shutdown.clone();
        tasks.spawn(async move {
            if let Err(error) = crate::http::serve(listener, router, shutdown).await {
                tracing::error!(%error, "HTTP server failed");
            }
        });
    }
    if use_stdio {
        let caller = authenticator.stdio_caller()?;
        let session = gateway.session(Channel::Stdio, Some(caller));
        let shutdown = shutdown.clone();
        let only_stdio = http_addr.is_none();
        tasks.spawn(async move {
            match session.serve(LineTransport::stdio()).await {
                Ok(running) => {
                    let _ = running.waiting().await;
                }
                Err(error) => tracing::error!(%error, "stdio session ended before initialize"),
            }
            if only_stdio {
                shutdown.cancel();
            }
        });
    }
    tokio::select! {
        () = shutdown.cancelled() => {}
        _ = tokio::signal::ctrl_c() => { shutdown.cancel(); }
        () = terminated() => { shutdown.cancel(); }
    }
    downstreams.shutdown();
    tasks.abort_all();
    Ok(ExitCode::SUCCESS)
}

#[cfg(unix)]
async fn terminated() {
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(mut term) => {
            term.recv().await;
        }
        Err(_) => std::future::pending().await,
    }
}

/// TEMPORARY: minimal settings until the config module lands.
struct TempSettings {
    manifests: Vec<Manifest>,
    namespacing: Namespacing,
    listen: Option<SocketAddr>,
    guard: HostGuard,
}

impl TempSettings {
    fn load(path: Option<&Path>) -> anyhow::Result<Self> {
        let path = path.map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from("airlock.toml"));
        let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        let config: toml::Value = match std::fs::read_to_string(&path) {
            Ok(text) => toml::from_str(&text)?,
            Err(_) => toml::Value::Table(Default::default()),
        };
        let get = |section: &str, key: &str| config.get(section).and_then(|s| s.get(key)).cloned();
        let dir = get("gateway", "manifests").and_then(|v| v.as_str().map(str::to_owned)).unwrap_or("tool-manifests".into());
        let separator = get("gateway", "separator").and_then(|v| v.as_str().map(str::to_owned)).unwrap_or("__".into());
        let prefix = get("gateway", "prefix_tools").and_then(|v| v.as_bool()).unwrap_or(true);
        let listen = get("http", "listen").and_then(|v| v.as_str().and_then(|s| s.parse().ok()));
        let mut guard = HostGuard::default();
        if let Some(hosts) = get("http", "allowed_hosts").and_then(|v| v.as_array().cloned()) {
            guard.allowed_hosts = hosts.iter().filter_map(|h| h.as_str().map(str::to_owned)).collect();
        }
        let mut manifests = Vec::new();
        let dir = base.join(dir);
        let mut files: Vec<_> = std::fs::read_dir(&dir).map(|d| d.filter_map(Result::ok).map(|e| e.path()).collect()).unwrap_or_default();
        files.sort();
        for file in files.into_iter().filter(|f| f.extension().is_some_and(|e| e == "toml")) {
            let m: toml::Value = toml::from_str(&std::fs::read_to_string(&file)?)?;
            let s = |k: &str| m.get(k).and_then(|v| v.as_str().map(str::to_owned));
            let name = s("name").context("manifest without name")?;
            let transport = if let Some(url) = s("url") {
                if s("transport").as_deref() == Some("sse") { Transport::Sse { url } } else { Transport::StreamableHttp { url } }
            } else {
                Transport::Stdio {
                    command: PathBuf::from(s("command").context("manifest without command")?),
                    args: m.get("args").and_then(|a| a.as_array()).map(|a| a.iter().filter_map(|x| x.as_str().map(str::to_owned)).collect()).unwrap_or_default(),
                    env: m.get("env").and_then(|e| e.as_table()).map(|t| t.iter().filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_owned()))).collect()).unwrap_or_default(),
                    cwd: Some(base.clone()).filter(|b| !b.as_os_str().is_empty()),
                }
            };
            let hidden = m.get("tools").and_then(|t| t.as_table()).map(|t| t.iter().filter(|(_, v)| v.get("hidden").and_then(|h| h.as_bool()) == Some(true)).map(|(k, _)| k.clone()).collect()).unwrap_or_default();
            manifests.push(Manifest { name, source: file, transport, hidden });
        }
        let namespacing = if prefix { Namespacing::Prefix { separator } } else { Namespacing::None };
        Ok(Self { manifests, namespacing, listen, guard })
    }
}
