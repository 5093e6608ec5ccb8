//! The printed report: one markdown document with the machine, latency, throughput, cold
//! start and memory tables, and the targets restated next to the figures.
//!
//! Owns: formatting only.
//! Uses: `stats` for numbers, `targets` for names.
//! Must not: measure anything.

use std::fmt::Write as _;
use std::time::Duration;

use crate::stats::{Samples, added_us, ms, ratio, us};
use crate::targets::{Audit, Target};
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
}

pub(crate) struct ThroughputRow {
    pub(crate) target: Target,
    pub(crate) cells: Vec<Result<Throughput, String>>,
}

pub(crate) struct ColdRow {
    pub(crate) target: Target,
    pub(crate) downstreams: usize,
    pub(crate) result: Result<Samples, String>,
}

pub(crate) struct Report {
    pub(crate) machine: String,
    pub(crate) calls: usize,
    pub(crate) window: Duration,
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
            "| target | transport | p50 µs | p99 µs | added p50 µs over direct | added p99 µs | p50 ratio over direct | added p50 µs over same-transport floor |"
        );
        let _ = writeln!(out, "|---|---|---:|---:|---:|---:|---:|---:|");
        let direct = self.direct();
        let http_floor =
            self.latency.iter().find(|r| r.target == Target::HttpFloor).and_then(|r| r.result.as_ref().ok());
        for row in &self.latency {
            let name = label(row.target, row.wrote_data);
            let transport = row.target.transport();
            let s = match &row.result {
                Ok(s) => s,
                Err(e) => {
                    let _ = writeln!(out, "| {name} | {transport} | {e} | | | | | |");
                    continue;
                }
            };
            let floor = if transport == "stdio" { direct } else { http_floor };
            let vs = |f: Option<&Samples>, g: fn(Duration, Duration) -> String, p: fn(&Samples) -> Duration| {
                f.map(|f| g(p(s), p(f))).unwrap_or_else(|| "–".to_owned())
            };
            let _ = writeln!(
                out,
                "| {name} | {transport} | {} | {} | {} | {} | {} | {} |",
                us(s.p50()),
                us(s.p99()),
                vs(direct, added_us, Samples::p50),
                vs(direct, added_us, Samples::p99),
                vs(direct, ratio, Samples::p50),
                vs(floor, added_us, Samples::p50),
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
        let _ = writeln!(out, "## 3. Cold start (launch → initialized → complete `tools/list`)\n");
        let _ = writeln!(out, "| target | downstreams | runs | p50 ms | max ms |");
        let _ = writeln!(out, "|---|---:|---:|---:|---:|");
        for row in &self.cold {
            let name = label(row.target, None);
            match &row.result {
                Ok(s) => {
                    let _ = writeln!(out, "| {name} ({}) | {} | {} | {} | {} |", row.target.transport(), row.downstreams, s.len(), ms(s.p50()), ms(s.max()));
                }
                Err(e) => {
                    let _ = writeln!(out, "| {name} | {} | – | {e} | |", row.downstreams);
                }
            }
        }
        out.push('\n');
    }

    fn render_memory(&self, out: &mut String) {
        let _ = writeln!(out, "## 4. Memory (resident set of the target's own process, MiB; downstream children excluded)\n");
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
        if let (Some(d), Some(s)) = (self.direct(), find(Target::AirlockStdio(Audit::Fsync))) {
            let _ = writeln!(
                out,
                "- Added p50, stdio, `durability = \"fsync\"`: {} µs (target: < 100 µs + one fsync).",
                added_us(s.p50(), d.p50())
            );
        }
        if let (Some(d), Some(s)) = (find(Target::AirlockHttp(Audit::None)), find(Target::AirlockHttp(Audit::Fsync))) {
            let _ = writeln!(out, "- HTTP p50, fsync vs none: {} vs {} µs.", us(s.p50()), us(d.p50()));
        }
        let cell = |t: Target, i: usize| {
            self.throughput.iter().find(|r| r.target == t).and_then(|r| r.cells.get(i)).and_then(|c| c.as_ref().ok())
        };
        if let (Some(on), Some(off)) = (cell(Target::AirlockHttp(Audit::Fsync), 2), cell(Target::AirlockHttp(Audit::None), 2)) {
            let _ = writeln!(
                out,
                "- Throughput at 32 callers, fsync / none: {:.0}% (target: ≥ 80%).",
                100.0 * on.per_sec() / off.per_sec().max(1e-9)
            );
        }
        for (i, callers) in CALLERS.iter().enumerate() {
            let Some(ours) = cell(Target::AirlockHttp(Audit::Fsync), i) else { continue };
            let best = self
                .throughput
                .iter()
                .filter(|r| matches!(r.target, Target::Peer(_)))
                .filter_map(|r| r.cells.get(i).and_then(|c| c.as_ref().ok()).map(|t| (r.target, t.per_sec())))
                .max_by(|a, b| a.1.total_cmp(&b.1));
            if let Some((peer, rate)) = best {
                let _ = writeln!(
                    out,
                    "- {callers} callers: Airlock HTTP (fsync row) {:.0} calls/s vs best peer {} {:.0} calls/s ({:.2}×).",
                    ours.per_sec(),
                    peer.key(),
                    rate,
                    ours.per_sec() / rate.max(1e-9)
                );
            }
        }
        let cold = |n: usize| {
            self.cold
                .iter()
                .find(|r| r.target == Target::AirlockStdio(Audit::None) && r.downstreams == n)
                .and_then(|r| r.result.as_ref().ok())
        };
        if let (Some(one), Some(eight)) = (cold(1), cold(8)) {
            let _ = writeln!(out, "- Cold start, 8 downstreams / 1: {} (target: < 1.5×).", ratio(eight.p50(), one.p50()));
        }
        out.push('\n');
    }
}
