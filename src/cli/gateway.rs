//! `airlock gateway run|start|stop|status`: the gateway that owns a data dir, and its
//! operators' view of it over the control socket.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::control::{self, Request, StatusReport};

/// `airlock gateway …`.
#[derive(Debug, clap::Subcommand)]
pub(crate) enum Command {
    /// Run the data dir's gateway in the foreground (what `airlock serve` starts in the
    /// background, and what a systemd unit runs). Serves the control socket, and HTTP when
    /// `[http] listen` is set.
    Run(super::ConfigArg),
    /// Start the data dir's gateway in the background unless one runs; print its pid.
    Start(super::ConfigArg),
    /// Stop the running gateway gracefully (operators only) and wait until it has exited.
    Stop(Target),
    /// Pid, uptime, sessions, held calls, downstreams and log size of the running gateway.
    Status {
        #[command(flatten)]
        target: Target,
        /// Print the status as JSON.
        #[arg(long)]
        json: bool,
    },
}

/// Which gateway: the one of `--config`'s data dir, or of `--data-dir`.
#[derive(Debug, clap::Args)]
pub(crate) struct Target {
    #[command(flatten)]
    config: super::ConfigArg,
    /// The data dir whose gateway to reach (instead of reading --config).
    #[arg(long, value_name = "DIR", conflicts_with = "config")]
    data_dir: Option<PathBuf>,
}

impl Target {
    /// The data dir, and the configuration to name in the hello (none with --data-dir).
    pub(super) fn resolve(&self) -> anyhow::Result<(PathBuf, Option<PathBuf>)> {
        match &self.data_dir {
            Some(dir) => Ok((dir.clone(), None)),
            None => {
                let config = load_config(&self.config)?;
                Ok((config.gateway.data_dir.clone(), super::serve::canonical_config(&config)))
            }
        }
    }
}

/// How long `stop` waits for the gateway to exit.
const STOP_WITHIN: Duration = Duration::from_secs(60);

pub(crate) fn run(command: Command) -> anyhow::Result<ExitCode> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    match command {
        Command::Run(config) => run_gateway(&config),
        Command::Start(config) => small_runtime()?.block_on(start(&load_config(&config)?)),
        Command::Stop(target) => {
            let (data_dir, config) = target.resolve()?;
            small_runtime()?.block_on(stop(&data_dir, config))
        }
        Command::Status { target, json } => {
            let (data_dir, config) = target.resolve()?;
            small_runtime()?.block_on(status(&data_dir, config, json))
        }
    }
}

/// `airlock.toml` alone (no manifests, policies or database): what clients of a gateway
/// need to find it.
pub(crate) fn load_config(config: &super::ConfigArg) -> anyhow::Result<Config> {
    if let Some(path) = config.config.as_ref().filter(|p| !p.is_file()) {
        anyhow::bail!("cannot read {}: no such file", path.display());
    }
    Config::load(config.config.as_deref())
        .map_err(|problems| anyhow::anyhow!("the configuration has problems (run `airlock check`):\n{problems}"))
}

fn small_runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread().enable_all().build()?)
}

fn run_gateway(config: &super::ConfigArg) -> anyhow::Result<ExitCode> {
    let checked = super::check::load_everything(config)?;
    if !checked.problems.is_empty() {
        anyhow::bail!("the configuration has problems (run `airlock check`):\n{}", checked.problems);
    }
    // As in `serve`: before the runtime, the guard dropped after it.
    let _telemetry = crate::telemetry::install(&checked.config.telemetry, "info,rmcp=warn")?;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let options = super::serve::Options { http: None, stdio: false, shutdown: CancellationToken::new(), listening: None, control: true };
    runtime.block_on(super::serve::serve(checked, options))
}

/// The launch that starts this configuration's gateway.
pub(crate) fn launch(config: &Config) -> anyhow::Result<control::Launch> {
    Ok(control::Launch {
        exe: std::env::current_exe().context("could not find the airlock binary")?,
        config: super::serve::canonical_config(config),
        data_dir: config.gateway.data_dir.clone(),
    })
}

/// `airlock serve` on stdio: relays this process's stdin/stdout to the data dir's
/// gateway, starting one when none runs.
pub(crate) fn bridge(config: &Config) -> anyhow::Result<ExitCode> {
    if std::io::IsTerminal::is_terminal(&std::io::stdin()) {
        // Someone ran `airlock serve` by hand: say what it is waiting for.
        eprintln!(
            "airlock: serving MCP on stdin/stdout and waiting for an MCP client; configure your client to launch `{} serve --config <airlock.toml>` (README: Client configuration), or use --http ADDR",
            std::env::current_exe().map(|p| p.display().to_string()).unwrap_or_else(|_| "airlock".into())
        );
    }
    let settings = control::BridgeSettings { launch: launch(config)?, max_message: config.gateway.max_message_size };
    let runtime = small_runtime()?;
    let handoff = crate::gateway::stdio::client_stdio_fds();
    let result = runtime.block_on(control::run_bridge(settings, crate::gateway::stdio::client_stdio, handoff));
    // A read of stdin may still be pending on the blocking pool; it must not hold the exit.
    runtime.shutdown_background();
    result?;
    Ok(ExitCode::SUCCESS)
}

async fn start(config: &Config) -> anyhow::Result<ExitCode> {
    let data_dir = &config.gateway.data_dir;
    match launch(config)?.ensure_running().await? {
        Some(pid) => eprintln!("airlock: started the gateway of {} (pid {pid}; log {})", data_dir.display(), control::log_path(data_dir).display()),
        None => eprintln!("airlock: the gateway of {} is already running", data_dir.display()),
    }
    // Says which gateway answers, and that it has this configuration.
    let status = fetch_status(data_dir, super::serve::canonical_config(config)).await?;
    eprintln!("airlock: gateway pid {}", status.pid);
    Ok(ExitCode::SUCCESS)
}

async fn stop(data_dir: &Path, config: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    let mut connection = match control::connect_op(data_dir, config).await {
        Ok(connection) => connection,
        Err(control::ControlError::NotRunning(_)) => {
            eprintln!("airlock: no gateway is running for {}", data_dir.display());
            return Ok(ExitCode::SUCCESS);
        }
        Err(error) => return Err(error.into()),
    };
    let pid = connection.welcome.pid;
    connection.call(&Request::Stop).await?;
    if !control::wait_until_free(data_dir, STOP_WITHIN).await {
        anyhow::bail!("the gateway (pid {pid}) did not exit within {STOP_WITHIN:?}");
    }
    eprintln!("airlock: stopped the gateway of {} (pid {pid})", data_dir.display());
    Ok(ExitCode::SUCCESS)
}

async fn fetch_status(data_dir: &Path, config: Option<PathBuf>) -> anyhow::Result<StatusReport> {
    let mut connection = control::connect_op(data_dir, config).await?;
    let value = connection.call(&Request::Status).await?;
    serde_json::from_value(value).context("the gateway's status is unreadable")
}

async fn status(data_dir: &Path, config: Option<PathBuf>, json: bool) -> anyhow::Result<ExitCode> {
    let status = match fetch_status(data_dir, config).await {
        Ok(status) => status,
        Err(error) if matches!(error.downcast_ref(), Some(control::ControlError::NotRunning(_))) => {
            eprintln!("airlock: {error}");
            return Ok(ExitCode::from(super::EXIT_FOUND_PROBLEM));
        }
        Err(error) => return Err(error),
    };
    let mut out = std::io::stdout().lock();
    if json {
        serde_json::to_writer_pretty(&mut out, &status)?;
        std::io::Write::write_all(&mut out, b"\n")?;
    } else {
        std::io::Write::write_all(&mut out, describe(&status).as_bytes())?;
    }
    Ok(ExitCode::SUCCESS)
}

fn describe(s: &StatusReport) -> String {
    let idle = s.idle_exit_secs.map_or_else(|| "never".to_owned(), |secs| humantime::format_duration(Duration::from_secs(secs)).to_string());
    let mut text = format!(
        "gateway   pid {} (airlock {}), up {}\ndata dir  {}\nconfig    {}\nsessions  {} ({} through the socket)\nheld      {} call(s)\nlog       {} records, {} bytes\nidle exit {}\n",
        s.pid,
        s.version,
        humantime::format_duration(Duration::from_secs(s.uptime_secs)),
        s.data_dir,
        s.config.as_deref().unwrap_or("built-in defaults"),
        s.sessions,
        s.attached,
        s.held_calls,
        s.log_records,
        s.log_bytes,
        idle,
    );
    for d in &s.downstreams {
        text.push_str(&format!("server    {} {}{}\n", d.name, d.state, d.reason.as_deref().map(|r| format!(": {r}")).unwrap_or_default()));
    }
    text
}
