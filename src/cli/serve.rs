//! `airlock serve`: the stdio bridge to the data dir's gateway (the default), or a gateway
//! in this process (`--http`, `[http] listen`, `--standalone`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use rmcp::ServiceExt;
use tokio_util::sync::CancellationToken;

use crate::downstream::Downstreams;
use crate::gateway::stdio::LineTransport;
use crate::approval::Broker;
use crate::approval::slack::Slack;
use crate::approval::teams::Teams;
use crate::gateway::fingerprints::open_state;
use crate::gateway::reload::Starting;
use crate::gateway::{Channel, Gateway, HoldSettings, Parts};
use crate::identity::Authenticator;

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
    /// Run the gateway in this process and serve only this stdio client (the single-process
    /// mode: no bridge; exits when the client leaves). Also AIRLOCK_STANDALONE=1.
    #[arg(long)]
    standalone: bool,
}

pub(crate) fn run(args: Args) -> anyhow::Result<ExitCode> {
    let standalone = args.standalone || std::env::var_os("AIRLOCK_STANDALONE").is_some_and(|v| v == "1");
    if args.http.is_none() && !standalone {
        // The bridge's path stays cheap: airlock.toml only, no manifests, no database.
        let config = super::gateway::load_config(&args.config)?;
        if config.http.listen.is_none() {
            crate::telemetry::log_format(config.telemetry.log_format)?;
            return super::gateway::bridge(&config);
        }
    }
    let _ = rustls::crypto::ring::default_provider().install_default();
    let checked = super::check::load_everything(&args.config)?;
    if !checked.problems.is_empty() {
        anyhow::bail!("the configuration has problems (run `airlock check`):\n{}", checked.problems);
    }
    // Before the runtime: the trace exporter's blocking client lives outside it, and the
    // guard (declared first, dropped last) flushes spans after the runtime is gone.
    let _telemetry = crate::telemetry::install(&checked.config.telemetry, "info,rmcp=warn")?;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let options = Options {
        http: args.http,
        stdio: args.stdio || (args.http.is_none() && checked.config.http.listen.is_none()),
        shutdown: CancellationToken::new(),
        listening: None,
        control: true,
    };
    runtime.block_on(serve(checked, options))
}

/// How `serve` runs: from the command line, or inside `airlock demo`.
pub(crate) struct Options {
    /// Overrides `http.listen`.
    pub http: Option<SocketAddr>,
    /// Serve this process's stdin/stdout as one session; the gateway stops when it ends.
    pub stdio: bool,
    /// Stops the gateway when cancelled (signals cancel it too).
    pub shutdown: CancellationToken,
    /// Told the HTTP address once it listens.
    pub listening: Option<tokio::sync::oneshot::Sender<SocketAddr>>,
    /// Own the data dir: take its liveness lock and serve the control socket (off only in
    /// `airlock demo`, whose configuration is changed in memory).
    pub control: bool,
}

/// Runs a gateway until `options.shutdown` fires, a signal arrives, or (stdio only) the
/// client leaves; closes the audit log before returning.
pub(crate) async fn serve(checked: super::check::Checked, options: Options) -> anyhow::Result<ExitCode> {
    let config = checked.config;
    let authenticator = Arc::new(Authenticator::new(super::wiring::identity(&config.identity))?);
    let namespacing = super::wiring::namespacing(&config.gateway);
    let http_addr = options.http.or(config.http.listen);
    let stdio_caller = if options.stdio { Some(authenticator.stdio_caller()?) } else { None };
    let data_dir = &config.gateway.data_dir;
    std::fs::create_dir_all(data_dir).with_context(|| format!("could not create {}", data_dir.display()))?;
    // Taken before the database, so a second gateway is told who holds the data dir.
    let mut liveness = if options.control { Some(crate::control::Liveness::take(data_dir)?) } else { None };
    if liveness.is_some() {
        tokio::task::spawn_blocking(crate::control::PeerUser::warm_up);
    }
    // Nothing below waits for the downstreams: they start now, in parallel with the
    // databases, and the catalog fills while the gateway starts and answers `initialize`.
    // No client call reaches them before the audit log is open (the gateway is built on it).
    let started_from = checked.manifests.clone();
    let downstreams = StopOnDrop(Downstreams::start_in_background(checked.manifests, namespacing));
    // The audit log (keys, sled, journal, their fsyncs) opens on its own thread while this
    // one opens the state database; the gateway is built once both are open.
    let opening_audit = {
        let config = config.clone();
        tokio::task::spawn_blocking(move || super::wiring::open_audit(&config))
    };
    let state = open_state(data_dir).with_context(|| format!("could not open {}", data_dir.join("state").display()))?;
    let audit = opening_audit.await.context("the audit log's opening thread failed")??;
    let super::serve_state::State { fingerprints, approvals, limits } = super::serve_state::open(&config, &state).await?;
    let tasks = crate::gateway::tasks::TaskStore::in_db(&state)?;
    let approvals = Broker::open_in(approvals, audit.clone(), config.approvals.timeout)
        .await?
        .with_default_approvers(config.approvals.default_approvers.clone());
    let listener = match http_addr {
        Some(addr) => {
            Some(tokio::net::TcpListener::bind(addr).await.with_context(|| format!("could not listen on {addr}"))?)
        }
        None => None,
    };
    let public_url = match (&config.http.public_url, &listener) {
        (Some(url), _) => Some(url.as_str().trim_end_matches('/').to_owned()),
        (None, Some(listener)) => Some(format!("http://{}", listener.local_addr()?)),
        (None, None) => None,
    };
    for warning in checked.policies.warnings() {
        tracing::warn!("{warning}");
    }
    let starting = Starting::new(config.file.as_deref(), &started_from, &checked.policies);
    let gateway = Gateway::start(Parts {
        downstreams: downstreams.0.clone(),
        authenticator: authenticator.clone(),
        audit: audit.clone(),
        policies: checked.policies,
        limits,
        fingerprints,
        approvals,
        holds: HoldSettings {
            progress_every: config.approvals.progress_every,
            continue_within: config.approvals.timeout,
            public_url: public_url.clone(),
        },
        new_tools: config.gateway.new_tools,
        tasks,
    }, &starting)
    .await?;
    let reloader = super::serve_reload::start(&gateway, config.file.as_deref(), starting);
    let shutdown = options.shutdown;
    let slack = channels(&config, gateway.approvals(), public_url.as_deref())?;
    let publisher = super::wiring::witness(&config)?
        .map(|settings| crate::witness::publish::Publisher::start(settings, audit.clone()));
    let sink = match super::wiring::sink(&config)? {
        Some(settings) => Some(crate::feed::sink::Sink::start(settings, audit.clone(), &state)?),
        None => None,
    };
    let mut probes: Vec<crate::http::HealthProbe> = Vec::new();
    if let Some(p) = &publisher {
        let health = p.health();
        probes.push(("witness", Arc::new(move || health.snapshot())));
    }

    let control = match liveness.as_mut() {
        Some(liveness) => Some(start_control(&config, gateway.clone(), liveness, shutdown.clone(), listener.is_some())?),
        None => None,
    };
    if let Some(control) = &control {
        control.set_reload(reloader.clone());
        // Not over stdio: there stdout is the client's protocol (a gateway's downstream may
        // be a standalone `airlock serve` that inherited the launch's environment).
        if !options.stdio {
            crate::control::announce_ready();
        }
    }
    crate::approval::metrics::watch(gateway.approvals());
    if let Some(addr) = config.telemetry.metrics_listen {
        let local = crate::telemetry::serve_metrics(addr, shutdown.clone()).await?;
        eprintln!("airlock: metrics on http://{local}/metrics");
    }
    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(super::serve_reload::on_sighup(reloader.clone()));
    if let Some(listener) = listener {
        let local = listener.local_addr()?;
        // Tests and scripts read this line to find the port.
        tracing::info!(%local, "listening on http://{local}/mcp");
        eprintln!("airlock: listening on http://{local}");
        if let Some(listening) = options.listening {
            let _ = listening.send(local);
        }
        let public_url = public_url.unwrap_or_else(|| format!("http://{local}"));
        let guard = super::wiring::host_guard(&config.http);
        let web = super::wiring::web(&config.approvals.web, gateway.approvals().clone(), authenticator.clone(), &public_url)?;
        let view = super::wiring::audit_view(&config, web.clone(), audit.clone())?;
        let mut router = crate::http::router(gateway.clone(), guard.clone(), public_url, web, &config.http.limits, shutdown.clone(), probes);
        router = router.merge(crate::http::audit_routes(view, guard.clone(), &config.http.limits));
        if let Some(slack) = slack {
            router = router.merge(crate::http::slack_routes(slack, guard, &config.http.limits));
        }
        let shutdown = shutdown.clone();
        let limits = config.http.limits;
        tasks.spawn(async move {
            if let Err(error) = crate::http::serve(listener, router, limits, shutdown).await {
                tracing::error!(%error, "HTTP server failed");
            }
        });
    }
    if let Some(caller) = stdio_caller {
        if std::io::IsTerminal::is_terminal(&std::io::stdin()) {
            // Someone ran `airlock serve` by hand: say what it is waiting for.
            eprintln!(
                "airlock: serving MCP on stdin/stdout and waiting for an MCP client; configure your client to launch `{} serve --config <airlock.toml>` (README: Client configuration), or use --http ADDR",
                std::env::current_exe().map(|p| p.display().to_string()).unwrap_or_else(|_| "airlock".into())
            );
        }
        let session = gateway.session(Channel::Stdio, Some(caller));
        let shutdown = shutdown.clone();
        let max_message = config.gateway.max_message_size;
        tasks.spawn(async move {
            match session.serve(LineTransport::stdio(max_message)).await {
                Ok(running) => {
                    let _ = running.waiting().await;
                }
                Err(error) => tracing::error!(%error, "stdio session ended before initialize"),
            }
            shutdown.cancel();
        });
    }
    tokio::select! {
        () = shutdown.cancelled() => {}
        _ = tokio::signal::ctrl_c() => { shutdown.cancel(); }
        () = terminated() => { shutdown.cancel(); }
    }
    drop(downstreams);
    tasks.abort_all();
    drop(gateway);
    if let Some(p) = publisher {
        p.finish().await;
    }
    if let Some(sink) = sink {
        sink.finish().await;
    }
    if let Err(error) = audit.close().await {
        tracing::warn!(%error, "closing the audit log");
    }
    // Last: whoever waits for the lock (`gateway stop`, a starting gateway) finds the log closed.
    drop(liveness);
    Ok(ExitCode::SUCCESS)
}

/// The downstreams of a starting gateway, stopped however `serve` returns (a start that
/// fails after they were launched leaves no server behind).
struct StopOnDrop(Arc<Downstreams>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.shutdown();
    }
}

/// Binds the control socket and serves it for `gateway`.
fn start_control(
    config: &crate::config::Config,
    gateway: Arc<Gateway>,
    liveness: &mut crate::control::Liveness,
    shutdown: CancellationToken,
    serves_http: bool,
) -> anyhow::Result<Arc<crate::control::Control>> {
    let g = &config.gateway;
    let admission = crate::control::Admission::for_this_process(g.socket_clients.clone(), g.operators.clone());
    let listener = crate::control::bind(liveness, &admission)?;
    let settings = crate::control::ControlSettings {
        data_dir: g.data_dir.clone(),
        config: canonical_config(config),
        admission,
        max_message: g.max_message_size,
        // An HTTP gateway is a server its clients reach when they like: it never exits for
        // lack of them. Idle exit is for the gateway stdio launches start in the background.
        idle_exit: if serves_http { crate::config::IdleExit::Never } else { g.idle_exit },
    };
    Ok(crate::control::Control::start(gateway, settings, listener, shutdown))
}

/// The identity of a configuration on the control socket: its file, canonicalised.
pub(crate) fn canonical_config(config: &crate::config::Config) -> Option<PathBuf> {
    config.file.as_ref().map(|p| p.canonicalize().unwrap_or_else(|_| p.clone()))
}

/// Starts the Slack and Teams workers that are configured; they live on the broker's
/// events, off the call pipeline. Returns Slack, whose interactions `http` serves.
fn channels(
    config: &crate::config::Config,
    broker: &Broker,
    public_url: Option<&str>,
) -> anyhow::Result<Option<Arc<Slack>>> {
    let slack = match &config.approvals.slack {
        Some(slack) => {
            let settings = super::wiring::slack(slack, &config.identity, public_url)?;
            Some(Slack::start(settings, broker.clone()).context("could not start the Slack channel")?)
        }
        None => None,
    };
    match (&config.approvals.teams, public_url) {
        (Some(teams), Some(public_url)) => {
            let settings = super::wiring::teams(teams, public_url)?;
            Teams::start(settings, broker.clone()).context("could not start the Teams channel")?;
        }
        (Some(_), None) => {
            tracing::warn!("[approvals.teams] needs [http] public_url or --http for its approval links; Teams is off");
        }
        (None, _) => {}
    }
    Ok(slack)
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
