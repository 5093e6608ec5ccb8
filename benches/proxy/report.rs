//! The printed report: one markdown document with the machine, latency, throughput, cold
//! start and memory tables, and the targets restated next to the figures.
//!
//! Owns: formatting only.
//! Uses: `stats` for numbers, `targets` for names.
//! Must not: measure anything.

use std::fmt::Write as _;
use std::time::Duration;

use crate::stats::{Samples, added_us, ms, ratio, us};
use crate::targets::{Audit, CallCost, Target};
use crate::workloads;
use crate::workloads::Throughput;

/// Concurrency levels of the throughput table.
pub(crate) const CALLERS: [usize; 4] = [1, 8, 32, 128];

/// One target's sequential-latency result.
pub(crate) struct LatencyRow {
    pub(crate) target: Target,
    pub(crate) result: Result<Samples, String>,
    pub(crate) rss_idle_kib: Option<u64>,
    pub(crate) rss_after_kib: Option<u64>,
    /// For Airlock: did it write a data dir (audit log) during the run?
    pub(crate) wrote_data: Option<bool>,
    /// The target's own process over the sequential run, per call (for Airlock over stdio
    /// the shared gateway; for the direct floor the downstream itself).
    pub(crate) cost: Option<CallCost>,
}

pub(crate) struct ThroughputRow {
    pub(crate) target: Target,
    pub(crate) cells: Vec<Result<Throughput, String>>,
}

pub(crate) struct ColdRow {
    pub(crate) target: Target,
    pub(crate) downstreams: usize,
    pub(crate) result: Result<workloads::Cold, String>,
}

pub(crate) struct Report {
    pub(crate) machine: String,
    pub(crate) calls: usize,
    pub(crate) window: Duration,
    /// The bare `fdatasync` p50 on the data dir's disk.
    pub(crate) fdatasync: Result<Samples, String>,
    pub(crate) latency: Vec<LatencyRow>,
    pub(crate) throughput: Vec<ThroughputRow>,
    pub(crate) cold: Vec<ColdRow>,
}

/// What the row is called in the tables, with the audit setting stated honestly.
fn label(target: Target, wrote_data: Option<bool>) -> String {
    let base = match target {
        Target::Direct => "direct → `airlock demo-tools` (floor)".to_owned(),
        Target::HttpFloor => "rmcp echo server on Airlock's HTTP stack (HTTP floor)".to_owned(),
        Target::AirlockStdio(_) => "Airlock, stdio".to_owned(),
        Target::AirlockHttp(_) => "Airlock, HTTP".to_owned(),
        Target::Peer(_) => format!("{} (peer)", target.key()),
    };
    match (target.audit(), wrote_data) {
        (None, _) => base,
        (Some(a), Some(false)) => {
            format!("{base}, `durability = \"{}\"` (ignored by this build: no audit log written)", a.key())
        }
        (Some(a), _) => format!("{base}, `durability = \"{}\"`", a.key()),
    }
}

fn kib_text(v: u64) -> String {
    kib(Some(v))
}

fn kib(v: Option<u64>) -> String {
    v.map(|k| format!("{:.1}", k as f64 / 1024.0)).unwrap_or_else(|| "–".to_owned())
}

impl Report {
    fn direct(&self) -> Option<&Samples> {
        self.latency.iter().find(|r| r.target == Target::Direct).and_then(|r| r.result.as_ref().ok())
    }

    fn wrote(&self, target: Target) -> Option<bool> {
        self.latency.iter().find(|r| r.target == target).and_then(|r| r.wrote_data)
    }

    pub(crate) fn render(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "# Airlock bench\n\n{}\n", self.machine);
        self.render_latency(&mut out);
        self.render_throughput(&mut out);
        self.render_cold(&mut out);
        self.render_memory(&mut out);
        self.render_targets(&mut out);
        out
    }

    fn render_latency(&self, out: &mut String) {
        let _ = writeln!(
            out,
            "## 1. Per-call latency (warm session, sequential client, `echo`, {} calls)\n",
            self.calls
        );
        let _ = writeln!(
            out,
            "| target | transport | p50 µs | p99 µs | added p50 µs over direct | added p99 µs | p50 ratio over direct | added p50 µs over same-transport floor | its process: CPU µs a call (user + kernel), context switches |"
        );
        let _ = writeln!(out, "|---|---|---:|---:|---:|---:|---:|---:|---:|");
        let direct = self.direct();
        let http_floor =
            self.latency.iter().find(|r| r.target == Target::HttpFloor).and_then(|r| r.result.as_ref().ok());
        for row in &self.latency {
            let name = label(row.target, row.wrote_data);
            let transport = row.target.transport();
            let s = match &row.result {
                Ok(s) => s,
                Err(e) => {
                    let _ = writeln!(out, "| {name} | {transport} | {e} | | | | | | |");
                    continue;
                }
            };
            let floor = if transport == "stdio" { direct } else { http_floor };
            let vs = |f: Option<&Samples>, g: fn(Duration, Duration) -> String, p: fn(&Samples) -> Duration| {
                f.map(|f| g(p(s), p(f))).unwrap_or_else(|| "–".to_owned())
            };
            let _ = writeln!(
                out,
                "| {name} | {transport} | {} | {} | {} | {} | {} | {} | {} |",
                us(s.p50()),
                us(s.p99()),
                vs(direct, added_us, Samples::p50),
                vs(direct, added_us, Samples::p99),
                vs(direct, ratio, Samples::p50),
                vs(floor, added_us, Samples::p50),
                row.cost.map_or_else(|| "–".to_owned(), cost_text),
            );
        }
        out.push('\n');
    }

    fn render_throughput(&self, out: &mut String) {
        let _ = writeln!(
            out,
            "## 2. Throughput (N callers sharing one session, {:.1} s window each): calls/s · p99 ms\n",
            self.window.as_secs_f64()
        );
        let head: Vec<String> = CALLERS.iter().map(|c| format!("{c} callers")).collect();
        let _ = writeln!(out, "| target | transport | {} |", head.join(" | "));
        let _ = writeln!(out, "|---|---|{}", "---:|".repeat(CALLERS.len()));
        for row in &self.throughput {
            let cells: Vec<String> = row
                .cells
                .iter()
                .map(|c| match c {
                    Ok(t) if t.errors > 0 => format!("{:.0} · {} ({} errors)", t.per_sec(), ms(t.samples.p99()), t.errors),
                    Ok(t) => format!("{:.0} · {}", t.per_sec(), ms(t.samples.p99())),
                    Err(e) => e.clone(),
                })
                .collect();
            let name = label(row.target, self.wrote(row.target));
            let _ = writeln!(out, "| {name} | {} | {} |", row.target.transport(), cells.join(" | "));
        }
        out.push('\n');
    }

    fn render_cold(&self, out: &mut String) {
        let _ = writeln!(out, "## 3. Cold start (launch → `initialize` answered; launch → complete `tools/list`)\n");
        let _ = writeln!(out, "| target | downstreams | runs | initialize p50 ms | list p50 ms | list max ms | first list incomplete |");
        let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|---:|");
        for row in &self.cold {
            let name = label(row.target, None);
            match &row.result {
                Ok(c) => {
                    let s = &c.listed;
                    let _ = writeln!(
                        out,
                        "| {name} ({}) | {} | {} | {} | {} | {} | {} |",
                        row.target.transport(),
                        row.downstreams,
                        s.len(),
                        ms(c.initialized.p50()),
                        ms(s.p50()),
                        ms(s.max()),
                        c.partial_first_lists
                    );
                }
                Err(e) => {
                    let _ = writeln!(out, "| {name} | {} | – | {e} | |", row.downstreams);
                }
            }
        }
        out.push('\n');
    }

    fn render_memory(&self, out: &mut String) {
        let _ = writeln!(out, "## 4. Memory (resident set of the target's own process, MiB; downstream children excluded; Airlock over stdio: the shared gateway, not its bridge)\n");
        let _ = writeln!(out, "| target | idle (after initialize) | after the latency + throughput runs | 10,000 pending approvals |");
        let _ = writeln!(out, "|---|---:|---:|---:|");
        for row in &self.latency {
            let pending = if row.target.audit().is_some() { "n/a until approvals" } else { "–" };
            let name = label(row.target, row.wrote_data);
            let _ = writeln!(out, "| {name} | {} | {} | {pending} |", kib(row.rss_idle_kib), kib(row.rss_after_kib));
        }
        out.push('\n');
    }

    fn render_targets(&self, out: &mut String) {
        let _ = writeln!(out, "## 5. Against the issue's targets (figures only; nothing here is asserted)\n");
        let find = |t: Target| self.latency.iter().find(|r| r.target == t).and_then(|r| r.result.as_ref().ok());
        let sync = self.fdatasync.as_ref().ok().map(Samples::p50);
        match &self.fdatasync {
            Ok(s) => {
                let _ = writeln!(out, "Bare `fdatasync` of a 256-byte write on the data dir's disk: p50 {} µs, p99 {} µs ({} samples).\n", us(s.p50()), us(s.p99()), s.len());
            }
            Err(e) => {
                let _ = writeln!(out, "Bare `fdatasync`: {e}\n");
            }
        }
        let _ = writeln!(out, "| mode | transport | added p50 µs | over | target µs | met | where the added time goes (measured in this run) |");
        let _ = writeln!(out, "|---|---|---:|---|---:|---|---|");
        let cost_of = |t: Target| self.latency.iter().find(|r| r.target == t).and_then(|r| r.cost);
        for target in [
            Target::AirlockStdio(Audit::None),
            Target::AirlockStdio(Audit::Fsync),
            Target::AirlockHttp(Audit::None),
            Target::AirlockHttp(Audit::Fsync),
        ] {
            let (floor_name, floor) = match target {
                Target::AirlockHttp(_) => ("HTTP floor", find(Target::HttpFloor)),
                _ => ("direct stdio", self.direct()),
            };
            let budget = match (target.audit(), sync) {
                (Some(Audit::Fsync), Some(s)) => Some(Duration::from_micros(100) + 2 * s),
                (Some(Audit::Fsync), None) => None,
                _ => Some(Duration::from_micros(100)),
            };
            let (added, met) = match (find(target), floor) {
                (Some(s), Some(f)) => {
                    let added = s.p50().saturating_sub(f.p50());
                    let met = budget.map_or("no fdatasync figure", |b| if added <= b { "met" } else { "MISSED" });
                    (added_us(s.p50(), f.p50()), met)
                }
                _ => ("–".to_owned(), "not measured"),
            };
            let floor_target = if matches!(target, Target::AirlockHttp(_)) { Target::HttpFloor } else { Target::Direct };
            let why = why_added(target, cost_of(target), cost_of(floor_target), sync);
            let _ = writeln!(
                out,
                "| {} | {} | {added} | {floor_name} | {} | {met} | {why} |",
                target.audit().map_or("", Audit::key),
                target.transport(),
                budget.map_or("–".to_owned(), |b| format!("{:.0}", b.as_secs_f64() * 1e6)),
            );
        }
        out.push('\n');
        let cell = |t: Target, i: usize| {
            self.throughput.iter().find(|r| r.target == t).and_then(|r| r.cells.get(i)).and_then(|c| c.as_ref().ok())
        };
        let _ = writeln!(out, "Calls/s against the best peer at each concurrency (target with `fsync`: ≥ 1.00×):\n");
        let head: Vec<String> = CALLERS.iter().map(|c| format!("{c} callers")).collect();
        let _ = writeln!(out, "| mode | transport | {} |", head.join(" | "));
        let _ = writeln!(out, "|---|---|{}", "---:|".repeat(CALLERS.len()));
        for target in [
            Target::AirlockStdio(Audit::None),
            Target::AirlockStdio(Audit::Fsync),
            Target::AirlockHttp(Audit::None),
            Target::AirlockHttp(Audit::Fsync),
        ] {
            let cells: Vec<String> = (0..CALLERS.len())
                .map(|i| {
                    let best = self
                        .throughput
                        .iter()
                        .filter(|r| matches!(r.target, Target::Peer(_)))
                        .filter_map(|r| r.cells.get(i).and_then(|c| c.as_ref().ok()).map(|t| (r.target, t.per_sec())))
                        .max_by(|a, b| a.1.total_cmp(&b.1));
                    match (cell(target, i), best) {
                        (Some(ours), Some((peer, rate))) => {
                            let r = ours.per_sec() / rate.max(1e-9);
                            let mark = if target.audit() == Some(Audit::Fsync) && r < 1.0 { " MISSED" } else { "" };
                            format!("{:.0} vs {} {:.0} = {r:.2}×{mark}", ours.per_sec(), peer.key(), rate)
                        }
                        (Some(ours), None) => format!("{:.0} (no peer)", ours.per_sec()),
                        _ => "–".to_owned(),
                    }
                })
                .collect();
            let _ = writeln!(out, "| {} | {} | {} |", target.audit().map_or("", Audit::key), target.transport(), cells.join(" | "));
        }
        out.push('\n');
        let cold = |n: usize| {
            self.cold
                .iter()
                .find(|r| r.target == Target::AirlockStdio(Audit::None) && r.downstreams == n)
                .and_then(|r| r.result.as_ref().ok())
        };
        if let Some(one) = cold(1) {
            let met = if one.initialized.p50() <= Duration::from_millis(20) { "met" } else { "MISSED" };
            let _ = writeln!(out, "- Start-up, stdio, 1 downstream, launch to `initialize` answered: p50 {} ms (target: ≤ 20 ms: {met}); first `tools/list` incomplete in {} of {} runs (target: 0).", ms(one.initialized.p50()), one.partial_first_lists, one.listed.len());
        }
        for row in self.latency.iter().filter(|r| r.target.audit().is_some()) {
            if let Some(kib) = row.rss_idle_kib {
                let met = if kib <= 20 * 1024 { "met" } else { "MISSED" };
                let _ = writeln!(out, "- Idle RSS {}: {} (target: ≤ 20 MB: {met}).", row.target.key(), kib_text(kib));
            }
        }
        if let (Some(one), Some(eight)) = (cold(1), cold(8)) {
            let _ = writeln!(out, "- Cold start, 8 downstreams / 1: {} (target: < 1.5×).", ratio(eight.listed.p50(), one.listed.p50()));
        }
        out.push('\n');
    }
}

/// `412 (301 + 111), 5.9`: CPU µs a call, user + kernel, and context switches a call.
fn cost_text(c: CallCost) -> String {
    let total = c.user + c.kernel;
    format!("{:.0} ({:.0} + {:.0}), {:.1}", total.as_secs_f64() * 1e6, c.user.as_secs_f64() * 1e6, c.kernel.as_secs_f64() * 1e6, c.switches)
}

/// What the added latency of `target` is made of, from this run's figures: the gateway's
/// CPU a call against its floor's process, and the syncs a call waits for with `fsync`.
fn why_added(target: Target, ours: Option<CallCost>, floor: Option<CallCost>, sync: Option<Duration>) -> String {
    let Some(ours) = ours else {
        return "–".to_owned();
    };
    let cpu = |c: CallCost| (c.user + c.kernel).as_secs_f64() * 1e6;
    let mut why = format!(
        "gateway CPU {:.0} µs a call ({:.0} user, {:.0} kernel, {:.1} context switches)",
        cpu(ours),
        ours.user.as_secs_f64() * 1e6,
        ours.kernel.as_secs_f64() * 1e6,
        ours.switches
    );
    if let Some(f) = floor {
        let whose = if matches!(target, Target::AirlockHttp(_)) { "the HTTP floor's server" } else { "the downstream alone" };
        why.push_str(&format!(" against {:.0} µs for {whose}", cpu(f)));
    }
    if let (Some(Audit::Fsync), Some(s)) = (target.audit(), sync) {
        why.push_str(&format!("; two fdatasyncs, {:.0} µs at the bare p50", 2.0 * s.as_secs_f64() * 1e6));
    }
    why
}
