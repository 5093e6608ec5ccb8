//! The workloads, identical for every target: sequential echo calls on a warm session,
//! N concurrent callers sharing one session, and launch → complete `tools/list`.
//!
//! Owns: timing calls from the client's side.
//! Uses: `targets` to start things; rmcp's client `Peer`.
//! Must not: compare figures against targets (the report only prints them).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use rmcp::model::CallToolRequestParams;
use rmcp::service::Peer;
use rmcp::RoleClient;
use serde_json::json;

use crate::stats::Samples;
use crate::targets::{self, Env, Target};

/// One `echo` call; checks the text came back so a broken target cannot look fast.
async fn echo(peer: &Peer<RoleClient>, tool: &'static str) -> anyhow::Result<()> {
    let args = json!({"text": "bench"});
    let params = CallToolRequestParams::new(tool).with_arguments(args.as_object().cloned().unwrap_or_default());
    let result = peer.call_tool(params).await?;
    if result.is_error == Some(true) {
        bail!("{tool} returned an error result: {result:?}");
    }
    let text = serde_json::to_string(&result.content)?;
    if !text.contains("bench") {
        bail!("{tool} did not echo: {text}");
    }
    Ok(())
}

/// `warmup` untimed calls, then `calls` timed ones, one after another.
pub(crate) async fn latency(peer: &Peer<RoleClient>, tool: &'static str, warmup: usize, calls: usize) -> anyhow::Result<Samples> {
    for _ in 0..warmup {
        echo(peer, tool).await?;
    }
    let mut times = Vec::with_capacity(calls);
    for _ in 0..calls {
        let start = Instant::now();
        echo(peer, tool).await?;
        times.push(start.elapsed());
    }
    Ok(Samples::new(times))
}

/// What `callers` concurrent loops achieved in one window.
#[derive(Debug, Clone)]
pub(crate) struct Throughput {
    pub(crate) calls: usize,
    pub(crate) errors: u64,
    pub(crate) elapsed: Duration,
    pub(crate) samples: Samples,
}

impl Throughput {
    pub(crate) fn per_sec(&self) -> f64 {
        self.calls as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// `callers` tasks share one session and call `echo` back to back for `window`
/// (after a short untimed warm-up at the same concurrency).
pub(crate) async fn throughput(peer: &Peer<RoleClient>, tool: &'static str, callers: usize, window: Duration) -> anyhow::Result<Throughput> {
    run_callers(peer, tool, callers, window / 5).await?;
    run_callers(peer, tool, callers, window).await
}

async fn run_callers(peer: &Peer<RoleClient>, tool: &'static str, callers: usize, window: Duration) -> anyhow::Result<Throughput> {
    let errors = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let deadline = start + window;
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..callers {
        let peer = peer.clone();
        let errors = errors.clone();
        tasks.spawn(async move {
            let mut times = Vec::new();
            while Instant::now() < deadline {
                let t = Instant::now();
                match echo(&peer, tool).await {
                    Ok(()) => times.push(t.elapsed()),
                    Err(_) => {
                        // Bounded: a failing target must not spin; count and back off.
                        errors.fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
            }
            times
        });
    }
    let mut all = Vec::new();
    while let Some(times) = tasks.join_next().await {
        all.extend(times.context("caller task panicked")?);
    }
    let elapsed = start.elapsed();
    let errors = errors.load(Ordering::Relaxed);
    if all.is_empty() {
        bail!("no call succeeded ({errors} errors)");
    }
    Ok(Throughput { calls: all.len(), errors, elapsed, samples: Samples::new(all) })
}

/// What `cold_start` measured.
pub(crate) struct Cold {
    /// Launch → `initialize` answered.
    pub(crate) initialized: Samples,
    /// Launch → a `tools/list` listing every downstream's tools.
    pub(crate) listed: Samples,
    /// Runs whose first `tools/list` lacked tools (a gateway must not answer before its
    /// catalog is complete).
    pub(crate) partial_first_lists: usize,
}

/// Launch → initialized session → `tools/list` returning every downstream's tools, `runs`
/// times.
pub(crate) async fn cold_start(env: &Env, target: Target, downstreams: usize, runs: usize, want_tools: usize) -> anyhow::Result<Cold> {
    let mut times = Vec::with_capacity(runs);
    let mut inits = Vec::with_capacity(runs);
    let mut partial = 0;
    for _ in 0..runs {
        let start = Instant::now();
        let running = targets::start(env, target, downstreams, 16).await?;
        inits.push(start.elapsed());
        // The clock runs until the list is complete; an incomplete first list is counted.
        let mut first = true;
        let mut listed;
        let complete = loop {
            listed = running.client.peer().list_all_tools().await?.len();
            if first && listed < want_tools {
                partial += 1;
            }
            first = false;
            if listed >= want_tools || start.elapsed() > Duration::from_secs(30) {
                break listed >= want_tools;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        };
        let elapsed = start.elapsed();
        running.stop().await;
        if !complete {
            bail!("{} listed {listed} tools, expected {want_tools}", target.key());
        }
        times.push(elapsed);
    }
    Ok(Cold { initialized: Samples::new(inits), listed: Samples::new(times), partial_first_lists: partial })
}
