//! The report as one self-contained HTML page: no scripts, no outside assets, charts as
//! inline SVG, every value from the log escaped. The verification result comes first, so
//! a failed check is the first thing a reader sees (and the first thing a PDF prints).

use std::fmt::Write;

// The one HTML escape, which also writes bidi overrides and controls visibly.
use crate::text::html as esc;

use super::{Approval, CallRef, Counts, Day, Event, Evidence, PolicyVersion, short};

const STYLE: &str = "body{font:14px/1.45 system-ui,sans-serif;color:#1b1f24;max-width:60rem;margin:2rem auto;padding:0 1rem}\
h1{font-size:1.5rem;margin-bottom:.2rem}h2{font-size:1.15rem;margin-top:2rem;border-bottom:1px solid #d0d7de;padding-bottom:.2rem}\
table{border-collapse:collapse;width:100%;margin:.5rem 0}th,td{text-align:left;padding:.25rem .5rem;border-bottom:1px solid #eaeef2;vertical-align:top}\
th{background:#f6f8fa;font-weight:600}td.n{text-align:right;font-variant-numeric:tabular-nums}\
.banner{padding:.8rem 1rem;border-radius:6px;font-weight:600;margin:1rem 0}.ok{background:#dafbe1;border:1px solid #1a7f37}\
.bad{background:#ffebe9;border:1px solid #cf222e}.muted{color:#57606a;font-size:.9em}code{font-size:.9em;word-break:break-all}\
.grid{display:grid;grid-template-columns:repeat(auto-fit,minmax(14rem,1fr));gap:1rem}\
@media print{body{margin:0;max-width:none}h2{break-after:avoid}tr{break-inside:avoid}}";



/// The whole page.
pub fn render_html(e: &Evidence) -> String {
    let mut h = String::with_capacity(32 * 1024);
    let _ = write!(
        h,
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'; img-src data:\">\
         <meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
         <title>Airlock audit report {} to {}</title><style>{STYLE}</style></head><body>",
        esc(&e.period.from),
        esc(&e.period.to)
    );
    let _ = write!(
        h,
        "<h1>Airlock audit report</h1><div class=\"muted\">Period {} to {} (UTC) · data dir <code>{}</code> · generated {}</div>",
        esc(&e.period.from),
        esc(&e.period.to),
        esc(&e.data_dir),
        esc(&e.generated_at)
    );
    verification(&mut h, e);
    summary(&mut h, e);
    exceptions(&mut h, e);
    approvals(&mut h, &e.approvals);
    totals(&mut h, e);
    events(&mut h, "Tool changes", &e.tool_changes);
    events(&mut h, "Gateway starts", &e.restarts);
    events(&mut h, "Key rotations", &e.key_rotations);
    policy_versions(&mut h, &e.policy_versions);
    chains(&mut h, &e.approvals);
    let _ = write!(h, "<p class=\"muted\">Format {}; the same data as JSON: <code>airlock report --format json</code>.</p></body></html>", esc(e.format));
    h
}

fn verification(h: &mut String, e: &Evidence) {
    let v = &e.verification;
    let (class, head) = match v.status {
        "intact" => ("ok", "Log verified: intact"),
        "failed" => ("bad", "LOG VERIFICATION FAILED: the log was altered or damaged"),
        _ => ("bad", "LOG COULD NOT BE VERIFIED"),
    };
    let _ = write!(h, "<div class=\"banner {class}\">{head}</div><p>{}</p>", esc(&v.summary));
    let _ = write!(
        h,
        "<table><tr><th>Records checked</th><td>{}–{}</td></tr><tr><th>Signed checkpoints</th><td>{}</td></tr>\
         <tr><th>Signing keys (in order)</th><td><code>{}</code></td></tr><tr><th>Re-verify</th><td><code>{}</code></td></tr>",
        v.first_seq,
        v.last_seq,
        v.checkpoints,
        esc(&v.keys.join(" → ")),
        esc(&v.reverify)
    );
    for w in &v.warnings {
        let _ = write!(h, "<tr><th>Warning</th><td>{}</td></tr>", esc(w));
    }
    h.push_str("</table>");
}

fn summary(h: &mut String, e: &Evidence) {
    let held = e.approvals.len();
    let approved = e.approvals.iter().filter(|a| a.outcome == "approved").count();
    let denied = e.approvals.iter().filter(|a| a.outcome == "denied").count();
    let expired = e.approvals.iter().filter(|a| a.outcome == "expired").count();
    let _ = write!(
        h,
        "<h2>Summary</h2><p>{} calls decided; {held} held for a human ({approved} approved, {denied} denied, {expired} expired), \
         decided by {}. {} exceptions listed below.</p>",
        e.totals.calls,
        match super::approvers(e).len() {
            0 => "nobody".to_owned(),
            1 => "1 person".to_owned(),
            n => format!("{n} distinct people"),
        },
        exception_count(e)
    );
    h.push_str("<div class=\"grid\"><div>");
    h.push_str("<div class=\"muted\">Calls and holds per day</div>");
    h.push_str(&day_chart(&e.daily));
    h.push_str("</div><div><div class=\"muted\">Time to decision (seconds)</div>");
    let times: Vec<(String, f64)> = e
        .approvals
        .iter()
        .filter_map(|a| a.seconds_to_decision.map(|s| (a.approval_id.chars().take(11).collect(), s)))
        .collect();
    h.push_str(&bar_chart(&times));
    h.push_str("</div></div>");
}

fn exception_count(e: &Evidence) -> usize {
    let x = &e.exceptions;
    x.allowed_at_high_risk.len()
        + x.decided_near_expiry.len()
        + x.decided_after_policy_change.len()
        + x.used_while_changed.len()
        + x.without_outcome.len()
}

fn exceptions(h: &mut String, e: &Evidence) {
    let x = &e.exceptions;
    h.push_str("<h2>Exceptions</h2>");
    call_list(h, "Calls allowed at high or critical risk without a hold", &x.allowed_at_high_risk);
    call_list(h, "Calls to a tool after it changed (critical until accepted)", &x.used_while_changed);
    text_list(h, "Holds decided with less than a tenth of their time left", &x.decided_near_expiry);
    text_list(h, "Holds decided after the policy changed while they waited", &x.decided_after_policy_change);
    text_list(h, "Calls without a recorded outcome", &x.without_outcome);
}

fn call_list(h: &mut String, title: &str, calls: &[CallRef]) {
    let _ = write!(h, "<h3>{} ({})</h3>", esc(title), calls.len());
    if calls.is_empty() {
        h.push_str("<p class=\"muted\">None.</p>");
        return;
    }
    h.push_str("<table><tr><th>seq</th><th>time</th><th>tool</th><th>caller</th><th>decision</th><th>risk</th><th>reason</th></tr>");
    for c in calls {
        let _ = write!(
            h,
            "<tr><td class=\"n\">{}</td><td>{}</td><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            c.seq,
            esc(&c.time),
            esc(&c.tool),
            esc(&c.principal),
            esc(&c.decision),
            esc(&c.risk),
            esc(&c.note)
        );
    }
    h.push_str("</table>");
}

fn text_list(h: &mut String, title: &str, items: &[String]) {
    let _ = write!(h, "<h3>{} ({})</h3>", esc(title), items.len());
    if items.is_empty() {
        h.push_str("<p class=\"muted\">None.</p>");
        return;
    }
    h.push_str("<ul>");
    for i in items {
        let _ = write!(h, "<li>{}</li>", esc(i));
    }
    h.push_str("</ul>");
}

fn approvals(h: &mut String, approvals: &[Approval]) {
    let _ = write!(h, "<h2>Held calls and who decided them ({})</h2>", approvals.len());
    if approvals.is_empty() {
        h.push_str("<p class=\"muted\">No call was held in this period.</p>");
        return;
    }
    h.push_str("<table><tr><th>requested</th><th>tool</th><th>caller</th><th>rule, quorum</th><th>decided by (channel): comment</th><th>outcome</th><th>time to decision</th></tr>");
    for a in approvals {
        let votes: Vec<String> = a
            .votes
            .iter()
            .map(|v| {
                let comment = if v.comment.is_empty() { String::new() } else { format!(": “{}”", esc(&v.comment)) };
                format!("{} {} ({}){comment}", esc(&v.approver), esc(&v.decision), esc(&v.channel))
            })
            .collect();
        let took = a.seconds_to_decision.map_or_else(|| "—".to_owned(), |s| format!("{s:.1} s"));
        let _ = write!(
            h,
            "<tr><td>{}<div class=\"muted\"><code>{}</code></div></td><td><code>{}</code></td><td>{}</td><td>{} ({}), {}{}</td>\
             <td>{}</td><td><b>{}</b><div class=\"muted\">{}</div></td><td class=\"n\">{took}</td></tr>",
            esc(&a.requested_at),
            esc(&a.approval_id),
            esc(&a.tool),
            esc(&a.caller),
            esc(&a.rule),
            esc(&a.kind),
            a.quorum,
            if a.policy_sha256.is_empty() { String::new() } else { format!("<div class=\"muted\">policy <code>{}</code></div>", esc(&short(&a.policy_sha256))) },
            if votes.is_empty() { "nobody".to_owned() } else { votes.join("<br>") },
            esc(&a.outcome),
            esc(&a.reason)
        );
    }
    h.push_str("</table>");
}

fn counts_table(h: &mut String, title: &str, counts: &Counts) {
    let mut rows: Vec<(&String, &u64)> = counts.iter().collect();
    rows.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    let _ = write!(h, "<div><table><tr><th>{}</th><th>calls</th></tr>", esc(title));
    for (k, n) in rows {
        let _ = write!(h, "<tr><td>{}</td><td class=\"n\">{n}</td></tr>", esc(k));
    }
    h.push_str("</table></div>");
}

fn totals(h: &mut String, e: &Evidence) {
    h.push_str("<h2>Totals</h2><div class=\"grid\">");
    counts_table(h, "decision", &e.totals.by_decision);
    counts_table(h, "risk", &e.totals.by_risk);
    counts_table(h, "server", &e.totals.by_server);
    counts_table(h, "caller", &e.totals.by_principal);
    h.push_str("</div><div class=\"grid\">");
    counts_table(h, "tool", &e.totals.by_tool);
    h.push_str("</div>");
}

fn events(h: &mut String, title: &str, events: &[Event]) {
    let _ = write!(h, "<h2>{} ({})</h2>", esc(title), events.len());
    if events.is_empty() {
        h.push_str("<p class=\"muted\">None in this period.</p>");
        return;
    }
    h.push_str("<table><tr><th>seq</th><th>time</th><th>what</th><th>detail</th></tr>");
    for ev in events {
        let _ = write!(
            h,
            "<tr><td class=\"n\">{}</td><td>{}</td><td><code>{}</code></td><td><code>{}</code></td></tr>",
            ev.seq,
            esc(&ev.time),
            esc(&ev.subject),
            esc(&ev.detail)
        );
    }
    h.push_str("</table>");
}

fn policy_versions(h: &mut String, versions: &[PolicyVersion]) {
    let _ = write!(h, "<h2>Policy versions in force ({})</h2>", versions.len());
    if versions.is_empty() {
        h.push_str("<p class=\"muted\">No policy digest is recorded for this period (gateways before <code>config_loaded</code> and <code>policy_sha256</code> were recorded).</p>");
        return;
    }
    h.push_str("<table><tr><th>policy_sha256</th><th>in force from (seq)</th><th>until</th><th>loaded at</th><th>what changed</th><th>decisions</th></tr>");
    for v in versions {
        let files: Vec<String> = v.policies.iter().map(|(file, digest)| format!("{} {}", esc(file), esc(&short(digest)))).collect();
        let changed = if v.changed.is_empty() { "—".to_owned() } else { esc(&v.changed.join(", ")) };
        let _ = write!(
            h,
            "<tr><td><code title=\"{full}\">{short}</code><div class=\"muted\">{files}</div></td><td>{since} ({seq})</td><td>{until}</td>\
             <td>{reason}</td><td>{changed}</td><td class=\"n\">{n}</td></tr>",
            full = esc(&v.policy_sha256),
            short = esc(&short(&v.policy_sha256)),
            files = files.join("<br>"),
            since = esc(&v.since),
            seq = v.seq,
            until = if v.until.is_empty() { "end of log".to_owned() } else { esc(&v.until) },
            reason = esc(&v.reason),
            n = v.decisions,
        );
    }
    h.push_str("</table>");
}

fn chains(h: &mut String, approvals: &[Approval]) {
    h.push_str("<h2>Records of each held call</h2><p class=\"muted\">Each record can be proven included in the signed log: <code>airlock log prove SEQ</code>.</p>");
    for a in approvals {
        let chain: Vec<String> = a.chain.iter().map(|(seq, kind)| format!("{seq} {}", esc(kind))).collect();
        let _ = write!(h, "<p><code>{}</code> {}: {}</p>", esc(&a.call_id), esc(&a.tool), chain.join(" → "));
    }
}

/// Grouped bars of calls and holds per day.
fn day_chart(days: &[Day]) -> String {
    let (w, h, pad) = (360.0, 140.0, 20.0);
    let max = days.iter().map(|d| d.calls.max(d.holds)).max().unwrap_or(0).max(1) as f64;
    let slot = (w - pad) / days.len().max(1) as f64;
    let mut svg = format!("<svg viewBox=\"0 0 {w} {h}\" width=\"100%\" role=\"img\" aria-label=\"calls and holds per day\">");
    for (i, d) in days.iter().enumerate() {
        let x = pad + i as f64 * slot;
        let bw = (slot / 2.0 - 2.0).clamp(1.0, 24.0);
        for (j, (n, color)) in [(d.calls, "#0969da"), (d.holds, "#bf8700")].iter().enumerate() {
            let bh = (*n as f64 / max) * (h - 2.0 * pad);
            let _ = write!(
                svg,
                "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"{bw:.1}\" height=\"{bh:.1}\" fill=\"{color}\"><title>{} {}: {n}</title></rect>",
                x + j as f64 * (bw + 1.0),
                h - pad - bh,
                esc(&d.date),
                if j == 0 { "calls" } else { "holds" }
            );
        }
        let _ = write!(svg, "<text x=\"{x:.1}\" y=\"{:.1}\" font-size=\"9\">{}</text>", h - 6.0, esc(d.date.get(5..).unwrap_or(&d.date)));
    }
    let _ = write!(svg, "<text x=\"0\" y=\"12\" font-size=\"9\">{max}</text></svg>");
    svg.push_str("<div class=\"muted\">■ <span style=\"color:#0969da\">calls</span> ■ <span style=\"color:#bf8700\">holds</span></div>");
    svg
}

/// Horizontal bars, one per item.
fn bar_chart(items: &[(String, f64)]) -> String {
    if items.is_empty() {
        return "<p class=\"muted\">No decided holds.</p>".to_owned();
    }
    let row = 16.0;
    let (w, label) = (360.0, 110.0);
    let h = row * items.len() as f64 + 4.0;
    let max = items.iter().map(|(_, v)| *v).fold(0.0_f64, f64::max).max(0.001);
    let mut svg = format!("<svg viewBox=\"0 0 {w} {h}\" width=\"100%\" role=\"img\" aria-label=\"time to decision\">");
    for (i, (name, v)) in items.iter().enumerate() {
        let y = i as f64 * row + 2.0;
        let bw = (v / max) * (w - label - 50.0);
        let _ = write!(
            svg,
            "<text x=\"0\" y=\"{:.1}\" font-size=\"10\">{}</text><rect x=\"{label}\" y=\"{y:.1}\" width=\"{bw:.1}\" height=\"{:.1}\" fill=\"#8250df\"></rect>\
             <text x=\"{:.1}\" y=\"{:.1}\" font-size=\"10\">{v:.1}</text>",
            y + 11.0,
            esc(name),
            row - 4.0,
            label + bw + 4.0,
            y + 11.0
        );
    }
    svg.push_str("</svg>");
    svg
}
