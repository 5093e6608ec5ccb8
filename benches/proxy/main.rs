//! `cargo bench --bench proxy` (or `benches/run`, which installs the peers first): Airlock's
//! per-call overhead, throughput, cold start and memory, side by side with the peer proxies,
//! printed as one markdown report. See `benches/README.md`.
//!
//! Owns: the order of the run and its knobs (environment variables below).
//! Uses: the built `airlock` binary; rmcp's client as the one load generator for every target.
//! Must not: assert on any figure; talk to anything but 127.0.0.1.
//!
//! Knobs: `BENCH_CALLS` (sequential calls per target, 2000), `BENCH_SECS` (throughput window
//! per cell, 2), `BENCH_COLD_RUNS` (7), `BENCH_ONLY` (comma-separated target keys, e.g.
//! `direct,airlock-stdio-none`), `BENCH_OUT` (also write the report there), `BENCH_WRAP`
//! (command prefix for Airlock, e.g. `perf record -g -o FILE --`), `BENCH_NODE`,
//! `BENCH_SUPERGATEWAY_JS`, `BENCH_MCP_PROXY_JS`, `BENCH_MCP_PROXY_PY`, `BENCH_VERSIONS`.

#![allow(clippy::print_stdout)]

mod disk;
mod floor;
mod report;
mod stats;
mod targets;
mod workloads;

use std::process::ExitCode;
use std::time::Duration;

use report::{CALLERS, ColdRow, LatencyRow, Report, ThroughputRow};
use targets::{Audit, Env, Peer, Target};

const WARMUP: usize = 200;
/// Client-side cap on concurrent HTTP POSTs: above the largest caller count.
const HTTP_IN_FLIGHT: usize = 256;

const PEERS: [Target; 3] = [
    Target::Peer(Peer::Supergateway),
    Target::Peer(Peer::McpProxyNpm),
    Target::Peer(Peer::McpProxyPy),
];

struct Knobs {
    calls: usize,
    window: Duration,
    cold_runs: usize,
    only: Option<Vec<String>>,
}

impl Knobs {
    fn from_env() -> Self {
        let num = |name: &str, default: usize| std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default);
        Self {
            calls: num("BENCH_CALLS", 2000),
            window: Duration::from_secs_f64(
                std::env::var("BENCH_SECS").ok().and_then(|v| v.parse().ok()).unwrap_or(2.0),
            ),
            cold_runs: num("BENCH_COLD_RUNS", 7),
            only: std::env::var("BENCH_ONLY").ok().map(|v| v.split(',').map(|s| s.trim().to_owned()).collect()),
        }
    }

    fn wants(&self, target: Target) -> bool {
        self.only.as_ref().is_none_or(|only| only.contains(&target.key()))
    }
}

fn main() -> ExitCode {
    // `cargo bench` passes `--bench`; every knob is an environment variable.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("bench: {e}");
            return ExitCode::from(2);
        }
    };
    let floor = std::env::var(floor::ROLE).is_ok_and(|r| r == floor::ROLE_ECHO_HTTP);
    let result = if floor { runtime.block_on(floor::serve_echo_http()) } else { runtime.block_on(run()) };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench: {e:#}");
            ExitCode::from(2)
        }
    }
}

async fn run() -> anyhow::Result<()> {
    let env = Env::from_env()?;
    let knobs = Knobs::from_env();
    let mut report = Report {
        machine: machine(),
        calls: knobs.calls,
        window: knobs.window,
        latency: Vec::new(),
        throughput: Vec::new(),
        cold: Vec::new(),
        fdatasync: disk::fdatasync_floor(env.scratch.path(), 500).map_err(|e| format!("failed: {e}")),
    };
    let mut targets = vec![
        Target::Direct,
        Target::HttpFloor,
        Target::AirlockStdio(Audit::None),
        Target::AirlockStdio(Audit::Fsync),
        Target::AirlockHttp(Audit::None),
        Target::AirlockHttp(Audit::Fsync),
    ];
    targets.extend(PEERS);
    for target in targets.into_iter().filter(|t| knobs.wants(*t)) {
        eprintln!("bench: {} …", target.key());
        let (row, tput) = measure(&env, &knobs, target).await;
        report.latency.push(row);
        if let Some(cells) = tput {
            report.throughput.push(ThroughputRow { target, cells });
        }
    }
    let want_tools = direct_tool_count(&env).await?;
    let mut cold = vec![
        (Target::Direct, 1),
        (Target::AirlockStdio(Audit::None), 1),
        (Target::AirlockStdio(Audit::None), 8),
        (Target::AirlockHttp(Audit::None), 1),
        (Target::AirlockHttp(Audit::None), 8),
    ];
    cold.extend(PEERS.map(|p| (p, 1)));
    for (target, downstreams) in cold.into_iter().filter(|(t, _)| knobs.wants(*t)) {
        eprintln!("bench: cold start {} × {downstreams} …", target.key());
        let result = match env.missing(target) {
            Some(why) => Err(why.to_owned()),
            None => workloads::cold_start(&env, target, downstreams, knobs.cold_runs, want_tools * downstreams)
                .await
                .map_err(|e| format!("failed: {e:#}")),
        };
        report.cold.push(ColdRow { target, downstreams, result });
    }
    let text = report.render();
    println!("{text}");
    if let Ok(path) = std::env::var("BENCH_OUT") {
        std::fs::write(&path, &text)?;
        eprintln!("bench: report written to {path}");
    }
    Ok(())
}

/// Latency (and, for HTTP targets and the floor, throughput) of one target on one session.
async fn measure(env: &Env, knobs: &Knobs, target: Target) -> (LatencyRow, Option<Vec<Result<workloads::Throughput, String>>>) {
    let mut row = LatencyRow { target, result: Err(String::new()), rss_idle_kib: None, rss_after_kib: None, wrote_data: None, cost: None };
    let measures_throughput = true;
    if let Some(why) = env.missing(target) {
        row.result = Err(why.to_owned());
        let cells = measures_throughput.then(|| CALLERS.iter().map(|_| Err(why.to_owned())).collect());
        return (row, cells);
    }
    let running = match targets::start(env, target, 1, HTTP_IN_FLIGHT).await {
        Ok(r) => r,
        Err(e) => {
            row.result = Err(format!("failed to start: {e:#}"));
            return (row, None);
        }
    };
    let peer = running.client.peer().clone();
    tokio::time::sleep(Duration::from_millis(300)).await;
    row.rss_idle_kib = running.pid.and_then(targets::rss_kib);
    let before = running.pid.and_then(targets::usage);
    row.result = workloads::latency(&peer, target.echo_tool(), WARMUP, knobs.calls).await.map_err(|e| format!("failed: {e:#}"));
    // The target's own CPU over the sequential run (warm-up included: those calls cost the
    // same): what its added latency is made of, printed next to each target.
    let after = running.pid.and_then(targets::usage);
    row.cost = before.zip(after).and_then(|(b, a)| a.per_call_since(b, WARMUP + knobs.calls));
    let mut cells = None;
    if measures_throughput {
        let mut v = Vec::new();
        for callers in CALLERS {
            eprintln!("bench:   {callers} callers …");
            v.push(
                workloads::throughput(&peer, target.echo_tool(), callers, knobs.window)
                    .await
                    .map_err(|e| format!("failed: {e:#}")),
            );
        }
        cells = Some(v);
    }
    row.rss_after_kib = running.pid.and_then(targets::rss_kib);
    if target.audit().is_some() {
        row.wrote_data = Some(running.wrote_data());
    }
    running.stop().await;
    (row, cells)
}

/// How many tools one `airlock demo-tools` lists (so cold start knows when a list is complete).
async fn direct_tool_count(env: &Env) -> anyhow::Result<usize> {
    let running = targets::start(env, Target::Direct, 1, 16).await?;
    let n = running.client.peer().list_all_tools().await?.len();
    running.stop().await;
    Ok(n)
}

/// nproc, CPU model and kernel, from /proc; plus what `benches/run` says about versions.
fn machine() -> String {
    let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, m)| m.trim().to_owned())
        .unwrap_or_else(|| "unknown CPU".to_owned());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim().to_owned();
    let mut text = format!("Machine: {cpus} CPUs (nproc), {model}, Linux {kernel}.");
    if let Ok(v) = std::env::var("BENCH_VERSIONS") {
        text.push_str(&format!("\nVersions: {v}."));
    }
    text.push_str(
        "\nClient: rmcp 3.9.0 (Rust) for every target, release build, on the same machine. \
         Downstream: `airlock demo-tools`, tool `echo`.",
    );
    text
}
